//! Encryption at rest in the Raft store: the snapshot file is sealed with the data key
//! (`raft.key`, 0600), a store from before encryption still reads its plain entries and
//! snapshot, and a sealed store without its key is refused instead of given a new one.

use shoal_raft::openraft::storage::{RaftLogReader, RaftStateMachine};
use shoal_raft::openraft::{self, EntryPayload};
use shoal_raft::{Entry, LogId, Request};
use shoal_state::Command;
use shoal_types::{ServiceId, Timestamp};

const LOGS: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("raft_log");
const MARK: &str = "a-string-that-must-not-be-on-disk";

fn contains(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read(path).expect("read").windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_snapshot_file_is_sealed_and_reads_back() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    let (_log, mut sm) = shoal_raft::open(&path).expect("open");
    assert_eq!(std::fs::metadata(tmp.path().join("raft.key")).expect("key").mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&path).expect("store").mode() & 0o777, 0o600, "raft.redb is owner-only");
    let mut state = shoal_state::Snapshot::default();
    state.config.task_history_limit = 3;
    let mut data = serde_json::to_vec(&state).expect("json");
    // A distinctive string inside the state (a label of the cluster config would do; any JSON
    // field with a string value is as good).
    let json =
        String::from_utf8(data.clone()).expect("utf8").replacen('{', &format!("{{\"x\":\"{MARK}\","), 1);
    data = json.into_bytes();
    let meta = shoal_raft::SnapshotMeta {
        last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 10)),
        last_membership: Default::default(),
        snapshot_id: "s".into(),
    };
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data.clone()))).await.expect("install");
    let file = tmp.path().join("raft.snapshot");
    assert!(!contains(&file, MARK), "the snapshot file is sealed");
    assert!(contains(&file, "SHOAL-SNAPSHOT-2\n"));
    drop(sm);
    drop(_log);
    let (_log, mut sm) = shoal_raft::open(&path).expect("reopen");
    let current = sm.get_current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(current.snapshot.into_inner(), data);
    drop(sm);
    drop(_log);
    // Without its key the store is refused, and no new key is made.
    std::fs::remove_file(tmp.path().join("raft.key")).expect("rm key");
    let e = shoal_raft::open(&path).err().expect("refused");
    assert!(e.to_string().contains("is encrypted but its data key"), "{e}");
    assert!(!tmp.path().join("raft.key").exists());
}

#[tokio::test]
async fn plain_records_from_before_encryption_still_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    // A store as an older Shoal left it: a plain entry, a plain (format 1) snapshot, no key.
    let entry = Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(Request::single(
            Timestamp::from_secs(1),
            Command::RemoveService { id: ServiceId::new(MARK) },
        )),
    };
    {
        let db = redb::Database::create(&path).expect("create");
        let tx = db.begin_write().expect("write");
        tx.open_table(LOGS)
            .expect("logs")
            .insert(1, serde_json::to_vec(&entry).expect("json").as_slice())
            .expect("insert");
        tx.commit().expect("commit");
    }
    let meta = shoal_raft::SnapshotMeta {
        last_log_id: None,
        last_membership: Default::default(),
        snapshot_id: "old".into(),
    };
    let state = serde_json::to_vec(&shoal_state::Snapshot::default()).expect("json");
    let meta_json = serde_json::to_vec(&meta).expect("json");
    let mut v1 = b"SHOAL-SNAPSHOT-1\n".to_vec();
    v1.extend_from_slice(&(meta_json.len() as u64).to_le_bytes());
    v1.extend_from_slice(&meta_json);
    v1.extend_from_slice(&state);
    std::fs::write(tmp.path().join("raft.snapshot"), &v1).expect("write");
    let (mut log, mut sm) = shoal_raft::open(&path).expect("open an older store");
    assert!(tmp.path().join("raft.key").exists(), "it gets a key for what it writes from now on");
    let back = log.try_get_log_entries(1..2).await.expect("read");
    assert_eq!(back, vec![entry]);
    let current = sm.get_current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(current.meta.snapshot_id, "old");
}

#[tokio::test]
async fn a_store_made_world_readable_is_owner_only_again_when_opened() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    drop(shoal_raft::open(&path).expect("open"));
    // As older versions left it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(shoal_raft::open(&path).expect("open again"));
    assert_eq!(std::fs::metadata(&path).expect("store").mode() & 0o777, 0o600);
}
