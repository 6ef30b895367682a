//! openraft's own storage test suite, run against the redb-backed log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use shoal_raft::{LogStore, StateMachineStore, StorageError, TypeConfig};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::IO { source: openraft::StorageIOError::write(&e) })?;
        let (log, sm) = shoal_raft::open(&dir.path().join("raft.redb"))
            .map_err(|e| StorageError::IO { source: openraft::StorageIOError::write(&e) })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite passes");
}

mod restart {
    use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use shoal_raft::{ErrorKind, Request, TypeConfig};
    use shoal_state::Command;
    use shoal_types::{Service, ServiceId, ServiceSpec, Timestamp};

    fn create(name: &str) -> Request {
        let mut spec = ServiceSpec { name: name.into(), ..Default::default() };
        spec.task_template.command = vec!["sleep".into()];
        let svc = Service::new(ServiceId::new(format!("id-{name}")), spec);
        Request::single(Timestamp::from_secs(10), Command::CreateService { service: Box::new(svc) })
    }

    fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 0), index), payload: EntryPayload::Normal(req) }
    }

    #[tokio::test]
    async fn state_survives_reopen_through_snapshot_and_errors_are_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        {
            let (mut log, mut sm) = shoal_raft::open(&path).expect("open");
            let out = sm.apply([entry(1, create("web")), entry(2, create("web"))]).await.expect("apply");
            assert_eq!(out[0].error, None);
            assert_eq!(
                out[1].error.as_ref().map(|e| e.kind),
                Some(ErrorKind::Conflict),
                "duplicate name refused"
            );
            sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
            log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 0), 2))).await.expect("commit");
        }
        let (mut log, mut sm) = shoal_raft::open(&path).expect("reopen");
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert!(sm.shared().read().expect("lock").state.service_by_name("web").is_some());
        assert_eq!(log.read_committed().await.expect("committed").map(|l| l.index), Some(2));
    }
}
