//! The Raft log, vote and commit index in redb, written by one thread that group-commits.
//!
//! `append` returns at once: the entries go to an in-memory table (readers see them before
//! they reach the disk) and to the writer thread's queue. The writer takes everything queued,
//! writes it in one redb transaction and fsyncs once, then tells openraft the entries are
//! durable (`LogFlushed`); only then are they counted towards the commit quorum, so nothing is
//! acknowledged before it is on disk. The fsync runs on its own thread instead of blocking one
//! of the async runtime's workers (two on a 2-CPU machine). openraft 0.9 itself waits for each
//! append's flush before it replicates or proposes more, so today the group commit joins the
//! commit index and the vote with the log; the storage side is ready for a Raft that pipelines.
//!
//! Every change to the store goes through that one queue, in the order openraft made it.
//! Truncate, purge and vote wait for their transaction (and its fsync). The commit index costs
//! no fsync of its own: it rides along with the next transaction (or the last one on a clean
//! shutdown), so after a crash it may be older than what was applied. Raft allows that (the
//! commit index is volatile state); for openraft 0.9 it also takes `read_vote`
//! handing back the vote uncommitted (see there).

use crate::seal::DataKey;
use crate::{Entry, LogId, RaftId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{RaftLogId, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub(crate) const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
/// The store's layout ([`crate::formats::STORE`]), as a JSON number; none: format 1.
const KEY_FORMAT: &str = "format";
/// Present once entries are sealed with the data key ([`crate::seal`]).
const KEY_SEALED: &str = "sealed";
/// The most queued jobs one transaction takes (bounds a transaction's size and latency).
const MAX_JOBS_PER_TX: usize = 4096;

type Unflushed = BTreeMap<u64, Arc<Entry>>;

/// One change to the store, in openraft's order.
enum Job {
    Append {
        entries: Vec<Arc<Entry>>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Meta `key` := `value` (JSON). The commit index (`done` none) is not written on its own:
    /// see `write_loop`.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<mpsc::Sender<Result<(), String>>>,
    },
    /// Removes the entries in `lo..=hi` (`hi` none: to the end).
    Remove {
        lo: u64,
        hi: Option<u64>,
        done: mpsc::Sender<Result<(), String>>,
    },
}

struct Shared {
    db: Arc<Database>,
    key: Arc<DataKey>,
    /// Entries handed to the writer and not yet on disk, by index.
    unflushed: Arc<Mutex<Unflushed>>,
    /// The committed index openraft last saved, plus one (0: none), for metrics.
    committed: Arc<AtomicU64>,
    /// Bytes written to the log since the store opened (what the snapshot policy counts).
    appended_bytes: Arc<AtomicU64>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    /// Closing the queue lets the writer finish what is queued; waiting for it releases the
    /// database before anyone reopens it.
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = w.join();
        }
    }
}

#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn io<E: std::error::Error + 'static>(f: fn(&E) -> StorageIOError<RaftId>) -> impl Fn(E) -> StorageError {
    move |e| StorageError::IO { source: f(&e) }
}

fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageIOError<RaftId> {
    StorageIOError::read_logs(e)
}
fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageIOError<RaftId> {
    StorageIOError::write_logs(e)
}
fn vote_read_err<E: std::error::Error + 'static>(e: &E) -> StorageIOError<RaftId> {
    StorageIOError::read_vote(e)
}
fn vote_write_err<E: std::error::Error + 'static>(e: &E) -> StorageIOError<RaftId> {
    StorageIOError::write_vote(e)
}

/// Converts any range of log indexes into an inclusive one (`None` when empty).
fn inclusive<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, u64)> {
    let lo = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&e) => e,
        Bound::Excluded(&e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (lo <= hi).then_some((lo, hi))
}

/// Reads the entry stored at `index`: sealed (opened with the data key) or, written before
/// encryption, plain. An entry this binary cannot read, or would misread (a newer format), is
/// refused with a message that says so.
fn decode(key: &DataKey, index: u64, stored: &[u8]) -> Result<Entry, StorageError> {
    let refuse =
        |m: String| StorageError::IO { source: StorageIOError::read_logs(&std::io::Error::other(m)) };
    let opened;
    let bytes = if crate::seal::is_sealed(stored) {
        opened =
            key.open(&index.to_be_bytes(), stored).map_err(|e| refuse(format!("log entry {index}: {e}")))?;
        opened.as_slice()
    } else {
        stored
    };
    match serde_json::from_slice::<Entry>(bytes) {
        Ok(e) => match &e.payload {
            openraft::EntryPayload::Normal(r) => {
                shoal_state::check_format("a Raft log entry", r.format, crate::formats::ENTRY)
                    .map_err(|n| refuse(n.to_string()))?;
                Ok(e)
            }
            _ => Ok(e),
        },
        Err(e) => {
            let newer = serde_json::from_slice(bytes).ok().and_then(|v| crate::newer_entry_format(&v));
            Err(refuse(match newer {
                Some(n) => n.to_string(),
                None => format!("cannot decode a Raft log entry: {e}"),
            }))
        }
    }
}

/// Checks the store's format: a store written by a newer Shoal is refused; one without a
/// format (written before formats were numbered) is format 1 and gets the number now.
pub(crate) fn check_store_format(db: &Database) -> Result<(), String> {
    let found = {
        let tx = db.begin_read().map_err(|e| e.to_string())?;
        match tx.open_table(META) {
            Ok(t) => match t.get(KEY_FORMAT).map_err(|e| e.to_string())? {
                Some(v) => Some(
                    serde_json::from_slice::<u32>(v.value())
                        .map_err(|e| format!("unreadable store format: {e}"))?,
                ),
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.to_string()),
        }
    };
    if let Some(found) = found {
        shoal_state::check_format("the Raft store", found, crate::formats::STORE)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    // Unnumbered: format 1 (a new store too, until `mark_sealed` moves it on).
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = tx.open_table(META).map_err(|e| e.to_string())?;
        let v = serde_json::to_vec(&1u32).map_err(|e| e.to_string())?;
        t.insert(KEY_FORMAT, v.as_slice()).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

/// Whether the store's entries are sealed (a data key belongs to it).
pub(crate) fn is_sealed(db: &Database) -> Result<bool, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    match tx.open_table(META) {
        Ok(t) => Ok(t.get(KEY_SEALED).map_err(|e| e.to_string())?.is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Records that the store's entries are sealed from now on, with its new format (an older
/// binary then says to upgrade instead of failing to decode them).
pub(crate) fn mark_sealed(db: &Database) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = tx.open_table(META).map_err(|e| e.to_string())?;
        t.insert(KEY_SEALED, b"true".as_slice()).map_err(|e| e.to_string())?;
        let v = serde_json::to_vec(&crate::formats::STORE).map_err(|e| e.to_string())?;
        t.insert(KEY_FORMAT, v.as_slice()).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>, key: Arc<DataKey>) -> Result<Self, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        let (queue, jobs) = mpsc::channel();
        let appended_bytes = Arc::new(AtomicU64::new(0));
        let unflushed = Arc::new(Mutex::new(Unflushed::new()));
        let writer = {
            let (db, appended, unflushed, key) =
                (db.clone(), appended_bytes.clone(), unflushed.clone(), key.clone());
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || write_loop(&db, &key, &jobs, &appended, &unflushed))
                .map_err(redb::Error::Io)?
        };
        let store = LogStore {
            shared: Arc::new(Shared {
                db,
                key,
                unflushed,
                committed: Arc::default(),
                appended_bytes,
                queue: Mutex::new(Some(queue)),
                writer: Mutex::new(Some(writer)),
            }),
        };
        if let Ok(Some(Some(c))) = store.get_meta::<Option<LogId>>(KEY_COMMITTED, read_err) {
            store.note_committed(Some(c));
        }
        Ok(store)
    }

    fn note_committed(&self, committed: Option<LogId>) {
        let v = committed.map_or(0, |c| c.index.saturating_add(1));
        self.shared.committed.store(v, Ordering::Relaxed);
    }

    /// The highest index known to be committed, as last saved by openraft.
    pub(crate) fn committed_index(&self) -> Arc<AtomicU64> {
        self.shared.committed.clone()
    }

    /// Bytes appended to the log since the store opened.
    pub(crate) fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.shared.appended_bytes.clone()
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        self.shared.unflushed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, job: Job) -> Result<(), String> {
        let queue = self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match queue.as_ref() {
            Some(q) => q.send(job).map_err(|_| "the raft log writer has stopped".to_string()),
            None => Err("the raft log is closed".into()),
        }
    }

    /// Queues `job` (built around a reply channel) and waits for its transaction.
    fn run(&self, job: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Job) -> Result<(), String> {
        let (done, wait) = mpsc::channel();
        self.send(job(done))?;
        wait.recv().map_err(|_| "the raft log writer has stopped".to_string())?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        err: fn(&redb::Error) -> StorageIOError<RaftId>,
    ) -> Result<Option<T>, StorageError> {
        let map = |e: redb::Error| StorageError::IO { source: err(&e) };
        let tx = self.shared.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(META).map_err(|e| map(e.into()))?;
        match t.get(key).map_err(|e| map(e.into()))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StorageError::IO { source: StorageIOError::read(&e) }),
        }
    }

    /// Writes a meta value durably, after everything queued before it.
    fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        err: fn(&std::io::Error) -> StorageIOError<RaftId>,
    ) -> Result<(), StorageError> {
        let value =
            serde_json::to_vec(value).map_err(|e| StorageError::IO { source: StorageIOError::write(&e) })?;
        self.run(|done| Job::Meta { key, value, done: Some(done) })
            .map_err(|m| StorageError::IO { source: err(&std::io::Error::other(m)) })
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some((_, e)) = self.unflushed().last_key_value() {
            return Ok(Some(*e.get_log_id()));
        }
        let map = io::<redb::Error>(read_err);
        let tx = self.shared.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
        let last = t.last().map_err(|e| map(e.into()))?;
        match last {
            None => Ok(None),
            Some((k, v)) => Ok(Some(*decode(&self.shared.key, k.value(), v.value())?.get_log_id())),
        }
    }

    /// Removes log entries with index in `lo..=hi` (`hi` none: to the end), waiting for disk.
    fn remove_range(&self, lo: u64, hi: Option<u64>) -> Result<(), StorageError> {
        {
            let mut unflushed = self.unflushed();
            match hi {
                Some(hi) => unflushed.retain(|i, _| !(lo..=hi).contains(i)),
                None => drop(unflushed.split_off(&lo)),
            }
        }
        self.run(|done| Job::Remove { lo, hi, done })
            .map_err(|m| StorageError::IO { source: StorageIOError::write_logs(&std::io::Error::other(m)) })
    }
}

/// The writer thread: everything queued goes into one transaction with one fsync. A batch that
/// only moves the commit index is not written on its own: the value rides along with the next
/// transaction (or the final one when the queue closes).
fn write_loop(
    db: &Database,
    key: &DataKey,
    jobs: &mpsc::Receiver<Job>,
    appended: &AtomicU64,
    unflushed: &Mutex<Unflushed>,
) {
    let mut carried: Option<Vec<u8>> = None;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_TX {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if batch.iter().all(|j| matches!(j, Job::Meta { key: KEY_COMMITTED, done: None, .. })) {
            if let Some(Job::Meta { value, .. }) = batch.pop() {
                carried = Some(value);
            }
            continue;
        }
        let (result, written) = write_batch(db, key, &batch, carried.take());
        if result.is_ok() {
            appended.fetch_add(written, Ordering::Relaxed);
            // On disk now: readers find them there. (An entry truncated and appended again
            // meanwhile is another entry and stays.)
            let mut table = unflushed.lock().unwrap_or_else(PoisonError::into_inner);
            for job in &batch {
                if let Job::Append { entries, .. } = job {
                    for e in entries {
                        let index = e.get_log_id().index;
                        if table.get(&index).is_some_and(|t| Arc::ptr_eq(t, e)) {
                            table.remove(&index);
                        }
                    }
                }
            }
        }
        finish(batch, &result);
    }
    if carried.is_some() {
        if let (Err(e), _) = write_batch(db, key, &[], carried) {
            tracing::warn!(error = %e, "raft log: saving the commit index on close failed");
        }
    }
}

/// Writes `batch` in one transaction (after `committed`, a commit index carried from earlier);
/// the bytes of log entries written.
fn write_batch(
    db: &Database,
    key: &DataKey,
    batch: &[Job],
    committed: Option<Vec<u8>>,
) -> (Result<(), String>, u64) {
    let mut written = 0u64;
    let mut run = || -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        {
            let mut logs = tx.open_table(LOGS)?;
            let mut meta = tx.open_table(META)?;
            if let Some(c) = &committed {
                meta.insert(KEY_COMMITTED, c.as_slice())?;
            }
            for job in batch {
                match job {
                    Job::Append { entries, .. } => {
                        for e in entries {
                            let index = e.get_log_id().index;
                            let bytes = serde_json::to_vec(&**e)
                                .map_err(|e| redb::Error::Corrupted(format!("encode a log entry: {e}")))?;
                            written += bytes.len() as u64;
                            let sealed = key
                                .seal(&index.to_be_bytes(), &bytes)
                                .map_err(|e| redb::Error::Corrupted(format!("seal a log entry: {e}")))?;
                            logs.insert(index, sealed.as_slice())?;
                        }
                    }
                    Job::Meta { key, value, .. } => {
                        meta.insert(*key, value.as_slice())?;
                    }
                    Job::Remove { lo, hi, .. } => match hi {
                        Some(hi) => logs.retain_in(*lo..=*hi, |_, _| false)?,
                        None => logs.retain_in(*lo.., |_, _| false)?,
                    },
                }
            }
        }
        // Durability::Immediate (redb's default): commit returns after fsync.
        tx.commit()?;
        Ok(())
    };
    (run().map_err(|e| e.to_string()), written)
}

/// Answers every job of a written (or failed) batch.
fn finish(batch: Vec<Job>, result: &Result<(), String>) {
    for job in batch {
        match job {
            Job::Append { callback, .. } => {
                callback.log_io_completed(result.clone().map_err(std::io::Error::other));
            }
            Job::Meta { done: Some(done), .. } | Job::Remove { done, .. } => {
                let _ = done.send(result.clone());
            }
            Job::Meta { done: None, key, .. } => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, key, "raft log: writing a meta value failed");
                }
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((lo, hi)) = inclusive(&range) else { return Ok(Vec::new()) };
        // Unflushed entries first: an entry leaves that table only once it is on disk, so
        // whatever is missing here is found below.
        let recent: Vec<Arc<Entry>> = self.unflushed().range(lo..=hi).map(|(_, e)| e.clone()).collect();
        let disk_hi = match recent.first() {
            Some(first) => first.get_log_id().index.checked_sub(1),
            None => Some(hi),
        };
        let mut out = Vec::new();
        if let Some(disk_hi) = disk_hi.filter(|&h| h >= lo) {
            let map = io::<redb::Error>(read_err);
            let tx = self.shared.db.begin_read().map_err(|e| map(e.into()))?;
            let t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
            for item in t.range(lo..=disk_hi).map_err(|e| map(e.into()))? {
                let (k, v) = item.map_err(|e| map(e.into()))?;
                out.push(decode(&self.shared.key, k.value(), v.value())?);
            }
        }
        out.extend(recent.iter().map(|e| (**e).clone()));
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED, read_err)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, vote_write_err)
    }

    /// The vote, read only when Raft starts, comes back *uncommitted*: openraft 0.9 restores a
    /// member whose saved vote is committed for itself as leader at once, without an election,
    /// and then serves read-index reads from `max(first entry of its term, saved commit index)`.
    /// The commit index is saved lazily (module docs), so that read index can miss writes the
    /// member acknowledged before it crashed. Uncommitted, the vote makes the member stand for
    /// election: the new term's first entry is above everything in its log. Safe for Raft: the
    /// member still refuses another candidate in the same term (votes for different members
    /// in one term do not compare), and it may vote for itself again.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .get_meta::<Vote>(KEY_VOTE, vote_read_err)?
            .map(|v| Vote::new(v.leader_id.term, v.leader_id.node_id)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let value = serde_json::to_vec(&committed)
            .map_err(|e| StorageError::IO { source: StorageIOError::write(&e) })?;
        // Not waited for, not fsynced (see the module docs).
        self.send(Job::Meta { key: KEY_COMMITTED, value, done: None })
            .map_err(|m| StorageError::IO { source: write_err(&std::io::Error::other(m)) })?;
        self.note_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED, read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        {
            let mut unflushed = self.unflushed();
            for e in &entries {
                unflushed.insert(e.get_log_id().index, e.clone());
            }
        }
        let job = Job::Append { entries, callback };
        // On failure the callback went with the job: openraft sees the error returned here.
        self.send(job).map_err(|m| StorageError::IO { source: write_err(&std::io::Error::other(m)) })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(KEY_PURGED, &log_id, write_err)?;
        self.remove_range(0, Some(log_id.index))
    }
}
