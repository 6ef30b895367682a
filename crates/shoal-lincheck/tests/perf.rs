//! Measures (and prints; no timing assertions) the check of the chaos suite's expected load:
//! 10,000 operations over 50 keys from 10 clients, 3% ambiguous; also 2,000 operations on one
//! hot key, and 10,000 on one versioned object. Run with `--nocapture` to see
//! the times; in release (`cargo test --release -p shoal-lincheck --test perf -- --nocapture`)
//! for numbers that mean something. `cargo bench -p shoal-lincheck` measures it with criterion.

mod common;

use shoal_lincheck::{check_kv, check_object, Options};
use std::time::Instant;

#[test]
fn ten_thousand_kv_operations() {
    let h = common::kv_history(7, &common::Shape::PERF);
    let start = Instant::now();
    let report = check_kv(&h, &Options::default()).expect("well-formed");
    let elapsed = start.elapsed();
    println!("kv: {:?} in {elapsed:?}", report.stats);
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.stats.operations, 10_000);
    assert_eq!(report.stats.partitions, 50);
    assert!(report.stats.ambiguous > 100, "{:?}", report.stats);
}

#[test]
fn one_hot_key() {
    let shape = common::Shape { ops: 2_000, keys: 1, clients: 10, ambiguous_percent: 3, max_duration: 200 };
    let h = common::kv_history(7, &shape);
    let start = Instant::now();
    let report = check_kv(&h, &Options::default()).expect("well-formed");
    let elapsed = start.elapsed();
    println!("hot key: {:?} in {elapsed:?}", report.stats);
    assert!(report.is_linearizable(), "{report:?}");
}

#[test]
fn ten_thousand_object_operations() {
    let h = common::object_history(7, &common::Shape::PERF);
    let start = Instant::now();
    let report = check_object(Some((1, "v0".to_string())), &h, &Options::default()).expect("well-formed");
    let elapsed = start.elapsed();
    println!("object: {:?} in {elapsed:?}", report.stats);
    assert!(report.is_linearizable(), "{report:?}");
}
