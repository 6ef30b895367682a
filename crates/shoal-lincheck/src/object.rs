//! One versioned object (a service spec with expected-version updates).

use crate::{Model, Operation};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A request on the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectInput<V = String> {
    /// Read version and value. Answered [`ObjectOutput::Read`].
    Read,
    /// Replace the value if the object is at `expected_version` (`None`: unconditionally).
    /// Answered [`ObjectOutput::Updated`] or [`ObjectOutput::Conflict`].
    Update {
        /// The version the update is conditional on.
        expected_version: Option<u64>,
        /// The new value.
        value: V,
    },
}

/// An answer from the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectOutput<V = String> {
    /// What a read saw.
    Read {
        /// The version.
        version: u64,
        /// The value.
        value: V,
    },
    /// The update took effect and the object is now at `version`.
    Updated {
        /// The new version (greater than the previous one, not necessarily by one).
        version: u64,
    },
    /// The update was refused: the object was not at the expected version.
    Conflict,
}

/// A recorded operation on the object.
pub type ObjectOperation<V = String> = Operation<ObjectInput<V>, ObjectOutput<V>>;

/// The object's version as far as the history tells.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    /// Exactly this.
    Known(u64),
    /// Not observed yet (after an ambiguous update, or initially when the initial state is not
    /// given): at least `min` and none of `excluded` (versions a conflict showed it was not).
    Unknown {
        /// The least possible version.
        min: u64,
        /// Versions ruled out, ascending, all `>= min`.
        excluded: Vec<u64>,
    },
}

/// The object's value as far as the history tells.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectValue<V = String> {
    /// Not observed yet: the initial value, when the initial state is not given.
    Unknown,
    /// Exactly this.
    Known(V),
    /// A value no completed read of the history returns (only with
    /// [`ObjectModel::for_history`]): all such values behave the same, so they are one state.
    Unobserved,
}

/// The object's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectState<V = String> {
    /// The version.
    pub version: Version,
    /// The value.
    pub value: ObjectValue<V>,
}

/// One versioned object: reads see the version and value of the last update, an update expecting
/// version `e` succeeds exactly when the object is at `e`, and a successful update moves the
/// version up (by any amount: versions may come from a Raft index).
///
/// Every update of the object must be in the history (completed or ambiguous). Then a version
/// that some completed update returned can only be reached by that update: versions strictly
/// increase along a linearization, so an ambiguous update (whose version is unknown) never comes
/// out at such a version. [`ObjectModel::for_history`] takes these versions from the history and
/// excludes them from unknown versions, which keeps ambiguous updates that never happened from
/// explaining reads and updates they cannot explain; it also learns which values completed reads
/// return, so that ambiguous updates of values never read all have the same effect
/// ([`ObjectValue::Unobserved`], [`Model::same_effect`]). [`crate::check_object`] uses it.
#[derive(Clone)]
pub struct ObjectModel<V = String> {
    /// The state before the history (version, value); `None` if unknown.
    pub initial: Option<(u64, V)>,
    /// Versions returned by completed updates, as ascending disjoint inclusive ranges.
    produced: Vec<(u64, u64)>,
    /// Values returned by completed reads (`None`: treat every value as observed).
    observed: Option<HashSet<V>>,
}

impl<V: Debug> Debug for ObjectModel<V> {
    /// The initial state, the versions completed updates returned and how many values completed
    /// reads returned (a hash set has no stable order to print).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectModel")
            .field("initial", &self.initial)
            .field("produced", &self.produced)
            .field("observed_values", &self.observed.as_ref().map(HashSet::len))
            .finish()
    }
}

impl<V> ObjectModel<V> {
    /// The model, starting at `initial` (version, value), or unknown. Prefer
    /// [`ObjectModel::for_history`], which prunes much more when updates are ambiguous.
    pub fn new(initial: Option<(u64, V)>) -> Self {
        ObjectModel { initial, produced: Vec::new(), observed: None }
    }

    fn is_produced(&self, v: u64) -> bool {
        let at = self.produced.partition_point(|(_, end)| *end < v);
        self.produced.get(at).is_some_and(|(start, _)| *start <= v)
    }

    /// The least version the object may be at (`None`: none is possible).
    fn lowest(&self, version: &Version) -> Option<u64> {
        match version {
            Version::Known(x) => Some(*x),
            Version::Unknown { min, excluded } => {
                let mut v = *min;
                loop {
                    let at = self.produced.partition_point(|(_, end)| *end < v);
                    if let Some(&(_, end)) = self.produced.get(at).filter(|(start, _)| *start <= v) {
                        v = end.checked_add(1)?;
                    } else if excluded.binary_search(&v).is_ok() {
                        v = v.checked_add(1)?;
                    } else {
                        return Some(v);
                    }
                }
            }
        }
    }

    /// Whether the object may be at version `v`.
    fn could_be(&self, version: &Version, v: u64) -> bool {
        match version {
            Version::Known(x) => *x == v,
            Version::Unknown { min, excluded } => {
                v >= *min && excluded.binary_search(&v).is_err() && !self.is_produced(v)
            }
        }
    }

    /// After an update whose new version is unknown, from an object at least at `from`.
    fn above(from: u64) -> Version {
        Version::Unknown { min: from.saturating_add(1), excluded: Vec::new() }
    }
}

impl<V: Clone + Eq + Hash> ObjectModel<V> {
    /// The model for checking `history`: knows which versions its completed updates returned and
    /// which values its completed reads returned.
    pub fn for_history(initial: Option<(u64, V)>, history: &[ObjectOperation<V>]) -> Self {
        let mut versions = Vec::new();
        let mut observed = HashSet::new();
        for op in history.iter().filter(|op| op.complete.is_some()) {
            match &op.output {
                Some(ObjectOutput::Updated { version }) => versions.push(*version),
                Some(ObjectOutput::Read { value, .. }) => {
                    observed.insert(value.clone());
                }
                _ => {}
            }
        }
        versions.sort_unstable();
        versions.dedup();
        let mut produced: Vec<(u64, u64)> = Vec::new();
        for v in versions {
            match produced.last_mut() {
                Some((_, end)) if end.checked_add(1) == Some(v) => *end = v,
                _ => produced.push((v, v)),
            }
        }
        ObjectModel { initial, produced, observed: Some(observed) }
    }

    fn is_observed(&self, value: &V) -> bool {
        self.observed.as_ref().is_none_or(|observed| observed.contains(value))
    }

    /// The state's value after writing `value`.
    fn holding(&self, value: &V) -> ObjectValue<V> {
        if self.is_observed(value) {
            ObjectValue::Known(value.clone())
        } else {
            ObjectValue::Unobserved
        }
    }
}

impl<V> Model for ObjectModel<V>
where
    V: Clone + Eq + Hash + Debug,
{
    type Input = ObjectInput<V>;
    type Output = ObjectOutput<V>;
    type State = ObjectState<V>;
    type Partition = ();

    fn partition(&self, _input: &ObjectInput<V>) {}

    fn init(&self, _partition: &()) -> ObjectState<V> {
        match &self.initial {
            Some((version, value)) => {
                ObjectState { version: Version::Known(*version), value: ObjectValue::Known(value.clone()) }
            }
            None => ObjectState {
                version: Version::Unknown { min: 0, excluded: Vec::new() },
                value: ObjectValue::Unknown,
            },
        }
    }

    fn step(
        &self,
        state: &ObjectState<V>,
        input: &ObjectInput<V>,
        output: &ObjectOutput<V>,
    ) -> Option<ObjectState<V>> {
        let after = |version: u64, value: &V| ObjectState {
            version: Version::Known(version),
            value: self.holding(value),
        };
        match (input, output) {
            (ObjectInput::Read, ObjectOutput::Read { version, value }) => {
                let value_fits = match &state.value {
                    ObjectValue::Unknown => true,
                    ObjectValue::Known(v) => v == value,
                    ObjectValue::Unobserved => false,
                };
                (value_fits && self.could_be(&state.version, *version)).then(|| ObjectState {
                    version: Version::Known(*version),
                    value: ObjectValue::Known(value.clone()),
                })
            }
            (ObjectInput::Update { expected_version: Some(e), value }, ObjectOutput::Updated { version }) => {
                (self.could_be(&state.version, *e) && version > e).then(|| after(*version, value))
            }
            (ObjectInput::Update { expected_version: None, value }, ObjectOutput::Updated { version }) => {
                self.lowest(&state.version).is_some_and(|low| low < *version).then(|| after(*version, value))
            }
            (ObjectInput::Update { expected_version: Some(e), .. }, ObjectOutput::Conflict) => {
                match &state.version {
                    Version::Known(x) => (x != e).then(|| state.clone()),
                    Version::Unknown { min, excluded } => {
                        let mut next = state.clone();
                        if self.could_be(&state.version, *e) {
                            let mut excluded = excluded.clone();
                            if let Err(at) = excluded.binary_search(e) {
                                excluded.insert(at, *e);
                            }
                            next.version = Version::Unknown { min: *min, excluded };
                        }
                        Some(next)
                    }
                }
            }
            _ => None,
        }
    }

    fn step_ambiguous(&self, state: &ObjectState<V>, input: &ObjectInput<V>) -> Option<ObjectState<V>> {
        match input {
            ObjectInput::Read => None,
            ObjectInput::Update { expected_version: Some(e), value } => self
                .could_be(&state.version, *e)
                .then(|| ObjectState { version: Self::above(*e), value: self.holding(value) }),
            ObjectInput::Update { expected_version: None, value } => {
                let low = self.lowest(&state.version)?;
                Some(ObjectState { version: Self::above(low), value: self.holding(value) })
            }
        }
    }

    fn is_read_only(&self, input: &ObjectInput<V>) -> bool {
        matches!(input, ObjectInput::Read)
    }

    /// Unconditional updates: the new version only has to exceed the current one, and after an
    /// ambiguous one the next unconditional update is allowed at least as much as without it.
    fn is_blind(&self, input: &ObjectInput<V>) -> bool {
        matches!(input, ObjectInput::Update { expected_version: None, .. })
    }

    fn same_effect(&self, a: &ObjectInput<V>, b: &ObjectInput<V>) -> bool {
        match (a, b) {
            (
                ObjectInput::Update { expected_version, value },
                ObjectInput::Update { expected_version: e2, value: v2 },
            ) => {
                expected_version == e2 && (value == v2 || (!self.is_observed(value) && !self.is_observed(v2)))
            }
            _ => false,
        }
    }

    fn output_fits(&self, input: &ObjectInput<V>, output: &ObjectOutput<V>) -> bool {
        matches!(
            (input, output),
            (ObjectInput::Read, ObjectOutput::Read { .. })
                | (ObjectInput::Update { .. }, ObjectOutput::Updated { .. } | ObjectOutput::Conflict)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(version: u64, value: &str) -> ObjectState {
        ObjectState { version: Version::Known(version), value: ObjectValue::Known(value.into()) }
    }

    fn unknown(min: u64, excluded: &[u64], value: Option<&str>) -> ObjectState {
        let value = value.map_or(ObjectValue::Unknown, |v| ObjectValue::Known(v.into()));
        ObjectState { version: Version::Unknown { min, excluded: excluded.to_vec() }, value }
    }

    fn update(expected: Option<u64>, value: &str) -> ObjectInput {
        ObjectInput::Update { expected_version: expected, value: value.into() }
    }

    fn read(version: u64, value: &str) -> ObjectOutput {
        ObjectOutput::Read { version, value: value.into() }
    }

    #[test]
    fn known_versions() {
        let m = ObjectModel::new(Some((5, "a".to_string())));
        let s = m.init(&());
        assert_eq!(s, known(5, "a"));
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(5, "a")), Some(s.clone()));
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(5, "b")), None);
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(6, "a")), None);
        // Versions jump: 5 -> 17 is fine, 5 -> 5 or 5 -> 3 is not.
        assert_eq!(
            m.step(&s, &update(Some(5), "b"), &ObjectOutput::Updated { version: 17 }),
            Some(known(17, "b"))
        );
        assert_eq!(m.step(&s, &update(Some(5), "b"), &ObjectOutput::Updated { version: 5 }), None);
        assert_eq!(m.step(&s, &update(Some(4), "b"), &ObjectOutput::Updated { version: 17 }), None);
        assert_eq!(m.step(&s, &update(Some(4), "b"), &ObjectOutput::Conflict), Some(s.clone()));
        assert_eq!(m.step(&s, &update(Some(5), "b"), &ObjectOutput::Conflict), None);
        assert_eq!(
            m.step(&s, &update(None, "b"), &ObjectOutput::Updated { version: 6 }),
            Some(known(6, "b"))
        );
        assert_eq!(m.step(&s, &update(None, "b"), &ObjectOutput::Updated { version: 5 }), None);
        assert_eq!(m.step(&s, &update(None, "b"), &ObjectOutput::Conflict), None);
    }

    #[test]
    fn ambiguous_updates_leave_the_version_unknown() {
        let m = ObjectModel::new(Some((5, "a".to_string())));
        let s = m.init(&());
        assert_eq!(m.step_ambiguous(&s, &update(Some(4), "b")), None);
        let after = m.step_ambiguous(&s, &update(Some(5), "b")).expect("can take effect");
        assert_eq!(after, unknown(6, &[], Some("b")));
        assert_eq!(m.step_ambiguous(&s, &update(None, "b")), Some(unknown(6, &[], Some("b"))));
        // A read reveals the version (any above 5), with the value written.
        assert_eq!(m.step(&after, &ObjectInput::Read, &read(9, "b")), Some(known(9, "b")));
        assert_eq!(m.step(&after, &ObjectInput::Read, &read(5, "b")), None);
        assert_eq!(m.step(&after, &ObjectInput::Read, &read(9, "a")), None);
        // An update expecting a version it may be at.
        assert_eq!(
            m.step(&after, &update(Some(7), "c"), &ObjectOutput::Updated { version: 8 }),
            Some(known(8, "c"))
        );
        assert_eq!(m.step(&after, &update(Some(5), "c"), &ObjectOutput::Updated { version: 8 }), None);
        assert_eq!(m.step(&after, &update(Some(7), "c"), &ObjectOutput::Updated { version: 7 }), None);
        assert_eq!(
            m.step(&after, &update(None, "c"), &ObjectOutput::Updated { version: 7 }),
            Some(known(7, "c"))
        );
        assert_eq!(m.step(&after, &update(None, "c"), &ObjectOutput::Updated { version: 6 }), None);
    }

    #[test]
    fn conflicts_narrow_an_unknown_version() {
        let m = ObjectModel::new(Some((5, "a".to_string())));
        let s = unknown(6, &[], Some("b"));
        let s = m.step(&s, &update(Some(7), "x"), &ObjectOutput::Conflict).expect("not at 7");
        assert_eq!(s, unknown(6, &[7], Some("b")));
        // A conflict on a version it cannot be at says nothing new.
        assert_eq!(m.step(&s, &update(Some(3), "x"), &ObjectOutput::Conflict), Some(s.clone()));
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(7, "b")), None);
        assert_eq!(m.step(&s, &update(Some(7), "c"), &ObjectOutput::Updated { version: 9 }), None);
        assert_eq!(m.step_ambiguous(&s, &update(Some(7), "c")), None);
        let s = m.step(&s, &update(Some(6), "x"), &ObjectOutput::Conflict).expect("not at 6");
        assert_eq!(s, unknown(6, &[6, 7], Some("b")));
        // Not 6 or 7, so an unconditional update to 8 is impossible, to 9 possible.
        assert_eq!(m.step(&s, &update(None, "c"), &ObjectOutput::Updated { version: 8 }), None);
        assert_eq!(
            m.step(&s, &update(None, "c"), &ObjectOutput::Updated { version: 9 }),
            Some(known(9, "c"))
        );
    }

    #[test]
    fn unknown_versions_exclude_those_completed_updates_returned() {
        let history = vec![
            Operation::completed(1, 0, 1, update(Some(5), "b"), ObjectOutput::Updated { version: 7 }),
            Operation::completed(1, 2, 3, update(Some(7), "c"), ObjectOutput::Updated { version: 8 }),
            Operation::completed(1, 4, 5, update(Some(8), "d"), ObjectOutput::Conflict),
            Operation::ambiguous(1, 6, update(Some(8), "e")),
            Operation::completed(1, 7, 8, update(Some(20), "f"), ObjectOutput::Updated { version: 30 }),
            Operation::completed(1, 9, 10, ObjectInput::Read, read(30, "x")),
            Operation::completed(1, 9, 10, ObjectInput::Read, read(30, "y")),
        ];
        let m = ObjectModel::for_history(Some((5, "a".to_string())), &history);
        assert_eq!(m.produced, vec![(7, 8), (30, 30)]);
        let s = unknown(6, &[], Some("x"));
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(7, "x")), None);
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(9, "x")), Some(known(9, "x")));
        assert_eq!(m.step(&s, &update(Some(8), "y"), &ObjectOutput::Updated { version: 40 }), None);
        assert_eq!(
            m.step(&s, &update(Some(6), "y"), &ObjectOutput::Updated { version: 40 }),
            Some(known(40, "y"))
        );
        // Lowest possible: 6; with 6 excluded, 9 (7 and 8 are taken).
        assert_eq!(
            m.step(&s, &update(None, "y"), &ObjectOutput::Updated { version: 7 }),
            Some(known(7, "y"))
        );
        let s = m.step(&s, &update(Some(6), "y"), &ObjectOutput::Conflict).expect("not at 6");
        assert_eq!(s, unknown(6, &[6], Some("x")));
        assert_eq!(m.step(&s, &update(None, "y"), &ObjectOutput::Updated { version: 9 }), None);
        assert_eq!(
            m.step(&s, &update(None, "y"), &ObjectOutput::Updated { version: 10 }),
            Some(known(10, "y"))
        );
        assert_eq!(m.step_ambiguous(&s, &update(None, "y")), Some(unknown(10, &[], Some("y"))));
        // A conflict on a version some update returned says nothing new.
        assert_eq!(m.step(&s, &update(Some(7), "y"), &ObjectOutput::Conflict), Some(s.clone()));
        // Values no read returns are all the same.
        let unobserved = ObjectState { version: Version::Known(40), value: ObjectValue::Unobserved };
        assert_eq!(
            m.step(&s, &update(Some(9), "z"), &ObjectOutput::Updated { version: 40 }),
            Some(unobserved.clone())
        );
        assert_eq!(m.step(&unobserved, &ObjectInput::Read, &read(40, "z")), None);
        assert!(m.same_effect(&update(Some(6), "z"), &update(Some(6), "w")));
        assert!(!m.same_effect(&update(Some(6), "z"), &update(Some(7), "w")));
        assert!(!m.same_effect(&update(Some(6), "z"), &update(Some(6), "x")));
        assert!(!m.same_effect(&update(None, "z"), &update(Some(6), "w")));
        assert!(!ObjectModel::new(None).same_effect(&update(Some(6), "z"), &update(Some(6), "w")));
    }

    #[test]
    fn unknown_initial_state() {
        let m = ObjectModel::<String>::new(None);
        let s = m.init(&());
        assert_eq!(s, unknown(0, &[], None));
        assert_eq!(m.step(&s, &ObjectInput::Read, &read(42, "z")), Some(known(42, "z")));
        assert_eq!(
            m.step(&s, &update(Some(42), "b"), &ObjectOutput::Updated { version: 50 }),
            Some(known(50, "b"))
        );
    }
}
