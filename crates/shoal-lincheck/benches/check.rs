//! Checker benchmarks (criterion): the chaos suite's expected load.
//!
//! - kv: 10,000 operations over 50 keys from 10 clients, 3% ambiguous (half of which took
//!   effect), durations up to 200 time units (heavily overlapping);
//! - hot key: 2,000 operations on one key, same clients and ambiguity;
//! - object: 10,000 operations on one versioned object (a single partition), same shape.
//!
//! Reproduce: `cargo bench -p shoal-lincheck`.

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_lincheck::{check_kv, check_object, Options};
use std::hint::black_box;

#[path = "../tests/common/mod.rs"]
mod common;

fn kv(c: &mut Criterion) {
    let history = common::kv_history(7, &common::Shape::PERF);
    let options = Options::default();
    c.bench_function("kv 10k ops, 50 keys, 10 clients, 3% ambiguous", |b| {
        b.iter(|| {
            let report = check_kv(black_box(&history), &options).expect("well-formed");
            assert!(report.is_linearizable());
            report
        })
    });
}

fn hot_key(c: &mut Criterion) {
    let shape = common::Shape { ops: 2_000, keys: 1, clients: 10, ambiguous_percent: 3, max_duration: 200 };
    let history = common::kv_history(7, &shape);
    let options = Options::default();
    c.bench_function("kv 2k ops, 1 key, 10 clients, 3% ambiguous", |b| {
        b.iter(|| {
            let report = check_kv(black_box(&history), &options).expect("well-formed");
            assert!(report.is_linearizable());
            report
        })
    });
}

fn object(c: &mut Criterion) {
    let history = common::object_history(7, &common::Shape::PERF);
    let options = Options::default();
    c.bench_function("object 10k ops, 10 clients, 3% ambiguous", |b| {
        b.iter(|| {
            let report = check_object(Some((1, "v0".to_string())), black_box(&history), &options)
                .expect("well-formed");
            assert!(report.is_linearizable());
            report
        })
    });
}

criterion_group!(benches, kv, hot_key, object);
criterion_main!(benches);
