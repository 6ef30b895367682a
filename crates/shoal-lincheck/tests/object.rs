//! The versioned-object model: non-consecutive versions, conflicts, ambiguity, generated
//! histories.

mod common;

use proptest::prelude::*;
use shoal_lincheck::{check_object, ObjectInput, ObjectOperation, ObjectOutput, Operation, Options, Report};

fn read(client: u64, invoke: u64, complete: u64, version: u64, value: &str) -> ObjectOperation {
    Operation::completed(
        client,
        invoke,
        complete,
        ObjectInput::Read,
        ObjectOutput::Read { version, value: value.into() },
    )
}

fn update(
    client: u64,
    invoke: u64,
    complete: u64,
    expected: u64,
    value: &str,
    new_version: u64,
) -> ObjectOperation {
    let input = ObjectInput::Update { expected_version: Some(expected), value: value.into() };
    Operation::completed(client, invoke, complete, input, ObjectOutput::Updated { version: new_version })
}

fn conflict(client: u64, invoke: u64, complete: u64, expected: u64, value: &str) -> ObjectOperation {
    let input = ObjectInput::Update { expected_version: Some(expected), value: value.into() };
    Operation::completed(client, invoke, complete, input, ObjectOutput::Conflict)
}

fn ambiguous_update(client: u64, invoke: u64, expected: Option<u64>, value: &str) -> ObjectOperation {
    Operation::ambiguous(
        client,
        invoke,
        ObjectInput::Update { expected_version: expected, value: value.into() },
    )
}

/// The tests' object starts at version 10 with value "init".
fn run(h: &[ObjectOperation]) -> Report<()> {
    check_object(Some((10, "init".to_string())), h, &Options::default()).expect("well-formed")
}

/// The generated histories' object starts at version 1 with value "v0".
fn run_generated(h: &[ObjectOperation]) -> Report<()> {
    check_object(Some((1, "v0".to_string())), h, &Options::default()).expect("well-formed")
}

fn assert_linearizable(h: &[ObjectOperation]) {
    assert_linearizable_report(h, run(h));
}

fn assert_linearizable_report(h: &[ObjectOperation], report: Report<()>) {
    if let Some(v) = report.violation() {
        panic!("expected linearizable:\n{}", v.describe(h));
    }
    assert!(report.is_linearizable());
}

fn assert_violation(h: &[ObjectOperation]) {
    let report = run(h);
    assert!(report.violation().is_some(), "expected a violation: {report:?}");
}

#[test]
fn sequential_updates_with_gaps_in_versions() {
    assert_linearizable(&[
        read(1, 0, 1, 10, "init"),
        update(1, 2, 3, 10, "a", 14),
        read(2, 4, 5, 14, "a"),
        update(2, 6, 7, 14, "b", 100),
        conflict(1, 8, 9, 14, "c"),
        read(1, 10, 11, 100, "b"),
    ]);
}

#[test]
fn concurrent_updates_from_the_same_version_one_wins() {
    assert_linearizable(&[
        update(1, 0, 10, 10, "a", 12),
        conflict(2, 5, 15, 10, "b"),
        read(3, 20, 30, 12, "a"),
    ]);
}

#[test]
fn two_successful_updates_from_the_same_version_are_rejected() {
    assert_violation(&[update(1, 0, 10, 10, "a", 12), update(2, 5, 15, 10, "b", 13)]);
}

#[test]
fn new_version_must_be_greater() {
    assert_violation(&[update(1, 0, 10, 10, "a", 10)]);
    assert_violation(&[update(1, 0, 10, 10, "a", 9)]);
    // And later updates must go above it, not above the expected version only.
    assert_violation(&[update(1, 0, 10, 10, "a", 20), update(1, 20, 30, 20, "b", 15)]);
}

#[test]
fn conflict_when_the_version_matched_is_rejected() {
    assert_violation(&[read(1, 0, 10, 10, "init"), conflict(1, 20, 30, 10, "a")]);
}

#[test]
fn stale_and_backward_reads_are_rejected() {
    // Stale: the update completed before the read started.
    assert_violation(&[update(1, 0, 10, 10, "a", 11), read(2, 20, 30, 10, "init")]);
    // Backward: the new version was seen, then the old one.
    assert_violation(&[
        update(1, 0, 100, 10, "a", 11),
        read(2, 20, 30, 11, "a"),
        read(3, 40, 50, 10, "init"),
    ]);
    // A version with the wrong value.
    assert_violation(&[update(1, 0, 10, 10, "a", 11), read(2, 20, 30, 11, "b")]);
}

#[test]
fn ambiguous_update_that_happened_or_not() {
    // Happened: its version is revealed by a read, then used by an update.
    assert_linearizable(&[
        ambiguous_update(1, 0, Some(10), "a"),
        read(2, 20, 30, 17, "a"),
        update(2, 40, 50, 17, "b", 18),
        read(2, 60, 70, 18, "b"),
    ]);
    // Happened: revealed by an update that expected its version (its value never read).
    assert_linearizable(&[ambiguous_update(1, 0, Some(10), "a"), update(2, 20, 30, 13, "b", 18)]);
    // Did not happen.
    assert_linearizable(&[
        ambiguous_update(1, 0, Some(10), "a"),
        read(2, 20, 30, 10, "init"),
        update(2, 40, 50, 10, "b", 11),
    ]);
    // Unconditional.
    assert_linearizable(&[ambiguous_update(1, 0, None, "a"), read(2, 20, 30, 12, "a")]);
}

#[test]
fn ambiguous_update_versions_stay_consistent() {
    // Its version, once seen, cannot change without another update.
    assert_violation(&[
        ambiguous_update(1, 0, Some(10), "a"),
        read(2, 20, 30, 17, "a"),
        read(2, 40, 50, 18, "a"),
    ]);
    // It cannot come out at or below the version it expected.
    assert_violation(&[ambiguous_update(1, 0, Some(10), "a"), read(2, 20, 30, 10, "a")]);
    // It could not have applied: the object was never at 9.
    assert_violation(&[ambiguous_update(1, 0, Some(9), "a"), read(2, 20, 30, 12, "a")]);
}

#[test]
fn unknown_initial_state() {
    let h = [read(1, 0, 10, 3, "x"), update(1, 20, 30, 3, "y", 7), read(2, 40, 50, 7, "y")];
    let report = check_object(None, &h, &Options::default()).expect("well-formed");
    assert!(report.is_linearizable(), "{report:?}");
    let h = [read(1, 0, 10, 3, "x"), read(2, 20, 30, 4, "x")];
    let report = check_object(None, &h, &Options::default()).expect("well-formed");
    assert!(report.violation().is_some(), "{report:?}");
}

#[test]
fn generated_histories_are_linearizable_and_mutations_caught() {
    let shape = common::Shape { ops: 1_000, keys: 1, clients: 5, ambiguous_percent: 3, max_duration: 100 };
    let h = common::object_history(3, &shape);
    assert_linearizable_report(&h, run_generated(&h));
    // Drop the completed successful update whose version the most reads saw.
    let seen = |version: u64| {
        h.iter()
            .filter(|r| matches!(r.output, Some(ObjectOutput::Read { version: v, .. }) if v == version))
            .count()
    };
    let (i, _) = h
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op.output {
            Some(ObjectOutput::Updated { version }) => Some((i, seen(version))),
            _ => None,
        })
        .max_by_key(|(i, n)| (*n, std::cmp::Reverse(*i)))
        .expect("some update");
    let mut m = h.clone();
    m.remove(i);
    let report = run_generated(&m);
    assert!(report.violation().is_some(), "expected a violation: {report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_object_histories_are_linearizable(
        seed in any::<u64>(),
        ops in 1usize..300,
        clients in 1usize..8,
        ambiguous_percent in 0u64..10,
        max_duration in 1u64..200,
    ) {
        let shape = common::Shape { ops, keys: 1, clients, ambiguous_percent, max_duration };
        let h = common::object_history(seed, &shape);
        let report = run_generated(&h);
        let explanation = report.violation().map(|v| v.describe(&h)).unwrap_or_default();
        prop_assert!(report.is_linearizable(), "{:?}\n{}", report, explanation);
    }

    /// Dropping a successful completed update whose version a completed read saw is caught.
    #[test]
    fn dropped_update_is_rejected(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let shape = common::Shape { ops: 150, keys: 1, clients: 5, ambiguous_percent: 3, max_duration: 80 };
        let h = common::object_history(seed, &shape);
        let observed: Vec<usize> = h
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op.output {
                Some(ObjectOutput::Updated { version }) if h.iter().any(|r| {
                    matches!(r.output, Some(ObjectOutput::Read { version: v, .. }) if v == version)
                }) => Some(i),
                _ => None,
            })
            .collect();
        prop_assume!(!observed.is_empty());
        let mut m = h.clone();
        m.remove(observed[pick.index(observed.len())]);
        let report = run_generated(&m);
        prop_assert!(report.violation().is_some(), "{:?}", report);
    }
}
