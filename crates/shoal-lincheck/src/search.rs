//! Wing & Gong's search with Lowe's memoization over one partition (porcupine's `checkSingle`),
//! with ambiguous operations kept apart: they have no return entry and need not be linearized.

use crate::{Model, Operation};
use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

pub(crate) enum PartitionResult {
    Linearizable,
    NotLinearizable(DeadEnd),
    Exhausted,
}

/// The deepest point the search reached, in history indices.
pub(crate) struct DeadEnd {
    pub linearized: Vec<usize>,
    pub state: String,
    pub blocked: usize,
    pub candidates: Vec<usize>,
}

const NONE: usize = usize::MAX;
/// Sentinel heads: the list of completed operations' call and return entries, by time; the list
/// of ambiguous operations' call entries, by invocation.
const MAIN: usize = 0;
const AMB: usize = 1;

struct Entry {
    /// The operation (index into `Search::ops`).
    op: usize,
    time: u64,
    call: bool,
    /// For a completed operation's call: its return entry.
    ret: usize,
    prev: usize,
    next: usize,
}

struct Op<'a, I, O> {
    /// Index in the history.
    index: usize,
    input: &'a I,
    /// `None`: ambiguous.
    output: Option<&'a O>,
    /// Bit in `done` (completed) or `amb` (ambiguous).
    bit: usize,
    /// [`Model::is_blind`].
    blind: bool,
    /// For an ambiguous operation: the previous one (by invocation) with the same effect
    /// ([`Model::same_effect`]), which must be linearized before this one is tried.
    twin: usize,
}

/// Configurations explored, keyed by the completed operations linearized (a count of leading full
/// words plus the words up to the last set bit) and the state. Each key holds the sets of
/// ambiguous operations linearized it was entered with, each followed by a word that is 1 if it
/// was entered right after an ambiguous blind write (restricted: no blind write may come next).
///
/// A configuration is dominated by one explored with the same completed operations and state, a
/// subset of its ambiguous operations, and no more restrictions: the ambiguous operations it has
/// linearized in addition are only choices it no longer has (none is ever required), so anything
/// that completes it would complete the other. It is then skipped. Exact matches are the special
/// case of Lowe's memoization; the subsets keep the ambiguous writes that never happened from
/// making every combination of them a new configuration.
#[derive(PartialEq, Eq, Hash)]
struct Key<S> {
    lead: u32,
    words: Box<[u64]>,
    state: S,
}

struct Frame<S> {
    /// The call entry linearized.
    entry: usize,
    /// Whether it is an ambiguous blind write (then no blind write may come right after it).
    ambiguous_blind: bool,
    /// For an ambiguous operation: the return entry that bounded the candidates (to resume
    /// walking them); unused for a completed one.
    deadline: usize,
    state: S,
}

pub(crate) fn check_partition<M: Model>(
    model: &M,
    partition: &M::Partition,
    history: &[Operation<M::Input, M::Output>],
    indices: &[usize],
    budget: u64,
) -> (PartitionResult, u64) {
    let mut completed: Vec<usize> =
        indices.iter().copied().filter(|&i| history[i].complete.is_some()).collect();
    let mut ambiguous: Vec<usize> =
        indices.iter().copied().filter(|&i| history[i].complete.is_none()).collect();
    completed.sort_by_key(|&i| (history[i].invoke, i));
    ambiguous.sort_by_key(|&i| (history[i].invoke, i));

    let mut ops = Vec::with_capacity(indices.len());
    for (bit, &index) in completed.iter().enumerate() {
        let op = &history[index];
        let blind = model.is_blind(&op.input);
        ops.push(Op { index, input: &op.input, output: op.output.as_ref(), bit, blind, twin: NONE });
    }
    for (bit, &index) in ambiguous.iter().enumerate() {
        let input = &history[index].input;
        ops.push(Op { index, input, output: None, bit, blind: model.is_blind(input), twin: NONE });
    }
    // Classes of ambiguous operations with the same effect: the last member of each so far.
    let mut classes: Vec<usize> = Vec::new();
    for slot in completed.len()..ops.len() {
        let class = classes.iter_mut().find(|last| model.same_effect(ops[**last].input, ops[slot].input));
        match class {
            Some(last) => {
                ops[slot].twin = *last;
                *last = slot;
            }
            None => classes.push(slot),
        }
    }

    let head = |next| Entry { op: NONE, time: 0, call: false, ret: NONE, prev: NONE, next };
    let mut entries = vec![head(NONE), head(NONE)];
    let mut main: Vec<Entry> = Vec::with_capacity(2 * completed.len());
    for (slot, &index) in completed.iter().enumerate() {
        let op = &history[index];
        let end = op.complete.unwrap_or(u64::MAX);
        main.push(Entry { op: slot, time: op.invoke, call: true, ret: NONE, prev: NONE, next: NONE });
        main.push(Entry { op: slot, time: end, call: false, ret: NONE, prev: NONE, next: NONE });
    }
    // Calls before returns at equal times: such operations count as concurrent.
    main.sort_by_key(|e| (e.time, !e.call, e.op));
    let base = entries.len();
    let mut return_of = vec![NONE; completed.len()];
    for (i, e) in main.iter().enumerate() {
        if !e.call {
            return_of[e.op] = base + i;
        }
    }
    for e in &mut main {
        if e.call {
            e.ret = return_of[e.op];
        }
    }
    entries.extend(main);
    let amb_base = entries.len();
    for slot in completed.len()..ops.len() {
        let time = history[ops[slot].index].invoke;
        entries.push(Entry { op: slot, time, call: true, ret: NONE, prev: NONE, next: NONE });
    }
    link(&mut entries, MAIN, base..amb_base);
    let end = entries.len();
    link(&mut entries, AMB, amb_base..end);

    let mut search = Search {
        model,
        ops,
        entries,
        done: Bits::new(completed.len()),
        amb: vec![0; ambiguous.len().div_ceil(64)],
        cache: HashMap::default(),
        states: 0,
    };
    // Measure first (cheap), then, only if there is no linearization, search again (the same
    // way: it is deterministic) up to the first dead end at the deepest point, to explain it.
    let result = match search.run(partition, completed.len(), budget, None) {
        Run::Linearizable => PartitionResult::Linearizable,
        Run::Exhausted => PartitionResult::Exhausted,
        Run::Failed { deepest } => {
            let states = std::mem::take(&mut search.states);
            search.cache.clear();
            let dead_end = match search.run(partition, completed.len(), u64::MAX, Some(deepest)) {
                Run::Explained(dead_end) => dead_end,
                // Unreachable: the second search retraces the first.
                _ => DeadEnd {
                    linearized: Vec::new(),
                    state: "<no explanation>".to_string(),
                    blocked: NONE,
                    candidates: Vec::new(),
                },
            };
            search.states = states;
            PartitionResult::NotLinearizable(dead_end)
        }
        Run::Explained(dead_end) => PartitionResult::NotLinearizable(dead_end),
    };
    (result, search.states)
}

enum Run {
    Linearizable,
    Exhausted,
    /// No linearization; the deepest dead end had this many operations linearized.
    Failed {
        deepest: usize,
    },
    /// The first dead end at the depth asked for.
    Explained(DeadEnd),
}

fn link(entries: &mut [Entry], head: usize, range: std::ops::Range<usize>) {
    let mut prev = head;
    for i in range {
        entries[prev].next = i;
        entries[i].prev = prev;
        prev = i;
    }
    entries[prev].next = NONE;
}

struct Search<'a, M: Model> {
    model: &'a M,
    ops: Vec<Op<'a, M::Input, M::Output>>,
    entries: Vec<Entry>,
    done: Bits,
    amb: Vec<u64>,
    cache: HashMap<Key<M::State>, Vec<u64>, BuildHasherDefault<FxHasher>>,
    states: u64,
}

/// Where the search is among the candidates of the current configuration.
#[derive(Clone, Copy)]
enum Cursor {
    /// Walking the completed operations' list: a call entry, or the first pending return.
    Main(usize),
    /// Walking the ambiguous operations invoked before the first pending return (`deadline`).
    Amb { entry: usize, deadline: usize },
}

impl<M: Model> Search<'_, M> {
    /// Searches; with `explain_at`, stops at the first dead end with that many operations
    /// linearized and explains it.
    fn run(
        &mut self,
        partition: &M::Partition,
        completed: usize,
        budget: u64,
        explain_at: Option<usize>,
    ) -> Run {
        let mut state = self.model.init(partition);
        let mut remaining = completed;
        let mut stack: Vec<Frame<M::State>> = Vec::new();
        let mut deepest = 0;
        let mut cursor = Cursor::Main(self.entries[MAIN].next);
        loop {
            if remaining == 0 {
                return Run::Linearizable;
            }
            match cursor {
                Cursor::Main(e) if e != NONE && self.entries[e].call => {
                    let op = &self.ops[self.entries[e].op];
                    let output = op.output.expect("completed operations have outputs");
                    let overwrites = op.blind && stack.last().is_some_and(|f| f.ambiguous_blind);
                    if let Some(next) =
                        (!overwrites).then(|| self.model.step(&state, op.input, output)).flatten()
                    {
                        let bit = op.bit;
                        self.done.set(bit);
                        if self.remember(&next, false) {
                            if self.states > budget {
                                return Run::Exhausted;
                            }
                            let state = std::mem::replace(&mut state, next);
                            stack.push(Frame { entry: e, ambiguous_blind: false, deadline: NONE, state });
                            remaining -= 1;
                            self.lift(e);
                            cursor = Cursor::Main(self.entries[MAIN].next);
                            continue;
                        }
                        self.done.clear(bit);
                    }
                    cursor = Cursor::Main(self.entries[e].next);
                }
                Cursor::Main(deadline) => {
                    // The first pending return (NONE cannot happen while `remaining > 0`).
                    cursor = Cursor::Amb { entry: self.entries[AMB].next, deadline };
                }
                Cursor::Amb { entry: a, deadline }
                    if a != NONE
                        && (deadline == NONE || self.entries[a].time <= self.entries[deadline].time) =>
                {
                    let op = &self.ops[self.entries[a].op];
                    let blind = op.blind;
                    let overwrites = blind && stack.last().is_some_and(|f| f.ambiguous_blind);
                    let twin_first = op.twin != NONE && !get(&self.amb, self.ops[op.twin].bit);
                    let allowed = !overwrites && !twin_first;
                    if let Some(next) = allowed.then(|| self.model.step_ambiguous(&state, op.input)).flatten()
                    {
                        let bit = op.bit;
                        set(&mut self.amb, bit);
                        if next != state && self.remember(&next, blind) {
                            if self.states > budget {
                                return Run::Exhausted;
                            }
                            let state = std::mem::replace(&mut state, next);
                            stack.push(Frame { entry: a, ambiguous_blind: blind, deadline, state });
                            self.lift(a);
                            cursor = Cursor::Main(self.entries[MAIN].next);
                            continue;
                        }
                        clear(&mut self.amb, bit);
                    }
                    cursor = Cursor::Amb { entry: self.entries[a].next, deadline };
                }
                Cursor::Amb { deadline, .. } => {
                    // Dead end: no candidate leads anywhere new. Remember the deepest, backtrack.
                    if explain_at == Some(stack.len()) {
                        return Run::Explained(self.dead_end(&stack, &state, deadline));
                    }
                    deepest = deepest.max(stack.len());
                    let Some(frame) = stack.pop() else {
                        return Run::Failed { deepest };
                    };
                    state = frame.state;
                    self.unlift(frame.entry);
                    let op = &self.ops[self.entries[frame.entry].op];
                    if self.entries[frame.entry].ret != NONE {
                        self.done.clear(op.bit);
                        remaining += 1;
                        cursor = Cursor::Main(self.entries[frame.entry].next);
                    } else {
                        clear(&mut self.amb, op.bit);
                        cursor =
                            Cursor::Amb { entry: self.entries[frame.entry].next, deadline: frame.deadline };
                    }
                }
            }
        }
    }

    /// Records the configuration (current linearized sets, `state`, whether `restricted`); false
    /// if it is dominated by one already explored (or being explored).
    fn remember(&mut self, state: &M::State, restricted: bool) -> bool {
        let (lead, end) = (self.done.lead, self.done.top.max(self.done.lead));
        let key = Key { lead: lead as u32, words: self.done.words[lead..end].into(), state: state.clone() };
        let amb = &self.amb;
        let stride = amb.len() + 1;
        match self.cache.entry(key) {
            Slot::Occupied(mut seen) => {
                let dominated = seen.get().chunks_exact(stride).any(|entry| {
                    let (bits, flag) = entry.split_at(amb.len());
                    (flag[0] == 0 || restricted) && bits.iter().zip(amb).all(|(old, new)| old & !new == 0)
                });
                if dominated {
                    return false;
                }
                let entries = seen.get_mut();
                entries.extend_from_slice(amb);
                entries.push(u64::from(restricted));
            }
            Slot::Vacant(slot) => {
                let mut entries = Vec::with_capacity(stride);
                entries.extend_from_slice(amb);
                entries.push(u64::from(restricted));
                slot.insert(entries);
            }
        }
        self.states += 1;
        true
    }

    fn dead_end(&self, stack: &[Frame<M::State>], state: &M::State, deadline: usize) -> DeadEnd {
        let linearized = stack.iter().map(|f| self.ops[self.entries[f.entry].op].index).collect();
        let mut candidates = Vec::new();
        let mut e = self.entries[MAIN].next;
        while e != NONE && e != deadline {
            if self.entries[e].call {
                candidates.push(self.ops[self.entries[e].op].index);
            }
            e = self.entries[e].next;
        }
        let mut a = self.entries[AMB].next;
        while a != NONE && (deadline == NONE || self.entries[a].time <= self.entries[deadline].time) {
            candidates.push(self.ops[self.entries[a].op].index);
            a = self.entries[a].next;
        }
        candidates.sort_unstable();
        let blocked = if deadline == NONE { NONE } else { self.ops[self.entries[deadline].op].index };
        DeadEnd { linearized, state: format!("{state:?}"), blocked, candidates }
    }

    /// Removes an operation's call (and return) entry from its list.
    fn lift(&mut self, e: usize) {
        self.unlink(e);
        let ret = self.entries[e].ret;
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes [`Search::lift`] (in the reverse order of lifting).
    fn unlift(&mut self, e: usize) {
        let ret = self.entries[e].ret;
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(e);
    }

    fn unlink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = next;
        if next != NONE {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = e;
        if next != NONE {
            self.entries[next].prev = e;
        }
    }
}

/// The completed operations linearized, tracking the leading full words and the last non-zero
/// one, so a cache key costs the width of the window in between, not the history's length.
struct Bits {
    words: Vec<u64>,
    /// Words before this one are all ones.
    lead: usize,
    /// Words from this one on are all zeros.
    top: usize,
}

impl Bits {
    fn new(bits: usize) -> Self {
        Bits { words: vec![0; bits.div_ceil(64)], lead: 0, top: 0 }
    }

    fn set(&mut self, bit: usize) {
        let w = bit / 64;
        self.words[w] |= 1 << (bit % 64);
        self.top = self.top.max(w + 1);
        while self.lead < self.words.len() && self.words[self.lead] == u64::MAX {
            self.lead += 1;
        }
    }

    fn clear(&mut self, bit: usize) {
        let w = bit / 64;
        self.words[w] &= !(1 << (bit % 64));
        self.lead = self.lead.min(w);
        while self.top > 0 && self.words[self.top - 1] == 0 {
            self.top -= 1;
        }
    }
}

fn get(bits: &[u64], bit: usize) -> bool {
    bits[bit / 64] & (1 << (bit % 64)) != 0
}

fn set(bits: &mut [u64], bit: usize) {
    bits[bit / 64] |= 1 << (bit % 64);
}

fn clear(bits: &mut [u64], bit: usize) {
    bits[bit / 64] &= !(1 << (bit % 64));
}

/// FxHash (rustc's) with a final mix: fast, deterministic, good enough for the cache (whose
/// iteration order never reaches an output).
#[derive(Default)]
struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64, so the high bits (hashbrown's tags) depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_is_deterministic_and_spreads() {
        let hash = |x: &(u32, &[u64], Option<&str>)| {
            let mut h = FxHasher::default();
            x.hash(&mut h);
            h.finish()
        };
        let a = hash(&(0, &[1, 2], Some("x")));
        assert_eq!(a, hash(&(0, &[1, 2], Some("x"))));
        assert_ne!(a, hash(&(0, &[1, 3], Some("x"))));
        assert_ne!(a, hash(&(0, &[1, 2], Some("y"))));
        assert_ne!(a, hash(&(1, &[1, 2], Some("x"))));
    }
}
