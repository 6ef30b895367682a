//! Group commit: concurrent writes share one Raft entry.
//!
//! openraft 0.9's core appends one entry at a time and waits for the log's flush before it
//! takes the next client write, so each entry costs the leader one fsync on the core's path:
//! with 64 writers, three managers committed about 2,700 entries/s while the log writer did one
//! transaction per entry. Here the writes that queue up while earlier ones are on their way go
//! into one entry ([`Request::batch`]): one append, one fsync on each member, one replication
//! round for all of them. Each command is still applied on its own, in queue order, and gets
//! its own answer, so a refused one refuses nobody else's.
//!
//! Batches are only written while every other member has said it reads them
//! ([`crate::EntryFormats`]); [`crate::RaftNode::write`] sends a write directly otherwise. It
//! also sends directly, in its own entry, a command estimated over
//! [`MAX_BATCHED_COMMAND_BYTES`] (so no entry grows past what a follower takes in well under an
//! election timeout) and what the control loops write ([`crate::batchable`]).

use crate::node::{outcome, propose, WriteError};
use crate::{Raft, Request, Response};
use shoal_state::Command;
use shoal_types::Timestamp;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A command estimated larger than this is not batched: it is written in its own entry.
pub(crate) const MAX_BATCHED_COMMAND_BYTES: usize = 64 * 1024;
/// A batch closes before its estimated size passes this (the write that would pass it starts
/// the next batch).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// At most this many commands in one entry.
const MAX_BATCH_COMMANDS: usize = 256;
/// Batches proposed and not yet answered at once. While they are on their way, new writes
/// queue and become the next batch; more slots mean smaller batches and more entries.
const IN_FLIGHT: usize = 2;

struct Pending {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, WriteError>>,
}

/// The queue in front of [`propose`]; its task lives as long as the queue.
pub(crate) struct Batcher {
    raft: Raft,
    quorum_timeout: Duration,
    queue: mpsc::UnboundedSender<Pending>,
    /// Writes sent to the queue and not yet taken from it.
    queued: Arc<AtomicUsize>,
    /// Proposals on their way ([`IN_FLIGHT`]).
    slots: Arc<Semaphore>,
}

impl Batcher {
    /// Starts the batching task on the caller's runtime.
    pub(crate) fn start(raft: Raft, quorum_timeout: Duration) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        let (queued, slots) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(IN_FLIGHT)));
        tokio::spawn(run(raft.clone(), quorum_timeout, rx, queued.clone(), slots.clone()));
        Batcher { raft, quorum_timeout, queue, queued, slots }
    }

    /// Commits `command` (estimated `bytes` long) and returns what applying it did: at once in
    /// its own entry when nothing is queued and a slot is free (a lone writer pays no hop),
    /// otherwise in the next batch.
    pub(crate) async fn write(&self, command: Command, bytes: usize) -> Result<Response, WriteError> {
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                let req = Request::single(Timestamp::from_system_time(SystemTime::now()), command);
                let answer = propose(&self.raft, self.quorum_timeout, req).await;
                drop(slot);
                return outcome(answer?);
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Pending { command, bytes, reply }).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(WriteError::Unavailable("the write queue has stopped".into()));
        }
        answer
            .await
            .map_err(|_| WriteError::Unavailable("the write queue stopped before it answered".into()))?
    }
}

/// Takes whatever has queued (up to the limits) whenever a slot is free, and proposes it.
async fn run(
    raft: Raft,
    quorum_timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
) {
    let mut carried: Option<Pending> = None;
    let mut take = |p: Pending| {
        queued.fetch_sub(1, Ordering::AcqRel);
        p
    };
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => take(p),
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            match queue.try_recv().map(&mut take) {
                Ok(p) if bytes + p.bytes > MAX_BATCH_BYTES => {
                    carried = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, quorum_timeout, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry and hands each writer its own answer.
async fn commit(raft: &Raft, quorum_timeout: Duration, batch: Vec<Pending>) {
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let Some(req) = Request::batch(Timestamp::from_system_time(SystemTime::now()), commands) else { return };
    match propose(raft, quorum_timeout, req).await {
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Ok(mut first) => {
            let mut rest = std::mem::take(&mut first.batch).into_iter();
            let mut replies = replies.into_iter();
            if let Some(reply) = replies.next() {
                let _ = reply.send(outcome(first));
            }
            for reply in replies {
                let answer = match rest.next() {
                    Some(resp) => outcome(resp),
                    None => Err(WriteError::Unavailable(
                        "the batched entry was applied without an answer for this write".into(),
                    )),
                };
                // A writer that gave up (its future dropped) no longer listens.
                let _ = reply.send(answer);
            }
        }
    }
}
