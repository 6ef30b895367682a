//! Secrets and configs: named, immutable blobs the managers keep and hand only to the nodes that
//! run a task needing them, which place them in the task in memory (a tmpfs), never on a disk.
//!
//! Both are one object type ([`Secret`]) told apart by [`SecretKind`], as they differ only in
//! who may read the data back (a config's `inspect` shows it, a secret's never does) and where
//! a task finds them by default (`/run/secrets/NAME`, configs at `/NAME`).

use crate::id::SecretId;
use crate::time::Timestamp;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Secrets and configs hold at most 500 KiB, as in Docker.
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// At most this many secrets and configs per task template, together.
pub const MAX_REFERENCES: usize = 64;
/// Where a secret whose target is a relative name appears in a task.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Where the process driver (whose tasks share the node's file system) places configs: the only
/// place besides [`SECRETS_DIR`] it can mount them without changing the node's files.
pub const PROCESS_CONFIGS_DIR: &str = "/run/configs";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum SecretKind {
    #[default]
    Secret,
    Config,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Secret => "secret",
            SecretKind::Config => "config",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret or a config: meta and spec; there is no status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Secret {
    pub id: SecretId,
    pub kind: SecretKind,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: SecretSpec,
}

impl Secret {
    /// A secret about to be created: the store fills in version and times.
    pub fn new(id: SecretId, kind: SecretKind, spec: SecretSpec) -> Secret {
        Secret { id, kind, version: 0, created_at: Timestamp::ZERO, updated_at: Timestamp::ZERO, spec }
    }

    /// The same object without its data (for events, lists and a secret's `inspect`).
    pub fn without_data(&self) -> Secret {
        let mut s = self.clone();
        s.spec.data = SecretData::default();
        s
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct SecretSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The content (base64 in JSON). Empty in anything shown to a client for a secret.
    #[serde(default, skip_serializing_if = "SecretData::is_empty")]
    pub data: SecretData,
}

/// Secret bytes: base64 in JSON, and `Debug` shows only their length, so no log line, panic
/// message or error can carry them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(pub Vec<u8>);

impl SecretData {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

impl Serialize for SecretData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(SecretData)
            .map_err(|_| serde::de::Error::custom("data: not standard base64"))
    }
}

/// A string that must never be shown (an unlock key): `Debug` redacts it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[derive(schemars::JsonSchema)]
pub struct SecretString(pub String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secret and config names: 1-64 of `[A-Za-z0-9-_.]`, starting and ending alphanumeric (Docker's
/// rule).
pub fn validate_secret_name(kind: SecretKind, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {kind} name is required"));
    }
    if name.len() > 64 {
        return Err(format!("{kind} name {name:?} is longer than 64 characters"));
    }
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok_chars || !ends_ok {
        return Err(format!(
            "invalid {kind} name {name:?}: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

impl SecretSpec {
    pub fn validate(&self, kind: SecretKind) -> Result<(), crate::ValidationError> {
        let mut errors = Vec::new();
        let mut push = |field: &str, message: String| {
            errors.push(crate::validate::FieldError { field: field.into(), message })
        };
        if let Err(m) = validate_secret_name(kind, &self.name) {
            push("name", m);
        }
        if let Err(m) = crate::validate::validate_labels(&self.labels) {
            push("labels", m);
        }
        if self.data.is_empty() {
            push("data", format!("a {kind} needs data (1 byte to {} KiB)", MAX_SECRET_BYTES / 1024));
        }
        if self.data.len() > MAX_SECRET_BYTES {
            push("data", format!("{} bytes is above the limit of {MAX_SECRET_BYTES}", self.data.len()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(crate::ValidationError(errors))
        }
    }
}

/// A task's use of a secret or config: which one (by name; the managers record its id), where
/// the task finds it, and the file's owner and mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct SecretReference {
    /// The secret's (config's) name.
    pub source: String,
    /// Set by the managers when the service is created or updated (the object `source` named
    /// then): a secret removed and created again under the same name is another secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<SecretId>,
    /// A path in the task; relative: under `/run/secrets` for a secret, under `/` for a config.
    /// Empty: the source's name there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// The file's mode (default 0444, as in Docker).
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o444
}

impl SecretReference {
    pub fn new(source: &str) -> SecretReference {
        SecretReference {
            source: source.into(),
            id: None,
            target: String::new(),
            uid: 0,
            gid: 0,
            mode: 0o444,
        }
    }

    /// The absolute path the task finds the file at.
    pub fn path(&self, kind: SecretKind) -> String {
        let target = if self.target.is_empty() { self.source.as_str() } else { self.target.as_str() };
        if target.starts_with('/') {
            return target.to_string();
        }
        match kind {
            SecretKind::Secret => format!("{SECRETS_DIR}/{target}"),
            SecretKind::Config => format!("/{target}"),
        }
    }

    /// The structure's rules (the named object's existence is the managers' to check).
    pub fn validate(&self, kind: SecretKind) -> Result<(), String> {
        validate_secret_name(kind, &self.source)?;
        let path = self.path(kind);
        if path.len() > 4096 || path.contains('\0') {
            return Err(format!("target {:?} is not a valid path", self.target));
        }
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return Err(format!(
                "target {:?}: a path without empty, '.' or '..' parts and no trailing '/' is required",
                self.target
            ));
        }
        if self.mode > 0o777 {
            return Err(format!("mode {:o} is not a file mode (0 to 0777)", self.mode));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_base64_and_never_debug_printed() {
        let d = SecretData(b"hunter2".to_vec());
        assert_eq!(format!("{d:?}"), "<7 bytes redacted>");
        let spec = SecretSpec { name: "pw".into(), labels: BTreeMap::new(), data: d.clone() };
        assert!(!format!("{spec:?}").contains("hunter2"));
        let json = serde_json::to_string(&spec).expect("json");
        assert_eq!(json, r#"{"name":"pw","labels":{},"data":"aHVudGVyMg=="}"#);
        let back: SecretSpec = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.data, d);
        assert!(serde_json::from_str::<SecretSpec>(r#"{"name":"pw","data":"%%"}"#).is_err());
        let s = Secret::new(SecretId::new("x"), SecretKind::Secret, spec);
        assert!(!serde_json::to_string(&s.without_data()).expect("json").contains("data"));
    }

    #[test]
    fn specs_are_checked() {
        let spec = |name: &str, data: &[u8]| SecretSpec {
            name: name.into(),
            data: SecretData(data.to_vec()),
            ..Default::default()
        };
        assert!(spec("db.password", b"x").validate(SecretKind::Secret).is_ok());
        assert!(spec("", b"x").validate(SecretKind::Secret).is_err());
        assert!(spec("-x", b"x").validate(SecretKind::Config).is_err());
        assert!(spec("a/b", b"x").validate(SecretKind::Secret).is_err());
        assert!(spec("x", b"").validate(SecretKind::Secret).expect_err("empty").to_string().contains("data"));
        let big = vec![0u8; MAX_SECRET_BYTES + 1];
        assert!(spec("x", &big).validate(SecretKind::Secret).expect_err("big").to_string().contains("limit"));
    }

    #[test]
    fn references_resolve_their_paths() {
        let mut r = SecretReference::new("pw");
        assert_eq!(r.path(SecretKind::Secret), "/run/secrets/pw");
        assert_eq!(r.path(SecretKind::Config), "/pw");
        r.target = "db/pw".into();
        assert_eq!(r.path(SecretKind::Secret), "/run/secrets/db/pw");
        r.target = "/etc/app.conf".into();
        assert_eq!(r.path(SecretKind::Config), "/etc/app.conf");
        assert!(r.validate(SecretKind::Config).is_ok());
        for bad in ["../x", "/etc/../x", "a//b", "a/", "/"] {
            r.target = bad.into();
            assert!(r.validate(SecretKind::Secret).is_err(), "{bad}");
        }
        r.target = String::new();
        r.mode = 0o4755;
        assert!(r.validate(SecretKind::Secret).is_err());
        let parsed: SecretReference = serde_json::from_str(r#"{"source":"pw"}"#).expect("parse");
        assert_eq!(parsed.mode, 0o444);
    }
}
