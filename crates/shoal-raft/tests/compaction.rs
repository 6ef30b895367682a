//! A Raft store whose file is mostly free pages (a large log since purged) is compacted when it
//! is opened, and keeps what it holds; a dense one is left as it is.

use shoal_raft::openraft::storage::RaftLogReader;

const LOGS: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("raft_log");

fn size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

#[tokio::test]
async fn a_sparse_store_is_compacted_on_open_and_keeps_its_entries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    drop(shoal_raft::open(&path).expect("create"));
    // 64 MB of log entries, then all but the last purged, as the log is behind snapshots.
    let entry = |i: u64| shoal_raft::Entry {
        log_id: shoal_raft::LogId::new(shoal_raft::openraft::CommittedLeaderId::new(1, 1), i),
        payload: shoal_raft::openraft::EntryPayload::Blank,
    };
    {
        let db = redb::Database::create(&path).expect("open");
        let junk = vec![7u8; 64 << 10];
        for chunk in 0..8u64 {
            let tx = db.begin_write().expect("write");
            {
                let mut t = tx.open_table(LOGS).expect("logs");
                for i in chunk * 128..(chunk + 1) * 128 {
                    t.insert(i + 1, junk.as_slice()).expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        // The entry that stays is written last, at the end of the file, so that purging the
        // others leaves holes in front of it that no trimming of the file's end can return.
        let tx = db.begin_write().expect("write");
        tx.open_table(LOGS)
            .expect("logs")
            .insert(1025, serde_json::to_vec(&entry(1025)).expect("json").as_slice())
            .expect("insert");
        tx.commit().expect("commit");
        let tx = db.begin_write().expect("write");
        tx.open_table(LOGS).expect("logs").retain(|k, _| k > 1024).expect("purge");
        tx.commit().expect("commit");
    }
    let before = size(&path);
    assert!(before > 60 << 20, "the file holds the purged log's pages: {before} bytes");
    let (mut log, _sm) = shoal_raft::open(&path).expect("reopen");
    let after = size(&path);
    // Without the compaction redb trims only the free pages at the end (28 MB were left here).
    assert!(after < 4 << 20, "compacted on open: {before} -> {after} bytes");
    assert_eq!(log.try_get_log_entries(1025..1026).await.expect("read"), vec![entry(1025)]);
    drop(log);

    // A dense store (as much in use as the file holds) is not touched.
    let dense = tmp.path().join("dense.redb");
    drop(shoal_raft::open(&dense).expect("create"));
    {
        let db = redb::Database::create(&dense).expect("open");
        let tx = db.begin_write().expect("write");
        {
            let mut t = tx.open_table(LOGS).expect("logs");
            let junk = vec![1u8; 64 << 10];
            for i in 0..512u64 {
                t.insert(i + 1, junk.as_slice()).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let before = size(&dense);
    drop(shoal_raft::open(&dense).expect("reopen"));
    assert_eq!(size(&dense), before, "a dense store keeps its size");
}
