//! History generators shared by the tests and the bench: clients issue operations one after the
//! other with random durations; each operation that takes effect gets a linearization point
//! inside its interval; the operations are applied in that order to a real sequential object to
//! get their outputs. So every generated history is linearizable by construction.
#![allow(dead_code)]

use shoal_lincheck::{KvInput, KvOperation, KvOutput, ObjectInput, ObjectOperation, ObjectOutput, Operation};
use std::collections::BTreeMap;

/// splitmix64: small, deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub ops: usize,
    pub keys: usize,
    pub clients: usize,
    /// Percentage of operations that end ambiguous (half of them take effect).
    pub ambiguous_percent: u64,
    /// The longest operation (time units); intervals overlap more when long.
    pub max_duration: u64,
}

impl Shape {
    pub const PERF: Shape =
        Shape { ops: 10_000, keys: 50, clients: 10, ambiguous_percent: 3, max_duration: 200 };
}

/// When each operation runs and whether it takes effect.
struct Timing {
    client: u64,
    invoke: u64,
    /// `None`: ambiguous.
    complete: Option<u64>,
    /// `None`: never took effect (only ambiguous operations).
    point: Option<u64>,
}

/// Intervals for `shape.ops` operations from `shape.clients` sequential clients.
fn timings(rng: &mut Rng, shape: &Shape) -> Vec<Timing> {
    let mut free = vec![0u64; shape.clients];
    let mut out = Vec::with_capacity(shape.ops);
    for _ in 0..shape.ops {
        // The client free the earliest goes next (lowest id on ties): invocations come in order.
        let (client, _) = free.iter().enumerate().min_by_key(|(c, t)| (**t, *c)).expect("clients");
        let invoke = free[client] + rng.below(20);
        let duration = 1 + rng.below(shape.max_duration);
        let point = invoke + rng.below(duration + 1);
        let timing = if rng.chance(shape.ambiguous_percent) {
            // Timed out: the client gives up after a while and goes on.
            free[client] = invoke + shape.max_duration * 2;
            Timing { client: client as u64, invoke, complete: None, point: rng.chance(50).then_some(point) }
        } else {
            free[client] = invoke + duration + 1;
            Timing { client: client as u64, invoke, complete: Some(invoke + duration), point: Some(point) }
        };
        out.push(timing);
    }
    out
}

/// Order in which operations take effect: by linearization point (ties by index).
fn effect_order(timings: &[Timing]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..timings.len()).filter(|&i| timings[i].point.is_some()).collect();
    order.sort_by_key(|&i| (timings[i].point, i));
    order
}

/// A linearizable key-value history. Values are unique (`v<index>`). CAS expectations are
/// chosen when the operation takes effect (the current value most of the time, so that many
/// succeed; an older value or "absent" otherwise).
pub fn kv_history(seed: u64, shape: &Shape) -> Vec<KvOperation> {
    let mut rng = Rng::new(seed);
    let timings = timings(&mut rng, shape);
    let plan: Vec<(String, u64)> =
        (0..shape.ops).map(|_| (format!("key-{}", rng.below(shape.keys as u64)), rng.below(100))).collect();
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inputs: Vec<Option<KvInput>> = vec![None; shape.ops];
    let mut outputs: Vec<Option<KvOutput>> = vec![None; shape.ops];
    let effects = effect_order(&timings);
    for &i in &effects {
        let (key, kind) = plan[i].clone();
        let value = format!("v{i}");
        let seen = written.entry(key.clone()).or_default();
        let current = store.get(&key).cloned();
        let (input, output) = match kind {
            0..40 => (KvInput::Get { key }, KvOutput::Get(current)),
            40..70 => {
                seen.push(value.clone());
                store.insert(key.clone(), value.clone());
                (KvInput::Put { key, value }, KvOutput::Ok)
            }
            70..90 => {
                let expected = if rng.chance(60) || seen.is_empty() {
                    current.clone()
                } else if rng.chance(20) {
                    None
                } else {
                    Some(seen[rng.below(seen.len() as u64) as usize].clone())
                };
                let ok = expected == current;
                if ok {
                    seen.push(value.clone());
                    store.insert(key.clone(), value.clone());
                }
                (KvInput::Cas { key, expected, new: value }, KvOutput::Cas(ok))
            }
            _ => {
                store.remove(&key);
                (KvInput::Delete { key }, KvOutput::Ok)
            }
        };
        inputs[i] = Some(input);
        outputs[i] = Some(output);
    }
    // Ambiguous operations that never took effect.
    for (i, (key, kind)) in plan.into_iter().enumerate() {
        if inputs[i].is_none() {
            let value = format!("v{i}");
            inputs[i] = Some(match kind {
                0..40 => KvInput::Get { key },
                40..70 => KvInput::Put { key, value },
                70..90 => KvInput::Cas { key, expected: None, new: value },
                _ => KvInput::Delete { key },
            });
        }
    }
    assemble(timings, inputs, outputs)
}

/// A linearizable history of one versioned object, initially at version 1 with value `v0`.
/// Versions jump by 1 to 5 (like a Raft index shared with other objects). Expected versions are
/// chosen when the update takes effect: the current one most of the time, an older one (a
/// conflict) or none (unconditional) otherwise.
pub fn object_history(seed: u64, shape: &Shape) -> Vec<ObjectOperation> {
    let mut rng = Rng::new(seed);
    let timings = timings(&mut rng, shape);
    let reads: Vec<bool> = (0..shape.ops).map(|_| rng.chance(40)).collect();
    let (mut version, mut value) = (1u64, "v0".to_string());
    let mut versions = vec![1u64];
    let mut inputs: Vec<Option<ObjectInput>> = vec![None; shape.ops];
    let mut outputs: Vec<Option<ObjectOutput>> = vec![None; shape.ops];
    for i in effect_order(&timings) {
        let (input, output) = if reads[i] {
            (ObjectInput::Read, ObjectOutput::Read { version, value: value.clone() })
        } else {
            let expected_version = match rng.below(100) {
                0..65 => Some(version),
                65..85 => Some(versions[rng.below(versions.len() as u64) as usize]),
                _ => None,
            };
            let new = format!("v{}", i + 1);
            let output = if expected_version.is_none_or(|e| e == version) {
                version += 1 + rng.below(5);
                versions.push(version);
                value = new.clone();
                ObjectOutput::Updated { version }
            } else {
                ObjectOutput::Conflict
            };
            (ObjectInput::Update { expected_version, value: new }, output)
        };
        inputs[i] = Some(input);
        outputs[i] = Some(output);
    }
    for i in 0..shape.ops {
        if inputs[i].is_none() {
            inputs[i] = Some(if reads[i] {
                ObjectInput::Read
            } else {
                let expected_version = Some(versions[rng.below(versions.len() as u64) as usize]);
                ObjectInput::Update { expected_version, value: format!("v{}", i + 1) }
            });
        }
    }
    assemble(timings, inputs, outputs)
}

fn assemble<I, O>(
    timings: Vec<Timing>,
    inputs: Vec<Option<I>>,
    outputs: Vec<Option<O>>,
) -> Vec<Operation<I, O>> {
    timings
        .into_iter()
        .zip(inputs)
        .zip(outputs)
        .map(|((t, input), output)| Operation {
            client: t.client,
            invoke: t.invoke,
            complete: t.complete,
            input: input.expect("every operation has an input"),
            output: t.complete.and(output),
        })
        .collect()
}
