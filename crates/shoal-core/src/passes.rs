//! Which services the next controller pass looks at: the leader's control loop and the
//! simulator keep one [`NextPass`] each and ask it before every pass, so the simulator replays
//! the leader's decisions.

use crate::Scope;
use shoal_state::{ClusterConfig, ClusterState, Object};
use shoal_types::Timestamp;
use std::time::Duration;

/// How long the leader goes at most without a full pass: a safety net, since every change it
/// hears of already starts a pass over the services it concerns.
pub const FULL_PASS_INTERVAL: Duration = Duration::from_secs(10);

/// What the next pass owes: the services with a change since the last pass, and when a full
/// pass is due.
#[derive(Clone, Debug, Default)]
pub struct NextPass {
    /// Services with a change since the last pass (all of them at first).
    scope: Scope,
    /// The earliest time something scheduled falls due (restart delays, update monitors, job
    /// schedules): a full pass then.
    wake_at: Option<Timestamp>,
    last_full: Option<Timestamp>,
    /// The term and the cluster's settings at the last pass: a change makes the next one full
    /// (settings raise no event).
    term: u64,
    config: Option<ClusterConfig>,
}

impl NextPass {
    /// Notes a change the state machine applied.
    pub fn note(&mut self, object: &Object) {
        self.scope.add(object);
    }

    /// Changes were lost (the event stream lagged), or a plan did not commit whole: the next
    /// pass looks at everything.
    pub fn look_at_everything(&mut self) {
        self.scope = Scope::All;
    }

    /// The scope of the pass to make now (empty: no pass is needed); nothing is owed afterwards
    /// until new changes arrive.
    pub fn take(&mut self, state: &ClusterState, term: u64, now: Timestamp) -> Scope {
        let full = self.wake_at.is_some_and(|w| w <= now)
            || self.last_full.is_none_or(|t| now < t || now.since(t) >= FULL_PASS_INTERVAL)
            || term != self.term
            || self.config.as_ref() != Some(state.config());
        self.term = term;
        if self.config.as_ref() != Some(state.config()) {
            self.config = Some(state.config().clone());
        }
        let scope = std::mem::replace(&mut self.scope, Scope::none());
        if full {
            self.last_full = Some(now);
            return Scope::All;
        }
        scope
    }

    /// Records a pass's `wake_at`: a full pass knows every timer, a scoped one only its
    /// services', so the earlier one is kept.
    pub fn passed(&mut self, scope: &Scope, wake_at: Option<Timestamp>) {
        self.wake_at = match (scope, self.wake_at, wake_at) {
            (Scope::All, _, w) => w,
            (_, Some(a), Some(b)) => Some(a.min(b)),
            (_, a, b) => a.or(b),
        };
    }

    /// The earliest time something scheduled falls due.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.wake_at
    }

    /// How long to wait for changes before passing again anyway (at most `max`).
    pub fn wait(&self, now: Timestamp, max: Duration) -> Duration {
        let mut wait = max;
        if let Some(w) = self.wake_at {
            wait = wait.min(w.since(now));
        }
        if let Some(t) = self.last_full {
            wait = wait.min(FULL_PASS_INTERVAL.saturating_sub(now.since(t)));
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::{NextPass, FULL_PASS_INTERVAL};
    use crate::Scope;
    use shoal_state::{ClusterConfig, ClusterState, Command, Object};
    use shoal_types::{Service, ServiceId, ServiceSpec, Timestamp};
    use std::time::Duration;

    #[test]
    fn passes_look_at_what_changed_and_at_everything_when_owed() {
        let mut state = ClusterState::new();
        let now = Timestamp::from_secs(1_700_000_000);
        let mut next = NextPass::default();
        assert_eq!(next.take(&state, 1, now), Scope::All, "a new leader starts with a full pass");
        next.passed(&Scope::All, None);
        assert!(next.take(&state, 1, now).is_empty(), "nothing changed: no pass");
        // A service's change: a pass over it alone.
        let svc =
            Service::new(ServiceId::new("s1"), ServiceSpec { name: "web".into(), ..Default::default() });
        next.note(&Object::Service(Box::new(svc)));
        let scope = next.take(&state, 1, now);
        assert_eq!(scope, Scope::Services([ServiceId::new("s1")].into_iter().collect()));
        // Its timer, learnt from the scoped pass, is kept and makes a full pass when due.
        let due = now.saturating_add(Duration::from_secs(5));
        next.passed(&scope, Some(due));
        next.passed(&Scope::none(), None);
        assert_eq!(next.wait(now, Duration::from_secs(60)), Duration::from_secs(5));
        assert!(next.take(&state, 1, now).is_empty());
        assert_eq!(next.take(&state, 1, due), Scope::All);
        next.passed(&Scope::All, None);
        // A new term, or new cluster settings (which raise no event): full passes.
        assert_eq!(next.take(&state, 2, due), Scope::All);
        assert!(next.take(&state, 2, due).is_empty());
        state
            .apply(now, Command::SetConfig { config: ClusterConfig { task_history_limit: 2 } })
            .expect("config");
        assert_eq!(next.take(&state, 2, due), Scope::All);
        assert!(next.take(&state, 2, due).is_empty());
        // Changes that were lost: a full pass.
        next.look_at_everything();
        assert_eq!(next.take(&state, 2, due), Scope::All);
        // The safety net, and a clock that went back.
        assert!(next.take(&state, 2, due.saturating_add(Duration::from_secs(9))).is_empty());
        assert_eq!(next.take(&state, 2, due.saturating_add(FULL_PASS_INTERVAL)), Scope::All);
        assert_eq!(next.take(&state, 2, now), Scope::All);
    }
}
