//! The check's contract: budget, malformed histories, recording, JSON, determinism.

mod common;

use shoal_lincheck::{
    check_kv, History, HistoryError, KvInput, KvOperation, KvOutput, Operation, Options, Outcome, Report,
};

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

/// `n` overlapping puts on `key`, then a read of a value none wrote: refuting it means trying
/// every subset of the puts (2ⁿ - 1 states).
fn hard(key: &str, n: u64, base: u64) -> Vec<KvOperation> {
    let mut h: Vec<KvOperation> =
        (0..n).map(|i| put(i, base + i, base + 100, key, &format!("v{i}"))).collect();
    h.push(get(n, base + 200, base + 210, key, Some("never")));
    h
}

#[test]
fn budget_exhaustion_returns_unknown() {
    let h = hard("k", 16, 0);
    let report = check_kv(&h, &Options::with_max_states(1_000)).expect("well-formed");
    assert_eq!(report.outcome, Outcome::Unknown { partitions: vec!["k".to_string()] });
    assert!(report.is_unknown());
    assert!(report.stats.states_explored <= 1_001, "{:?}", report.stats);
    assert_eq!(report.stats.partitions_checked, 0);
    // With room, the same kind of history is refuted.
    let h = hard("k", 8, 0);
    let report = check_kv(&h, &Options::default()).expect("well-formed");
    let v = report.violation().expect("refuted");
    assert_eq!(v.blocked, 8);
    assert_eq!(v.linearized.len(), 8, "all the puts, then the read fits nowhere");
    // Every subset of the puts (their values are never read: all the same state).
    assert_eq!(report.stats.states_explored, (1 << 8) - 1, "{:?}", report.stats);
}

#[test]
fn a_violation_in_a_later_partition_beats_an_exhausted_one() {
    let mut h = hard("a", 16, 0);
    h.push(put(1, 1_000, 1_010, "b", "x"));
    h.push(get(2, 1_020, 1_030, "b", Some("y")));
    let options = Options { max_states: 1_000_000, max_states_per_partition: 1_000 };
    let report = check_kv(&h, &options).expect("well-formed");
    assert_eq!(report.violation().expect("b is refuted").partition, "b");
}

#[test]
fn the_total_budget_leaves_later_partitions_unknown() {
    let mut h = Vec::new();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let t = i as u64 * 1_000;
        h.push(put(1, t, t + 10, key, "x"));
        h.push(get(2, t + 20, t + 30, key, Some("x")));
    }
    // Two states per key: "a" fits in 3, then "b" runs out.
    let options = Options { max_states: 3, max_states_per_partition: 100 };
    let report = check_kv(&h, &options).expect("well-formed");
    assert_eq!(report.outcome, Outcome::Unknown { partitions: vec!["b".to_string(), "c".to_string()] });
    assert_eq!(report.stats.partitions_checked, 1);
    let report =
        check_kv(&h, &Options { max_states: 6, max_states_per_partition: 100 }).expect("well-formed");
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.stats.states_explored, 6);
}

#[test]
fn malformed_histories_are_errors() {
    let backwards = vec![put(1, 10, 5, "k", "a")];
    assert_eq!(
        check_kv(&backwards, &Options::default()),
        Err(HistoryError::CompletesBeforeInvoke { index: 0, invoke: 10, complete: 5 })
    );
    let mut no_output = put(1, 0, 5, "k", "a");
    no_output.output = None;
    assert_eq!(
        check_kv(&[get(1, 0, 1, "k", None), no_output], &Options::default()),
        Err(HistoryError::MissingOutput { index: 1 })
    );
    let mut mismatch = put(1, 0, 5, "k", "a");
    mismatch.output = Some(KvOutput::Cas(true));
    let err = check_kv(&[mismatch], &Options::default()).expect_err("mismatch");
    assert_eq!(err, HistoryError::OutputMismatch { index: 0 });
    assert!(err.to_string().contains("#0"), "{err}");
    // An ambiguous operation's output is ignored.
    let mut stray: KvOperation =
        Operation::ambiguous(1, 0, KvInput::Put { key: "k".into(), value: "a".into() });
    stray.output = Some(KvOutput::Get(None));
    assert!(check_kv(&[stray], &Options::default()).expect("accepted").is_linearizable());
}

#[test]
fn recording_with_history() {
    let mut h: History<KvInput, KvOutput> = History::new();
    assert!(h.is_empty());
    let a = h.invoke(1, 0, KvInput::Put { key: "k".into(), value: "a".into() });
    let b = h.invoke(2, 5, KvInput::Get { key: "k".into() });
    let lost = h.invoke(3, 6, KvInput::Put { key: "k".into(), value: "b".into() });
    h.complete(b, 8, KvOutput::Get(Some("a".into())));
    h.complete(a, 10, KvOutput::Ok);
    h.push(get(2, 20, 30, "k", Some("b")));
    assert_eq!(h.len(), 4);
    assert_eq!(lost.0, 2);
    assert!(h.operations()[lost.0].is_ambiguous());
    assert_eq!(h.operations()[a.0], put(1, 0, 10, "k", "a"));
    let report = check_kv(h.operations(), &Options::default()).expect("well-formed");
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.stats.ambiguous, 1);
    assert_eq!(History::from(h.clone().into_operations()), h);
}

#[test]
fn histories_and_reports_round_trip_through_json() {
    let shape = common::Shape { ops: 200, keys: 4, clients: 5, ambiguous_percent: 10, max_duration: 50 };
    let h: History<KvInput, KvOutput> = common::kv_history(5, &shape).into();
    let json = serde_json::to_string(&h).expect("serialize");
    let back: History<KvInput, KvOutput> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, h);
    // The format, for people writing histories by hand or from other tools.
    let op: KvOperation = serde_json::from_str(
        r#"{"client":1,"invoke":0,"complete":5,"input":{"cas":{"key":"k","expected":null,"new":"a"}},"output":{"cas":true}}"#,
    )
    .expect("hand-written");
    assert_eq!(op.output, Some(KvOutput::Cas(true)));
    let amb: KvOperation =
        serde_json::from_str(r#"{"client":2,"invoke":3,"input":{"delete":{"key":"k"}}}"#).expect("ambiguous");
    assert!(amb.is_ambiguous());
    assert_eq!(
        serde_json::to_string(&put(1, 0, 1, "k", "a")).expect("json"),
        r#"{"client":1,"invoke":0,"complete":1,"input":{"put":{"key":"k","value":"a"}},"output":"ok"}"#
    );

    let bad = vec![put(1, 0, 10, "k", "a"), get(2, 20, 30, "k", None)];
    let report = check_kv(&bad, &Options::default()).expect("well-formed");
    let json = serde_json::to_string(&report).expect("serialize");
    let back: Report<String> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, report);
}

#[test]
fn reports_are_deterministic() {
    let shape = common::Shape { ops: 1_000, keys: 5, clients: 8, ambiguous_percent: 5, max_duration: 150 };
    let mut h = common::kv_history(9, &shape);
    let first = check_kv(&h, &Options::default()).expect("well-formed");
    assert_eq!(first, check_kv(&h, &Options::default()).expect("well-formed"));
    let i = h.iter().position(|op| matches!(op.output, Some(KvOutput::Get(_)))).expect("a read");
    h[i].output = Some(KvOutput::Get(Some("never".into())));
    let bad = check_kv(&h, &Options::default()).expect("well-formed");
    assert!(bad.violation().is_some());
    assert_eq!(bad, check_kv(&h, &Options::default()).expect("well-formed"));
}
