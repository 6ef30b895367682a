//! A Shoal manager: a Raft member ([`shoal_raft::RaftNode`]) plus the work only the leader does.
//!
//! **Controllers** run only on the leader: compute a plan with `shoal_core::tick` on the local
//! replica, commit it through Raft; the state machine verifies it against the state at apply time
//! (Nomad's plan-apply), so a plan made on a slightly stale replica can never overcommit a node or
//! fill a slot twice. A pass runs after every change to the state (batched), when the brain's
//! `wake_at` falls due, and at least once a second; passes stop as soon as leadership is lost and
//! a new leader continues from the replicated state (the brain keeps no memory between passes).

use shoal_raft::{RaftNode, RaftWatch};
use shoal_state::Command;
use shoal_types::Timestamp;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, watch};

pub use shoal_raft::{
    CommandError, Consistency, ErrorKind, ManagerNode, NodeConfig, RaftId, RaftStatus, ReadError,
    SingleManagerNetwork, StartError, WriteError,
};

pub struct Manager {
    pub node: RaftNode,
    /// Upper bound between two controller passes.
    max_pass_interval: Duration,
    stop: watch::Sender<bool>,
}

impl Manager {
    /// Starts the controllers over a started Raft member.
    pub fn start(node: RaftNode) -> Arc<Manager> {
        let (stop, stop_rx) = watch::channel(false);
        let m = Arc::new(Manager { node, max_pass_interval: Duration::from_secs(1), stop });
        tokio::spawn(controllers(m.clone(), stop_rx));
        m
    }

    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.node.shutdown().await;
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // The brain needs a seed, not secrecy; fall back to the clock if the OS source fails.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return Timestamp::from_system_time(SystemTime::now()).as_nanos();
    }
    u64::from_le_bytes(b)
}

/// The leader's control loop.
async fn controllers(m: Arc<Manager>, mut stop: watch::Receiver<bool>) {
    let mut raft: RaftWatch = m.node.watch();
    let mut events = m.node.subscribe();
    let min_gap = Duration::from_millis(20);
    loop {
        if *stop.borrow() {
            return;
        }
        if !m.node.is_leader() {
            tokio::select! {
                _ = raft.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let now = Timestamp::from_system_time(SystemTime::now());
        let tick = {
            let d = m.node.local_state();
            shoal_core::tick(&d.state, now, random_seed())
        };
        if !tick.plan.is_empty() {
            let items = tick.plan.len();
            match m.node.write(Command::ApplyPlan { plan: tick.plan }).await {
                Ok(r) if !r.rejected.is_empty() => {
                    tracing::debug!(items, rejected = r.rejected.len(), "plan partly rejected")
                }
                Ok(_) => tracing::debug!(items, "plan committed"),
                Err(e) => tracing::warn!(error = %e, "plan not committed"),
            }
        }
        let mut wait = m.max_pass_interval;
        if let Some(w) = tick.wake_at {
            wait = wait.min(w.since(now));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait.max(min_gap)) => {}
            r = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = r {
                    return;
                }
                // Batch a burst of changes into one pass.
                tokio::time::sleep(min_gap).await;
                while events.try_recv().is_ok() {}
            }
            _ = raft.changed() => {}
            _ = stop.changed() => {}
        }
    }
}
