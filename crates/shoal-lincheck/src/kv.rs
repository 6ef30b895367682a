//! A map of registers with etcd semantics.

use crate::{Model, Operation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// A key-value request. Keys and values are strings by default; any `Ord + Clone` key and
/// `Eq + Hash + Clone` value works (e.g. `Vec<u8>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvInput<K = String, V = String> {
    /// Set the key. Answered [`KvOutput::Ok`].
    Put {
        /// The key.
        key: K,
        /// The new value.
        value: V,
    },
    /// Read the key. Answered [`KvOutput::Get`].
    Get {
        /// The key.
        key: K,
    },
    /// Set the key to `new` if its value is `expected` (`None`: if it is absent), as an etcd txn
    /// comparing the value (or `create_revision == 0`). Answered [`KvOutput::Cas`].
    Cas {
        /// The key.
        key: K,
        /// The value compared with; `None` means "absent".
        expected: Option<V>,
        /// The value written if the comparison holds.
        new: V,
    },
    /// Remove the key (whether it exists or not). Answered [`KvOutput::Ok`].
    Delete {
        /// The key.
        key: K,
    },
}

impl<K, V> KvInput<K, V> {
    /// The key the request is about.
    pub fn key(&self) -> &K {
        match self {
            KvInput::Put { key, .. }
            | KvInput::Get { key }
            | KvInput::Cas { key, .. }
            | KvInput::Delete { key } => key,
        }
    }
}

/// A key-value answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOutput<V = String> {
    /// A `Put` or `Delete` was acknowledged (its revision is not modelled).
    Ok,
    /// What a `Get` read: the value, or `None` if the key was absent.
    Get(Option<V>),
    /// Whether a `Cas` wrote (`succeeded` of the txn).
    Cas(bool),
}

/// A recorded key-value operation.
pub type KvOperation<K = String, V = String> = Operation<KvInput<K, V>, KvOutput<V>>;

/// A key's state in [`KvModel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvState<V = String> {
    /// The key does not exist.
    Absent,
    /// The key holds this value.
    Present(V),
    /// The key holds a value that no operation of the history reads or compares with (only with
    /// [`KvModel::for_history`]): all such values behave the same, so they are one state.
    Unobserved,
}

impl<V: PartialEq> KvState<V> {
    /// Whether the key holds `value` (`None`: is absent).
    fn is(&self, value: Option<&V>) -> bool {
        match (self, value) {
            (KvState::Absent, None) => true,
            (KvState::Present(v), Some(w)) => v == w,
            _ => false,
        }
    }
}

/// A map of registers with etcd semantics, partitioned by key.
///
/// [`KvModel::for_history`] (what [`crate::check_kv`] uses) also learns which values the history
/// ever reads or compares with: every other value is [`KvState::Unobserved`], so ambiguous writes
/// of such values that never happened (the usual leftovers of timeouts) all have the same effect
/// and the search tries only one of them at a time ([`Model::same_effect`]).
#[derive(Clone)]
pub struct KvModel<K = String, V = String> {
    /// Values present before the history starts; other keys are absent.
    pub initial: BTreeMap<K, V>,
    /// Per key, the values the history reads or compares with (`None`: treat every value as
    /// observed).
    observed: Option<BTreeMap<K, HashSet<V>>>,
}

impl<K: Debug, V: Debug> Debug for KvModel<K, V> {
    /// The initial values, and how many values are observed per key (a hash set has no stable
    /// order to print).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let observed =
            self.observed.as_ref().map(|o| o.iter().map(|(k, seen)| (k, seen.len())).collect::<Vec<_>>());
        f.debug_struct("KvModel")
            .field("initial", &self.initial)
            .field("observed_per_key", &observed)
            .finish()
    }
}

impl<K: Ord, V> Default for KvModel<K, V> {
    fn default() -> Self {
        KvModel { initial: BTreeMap::new(), observed: None }
    }
}

impl<K: Ord, V> KvModel<K, V> {
    /// Every key initially absent.
    pub fn new() -> Self {
        Self::default()
    }

    /// These keys initially present with these values, the others absent.
    pub fn with_initial(initial: BTreeMap<K, V>) -> Self {
        KvModel { initial, observed: None }
    }
}

impl<K: Ord + Clone, V: Clone + Eq + Hash> KvModel<K, V> {
    /// The model for checking `history` (initial values as in `self`), knowing which values it
    /// observes: completed reads' results and every CAS's expected value.
    pub fn for_history(self, history: &[KvOperation<K, V>]) -> Self {
        let mut observed: BTreeMap<K, HashSet<V>> = BTreeMap::new();
        for op in history {
            let seen = match (&op.input, &op.output, op.complete) {
                (KvInput::Get { .. }, Some(KvOutput::Get(Some(v))), Some(_)) => v,
                (KvInput::Cas { expected: Some(v), .. }, _, _) => v,
                _ => continue,
            };
            observed.entry(op.input.key().clone()).or_default().insert(seen.clone());
        }
        KvModel { initial: self.initial, observed: Some(observed) }
    }

    fn is_observed(&self, key: &K, value: &V) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|observed| observed.get(key).is_some_and(|seen| seen.contains(value)))
    }

    /// The state holding `value` at `key`.
    fn holding(&self, key: &K, value: &V) -> KvState<V> {
        if self.is_observed(key, value) {
            KvState::Present(value.clone())
        } else {
            KvState::Unobserved
        }
    }

    /// Whether writing `a` and writing `b` at `key` give the same state.
    fn same_written(&self, key: &K, a: &V, b: &V) -> bool {
        a == b || (!self.is_observed(key, a) && !self.is_observed(key, b))
    }
}

impl<K, V> Model for KvModel<K, V>
where
    K: Ord + Clone + Debug,
    V: Clone + Eq + Hash + Debug,
{
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;
    type State = KvState<V>;
    type Partition = K;

    fn partition(&self, input: &KvInput<K, V>) -> K {
        input.key().clone()
    }

    fn init(&self, key: &K) -> KvState<V> {
        self.initial.get(key).map_or(KvState::Absent, |v| KvState::Present(v.clone()))
    }

    fn step(&self, state: &KvState<V>, input: &KvInput<K, V>, output: &KvOutput<V>) -> Option<KvState<V>> {
        match (input, output) {
            (KvInput::Put { key, value }, KvOutput::Ok) => Some(self.holding(key, value)),
            (KvInput::Get { .. }, KvOutput::Get(read)) => state.is(read.as_ref()).then(|| state.clone()),
            (KvInput::Cas { key, expected, new }, KvOutput::Cas(true)) => {
                state.is(expected.as_ref()).then(|| self.holding(key, new))
            }
            (KvInput::Cas { expected, .. }, KvOutput::Cas(false)) => {
                (!state.is(expected.as_ref())).then(|| state.clone())
            }
            (KvInput::Delete { .. }, KvOutput::Ok) => Some(KvState::Absent),
            _ => None,
        }
    }

    fn step_ambiguous(&self, state: &KvState<V>, input: &KvInput<K, V>) -> Option<KvState<V>> {
        let next = match input {
            KvInput::Put { key, value } => self.holding(key, value),
            KvInput::Get { .. } => return None,
            KvInput::Cas { key, expected, new } if state.is(expected.as_ref()) => self.holding(key, new),
            KvInput::Cas { .. } => return None,
            KvInput::Delete { .. } => KvState::Absent,
        };
        (next != *state).then_some(next)
    }

    fn is_read_only(&self, input: &KvInput<K, V>) -> bool {
        matches!(input, KvInput::Get { .. })
    }

    fn is_blind(&self, input: &KvInput<K, V>) -> bool {
        matches!(input, KvInput::Put { .. } | KvInput::Delete { .. })
    }

    fn same_effect(&self, a: &KvInput<K, V>, b: &KvInput<K, V>) -> bool {
        match (a, b) {
            (KvInput::Put { key, value }, KvInput::Put { key: k2, value: v2 }) => {
                key == k2 && self.same_written(key, value, v2)
            }
            (KvInput::Delete { key }, KvInput::Delete { key: k2 }) => key == k2,
            (KvInput::Cas { key, expected, new }, KvInput::Cas { key: k2, expected: e2, new: n2 }) => {
                key == k2 && expected == e2 && self.same_written(key, new, n2)
            }
            _ => false,
        }
    }

    fn output_fits(&self, input: &KvInput<K, V>, output: &KvOutput<V>) -> bool {
        matches!(
            (input, output),
            (KvInput::Put { .. } | KvInput::Delete { .. }, KvOutput::Ok)
                | (KvInput::Get { .. }, KvOutput::Get(_))
                | (KvInput::Cas { .. }, KvOutput::Cas(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &str) -> KvInput {
        KvInput::Put { key: "k".into(), value: v.into() }
    }

    fn cas(expected: Option<&str>, new: &str) -> KvInput {
        KvInput::Cas { key: "k".into(), expected: expected.map(Into::into), new: new.into() }
    }

    fn get() -> KvInput {
        KvInput::Get { key: "k".into() }
    }

    fn present(v: &str) -> KvState {
        KvState::Present(v.into())
    }

    fn read(v: Option<&str>) -> KvOutput {
        KvOutput::Get(v.map(Into::into))
    }

    #[test]
    fn steps() {
        let m = KvModel::<String, String>::new();
        let (absent, a) = (KvState::Absent, present("a"));
        assert_eq!(m.step(&absent, &put("a"), &KvOutput::Ok), Some(a.clone()));
        assert_eq!(m.step(&a, &get(), &read(Some("a"))), Some(a.clone()));
        assert_eq!(m.step(&a, &get(), &read(None)), None);
        assert_eq!(m.step(&absent, &get(), &read(None)), Some(absent.clone()));
        assert_eq!(m.step(&a, &cas(Some("a"), "b"), &KvOutput::Cas(true)), Some(present("b")));
        assert_eq!(m.step(&a, &cas(Some("a"), "b"), &KvOutput::Cas(false)), None);
        assert_eq!(m.step(&a, &cas(None, "b"), &KvOutput::Cas(false)), Some(a.clone()));
        assert_eq!(m.step(&absent, &cas(None, "b"), &KvOutput::Cas(true)), Some(present("b")));
        assert_eq!(m.step(&a, &KvInput::Delete { key: "k".into() }, &KvOutput::Ok), Some(KvState::Absent));
        assert_eq!(m.step(&a, &put("a"), &KvOutput::Cas(true)), None);
    }

    #[test]
    fn ambiguous_steps_skip_no_ops() {
        let m = KvModel::<String, String>::new();
        let a = present("a");
        assert_eq!(m.step_ambiguous(&KvState::Absent, &put("a")), Some(a.clone()));
        assert_eq!(m.step_ambiguous(&a, &put("a")), None);
        assert_eq!(m.step_ambiguous(&a, &cas(Some("a"), "b")), Some(present("b")));
        assert_eq!(m.step_ambiguous(&a, &cas(None, "b")), None);
        assert_eq!(m.step_ambiguous(&a, &KvInput::Delete { key: "k".into() }), Some(KvState::Absent));
        assert_eq!(m.step_ambiguous(&KvState::Absent, &KvInput::Delete { key: "k".into() }), None);
        assert_eq!(m.step_ambiguous(&a, &get()), None);
    }

    #[test]
    fn unobserved_values_are_one_state() {
        let history: Vec<KvOperation> = vec![
            Operation::completed(1, 0, 1, get(), read(Some("seen"))),
            Operation::completed(1, 2, 3, cas(Some("compared"), "x"), KvOutput::Cas(false)),
            Operation::ambiguous(1, 4, get()),
            Operation::completed(1, 5, 6, get(), read(Some("ambiguous reads do not count"))),
        ];
        let m = KvModel::new().for_history(&history);
        assert_eq!(m.step(&KvState::Absent, &put("seen"), &KvOutput::Ok), Some(present("seen")));
        assert_eq!(m.step(&KvState::Absent, &put("compared"), &KvOutput::Ok), Some(present("compared")));
        assert_eq!(m.step(&KvState::Absent, &put("other"), &KvOutput::Ok), Some(KvState::Unobserved));
        assert_eq!(m.step(&KvState::Absent, &put("x"), &KvOutput::Ok), Some(KvState::Unobserved));
        assert_eq!(m.step(&KvState::Unobserved, &get(), &read(Some("seen"))), None);
        assert_eq!(
            m.step(&KvState::Unobserved, &cas(Some("compared"), "y"), &KvOutput::Cas(false)),
            Some(KvState::Unobserved)
        );
        assert_eq!(m.step_ambiguous(&KvState::Unobserved, &put("other")), None, "no change");
        assert!(m.same_effect(&put("u1"), &put("u2")));
        assert!(!m.same_effect(&put("u1"), &put("seen")));
        assert!(m.same_effect(&cas(None, "u1"), &cas(None, "u2")));
        assert!(!m.same_effect(&cas(None, "u1"), &cas(Some("compared"), "u2")));
        assert!(!m.same_effect(&put("u1"), &KvInput::Delete { key: "k".into() }));
        assert!(!KvModel::<String, String>::new().same_effect(&put("u1"), &put("u2")));
    }

    #[test]
    fn output_kinds() {
        let m = KvModel::<String, String>::new();
        assert!(m.output_fits(&put("a"), &KvOutput::Ok));
        assert!(!m.output_fits(&put("a"), &KvOutput::Get(None)));
        assert!(m.output_fits(&cas(None, "a"), &KvOutput::Cas(false)));
        assert!(!m.output_fits(&get(), &KvOutput::Ok));
    }
}
