//! Container options of a task template (docker's `service create --read-only`, `--cap-add`,
//! `--dns`, `--init`, `--tty`, `--container-label`, `--ulimit`, `--group`, `--log-driver`): their
//! types, the parsers the CLI, the Docker API and compose share, and which built-in driver can
//! honour which option ([`DRIVER_OPTIONS`]), the rule behind
//! [`crate::TaskTemplate::driver_candidates`] and the validation that refuses the rest.

use crate::service::TaskTemplate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The task's resolver settings (docker's `--dns`, `--dns-search`, `--dns-option`). Each list
/// that is given replaces that part of the node's `resolv.conf`; on overlay networks the
/// nameserver stays Shoal's resolver, which forwards the names the cluster does not own to the
/// task's servers (as Swarm's embedded DNS does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct DnsConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl DnsConfig {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// One resource limit (docker's `--ulimit name=soft[:hard]`); -1 is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Docker's ulimit names and the kernel's resource of each (`RLIMIT_<NAME>`).
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl Ulimit {
    /// `RLIMIT_NOFILE` for `nofile`.
    pub fn rlimit_name(&self) -> String {
        format!("RLIMIT_{}", self.name.to_ascii_uppercase())
    }

    /// A limit as the kernel takes it: -1 (unlimited) is `RLIM_INFINITY`.
    pub fn kernel_value(v: i64) -> u64 {
        u64::try_from(v).unwrap_or(u64::MAX)
    }
}

/// `name=soft[:hard]` (docker's `--ulimit`); without a hard limit it equals the soft one.
pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    let syntax = || format!("expected NAME=SOFT[:HARD] (e.g. nofile=1024:2048), got {s:?}");
    let (name, values) = s.split_once('=').ok_or_else(syntax)?;
    let name = name.trim().to_ascii_lowercase();
    let number = |v: &str| v.trim().parse::<i64>().map_err(|_| syntax());
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let v = number(values)?;
            (v, v)
        }
    };
    let u = Ulimit { name, soft, hard };
    check_ulimit(&u)?;
    Ok(u)
}

pub(crate) fn check_ulimit(u: &Ulimit) -> Result<(), String> {
    if !ULIMIT_NAMES.contains(&u.name.as_str()) {
        return Err(format!("unknown ulimit {:?} (one of {})", u.name, ULIMIT_NAMES.join(", ")));
    }
    if u.soft < -1 || u.hard < -1 {
        return Err(format!("{}: limits are numbers from 0, or -1 for unlimited", u.name));
    }
    let (soft, hard) = (Ulimit::kernel_value(u.soft), Ulimit::kernel_value(u.hard));
    if soft > hard {
        return Err(format!("{}: the soft limit {} is above the hard limit {}", u.name, u.soft, u.hard));
    }
    Ok(())
}

/// Linux capabilities (without `CAP_`), as docker and runc name them.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `all` → `ALL` (docker's names,
/// any case).
pub fn normalize_capability(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(format!("unknown capability {s:?} (e.g. NET_ADMIN, CAP_SYS_TIME or ALL)"))
    }
}

/// `--log-driver` with its options. Shoal keeps task logs itself (`shoal service logs`), rotated
/// by size; `json-file` and `local` name that store, and their `max-size`/`max-file` options are
/// honoured. Every other driver or option is refused ([`check_log_driver`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct LogDriver {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// The log drivers Shoal accepts: both name its own store.
pub const LOG_DRIVERS: &[&str] = &["json-file", "local"];
/// Why another log driver is refused.
pub const LOG_DRIVER_REFUSAL: &str = "not supported: Shoal keeps task logs itself; see shoal service logs";

impl LogDriver {
    /// `max-size` in bytes, when given and valid.
    pub fn max_size(&self) -> Option<u64> {
        self.options.get("max-size").and_then(|v| parse_log_size(v).ok())
    }
    /// `max-file`, when given and valid.
    pub fn max_file(&self) -> Option<u32> {
        self.options.get("max-file").and_then(|v| v.trim().parse().ok())
    }
}

/// `10m`, `1g`, `512k`, bytes: docker's `max-size` (binary units).
pub fn parse_log_size(s: &str) -> Result<u64, String> {
    let err = || format!("max-size {s:?}: expected bytes or a number with k, m or g (e.g. 10m)");
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| err())?;
    let bytes = n.checked_mul(mul).ok_or_else(err)?;
    if bytes == 0 {
        return Err(format!("max-size {s:?}: must be above 0"));
    }
    Ok(bytes)
}

/// Every problem of a log driver setting.
pub fn check_log_driver(l: &LogDriver) -> Vec<String> {
    if !LOG_DRIVERS.contains(&l.name.as_str()) {
        return vec![format!("log driver {:?}: {LOG_DRIVER_REFUSAL}", l.name)];
    }
    let mut errors = Vec::new();
    for (k, v) in &l.options {
        match k.as_str() {
            "max-size" => {
                if let Err(e) = parse_log_size(v) {
                    errors.push(e);
                }
            }
            "max-file" => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => {}
                _ => errors.push(format!("max-file {v:?}: expected a whole number from 1")),
            },
            other => errors.push(format!(
                "log option {other:?}: not supported (Shoal keeps task logs itself and honours only max-size and max-file; see shoal service logs)"
            )),
        }
    }
    errors
}

/// An option not every driver can honour, and the built-in drivers that can.
pub struct DriverOption {
    /// The template's field, for validation messages (`task_template.<field>`).
    pub field: &'static str,
    /// What a driver that cannot would fail to do ("mount the root filesystem read-only").
    pub what: &'static str,
    /// Whether a template uses it.
    pub used: fn(&TaskTemplate) -> bool,
    /// The built-in drivers that honour it.
    pub drivers: &'static [&'static str],
}

/// Which built-in driver honours which container option. Docker honours all of them; the oci
/// driver all but a terminal; the process driver (a plain process on the node, no image, no
/// root filesystem of its own, no capabilities of its own) only what its shim can set before the
/// task starts. A driver Shoal does not know is left to its node to judge.
pub const DRIVER_OPTIONS: &[DriverOption] = &[
    DriverOption {
        field: "read_only",
        what: "mount the root filesystem read-only",
        used: |t| t.read_only,
        drivers: &["docker", "oci"],
    },
    DriverOption {
        field: "cap_add",
        what: "add capabilities",
        used: |t| !t.cap_add.is_empty(),
        drivers: &["docker", "oci"],
    },
    DriverOption {
        field: "cap_drop",
        what: "drop capabilities",
        used: |t| !t.cap_drop.is_empty(),
        drivers: &["docker", "oci"],
    },
    DriverOption {
        field: "init",
        what: "run an init process in the task",
        used: |t| t.init,
        drivers: &["docker", "oci"],
    },
    DriverOption { field: "tty", what: "give the task a terminal", used: |t| t.tty, drivers: &["docker"] },
    DriverOption {
        field: "container_labels",
        what: "label a container (its tasks run no container)",
        used: |t| !t.container_labels.is_empty(),
        drivers: &["docker", "oci"],
    },
];

fn builtin(driver: &str) -> bool {
    matches!(driver, "process" | "oci" | "docker")
}

impl TaskTemplate {
    /// The options this template uses that `driver` cannot honour (none for a driver Shoal does
    /// not know).
    pub fn options_unsupported_by(&self, driver: &str) -> Vec<&'static DriverOption> {
        if !builtin(driver) {
            return Vec::new();
        }
        DRIVER_OPTIONS.iter().filter(|o| (o.used)(self) && !o.drivers.contains(&driver)).collect()
    }

    /// Whether the template uses any container option (the rules above apply).
    pub fn uses_container_options(&self) -> bool {
        self.read_only
            || !self.cap_add.is_empty()
            || !self.cap_drop.is_empty()
            || !self.dns.is_empty()
            || self.init
            || self.tty
            || !self.container_labels.is_empty()
            || !self.ulimits.is_empty()
            || !self.groups.is_empty()
            || self.log_driver.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_like_dockers() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok(Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 })
        );
        assert_eq!(parse_ulimit("NPROC=64"), Ok(Ulimit { name: "nproc".into(), soft: 64, hard: 64 }));
        assert_eq!(parse_ulimit("core=-1"), Ok(Ulimit { name: "core".into(), soft: -1, hard: -1 }));
        assert!(parse_ulimit("nofile=2048:1024").expect_err("soft > hard").contains("above the hard"));
        assert!(parse_ulimit("files=1").expect_err("name").contains("unknown ulimit"));
        assert!(parse_ulimit("nofile").expect_err("syntax").contains("NAME=SOFT"));
        assert!(parse_ulimit("nofile=x").is_err());
        assert!(parse_ulimit("nofile=10:-1").is_ok(), "unlimited hard limit");
        assert!(parse_ulimit("nofile=-1:10").is_err(), "unlimited soft under a hard limit");
    }

    #[test]
    fn capabilities_normalize() {
        assert_eq!(normalize_capability("net_admin").as_deref(), Ok("CAP_NET_ADMIN"));
        assert_eq!(normalize_capability("CAP_SYS_TIME").as_deref(), Ok("CAP_SYS_TIME"));
        assert_eq!(normalize_capability("all").as_deref(), Ok("ALL"));
        assert!(normalize_capability("CAP_FLY").is_err());
    }

    #[test]
    fn log_drivers_are_shoals_store_only() {
        let ld = |name: &str, opts: &[(&str, &str)]| LogDriver {
            name: name.into(),
            options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert!(check_log_driver(&ld("json-file", &[("max-size", "10m"), ("max-file", "3")])).is_empty());
        assert_eq!(ld("local", &[("max-size", "2k")]).max_size(), Some(2048));
        assert!(check_log_driver(&ld("syslog", &[]))[0].contains("Shoal keeps task logs itself"));
        assert!(check_log_driver(&ld("json-file", &[("compress", "true")]))[0].contains("\"compress\""));
        assert!(!check_log_driver(&ld("json-file", &[("max-file", "0")])).is_empty());
        assert!(!check_log_driver(&ld("json-file", &[("max-size", "ten")])).is_empty());
    }
}
