//! The key-value model: accepted histories, classic violations, ambiguity, generated histories.

mod common;

use proptest::prelude::*;
use shoal_lincheck::{check, check_kv, KvInput, KvModel, KvOperation, KvOutput, Operation, Options, Report};
use std::collections::BTreeMap;

fn put(client: u64, invoke: u64, complete: u64, key: &str, value: &str) -> KvOperation {
    Operation::completed(
        client,
        invoke,
        complete,
        KvInput::Put { key: key.into(), value: value.into() },
        KvOutput::Ok,
    )
}

fn get(client: u64, invoke: u64, complete: u64, key: &str, read: Option<&str>) -> KvOperation {
    Operation::completed(
        client,
        invoke,
        complete,
        KvInput::Get { key: key.into() },
        KvOutput::Get(read.map(Into::into)),
    )
}

fn cas(
    client: u64,
    invoke: u64,
    complete: u64,
    key: &str,
    expected: Option<&str>,
    new: &str,
    ok: bool,
) -> KvOperation {
    let input = KvInput::Cas { key: key.into(), expected: expected.map(Into::into), new: new.into() };
    Operation::completed(client, invoke, complete, input, KvOutput::Cas(ok))
}

fn delete(client: u64, invoke: u64, complete: u64, key: &str) -> KvOperation {
    Operation::completed(client, invoke, complete, KvInput::Delete { key: key.into() }, KvOutput::Ok)
}

fn ambiguous_put(client: u64, invoke: u64, key: &str, value: &str) -> KvOperation {
    Operation::ambiguous(client, invoke, KvInput::Put { key: key.into(), value: value.into() })
}

fn run(history: &[KvOperation]) -> Report<String> {
    check_kv(history, &Options::default()).expect("well-formed history")
}

fn assert_linearizable(history: &[KvOperation]) {
    let report = run(history);
    if let Some(v) = report.violation() {
        panic!("expected linearizable:\n{}", v.describe(history));
    }
    assert!(report.is_linearizable(), "{report:?}");
}

/// Asserts a violation on `key` and returns the report.
fn assert_violation(history: &[KvOperation], key: &str) -> Report<String> {
    let report = run(history);
    let v = report.violation().unwrap_or_else(|| panic!("expected a violation, got {report:?}"));
    assert_eq!(v.partition, key);
    let text = v.describe(history);
    assert!(text.contains("not linearizable"), "{text}");
    report
}

#[test]
fn empty_history_is_linearizable() {
    let report = run(&[]);
    assert!(report.is_linearizable());
    assert_eq!(report.stats.operations, 0);
    assert_eq!(report.stats.states_explored, 0);
}

#[test]
fn sequential_history_is_linearizable() {
    let h = vec![
        get(1, 0, 1, "k", None),
        put(1, 2, 3, "k", "a"),
        get(2, 4, 5, "k", Some("a")),
        cas(1, 6, 7, "k", Some("a"), "b", true),
        cas(2, 8, 9, "k", Some("a"), "c", false),
        get(1, 10, 11, "k", Some("b")),
        delete(2, 12, 13, "k"),
        get(1, 14, 15, "k", None),
        cas(2, 16, 17, "k", None, "d", true),
        get(1, 18, 19, "k", Some("d")),
        delete(1, 20, 21, "absent"),
        get(2, 22, 23, "absent", None),
    ];
    let report = run(&h);
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.stats.operations, 12);
    assert_eq!(report.stats.partitions, 2);
    assert_eq!(report.stats.partitions_checked, 2);
    assert_eq!(report.stats.ambiguous, 0);
}

#[test]
fn generated_sequential_histories_are_linearizable() {
    for seed in 0..20 {
        let shape = common::Shape { ops: 300, keys: 3, clients: 1, ambiguous_percent: 0, max_duration: 10 };
        assert_linearizable(&common::kv_history(seed, &shape));
    }
}

#[test]
fn concurrent_writes_linearize_in_either_order() {
    // Two overlapping puts; readers after both see either, as long as they agree.
    let base = vec![put(1, 0, 10, "k", "a"), put(2, 5, 15, "k", "b")];
    for winner in ["a", "b"] {
        let mut h = base.clone();
        h.push(get(3, 20, 21, "k", Some(winner)));
        h.push(get(4, 22, 23, "k", Some(winner)));
        assert_linearizable(&h);
    }
    // A read overlapping both may see the first, then the other later.
    let mut h = base.clone();
    h.push(get(3, 6, 8, "k", Some("b")));
    h.push(get(4, 20, 21, "k", Some("a")));
    assert_linearizable(&h);
}

#[test]
fn equal_times_count_as_concurrent() {
    // The read is invoked exactly when the put completes: either order is allowed.
    assert_linearizable(&[put(1, 0, 10, "k", "a"), get(2, 10, 12, "k", None)]);
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let h = vec![put(1, 0, 10, "k", "a"), put(1, 20, 30, "k", "b"), get(2, 40, 50, "k", Some("a"))];
    let report = assert_violation(&h, "k");
    let v = report.violation().expect("violation");
    assert_eq!(v.blocked, 2, "the stale read cannot be placed");
    assert_eq!(v.linearized, vec![0, 1]);
    assert_eq!(v.state, "Unobserved", "no operation reads \"b\"");
    assert_eq!(v.candidates, vec![2]);
}

#[test]
fn lost_write_is_rejected() {
    // A completed write that later reads never see.
    let h = vec![
        put(1, 0, 10, "k", "a"),
        put(2, 20, 30, "k", "b"),
        get(3, 40, 50, "k", Some("a")),
        get(3, 60, 70, "k", Some("a")),
    ];
    assert_violation(&h, "k");
    let h = vec![put(1, 0, 10, "k", "a"), get(2, 20, 30, "k", None)];
    assert_violation(&h, "k");
}

#[test]
fn two_successful_cas_from_the_same_value_are_rejected() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        cas(2, 20, 40, "k", Some("a"), "b", true),
        cas(3, 25, 45, "k", Some("a"), "c", true),
    ];
    assert_violation(&h, "k");
    // One wins, one fails: fine, in either order.
    let h = vec![
        put(1, 0, 10, "k", "a"),
        cas(2, 20, 40, "k", Some("a"), "b", false),
        cas(3, 25, 45, "k", Some("a"), "c", true),
        get(1, 50, 51, "k", Some("c")),
    ];
    assert_linearizable(&h);
    // Two creations of an absent key.
    let h = vec![cas(2, 20, 40, "k", None, "b", true), cas(3, 25, 45, "k", None, "c", true)];
    assert_violation(&h, "k");
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let h = vec![put(1, 0, 10, "k", "a"), get(2, 5, 15, "k", Some("z"))];
    let report = assert_violation(&h, "k");
    assert_eq!(report.violation().expect("violation").blocked, 1);
    // A failed CAS's value is never written either.
    let h = vec![cas(1, 0, 10, "k", Some("x"), "y", false), get(2, 20, 30, "k", Some("y"))];
    assert_violation(&h, "k");
}

#[test]
fn read_going_back_in_time_is_rejected() {
    // "b" was seen, so "a" (which finished before "b" could) is gone for good.
    let h = vec![
        put(1, 0, 10, "k", "a"),
        put(2, 5, 50, "k", "b"),
        get(3, 20, 30, "k", Some("b")),
        get(3, 35, 40, "k", Some("a")),
    ];
    assert_violation(&h, "k");
    // Two readers, non-overlapping, see the new value then the old one.
    let h = vec![
        put(1, 0, 10, "k", "a"),
        put(2, 20, 100, "k", "b"),
        get(3, 30, 40, "k", Some("b")),
        get(4, 50, 60, "k", Some("a")),
    ];
    assert_violation(&h, "k");
}

#[test]
fn delete_then_read_absent() {
    let h = vec![put(1, 0, 10, "k", "a"), delete(2, 20, 30, "k"), get(1, 40, 50, "k", Some("a"))];
    assert_violation(&h, "k");
    let h = vec![put(1, 0, 10, "k", "a"), delete(2, 20, 30, "k"), get(1, 25, 50, "k", Some("a"))];
    assert_linearizable(&h);
}

#[test]
fn ambiguous_write_that_happened_is_accepted() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        ambiguous_put(2, 20, "k", "b"),
        get(3, 30, 40, "k", Some("b")),
        get(3, 50, 60, "k", Some("b")),
    ];
    assert_linearizable(&h);
    // It may even land long after the client gave up.
    let h = vec![
        put(1, 0, 10, "k", "a"),
        ambiguous_put(2, 20, "k", "b"),
        get(3, 30, 40, "k", Some("a")),
        get(3, 1_000, 1_010, "k", Some("b")),
    ];
    assert_linearizable(&h);
}

#[test]
fn ambiguous_write_that_did_not_happen_is_accepted() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        ambiguous_put(2, 20, "k", "b"),
        get(3, 30, 40, "k", Some("a")),
        get(3, 1_000, 1_010, "k", Some("a")),
    ];
    let report = run(&h);
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.stats.ambiguous, 1);
}

#[test]
fn ambiguous_write_seen_then_unseen_is_rejected() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        ambiguous_put(2, 20, "k", "b"),
        get(3, 30, 40, "k", Some("b")),
        get(3, 50, 60, "k", Some("a")),
    ];
    assert_violation(&h, "k");
}

#[test]
fn ambiguous_write_cannot_take_effect_before_it_is_invoked() {
    let h = vec![get(3, 0, 10, "k", Some("b")), ambiguous_put(2, 20, "k", "b")];
    let report = assert_violation(&h, "k");
    let v = report.violation().expect("violation");
    assert_eq!(v.blocked, 0);
    assert_eq!(v.candidates, vec![0], "the put was invoked too late to be a candidate");
}

#[test]
fn ambiguous_reads_are_dropped() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        Operation::ambiguous(2, 5, KvInput::Get { key: "k".into() }),
        get(3, 20, 30, "k", Some("a")),
    ];
    let report = run(&h);
    assert!(report.is_linearizable());
    assert_eq!(report.stats.ambiguous, 1);
    assert_eq!(report.stats.dropped, 1);
}

#[test]
fn ambiguous_cas_and_delete() {
    let amb_cas = |invoke, expected: Option<&str>, new: &str| {
        Operation::ambiguous(
            2,
            invoke,
            KvInput::Cas { key: "k".into(), expected: expected.map(Into::into), new: new.into() },
        )
    };
    // Took effect.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        amb_cas(20, Some("a"), "b"),
        get(3, 30, 40, "k", Some("b")),
    ]);
    // Did not.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        amb_cas(20, Some("a"), "b"),
        get(3, 30, 40, "k", Some("a")),
    ]);
    // Could not have: the key never held the expected value.
    let h = [put(1, 0, 10, "k", "a"), amb_cas(20, Some("x"), "b"), get(3, 30, 40, "k", Some("b"))];
    assert_violation(&h, "k");
    // An ambiguous delete.
    let amb_delete = Operation::ambiguous(2, 20, KvInput::Delete { key: "k".into() });
    assert_linearizable(&[put(1, 0, 10, "k", "a"), amb_delete.clone(), get(3, 30, 40, "k", None)]);
    assert_linearizable(&[put(1, 0, 10, "k", "a"), amb_delete, get(3, 30, 40, "k", Some("a"))]);
}

#[test]
fn several_ambiguous_writes_pick_any_subset_and_order() {
    let h = vec![
        put(1, 0, 10, "k", "a"),
        ambiguous_put(2, 20, "k", "b"),
        ambiguous_put(3, 21, "k", "c"),
        ambiguous_put(4, 22, "k", "d"),
        get(5, 30, 40, "k", Some("c")),
        get(5, 50, 60, "k", Some("b")),
        get(5, 70, 80, "k", Some("d")),
    ];
    assert_linearizable(&h);
    // But none can be seen twice with another in between.
    let mut h = h;
    h.push(get(5, 90, 100, "k", Some("c")));
    assert_violation(&h, "k");
}

#[test]
fn initial_values() {
    let model = KvModel::with_initial(BTreeMap::from([("k".to_string(), "init".to_string())]));
    let h = vec![get(1, 0, 10, "k", Some("init")), get(1, 20, 30, "other", None)];
    let report = check(&model, &h, &Options::default()).expect("well-formed");
    assert!(report.is_linearizable());
    let report = check_kv(&h, &Options::default()).expect("well-formed");
    assert!(!report.is_linearizable(), "without the initial value the first read is impossible");
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let mut h = Vec::new();
    for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
        let t = i as u64 * 100;
        h.push(put(1, t, t + 10, key, "x"));
        h.push(get(2, t + 20, t + 30, key, Some("x")));
    }
    assert_linearizable(&h);
    h.push(get(3, 1_000, 1_010, "c", Some("y")));
    let report = assert_violation(&h, "c");
    let v = report.violation().expect("violation");
    assert_eq!(v.blocked, h.len() - 1);
    assert_eq!(v.linearized, vec![4, 5]);
    // Only the partitions up to the bad one were needed ("a", "b", "c").
    assert_eq!(report.stats.partitions_checked, 3);
}

#[test]
fn byte_keys_and_values() {
    let h: Vec<KvOperation<Vec<u8>, Vec<u8>>> = vec![
        Operation::completed(1, 0, 10, KvInput::Put { key: b"k".to_vec(), value: vec![0, 1] }, KvOutput::Ok),
        Operation::completed(2, 20, 30, KvInput::Get { key: b"k".to_vec() }, KvOutput::Get(Some(vec![0, 1]))),
    ];
    assert!(check_kv(&h, &Options::default()).expect("well-formed").is_linearizable());
}

#[test]
fn dropping_a_completed_write_is_caught() {
    // Mutation sanity on a generated history: find completed puts whose value a completed read
    // saw, drop each, and expect a violation on that key.
    let shape = common::Shape { ops: 2_000, keys: 10, clients: 10, ambiguous_percent: 3, max_duration: 200 };
    let h = common::kv_history(11, &shape);
    assert_linearizable(&h);
    let mut mutated = 0;
    for (i, op) in h.iter().enumerate() {
        let KvInput::Put { key, value } = &op.input else { continue };
        if op.is_ambiguous() {
            continue;
        }
        let seen = h.iter().any(|r| {
            r.input == KvInput::Get { key: key.clone() }
                && r.output == Some(KvOutput::Get(Some(value.clone())))
        });
        if !seen {
            continue;
        }
        let mut m = h.clone();
        m.remove(i);
        let report = run(&m);
        let v = report.violation().unwrap_or_else(|| panic!("dropping #{i} went unnoticed: {report:?}"));
        assert_eq!(&v.partition, key);
        mutated += 1;
        if mutated == 20 {
            break;
        }
    }
    assert_eq!(mutated, 20);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Histories of a real sequential execution with random overlapping intervals (and some
    /// ambiguous operations, which did or did not take effect) are linearizable.
    #[test]
    fn generated_concurrent_histories_are_linearizable(
        seed in any::<u64>(),
        ops in 1usize..400,
        keys in 1usize..6,
        clients in 1usize..12,
        ambiguous_percent in 0u64..15,
        max_duration in 1u64..300,
    ) {
        let shape = common::Shape { ops, keys, clients, ambiguous_percent, max_duration };
        let h = common::kv_history(seed, &shape);
        let report = run(&h);
        let explanation = report.violation().map(|v| v.describe(&h)).unwrap_or_default();
        prop_assert!(report.is_linearizable(), "{:?}\n{}", report, explanation);
    }

    /// Dropping a completed write whose value some completed read saw is caught.
    #[test]
    fn dropped_write_is_rejected(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let shape = common::Shape { ops: 200, keys: 3, clients: 6, ambiguous_percent: 5, max_duration: 100 };
        let h = common::kv_history(seed, &shape);
        let observed: Vec<usize> = h
            .iter()
            .enumerate()
            .filter(|(_, op)| !op.is_ambiguous())
            .filter_map(|(i, op)| match &op.input {
                KvInput::Put { key, value } | KvInput::Cas { key, new: value, .. }
                    if op.output != Some(KvOutput::Cas(false))
                        && h.iter().any(|r| {
                            r.input == KvInput::Get { key: key.clone() }
                                && r.output == Some(KvOutput::Get(Some(value.clone())))
                        }) =>
                {
                    Some(i)
                }
                _ => None,
            })
            .collect();
        prop_assume!(!observed.is_empty());
        let mut m = h.clone();
        let dropped = m.remove(observed[pick.index(observed.len())]);
        let report = run(&m);
        let v = report.violation();
        prop_assert!(v.is_some(), "{:?}", report);
        prop_assert_eq!(&v.expect("checked").partition, dropped.input.key());
    }

    /// Changing what a completed read saw to a value never written is caught.
    #[test]
    fn corrupted_read_is_rejected(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let shape = common::Shape { ops: 200, keys: 3, clients: 6, ambiguous_percent: 5, max_duration: 100 };
        let mut h = common::kv_history(seed, &shape);
        let reads: Vec<usize> = h
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.output, Some(KvOutput::Get(_))))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick.index(reads.len())];
        h[i].output = Some(KvOutput::Get(Some("never written".into())));
        let report = run(&h);
        prop_assert!(report.violation().is_some(), "{:?}", report);
    }
}
