//! Secrets and configs in the state: created and removed by commands, named by the services'
//! task templates, which `apply` resolves to ids (so every replica records the same ids).
//!
//! A secret is immutable: rotating one means creating another and updating the services that
//! use it (`--secret-rm old --secret-add new`, a rolling update). One that a service or a live
//! task still uses cannot be removed; the error names them.

use crate::{event, not_found, touch, Action, Applied, ClusterState, Object, StateError};
use shoal_types::{
    Secret, SecretId, SecretKind, SecretReference, ServiceSpec, TaskTemplate, Timestamp, ValidationError,
};

impl ClusterState {
    pub fn secret(&self, id: &SecretId) -> Option<&Secret> {
        self.secrets.get(id)
    }

    pub fn secret_by_name(&self, kind: SecretKind, name: &str) -> Option<&Secret> {
        self.secret_by_name.get(&(kind, name.to_string())).and_then(|id| self.secrets.get(id))
    }

    /// Secrets and configs, in id order.
    pub fn secrets(&self) -> impl ExactSizeIterator<Item = &Secret> + '_ {
        self.secrets.values()
    }

    pub(crate) fn restore_secrets(&mut self, secrets: Vec<Secret>) {
        for s in secrets {
            self.secret_by_name.insert((s.kind, s.spec.name.clone()), s.id.clone());
            self.secrets.insert(s.id.clone(), s);
        }
    }

    pub(crate) fn create_secret(
        &mut self,
        index: u64,
        at: Timestamp,
        mut secret: Secret,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        secret.spec.validate(secret.kind)?;
        if self.secrets.contains_key(&secret.id) {
            return Err(StateError::AlreadyExists { kind: secret.kind.as_str(), id: secret.id.to_string() });
        }
        if self.secret_by_name.contains_key(&(secret.kind, secret.spec.name.clone())) {
            return Err(StateError::Conflict(format!(
                "a {} named {:?} already exists",
                secret.kind, secret.spec.name
            )));
        }
        secret.created_at = at;
        touch(&mut secret.version, &mut secret.updated_at, index, at);
        out.events.push(event(index, at, Action::Create, Object::Secret(Box::new(secret.without_data()))));
        self.secret_by_name.insert((secret.kind, secret.spec.name.clone()), secret.id.clone());
        self.secrets.insert(secret.id.clone(), secret);
        Ok(())
    }

    pub(crate) fn remove_secret(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &SecretId,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        let s = self.secrets.get(id).ok_or_else(|| not_found("secret", id.as_str()))?;
        let users: Vec<String> = self
            .services
            .values()
            .filter(|svc| uses(&svc.spec.task_template, id))
            .map(|svc| svc.spec.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(StateError::Conflict(format!(
                "{} {:?} is in use by service(s) {}: remove it from them first (service update --{}-rm {})",
                s.kind,
                s.spec.name,
                users.join(", "),
                s.kind,
                s.spec.name
            )));
        }
        if let Some(t) = self.tasks.values().find(|t| t.is_live() && uses(&t.spec, id)) {
            return Err(StateError::Conflict(format!(
                "{} {:?} is still in use by task {} (a service's older version): try again once it has stopped",
                s.kind, s.spec.name, t.id
            )));
        }
        let s = self.secrets.remove(id).ok_or_else(|| not_found("secret", id.as_str()))?;
        self.secret_by_name.remove(&(s.kind, s.spec.name.clone()));
        out.events.push(event(index, at, Action::Remove, Object::Secret(Box::new(s.without_data()))));
        Ok(())
    }

    /// Records in `spec` the id of every secret and config its template names, refusing names
    /// that do not exist.
    pub(crate) fn resolve_service_secrets(&self, spec: &mut ServiceSpec) -> Result<(), StateError> {
        let mut missing = Vec::new();
        let t = &mut spec.task_template;
        for (kind, refs) in [(SecretKind::Secret, &mut t.secrets), (SecretKind::Config, &mut t.configs)] {
            for r in refs.iter_mut() {
                match self.secret_by_name(kind, &r.source) {
                    Some(s) => r.id = Some(s.id.clone()),
                    None => missing.push(format!(
                        "{kind} {:?} not found (create it with `shoal {kind} create`)",
                        r.source
                    )),
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StateError::Invalid(ValidationError::single("task_template.secrets", missing.join("; "))))
        }
    }
}

fn uses(t: &TaskTemplate, id: &SecretId) -> bool {
    let named = |r: &SecretReference| r.id.as_ref() == Some(id);
    t.secrets.iter().any(named) || t.configs.iter().any(named)
}

#[cfg(test)]
mod tests {
    use crate::{Command, Object, StateError};
    use shoal_types::{
        Secret, SecretData, SecretId, SecretKind, SecretReference, SecretSpec, Service, ServiceId,
        ServiceSpec, Timestamp,
    };

    fn at(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    fn secret(id: &str, kind: SecretKind, name: &str) -> Command {
        let spec =
            SecretSpec { name: name.into(), data: SecretData(b"hunter2".to_vec()), ..Default::default() };
        Command::CreateSecret { secret: Box::new(Secret::new(SecretId::new(id), kind, spec)) }
    }

    fn service(id: &str, secrets: &[&str]) -> Command {
        let mut spec = ServiceSpec { name: format!("svc-{id}"), ..Default::default() };
        spec.task_template.command = vec!["sleep".into(), "1".into()];
        spec.task_template.secrets = secrets.iter().map(|s| SecretReference::new(s)).collect();
        Command::CreateService { service: Box::new(Service::new(ServiceId::new(id), spec)) }
    }

    #[test]
    fn secrets_are_named_once_per_kind_and_events_carry_no_data() {
        let mut s = crate::ClusterState::new();
        let a = s.apply(at(1), secret("x1", SecretKind::Secret, "pw")).expect("create");
        let Object::Secret(ev) = &a.events[0].object else { panic!("a secret event") };
        assert!(ev.spec.data.is_empty(), "events never carry the data");
        assert_eq!(s.secret(&SecretId::new("x1")).map(|x| x.spec.data.len()), Some(7));
        // The same name as a config is another object; twice as a secret is refused.
        s.apply(at(2), secret("x2", SecretKind::Config, "pw")).expect("config of the same name");
        let err = s.apply(at(3), secret("x3", SecretKind::Secret, "pw")).expect_err("taken");
        assert!(err.to_string().contains("already exists"), "{err}");
        let empty = SecretSpec { name: "e".into(), ..Default::default() };
        let cmd =
            Command::CreateSecret { secret: Box::new(Secret::new("x4".into(), SecretKind::Secret, empty)) };
        assert!(matches!(s.apply(at(3), cmd), Err(StateError::Invalid(_))));
        // Snapshots keep them.
        let back = crate::ClusterState::restore(s.snapshot());
        assert_eq!(back, s);
        assert_eq!(back.secret_by_name(SecretKind::Config, "pw").map(|x| x.id.as_str()), Some("x2"));
    }

    #[test]
    fn services_name_existing_secrets_and_keep_them_from_removal() {
        let mut s = crate::ClusterState::new();
        let err = s.apply(at(1), service("s1", &["pw"])).expect_err("no such secret");
        assert!(err.to_string().contains("secret \"pw\" not found"), "{err}");
        s.apply(at(1), secret("x1", SecretKind::Secret, "pw")).expect("create");
        s.apply(at(2), service("s1", &["pw"])).expect("service");
        let svc = s.service(&ServiceId::new("s1")).expect("svc").clone();
        assert_eq!(svc.spec.task_template.secrets[0].id, Some(SecretId::new("x1")), "apply records the id");
        let err = s.apply(at(3), Command::RemoveSecret { id: "x1".into() }).expect_err("in use");
        assert!(err.to_string().contains("in use by service(s) svc-s1"), "{err}");
        let mut spec = svc.spec.clone();
        spec.task_template.secrets.clear();
        s.apply(
            at(4),
            Command::UpdateService { id: "s1".into(), expected_version: None, spec: Box::new(spec) },
        )
        .expect("update");
        s.apply(at(5), Command::RemoveSecret { id: "x1".into() }).expect("removed once unused");
        assert!(s.secret_by_name(SecretKind::Secret, "pw").is_none());
        let err = s.apply(at(6), Command::RemoveSecret { id: "x1".into() }).expect_err("gone");
        assert!(matches!(err, StateError::NotFound { .. }));
    }
}
