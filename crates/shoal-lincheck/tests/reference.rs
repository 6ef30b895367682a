//! The checker against a brute-force reference on small random histories (linearizable or not):
//! every order of the completed operations, every subset and placement of the ambiguous ones,
//! with the models written out directly (concrete versions, raw values). This is what validates
//! the search's pruning rules and the models' abstractions (unknown versions, unobserved values).

use proptest::prelude::*;
use shoal_lincheck::{
    check_kv, check_object, KvInput, KvOperation, KvOutput, ObjectInput, ObjectOperation, ObjectOutput,
    Operation, Options, Report,
};
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// The states an operation may lead to from a state (none: it cannot be placed there).
type Step<'a, I, O, S> = dyn Fn(&S, &Operation<I, O>) -> Vec<S> + 'a;

/// Whether some sequence places every completed operation (and any ambiguous ones) respecting
/// real time, each accepted by `step` (which lists the states an operation may lead to). Plain
/// depth-first search, memoizing only exact (operations placed, state) pairs that failed.
fn brute_force<I, O, S: Clone + Eq + Hash>(
    history: &[Operation<I, O>],
    state: S,
    step: &Step<'_, I, O, S>,
) -> bool {
    fn go<I, O, S: Clone + Eq + Hash>(
        h: &[Operation<I, O>],
        placed: u32,
        state: S,
        step: &Step<'_, I, O, S>,
        failed: &mut HashSet<(u32, S)>,
    ) -> bool {
        let is_placed = |i: usize| placed & (1 << i) != 0;
        if (0..h.len()).all(|i| is_placed(i) || h[i].complete.is_none()) {
            return true;
        }
        if failed.contains(&(placed, state.clone())) {
            return false;
        }
        for i in (0..h.len()).filter(|&i| !is_placed(i)) {
            // Every operation that completed before this one was invoked must come first.
            let ready = (0..h.len()).all(|j| is_placed(j) || h[j].complete.is_none_or(|c| c >= h[i].invoke));
            if !ready {
                continue;
            }
            for next in step(&state, &h[i]) {
                if go(h, placed | (1 << i), next, step, failed) {
                    return true;
                }
            }
        }
        failed.insert((placed, state));
        false
    }
    go(history, 0, state, step, &mut HashSet::new())
}

fn kv_step(state: &Option<String>, op: &KvOperation) -> Vec<Option<String>> {
    let out = if op.complete.is_some() { op.output.as_ref() } else { None };
    match (&op.input, out) {
        (KvInput::Put { value, .. }, _) => vec![Some(value.clone())],
        (KvInput::Delete { .. }, _) => vec![None],
        (KvInput::Get { .. }, Some(KvOutput::Get(read))) if read == state => vec![state.clone()],
        (KvInput::Get { .. }, None) => vec![state.clone()],
        (KvInput::Cas { expected, new, .. }, Some(KvOutput::Cas(true)) | None) if expected == state => {
            vec![Some(new.clone())]
        }
        (KvInput::Cas { expected, .. }, Some(KvOutput::Cas(false))) if expected != state => {
            vec![state.clone()]
        }
        _ => vec![],
    }
}

/// (version, value); the value `None` stands for one never written (an unknown initial value).
type Obj = (u64, Option<String>);

fn object_step(state: &Obj, op: &ObjectOperation, max_version: u64) -> Vec<Obj> {
    let (version, value) = state;
    let out = if op.complete.is_some() { op.output.as_ref() } else { None };
    match (&op.input, out) {
        (ObjectInput::Read, Some(ObjectOutput::Read { version: v, value: val })) => {
            if v == version && value.as_ref() == Some(val) {
                vec![state.clone()]
            } else {
                vec![]
            }
        }
        (ObjectInput::Read, None) => vec![state.clone()],
        (
            ObjectInput::Update { expected_version, value: new },
            Some(ObjectOutput::Updated { version: n }),
        ) => {
            if expected_version.is_none_or(|e| e == *version) && n > version {
                vec![(*n, Some(new.clone()))]
            } else {
                vec![]
            }
        }
        (ObjectInput::Update { expected_version: Some(e), .. }, Some(ObjectOutput::Conflict))
            if e != version =>
        {
            vec![state.clone()]
        }
        (ObjectInput::Update { expected_version, value: new }, None)
            if expected_version.is_none_or(|e| e == *version) =>
        {
            // Any new version will do; above every version the history mentions, one suffices.
            (version + 1..=max_version + 1).map(|n| (n, Some(new.clone()))).collect()
        }
        _ => vec![],
    }
}

/// Values written: "a" and "b" are also read or compared with, the others usually not.
fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "a", "b", "c", "d", "e"]).prop_map(String::from)
}

fn observed() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "a", "b", "c"]).prop_map(String::from)
}

fn timing() -> impl Strategy<Value = (u64, Option<u64>)> {
    (0u64..20, 0u64..12, 0u32..4)
        .prop_map(|(invoke, duration, ambiguous)| (invoke, (ambiguous != 0).then_some(invoke + duration)))
}

fn kv_op() -> impl Strategy<Value = KvOperation> {
    let input = prop_oneof![
        value().prop_map(|value| KvInput::Put { key: "k".into(), value }),
        Just(KvInput::Get { key: "k".into() }),
        (prop::option::of(value()), value()).prop_map(|(expected, new)| KvInput::Cas {
            key: "k".into(),
            expected,
            new
        }),
        Just(KvInput::Delete { key: "k".into() }),
    ];
    (timing(), input, prop::option::of(observed()), any::<bool>()).prop_map(
        |((invoke, complete), input, read, ok)| {
            let output = match &input {
                KvInput::Get { .. } => KvOutput::Get(read),
                KvInput::Cas { .. } => KvOutput::Cas(ok),
                _ => KvOutput::Ok,
            };
            Operation { client: 0, invoke, complete, input, output: complete.map(|_| output) }
        },
    )
}

fn object_op() -> impl Strategy<Value = ObjectOperation> {
    let input = prop_oneof![
        Just(ObjectInput::Read),
        (prop::option::of(1u64..5), value())
            .prop_map(|(expected_version, value)| ObjectInput::Update { expected_version, value }),
    ];
    (timing(), input, 1u64..6, observed(), 0u32..3).prop_map(
        |((invoke, complete), input, version, val, conflict)| {
            let output = match &input {
                ObjectInput::Read => ObjectOutput::Read { version, value: val },
                ObjectInput::Update { expected_version: Some(_), .. } if conflict == 0 => {
                    ObjectOutput::Conflict
                }
                ObjectInput::Update { .. } => ObjectOutput::Updated { version },
            };
            Operation { client: 0, invoke, complete, input, output: complete.map(|_| output) }
        },
    )
}

fn verdict<P: Debug>(report: &Report<P>) -> bool {
    assert!(!report.is_unknown(), "tiny histories never exhaust the budget: {report:?}");
    report.is_linearizable()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn kv_agrees_with_brute_force(history in prop::collection::vec(kv_op(), 0..10)) {
        let expected = brute_force(&history, None, &kv_step);
        let report = check_kv(&history, &Options::default()).expect("well-formed");
        prop_assert_eq!(verdict(&report), expected, "{:?}", report);
    }

    #[test]
    fn object_agrees_with_brute_force(
        history in prop::collection::vec(object_op(), 0..9),
        initial_known in any::<bool>(),
    ) {
        let max_version = 6;
        let step = |s: &Obj, op: &ObjectOperation| object_step(s, op, max_version);
        let (expected, initial) = if initial_known {
            (brute_force(&history, (1, Some("a".to_string())), &step), Some((1, "a".to_string())))
        } else {
            // Unknown initial state: any version up to the largest mentioned, any value (or one
            // never written).
            let values = [None, Some("a"), Some("b"), Some("c"), Some("d"), Some("e")];
            let any = (0..=max_version)
                .any(|v| values.iter().any(|val| brute_force(&history, (v, val.map(String::from)), &step)));
            (any, None)
        };
        let report = check_object(initial, &history, &Options::default()).expect("well-formed");
        prop_assert_eq!(verdict(&report), expected, "{:?}", report);
    }
}

#[test]
fn random_histories_are_a_mix() {
    // The generators above give both verdicts often enough for the comparison to mean something.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(kv_op(), 0..10);
    let mut linearizable = 0;
    for _ in 0..500 {
        let history = strategy.new_tree(&mut runner).expect("tree").current();
        if brute_force(&history, None, &kv_step) {
            linearizable += 1;
        }
    }
    assert!((100..400).contains(&linearizable), "{linearizable} of 500 linearizable");
}
