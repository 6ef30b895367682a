//! The Raft log, vote and commit index in redb. Every write commits with fsync before it is
//! acknowledged to openraft.

use crate::{Entry, LogId, RaftId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{RaftLogId, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

pub(crate) const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The committed index openraft last saved, plus one (0: none), for metrics.
    committed: Arc<std::sync::atomic::AtomicU64>,
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

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Result<Self, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        let store = LogStore { db, committed: Arc::default() };
        if let Ok(Some(Some(c))) = store.get_meta::<Option<LogId>>(KEY_COMMITTED, read_err) {
            store.note_committed(Some(c));
        }
        Ok(store)
    }

    fn note_committed(&self, committed: Option<LogId>) {
        let v = committed.map_or(0, |c| c.index.saturating_add(1));
        self.committed.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The highest index known to be committed, as last saved by openraft.
    pub(crate) fn committed_index(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.committed.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        err: fn(&redb::Error) -> StorageIOError<RaftId>,
    ) -> Result<Option<T>, StorageError> {
        let map = |e: redb::Error| StorageError::IO { source: err(&e) };
        let tx = self.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(META).map_err(|e| map(e.into()))?;
        match t.get(key).map_err(|e| map(e.into()))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StorageError::IO { source: StorageIOError::read(&e) }),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        err: fn(&redb::Error) -> StorageIOError<RaftId>,
    ) -> Result<(), StorageError> {
        let map = |e: redb::Error| StorageError::IO { source: err(&e) };
        let bytes =
            serde_json::to_vec(value).map_err(|e| StorageError::IO { source: StorageIOError::write(&e) })?;
        let tx = self.db.begin_write().map_err(|e| map(e.into()))?;
        {
            let mut t = tx.open_table(META).map_err(|e| map(e.into()))?;
            t.insert(key, bytes.as_slice()).map_err(|e| map(e.into()))?;
        }
        tx.commit().map_err(|e| map(e.into()))
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let map = io::<redb::Error>(read_err);
        let tx = self.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
        let last = t.last().map_err(|e| map(e.into()))?;
        match last {
            None => Ok(None),
            Some((_, v)) => {
                let e: Entry = serde_json::from_slice(v.value())
                    .map_err(|e| StorageError::IO { source: StorageIOError::read_logs(&e) })?;
                Ok(Some(*e.get_log_id()))
            }
        }
    }

    /// Removes log entries with index in `range`.
    fn remove_range(&self, lo: u64, hi: Option<u64>) -> Result<(), StorageError> {
        let map = io::<redb::Error>(write_err);
        let tx = self.db.begin_write().map_err(|e| map(e.into()))?;
        {
            let mut t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
            match hi {
                Some(hi) => t.retain_in(lo..=hi, |_, _| false),
                None => t.retain_in(lo.., |_, _| false),
            }
            .map_err(|e| map(e.into()))?;
        }
        tx.commit().map_err(|e| map(e.into()))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((lo, hi)) = inclusive(&range) else { return Ok(Vec::new()) };
        let map = io::<redb::Error>(read_err);
        let tx = self.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
        let mut out = Vec::new();
        for item in t.range(lo..=hi).map_err(|e| map(e.into()))? {
            let (_, v) = item.map_err(|e| map(e.into()))?;
            let e: Entry = serde_json::from_slice(v.value())
                .map_err(|e| StorageError::IO { source: StorageIOError::read_logs(&e) })?;
            out.push(e);
        }
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

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE, vote_read_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed, write_err)?;
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
        let map = io::<redb::Error>(write_err);
        let tx = self.db.begin_write().map_err(|e| map(e.into()))?;
        {
            let mut t = tx.open_table(LOGS).map_err(|e| map(e.into()))?;
            for e in entries {
                let bytes = serde_json::to_vec(&e)
                    .map_err(|err| StorageError::IO { source: StorageIOError::write_logs(&err) })?;
                t.insert(e.get_log_id().index, bytes.as_slice()).map_err(|e| map(e.into()))?;
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        let res = tx.commit().map_err(|e| std::io::Error::other(e.to_string()));
        let failed = res.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(res);
        match failed {
            None => Ok(()),
            Some(msg) => {
                Err(StorageError::IO { source: StorageIOError::write_logs(&std::io::Error::other(msg)) })
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(KEY_PURGED, &log_id, write_err)?;
        self.remove_range(0, Some(log_id.index))
    }
}
