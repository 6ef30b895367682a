//! Format versions of the Raft store: a store, snapshot file or log entry written by a newer
//! Shoal is refused with "upgrade this binary"; a store from before formats were numbered reads
//! as format 1 (and gets the number).

use redb::{ReadableDatabase, TableDefinition};
use shoal_raft::openraft::storage::RaftLogReader;
use shoal_raft::openraft::{self, EntryPayload, RaftLogId};
use shoal_raft::{formats, Entry, LogId, Request};
use shoal_state::Command;
use shoal_types::{ServiceId, Timestamp};

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");

fn newer(what: &str, found: u32, known: u32) -> String {
    format!("{what} was written by a newer Shoal (format {found}, this binary knows up to {known}): upgrade this binary")
}

fn format_key(path: &std::path::Path) -> Option<u32> {
    let db = redb::Database::open(path).expect("open");
    let tx = db.begin_read().expect("read");
    let t = tx.open_table(META).expect("meta");
    let v = t.get("format").expect("get")?;
    Some(serde_json::from_slice(v.value()).expect("number"))
}

fn set_format_key(path: &std::path::Path, value: Option<u32>) {
    let db = redb::Database::open(path).expect("open");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(META).expect("meta");
        match value {
            Some(v) => t.insert("format", serde_json::to_vec(&v).expect("json").as_slice()).map(|_| ()),
            None => t.remove("format").map(|_| ()),
        }
        .expect("change");
    }
    tx.commit().expect("commit");
}

#[test]
fn a_store_records_its_format_and_a_newer_one_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    drop(shoal_raft::open(&path).expect("new store"));
    assert_eq!(format_key(&path), Some(formats::STORE));
    // A store from before formats were numbered: format 1, numbered on open.
    set_format_key(&path, None);
    drop(shoal_raft::open(&path).expect("unnumbered store"));
    assert_eq!(format_key(&path), Some(1));
    set_format_key(&path, Some(formats::STORE + 1));
    let e = shoal_raft::open(&path).err().expect("newer store refused");
    assert!(e.to_string().contains(&newer("the Raft store", formats::STORE + 1, formats::STORE)), "{e}");
    assert_eq!(format_key(&path), Some(formats::STORE + 1), "left as it was");
}

#[test]
fn a_snapshot_file_of_a_newer_format_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    drop(shoal_raft::open(&path).expect("new store"));
    let found = formats::SNAPSHOT_FILE + 1;
    std::fs::write(tmp.path().join("raft.snapshot"), format!("SHOAL-SNAPSHOT-{found}\nwhatever"))
        .expect("write");
    let e = shoal_raft::open(&path).err().expect("newer snapshot refused");
    assert!(e.to_string().contains(&newer("the snapshot file", found, formats::SNAPSHOT_FILE)), "{e}");
}

#[tokio::test]
async fn a_log_entry_of_a_newer_format_is_refused_when_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("raft.redb");
    drop(shoal_raft::open(&path).expect("new store"));
    let found = formats::ENTRY + 1;
    let entry = |command: Command, index: u64| Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            format: found,
            ..Request::single(Timestamp::from_secs(1), command)
        }),
    };
    let remove = || Command::RemoveService { id: ServiceId::new("x") };
    let decodable = serde_json::to_vec(&entry(remove(), 1)).expect("json");
    let undecodable = String::from_utf8(serde_json::to_vec(&entry(remove(), 2)).expect("json"))
        .expect("utf8")
        .replace("remove_service", "a_command_of_the_future");
    {
        let db = redb::Database::open(&path).expect("open");
        let tx = db.begin_write().expect("write");
        {
            let mut t = tx.open_table(LOGS).expect("logs");
            t.insert(1, decodable.as_slice()).expect("insert");
            t.insert(2, undecodable.as_bytes()).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let (mut log, _sm) = shoal_raft::open(&path).expect("open");
    for i in [1u64, 2] {
        let e = log.try_get_log_entries(i..i + 1).await.expect_err("newer entry refused");
        assert!(e.to_string().contains(&newer("a Raft log entry", found, formats::ENTRY)), "entry {i}: {e}");
    }
    // Today's entries read back (and carry no format field while it is 1).
    let today = Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
        payload: EntryPayload::Normal(Request::single(Timestamp::from_secs(1), remove())),
    };
    let json = serde_json::to_string(&today).expect("json");
    assert!(!json.contains("\"format\"") && !json.contains("\"batch\""), "{json}");
    let back: Entry = serde_json::from_str(&json).expect("read back");
    assert_eq!(back.get_log_id().index, 3);
}

#[tokio::test]
async fn a_snapshot_of_a_newer_format_from_the_leader_is_refused_and_changes_nothing() {
    use shoal_raft::openraft::storage::RaftStateMachine;
    let tmp = tempfile::tempdir().expect("tmp");
    let (_log, mut sm) = shoal_raft::open(&tmp.path().join("raft.redb")).expect("open");
    let found = formats::STATE + 1;
    let state = shoal_state::Snapshot { format: found, ..Default::default() };
    let meta = shoal_raft::SnapshotMeta {
        last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 10)),
        last_membership: Default::default(),
        snapshot_id: "newer".into(),
    };
    let data = Box::new(std::io::Cursor::new(serde_json::to_vec(&state).expect("json")));
    let e = sm.install_snapshot(&meta, data).await.expect_err("newer snapshot refused");
    assert!(e.to_string().contains(&newer("the snapshot", found, formats::STATE)), "{e}");
    assert!(sm.get_current_snapshot().await.expect("read").is_none(), "nothing was installed");
    assert!(!tmp.path().join("raft.snapshot").exists());
}
