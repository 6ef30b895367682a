//! The sequential specification a history is checked against.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification: a state machine whose steps accept or refuse an (input, output)
/// pair. Implement it to check a history of another kind of object with [`crate::check`].
pub trait Model {
    /// What an operation asks.
    type Input;
    /// What an operation answers.
    type Output;
    /// The state. Equality and hashing must be exact: two configurations with equal states and
    /// equal sets of linearized operations are explored once.
    type State: Clone + Eq + Hash + Debug;
    /// Independent parts of the object (P-compositionality: each is checked on its own, e.g. the
    /// key of a key-value store); `()` if there is only one.
    type Partition: Ord + Clone + Debug;

    /// Which partition an operation belongs to.
    fn partition(&self, input: &Self::Input) -> Self::Partition;

    /// The state of a partition before any operation.
    fn init(&self, partition: &Self::Partition) -> Self::State;

    /// The state after a completed operation that was answered `output`, or `None` if it could
    /// not have been answered that way in `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> Option<Self::State>;

    /// The state after an ambiguous operation (answer unknown) takes effect in `state`, or `None`
    /// if it cannot change anything there (not linearizing it at all is then the same). When
    /// several states are possible, return one that stands for all of them (e.g. a version
    /// known only to be greater than the current one): the check must never refuse a history
    /// that one of them would allow.
    fn step_ambiguous(&self, state: &Self::State, input: &Self::Input) -> Option<Self::State>;

    /// Whether the operation never changes the state (an ambiguous one is then dropped).
    fn is_read_only(&self, input: &Self::Input) -> bool {
        let _ = input;
        false
    }

    /// Whether the operation is a blind write: it replaces the state whatever it was (a put, a
    /// delete). Precisely: for every state `s` and ambiguous blind operation `a` that can take
    /// effect in `s`, whatever a blind operation `y` (with its output, if completed) is allowed to
    /// do after `a` it is allowed to do from `s` directly, ending in a state that allows at least
    /// as much. The search then never linearizes a blind operation right after an ambiguous blind
    /// one (the ambiguous one would be overwritten unseen: leaving it out is never worse), which
    /// keeps ambiguous writes that never happened from multiplying the states explored.
    fn is_blind(&self, input: &Self::Input) -> bool {
        let _ = input;
        false
    }

    /// Whether two operations of the same partition have the same effect in every state (and
    /// the same [`Model::is_blind`]). Among ambiguous operations with the same effect that could
    /// all be linearized next, the search tries only the earliest invoked one not yet linearized:
    /// they are interchangeable from then on. The default, `false`, never merges anything.
    fn same_effect(&self, a: &Self::Input, b: &Self::Input) -> bool {
        let _ = (a, b);
        false
    }

    /// Whether `output` is of the kind `input` calls for (a mismatch is a
    /// [`crate::HistoryError::OutputMismatch`]).
    fn output_fits(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (input, output);
        true
    }
}
