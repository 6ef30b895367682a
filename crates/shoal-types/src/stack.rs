//! Stacks: a group of services and networks deployed together from compose files
//! (`shoal stack deploy`), as in Swarm. A stack is no object of its own: its services and
//! networks carry the label [`NAMESPACE_LABEL`] with the stack's name and are named
//! `STACK_NAME`, so `docker stack` and `shoal stack` see the same stacks.
//!
//! [`StackSpec`] is what a client sends: services, networks, volumes, secrets and configs under
//! their names in the stack (`db`, `default`); the managers put them in the stack's namespace.

use crate::network::NetworkSpec;
use crate::secret::{SecretData, SecretKind, SecretReference, SecretSpec};
use crate::service::{MountType, ServiceSpec};
use crate::validate::{validate_name, FieldError, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The label that says which stack an object belongs to (Docker's name, so both CLIs agree).
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A stack's services, networks and named volumes, under their names in the stack.
///
/// A service's network that names one of `networks` is the stack's (`STACK_NAME`); any other
/// name is an existing network used as it is (compose's `external`). The same for a volume
/// mount's source and `volumes`, and a service's secret or config whose `source` is the key of
/// one of `secrets` or `configs` (any other is an existing one, compose's `external`).
/// `depends_on` names services of the stack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct StackSpec {
    pub services: Vec<ServiceSpec>,
    pub networks: Vec<NetworkSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The stack's own secrets (their data read from files by the client).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<StackSecret>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<StackSecret>,
}

/// A secret or config of the stack itself: its services name it by `key`; the deploy creates it
/// as `STACK_KEY`, or as `name` when the file gives one (compose's `name:`, which lets a file
/// rotate one: they are immutable), labelled with the stack either way, and `stack rm` removes
/// it. After [`StackSpec::scoped`], `name` is always its name in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct StackSecret {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Base64 in JSON; `Debug` shows only its length.
    #[serde(skip_serializing_if = "SecretData::is_empty")]
    pub data: SecretData,
}

impl StackSecret {
    /// Its name in the cluster: `name`, or `STACK_KEY`.
    pub fn name_in(&self, stack: &str) -> String {
        self.name.clone().unwrap_or_else(|| scoped(stack, &self.key))
    }

    /// The object to create (after scoping: named as in the cluster, labelled with the stack).
    pub fn spec(&self) -> SecretSpec {
        SecretSpec {
            name: self.name.clone().unwrap_or_else(|| self.key.clone()),
            labels: self.labels.clone(),
            data: self.data.clone(),
        }
    }
}

/// `STACK_NAME`: an object's name in the cluster.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// Whether an object with these labels belongs to `stack`.
pub fn in_stack(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|s| s == stack)
}

impl StackSpec {
    /// The stack in the cluster's namespace: every service and network named `STACK_NAME` and
    /// labelled with the stack, the service's stack networks, stack volumes and dependencies
    /// renamed alike. Refuses a stack name that is not a valid name, a name used twice, and a
    /// dependency on a service outside the stack; each service's own rules are checked by the
    /// caller on the result.
    pub fn scoped(&self, stack: &str) -> Result<StackSpec, ValidationError> {
        let mut errors = Vec::new();
        let mut push = |field: String, message: String| errors.push(FieldError { field, message });
        if let Err(m) = validate_name(stack) {
            push("stack".into(), m);
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                push(format!("services[{i}].name"), format!("service {} is listed twice", s.name));
            }
        }
        let nets: BTreeSet<&str> = self.networks.iter().map(|n| n.name.as_str()).collect();
        if nets.len() != self.networks.len() {
            push("networks".into(), "a network is listed twice".into());
        }
        let vols: BTreeSet<&str> = self.volumes.iter().map(String::as_str).collect();
        // The stack's secrets and configs: their keys and names in the cluster, each used once.
        let mut own: BTreeMap<(SecretKind, &str), String> = BTreeMap::new();
        let mut taken: BTreeSet<(SecretKind, String)> = BTreeSet::new();
        for (field, kind, list) in
            [("secrets", SecretKind::Secret, &self.secrets), ("configs", SecretKind::Config, &self.configs)]
        {
            for (i, x) in list.iter().enumerate() {
                let name = x.name_in(stack);
                if own.insert((kind, x.key.as_str()), name.clone()).is_some() {
                    push(format!("{field}[{i}].key"), format!("{kind} {} is listed twice", x.key));
                } else if !taken.insert((kind, name.clone())) {
                    push(format!("{field}[{i}].name"), format!("two {kind}s of this stack are named {name}"));
                }
            }
        }
        let label = |labels: &mut BTreeMap<String, String>| {
            labels.insert(NAMESPACE_LABEL.to_string(), stack.to_string());
        };
        let mut out = StackSpec::default();
        for (i, s) in self.services.iter().enumerate() {
            let mut s = s.clone();
            s.name = scoped(stack, &s.name);
            label(&mut s.labels);
            for n in &mut s.networks {
                if nets.contains(n.target.as_str()) {
                    n.target = scoped(stack, &n.target);
                }
            }
            for m in &mut s.task_template.mounts {
                if m.kind == MountType::Volume && vols.contains(m.source.as_str()) {
                    m.source = scoped(stack, &m.source);
                }
            }
            let t = &mut s.task_template;
            for (kind, refs) in [(SecretKind::Secret, &mut t.secrets), (SecretKind::Config, &mut t.configs)] {
                for r in refs.iter_mut() {
                    let name = own.get(&(kind, r.source.as_str())).cloned();
                    rename_reference(r, name);
                }
            }
            for (j, d) in s.depends_on.iter_mut().enumerate() {
                if !names.contains(d.service.as_str()) {
                    push(
                        format!("services[{i}].depends_on[{j}]"),
                        format!("{} is not a service of this stack", d.service),
                    );
                }
                d.service = scoped(stack, &d.service);
            }
            out.services.push(s);
        }
        for n in &self.networks {
            let mut n = n.clone();
            n.name = scoped(stack, &n.name);
            label(&mut n.labels);
            out.networks.push(n);
        }
        out.volumes = self.volumes.iter().map(|v| scoped(stack, v)).collect();
        for (list, into) in [(&self.secrets, &mut out.secrets), (&self.configs, &mut out.configs)] {
            for x in list {
                let mut x = x.clone();
                x.name = Some(x.name_in(stack));
                label(&mut x.labels);
                into.push(x);
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ValidationError(errors))
        }
    }

    /// The services in an order where each comes after the services it depends on (ties by
    /// position), or the cycle that makes this impossible (`a → b → a`).
    pub fn deploy_order(&self) -> Result<Vec<&ServiceSpec>, String> {
        let by_name: BTreeMap<&str, &ServiceSpec> =
            self.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        for s in &self.services {
            let mut path = Vec::new();
            visit(s, &by_name, &mut done, &mut path, &mut out)?;
        }
        Ok(out)
    }
}

/// A reference to one of the stack's own secrets names it as the cluster does; the file keeps its
/// path (a default target is the key, as the file says, not the name in the cluster).
fn rename_reference(r: &mut SecretReference, name: Option<String>) {
    let Some(name) = name else { return };
    if r.target.is_empty() && name != r.source {
        r.target = r.source.clone();
    }
    r.source = name;
}

fn visit<'a>(
    s: &'a ServiceSpec,
    by_name: &BTreeMap<&str, &'a ServiceSpec>,
    done: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<&'a ServiceSpec>,
) -> Result<(), String> {
    if done.contains(s.name.as_str()) {
        return Ok(());
    }
    if let Some(at) = path.iter().position(|n| *n == s.name) {
        let mut cycle: Vec<&str> = path[at..].to_vec();
        cycle.push(&s.name);
        return Err(cycle.join(" → "));
    }
    path.push(&s.name);
    for d in &s.depends_on {
        if let Some(dep) = by_name.get(d.service.as_str()) {
            visit(dep, by_name, done, path, out)?;
        }
    }
    path.pop();
    done.insert(&s.name);
    out.push(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkAttachmentConfig;
    use crate::service::{Dependency, DependencyCondition, Mount};

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec { name: name.into(), ..Default::default() };
        s.task_template.command = vec!["true".into()];
        s.depends_on = deps
            .iter()
            .map(|d| Dependency { service: d.to_string(), condition: DependencyCondition::Started })
            .collect();
        s
    }

    #[test]
    fn scoping_names_and_labels_everything_of_the_stack_only() {
        let mut web = svc("web", &["db"]);
        web.networks = vec![
            NetworkAttachmentConfig { target: "default".into(), aliases: vec!["www".into()] },
            NetworkAttachmentConfig { target: "outside".into(), aliases: vec![] },
        ];
        web.task_template.mounts = vec![
            Mount { kind: MountType::Volume, source: "data".into(), target: "/d".into(), readonly: false },
            Mount { kind: MountType::Volume, source: "shared".into(), target: "/s".into(), readonly: false },
        ];
        let spec = StackSpec {
            services: vec![web, svc("db", &[])],
            networks: vec![NetworkSpec { name: "default".into(), ..Default::default() }],
            volumes: vec!["data".into()],
            ..Default::default()
        };
        let s = spec.scoped("app").expect("valid");
        let web = &s.services[0];
        assert_eq!(web.name, "app_web");
        assert_eq!(web.labels.get(NAMESPACE_LABEL).map(String::as_str), Some("app"));
        assert_eq!(web.networks[0].target, "app_default");
        assert_eq!(web.networks[0].aliases, ["www"]);
        assert_eq!(web.networks[1].target, "outside", "an external network keeps its name");
        assert_eq!(web.task_template.mounts[0].source, "app_data");
        assert_eq!(web.task_template.mounts[1].source, "shared");
        assert_eq!(web.depends_on[0].service, "app_db");
        assert_eq!(s.networks[0].name, "app_default");
        assert!(in_stack(&s.networks[0].labels, "app"));
        assert!(!in_stack(&s.networks[0].labels, "other"));
    }

    fn own(key: &str, name: Option<&str>) -> StackSecret {
        StackSecret {
            key: key.into(),
            name: name.map(String::from),
            data: SecretData(b"x".to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn scoping_names_the_stacks_secrets_and_configs_and_leaves_external_ones() {
        let mut web = svc("web", &[]);
        let r = |source: &str, target: &str| SecretReference {
            target: target.into(),
            ..SecretReference::new(source)
        };
        web.task_template.secrets = vec![r("pw", ""), r("rotated", "/etc/pw"), r("outside", "")];
        web.task_template.configs = vec![r("pw", "/etc/app.conf")];
        let spec = StackSpec {
            services: vec![web],
            secrets: vec![own("pw", None), own("rotated", Some("pw-v2"))],
            configs: vec![own("pw", None)],
            ..Default::default()
        };
        let s = spec.scoped("app").expect("valid");
        let t = &s.services[0].task_template;
        // The default target stays the file's key: /run/secrets/pw, not /run/secrets/app_pw.
        assert_eq!((t.secrets[0].source.as_str(), t.secrets[0].target.as_str()), ("app_pw", "pw"));
        assert_eq!(t.secrets[0].path(SecretKind::Secret), "/run/secrets/pw");
        assert_eq!((t.secrets[1].source.as_str(), t.secrets[1].target.as_str()), ("pw-v2", "/etc/pw"));
        assert_eq!((t.secrets[2].source.as_str(), t.secrets[2].target.as_str()), ("outside", ""), "external");
        assert_eq!(t.configs[0].source, "app_pw", "configs are another kind");
        let names: Vec<String> = s.secrets.iter().map(|x| x.spec().name).collect();
        assert_eq!(names, ["app_pw", "pw-v2"]);
        assert!(s.secrets.iter().chain(&s.configs).all(|x| in_stack(&x.labels, "app")));
        assert_eq!(s.configs[0].spec().name, "app_pw");
        // A key listed twice, two keys named alike.
        let twice = StackSpec { secrets: vec![own("a", None), own("a", None)], ..Default::default() };
        let e = twice.scoped("app").expect_err("twice").to_string();
        assert!(e.contains("secrets[1].key: secret a is listed twice"), "{e}");
        let alike =
            StackSpec { configs: vec![own("a", None), own("b", Some("app_a"))], ..Default::default() };
        let e = alike.scoped("app").expect_err("alike").to_string();
        assert!(e.contains("configs[1].name: two configs of this stack are named app_a"), "{e}");
    }

    #[test]
    fn scoping_refuses_bad_names_duplicates_and_outside_dependencies() {
        let spec = StackSpec { services: vec![svc("a", &["zz"]), svc("a", &[])], ..Default::default() };
        let e = spec.scoped("-bad").expect_err("invalid").to_string();
        assert!(e.contains("stack: invalid name \"-bad\""), "{e}");
        assert!(e.contains("services[1].name: service a is listed twice"), "{e}");
        assert!(e.contains("services[0].depends_on[0]: zz is not a service of this stack"), "{e}");
    }

    #[test]
    fn deploy_order_puts_dependencies_first_and_names_a_cycle() {
        let spec = StackSpec {
            services: vec![svc("web", &["api", "db"]), svc("api", &["db"]), svc("db", &[]), svc("x", &[])],
            ..Default::default()
        };
        let order: Vec<&str> =
            spec.deploy_order().expect("no cycle").iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["db", "api", "web", "x"]);
        let cyclic = StackSpec {
            services: vec![svc("a", &["b"]), svc("b", &["c"]), svc("c", &["a"])],
            ..Default::default()
        };
        assert_eq!(cyclic.deploy_order().map(|_| ()), Err("a → b → c → a".to_string()));
    }
}
