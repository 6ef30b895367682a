//! A linearizability checker for histories recorded by Shoal's chaos tests: clients send
//! operations to random managers while nodes are killed, paused and partitioned, every operation
//! is recorded with its invocation time, its completion time (or none) and its result, and this
//! crate decides whether some total order of the operations explains every result while
//! respecting real time (an operation that completed before another was invoked comes first).
//!
//! Pure library: no I/O, no clocks, no threads, no hash-order-dependent output. The same
//! history and options always give the same [`Report`].
//!
//! # Recording a history
//!
//! One [`Operation`] per request a client sent:
//!
//! * `client`: who sent it (informational: a client may even have overlapping operations);
//! * `invoke`: when it was sent, and `complete`: when its response arrived, both from one
//!   monotonic clock shared by every client of the test (nanoseconds, e.g. elapsed since the
//!   test started). Equal times count as concurrent;
//! * `input`: what was asked, and `output`: what was answered.
//!
//! An operation whose outcome is unknown (timed out, connection lost, the server crashed: it may
//! or may not have taken effect, now or later) is **ambiguous**: `complete: None` and
//! `output: None`. It may be linearized at any point after its invocation, or never (its
//! completion is treated as +∞, as porcupine does). An ambiguous read constrains nothing and is
//! dropped. An operation that definitely failed without taking effect (refused before being
//! proposed, a validation error) should not be recorded at all.
//!
//! [`History`] helps record as the test runs: [`History::invoke`] when a request is sent,
//! [`History::complete`] when its answer arrives; what is never completed stays ambiguous. A
//! history (de)serializes with serde, so a failing run can be written to a JSON file and checked
//! again later.
//!
//! ```
//! use shoal_lincheck::{check_kv, History, KvInput, KvOutput, Options};
//!
//! let mut h: History<KvInput, KvOutput> = History::new();
//! let put = h.invoke(1, 0, KvInput::Put { key: "k".into(), value: "a".into() });
//! let get = h.invoke(2, 5, KvInput::Get { key: "k".into() });
//! h.complete(put, 10, KvOutput::Ok);
//! h.complete(get, 12, KvOutput::Get(Some("a".into())));
//! // A put whose answer never came: it may or may not have happened.
//! h.invoke(3, 20, KvInput::Put { key: "k".into(), value: "b".into() });
//!
//! let report = check_kv(h.operations(), &Options::default()).expect("well-formed history");
//! assert!(report.is_linearizable(), "{report:?}");
//! ```
//!
//! # Models
//!
//! * [`KvModel`] (via [`check_kv`]): a map of registers with etcd semantics, what Shoal's
//!   key-value store offers: `Put`, `Get`, `Cas` (a txn comparing the current value, `None`
//!   meaning "absent") and `Delete`. Revisions are not modelled (they are global across keys and
//!   would defeat partitioning). The history is partitioned by key and each key is checked on its
//!   own (linearizability is compositional, Herlihy & Wing's locality).
//! * [`ObjectModel`] (via [`check_object`]): one versioned object, like a service spec updated
//!   with an expected version. Versions come from the system (e.g. a Raft index): they must only
//!   increase, not by one; a successful update must have expected the version the object had at
//!   its linearization point and must return a greater one; a read returns the version and value
//!   of the last update before it. After an ambiguous update the new version is unknown: the
//!   model tracks it symbolically ([`Version::Unknown`]) until a read or an update reveals it;
//!   it cannot be any version a completed update returned (versions strictly increase along a
//!   linearization, so each is reached once), which keeps ambiguous updates that never happened
//!   cheap. Every update of the object must be in the history.
//! * Anything else: implement [`Model`] and call [`check`].
//!
//! # Result
//!
//! [`check`] returns a [`Report`]: an [`Outcome`] (`Linearizable`, `NotLinearizable` with a
//! [`Violation`] naming the partition, the longest linearization found, the state after it and
//! the operations none of which could come next, or `Unknown` when the search budget in
//! [`Options`] ran out: a count of search states, never a clock, so a test never hangs) and
//! [`Stats`] (operations, ambiguous operations, states explored). A malformed history (completed
//! before invoked, a completion without output, an output of the wrong kind) is a
//! [`HistoryError`]. [`Violation::describe`] renders the explanation for a test failure message.
//!
//! # Algorithm
//!
//! Wing & Gong's search with Lowe's memoization, as in Knossos and porcupine: the operations of a
//! partition are call and return entries in a doubly linked list sorted by time; a depth-first
//! search linearizes an operation whose call precedes the first pending return, if the model
//! accepts it, and backtracks when the first pending return is reached; a cache of
//! (set of linearized operations, model state) configurations prunes every one already explored.
//!
//! Ambiguous operations have no return entry and sit in a second list, by invocation. The search
//! tries the completed candidates first and the ambiguous ones after, and succeeds as soon as
//! every completed operation is linearized (the ambiguous ones left over never happened). An
//! ambiguous operation stays a candidate forever, so without care every subset of the ambiguous
//! writes that never happened would be explored again at every backtrack. Four rules prevent
//! that, each of which only drops searches that another one covers:
//!
//! * an ambiguous operation that would not change the state is not linearized (leaving it out
//!   is the same);
//! * a blind write (a put, a delete, an unconditional update: [`Model::is_blind`]) is not
//!   linearized right after an ambiguous blind write (which it would overwrite unseen);
//! * of several ambiguous operations with the same effect ([`Model::same_effect`]), only the
//!   earliest invoked one not yet linearized is tried. The built-in models make the writes of
//!   values the history never reads have the same effect ([`KvState::Unobserved`],
//!   [`ObjectValue::Unobserved`]), which is what ambiguous writes that never happened usually are;
//! * a configuration is skipped if one with the same completed operations, the same state and a
//!   subset of its ambiguous operations was explored (the extra ambiguous operations are only
//!   choices it no longer has: none is ever required).
//!
//! The completed part of the linearized set is cached compactly (its leading full words are
//! counted, not stored), so long single-partition histories stay small in memory.
//!
//! # Cost
//!
//! Checking a linearizable history costs a few states per operation when partitions are small
//! (10,000 operations over 50 keys from 10 clients, 3% ambiguous: about 10,000 states, a few
//! milliseconds in release) and more on one hot key with many concurrent clients (tens of states
//! per operation). Proving a history *not* linearizable means exploring every configuration of
//! its partition up to the violation, which on a long hot partition can exceed the budget: the
//! answer is then `Unknown`. The search is exponential in the worst case; the budget bounds it.

mod kv;
mod model;
mod object;
mod search;

pub use kv::{KvInput, KvModel, KvOperation, KvOutput, KvState};
pub use model::Model;
pub use object::{
    ObjectInput, ObjectModel, ObjectOperation, ObjectOutput, ObjectState, ObjectValue, Version,
};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};

/// One request a client sent, and what came of it. See the crate documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>, O: Deserialize<'de>"))]
pub struct Operation<I, O> {
    /// Who sent it (informational).
    pub client: u64,
    /// When it was sent (monotonic nanoseconds, one clock for the whole test).
    pub invoke: u64,
    /// When the answer arrived; `None` for an ambiguous operation (timed out, connection lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered: `Some` exactly when `complete` is (ignored when `complete` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// A completed operation.
    pub fn completed(client: u64, invoke: u64, complete: u64, input: I, output: O) -> Self {
        Operation { client, invoke, complete: Some(complete), input, output: Some(output) }
    }

    /// An ambiguous operation: no answer came, it may or may not have taken effect.
    pub fn ambiguous(client: u64, invoke: u64, input: I) -> Self {
        Operation { client, invoke, complete: None, input, output: None }
    }

    /// Whether the outcome is unknown (`complete` is `None`).
    pub fn is_ambiguous(&self) -> bool {
        self.complete.is_none()
    }
}

/// Identifies an operation recorded in a [`History`]: its index in [`History::operations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

/// A history being recorded: operations in invocation order. Serializes as the bare list of
/// [`Operation`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History<I, O> {
    operations: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { operations: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` sent `input` at `time`; the operation is ambiguous until
    /// [`History::complete`] is called for it.
    pub fn invoke(&mut self, client: u64, time: u64, input: I) -> OpId {
        self.operations.push(Operation::ambiguous(client, time, input));
        OpId(self.operations.len() - 1)
    }

    /// Records the answer to an operation.
    ///
    /// # Panics
    ///
    /// If `id` does not come from this history.
    pub fn complete(&mut self, id: OpId, time: u64, output: O) {
        let op = &mut self.operations[id.0];
        op.complete = Some(time);
        op.output = Some(output);
    }

    /// Adds an already complete (or ambiguous) operation.
    pub fn push(&mut self, operation: Operation<I, O>) -> OpId {
        self.operations.push(operation);
        OpId(self.operations.len() - 1)
    }

    /// The operations recorded so far.
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.operations
    }

    /// The operations, by value.
    pub fn into_operations(self) -> Vec<Operation<I, O>> {
        self.operations
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

impl<I, O> From<Vec<Operation<I, O>>> for History<I, O> {
    fn from(operations: Vec<Operation<I, O>>) -> Self {
        History { operations }
    }
}

/// Search budget. A state is one (set of linearized operations, model state) configuration the
/// search enters; each costs memory (the cache keeps them until its partition is done) and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// States for the whole check; partitions not reached when it runs out are `Unknown`.
    pub max_states: u64,
    /// States for any one partition, so a hard key does not starve the others.
    pub max_states_per_partition: u64,
}

impl Default for Options {
    /// 10,000,000 states in all, 1,000,000 per partition (a few hundred MB at most; a
    /// linearizable history usually needs little more than one state per operation).
    fn default() -> Self {
        Options { max_states: 10_000_000, max_states_per_partition: 1_000_000 }
    }
}

impl Options {
    /// The same budget for the whole check and for each partition.
    pub fn with_max_states(max_states: u64) -> Self {
        Options { max_states, max_states_per_partition: max_states }
    }
}

/// What [`check`] found, with counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<P> {
    /// The verdict.
    pub outcome: Outcome<P>,
    /// Counters.
    pub stats: Stats,
}

impl<P> Report<P> {
    /// Whether the history is linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self.outcome, Outcome::Linearizable)
    }

    /// The violation, if the history is not linearizable.
    pub fn violation(&self) -> Option<&Violation<P>> {
        match &self.outcome {
            Outcome::NotLinearizable(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the budget ran out before a verdict.
    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown { .. })
    }
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<P> {
    /// Every partition has a linearization.
    Linearizable,
    /// This partition (the first in order that has none) has no linearization.
    NotLinearizable(Box<Violation<P>>),
    /// No violation was found, but the budget ran out in (or before) these partitions.
    Unknown {
        /// The partitions left undecided, in order.
        partitions: Vec<P>,
    },
}

/// Why a partition is not linearizable: the deepest point the search reached, as indices into
/// the checked history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation<P> {
    /// The partition (the key, for [`KvModel`]).
    pub partition: P,
    /// The longest linearization found (of this partition's operations), in order.
    pub linearized: Vec<usize>,
    /// The model state after it (`Debug` rendering; with the built-in models, `Unobserved`
    /// stands for a value the history never reads).
    pub state: String,
    /// The completed operation whose completion was reached without it being placed: it had to
    /// be linearized next, or after another candidate, and no choice worked.
    pub blocked: usize,
    /// Every operation that could have come next (invoked before `blocked` completed and not yet
    /// linearized, `blocked` included, ambiguous ones too), in index order. From the state above,
    /// none of them leads to a linearization.
    pub candidates: Vec<usize>,
}

impl<P: Debug> Violation<P> {
    /// A human-readable explanation (the last operations of the linearization, the state, the
    /// candidates), for a test failure message.
    pub fn describe<I: Debug, O: Debug>(&self, history: &[Operation<I, O>]) -> String {
        const TAIL: usize = 10;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "partition {:?} is not linearizable: {} operations linearized, then none of {} candidates fits",
            self.partition,
            self.linearized.len(),
            self.candidates.len()
        );
        let skip = self.linearized.len().saturating_sub(TAIL);
        if skip > 0 {
            let _ = writeln!(s, "  ... {skip} earlier operations");
        }
        for &i in &self.linearized[skip..] {
            let _ = writeln!(s, "  linearized #{i}: {}", render(history.get(i)));
        }
        let _ = writeln!(s, "  state: {}", self.state);
        for &i in &self.candidates {
            let mark = if i == self.blocked { " (blocked: completed without being placed)" } else { "" };
            let _ = writeln!(s, "  candidate #{i}{mark}: {}", render(history.get(i)));
        }
        s
    }
}

fn render<I: Debug, O: Debug>(op: Option<&Operation<I, O>>) -> String {
    match op {
        None => "<not in this history>".to_string(),
        Some(op) => {
            let end = op.complete.map_or_else(|| "?".to_string(), |t| t.to_string());
            let out = match (&op.complete, &op.output) {
                (Some(_), Some(o)) => format!("{o:?}"),
                _ => "ambiguous".to_string(),
            };
            format!("client {} [{}, {}] {:?} -> {}", op.client, op.invoke, end, op.input, out)
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Operations in the history.
    pub operations: usize,
    /// Of which ambiguous.
    pub ambiguous: usize,
    /// Ambiguous read-only operations dropped (they constrain nothing).
    pub dropped: usize,
    /// Partitions.
    pub partitions: usize,
    /// Partitions checked to a verdict.
    pub partitions_checked: usize,
    /// Search states entered, all partitions together.
    pub states_explored: u64,
}

/// A malformed history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HistoryError {
    /// `complete < invoke`.
    #[error("operation #{index} completes ({complete}) before it is invoked ({invoke})")]
    CompletesBeforeInvoke {
        /// Index in the history.
        index: usize,
        /// Its invocation time.
        invoke: u64,
        /// Its completion time.
        complete: u64,
    },
    /// `complete` is set but `output` is not (an ambiguous operation must have `complete: None`).
    #[error(
        "operation #{index} is complete but has no output (an ambiguous operation has no completion time)"
    )]
    MissingOutput {
        /// Index in the history.
        index: usize,
    },
    /// The output is not of the kind the input calls for (e.g. a `Get` answered like a `Cas`).
    #[error("operation #{index} has an output of the wrong kind for its input")]
    OutputMismatch {
        /// Index in the history.
        index: usize,
    },
}

/// Checks `history` against `model`: partitions it, drops ambiguous reads, and searches each
/// partition in order for a linearization, stopping at the first that has none.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    options: &Options,
) -> Result<Report<M::Partition>, HistoryError> {
    let mut stats = Stats { operations: history.len(), ..Stats::default() };
    let mut partitions: BTreeMap<M::Partition, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        match (op.complete, &op.output) {
            (Some(complete), _) if complete < op.invoke => {
                return Err(HistoryError::CompletesBeforeInvoke { index, invoke: op.invoke, complete });
            }
            (Some(_), None) => return Err(HistoryError::MissingOutput { index }),
            (Some(_), Some(output)) if !model.output_fits(&op.input, output) => {
                return Err(HistoryError::OutputMismatch { index });
            }
            _ => {}
        }
        let partition = model.partition(&op.input);
        let ops = partitions.entry(partition).or_default();
        if op.is_ambiguous() {
            stats.ambiguous += 1;
            if model.is_read_only(&op.input) {
                stats.dropped += 1;
                continue;
            }
        }
        ops.push(index);
    }
    stats.partitions = partitions.len();

    let mut undecided = Vec::new();
    for (partition, ops) in partitions {
        let left = options.max_states.saturating_sub(stats.states_explored);
        let budget = left.min(options.max_states_per_partition);
        let (result, states) = search::check_partition(model, &partition, history, &ops, budget);
        stats.states_explored += states;
        match result {
            search::PartitionResult::Linearizable => stats.partitions_checked += 1,
            search::PartitionResult::Exhausted => undecided.push(partition),
            search::PartitionResult::NotLinearizable(dead_end) => {
                stats.partitions_checked += 1;
                let violation = Violation {
                    partition,
                    linearized: dead_end.linearized,
                    state: dead_end.state,
                    blocked: dead_end.blocked,
                    candidates: dead_end.candidates,
                };
                return Ok(Report { outcome: Outcome::NotLinearizable(Box::new(violation)), stats });
            }
        }
    }
    let outcome =
        if undecided.is_empty() { Outcome::Linearizable } else { Outcome::Unknown { partitions: undecided } };
    Ok(Report { outcome, stats })
}

/// [`check`] with [`KvModel::for_history`] (every key initially absent), partitioned by key.
pub fn check_kv<K, V>(history: &[KvOperation<K, V>], options: &Options) -> Result<Report<K>, HistoryError>
where
    K: Ord + Clone + Debug,
    V: Clone + Eq + std::hash::Hash + Debug,
{
    check(&KvModel::new().for_history(history), history, options)
}

/// [`check`] with [`ObjectModel::for_history`]: one object, initially at `initial` (version and
/// value), or in an unknown state if `None` (the first observation then fixes it). Every update of
/// the object must be in `history`.
pub fn check_object<V>(
    initial: Option<(u64, V)>,
    history: &[ObjectOperation<V>],
    options: &Options,
) -> Result<Report<()>, HistoryError>
where
    V: Clone + Eq + std::hash::Hash + Debug,
{
    check(&ObjectModel::for_history(initial, history), history, options)
}
