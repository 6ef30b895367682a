//! Placement constraints: `node.labels.zone==a`, `node.role!=manager`, `engine.labels.ssd==true`,
//! and a set, `node.labels.region in (us-east-1,us-west-1)` (fleet's `MachineMetadata` with a key
//! given several values). Parsed once at validation time; matching is case-insensitive on values,
//! like SwarmKit.

use crate::node::Node;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConstraintKey {
    NodeId,
    NodeHostname,
    NodeRole,
    NodePlatformOs,
    NodePlatformArch,
    NodeLabel(String),
    EngineLabel(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    Eq,
    Ne,
    /// One of the comma-separated values in `value`.
    In,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: Operator,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint {0:?}: expected KEY==VALUE, KEY!=VALUE or KEY in (V1,V2)")]
    NoOperator(String),
    #[error("constraint {0:?}: empty value")]
    EmptyValue(String),
    #[error(
        "constraint {0:?}: unknown key (use node.id, node.hostname, node.role, node.platform.os, \
         node.platform.arch, node.labels.KEY or engine.labels.KEY)"
    )]
    UnknownKey(String),
    #[error("constraint {0:?}: value contains an operator")]
    ValueHasOperator(String),
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let set = s.find(" in ").filter(|_| !s.contains("==") && !s.contains("!="));
        let (k, op, v) = if let Some(i) = s.find("==") {
            (&s[..i], Operator::Eq, &s[i + 2..])
        } else if let Some(i) = s.find("!=") {
            (&s[..i], Operator::Ne, &s[i + 2..])
        } else if let Some(i) = set {
            (&s[..i], Operator::In, &s[i + 4..])
        } else {
            return Err(ConstraintError::NoOperator(s.to_string()));
        };
        let key_str = k.trim();
        let mut value = v.trim().to_string();
        if op == Operator::In {
            let inner = value.strip_prefix('(').and_then(|x| x.strip_suffix(')'));
            let Some(inner) = inner else { return Err(ConstraintError::NoOperator(s.to_string())) };
            let values: Vec<&str> = inner.split(',').map(str::trim).collect();
            if values.iter().any(|v| v.is_empty()) {
                return Err(ConstraintError::EmptyValue(s.to_string()));
            }
            value = values.join(",");
        }
        let value = value.as_str();
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue(s.to_string()));
        }
        // A value that starts with `=` or a key that holds `=` or `!` would print back as a
        // different constraint (`k!= =v` prints as `k!==v`, which reads as key `k!`).
        if value.contains("==") || value.contains("!=") || value.starts_with('=') {
            return Err(ConstraintError::ValueHasOperator(s.to_string()));
        }
        if key_str.contains(['=', '!']) {
            return Err(ConstraintError::UnknownKey(s.to_string()));
        }
        let lower = key_str.to_ascii_lowercase();
        let key = match lower.as_str() {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::NodeHostname,
            "node.role" => ConstraintKey::NodeRole,
            "node.platform.os" => ConstraintKey::NodePlatformOs,
            "node.platform.arch" => ConstraintKey::NodePlatformArch,
            _ => {
                let label = |prefix: &str| {
                    key_str
                        .get(prefix.len()..)
                        .filter(|rest| lower.starts_with(prefix) && !rest.is_empty())
                        .map(str::to_string)
                };
                if let Some(l) = label("node.labels.") {
                    ConstraintKey::NodeLabel(l)
                } else if let Some(l) = label("engine.labels.") {
                    ConstraintKey::EngineLabel(l)
                } else {
                    return Err(ConstraintError::UnknownKey(s.to_string()));
                }
            }
        };
        Ok(Constraint { key, op, value: value.to_string() })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            ConstraintKey::NodeId => "node.id".to_string(),
            ConstraintKey::NodeHostname => "node.hostname".to_string(),
            ConstraintKey::NodeRole => "node.role".to_string(),
            ConstraintKey::NodePlatformOs => "node.platform.os".to_string(),
            ConstraintKey::NodePlatformArch => "node.platform.arch".to_string(),
            ConstraintKey::NodeLabel(l) => format!("node.labels.{l}"),
            ConstraintKey::EngineLabel(l) => format!("engine.labels.{l}"),
        };
        match self.op {
            Operator::Eq => write!(f, "{key}=={}", self.value),
            Operator::Ne => write!(f, "{key}!={}", self.value),
            Operator::In => write!(f, "{key} in ({})", self.value),
        }
    }
}

impl Constraint {
    /// Parses every constraint string; the first error wins.
    pub fn parse_all(list: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
        list.iter().map(|s| s.parse()).collect()
    }

    /// Whether `node` satisfies this constraint. A missing label equals nothing, so `!=` matches it.
    pub fn matches(&self, node: &Node) -> bool {
        let d = &node.description;
        let actual: Option<&str> = match &self.key {
            ConstraintKey::NodeId => Some(node.id.as_str()),
            ConstraintKey::NodeHostname => Some(d.hostname.as_str()),
            ConstraintKey::NodeRole => Some(node.spec.role.as_str()),
            ConstraintKey::NodePlatformOs => Some(d.platform.os.as_str()),
            ConstraintKey::NodePlatformArch => Some(d.platform.arch.as_str()),
            ConstraintKey::NodeLabel(l) => node.spec.labels.get(l).map(String::as_str),
            ConstraintKey::EngineLabel(l) => d.engine_labels.get(l).map(String::as_str),
        };
        let equal = actual.is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        match self.op {
            Operator::Eq => equal,
            Operator::Ne => !equal,
            Operator::In => actual.is_some_and(|a| self.value.split(',').any(|v| a.eq_ignore_ascii_case(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeRole, NodeSpec};

    #[test]
    fn parse_table() {
        use ConstraintKey::*;
        use Operator::*;
        let ok: &[(&str, ConstraintKey, Operator, &str)] = &[
            ("node.id==abc", NodeId, Eq, "abc"),
            ("node.hostname != web1", NodeHostname, Ne, "web1"),
            ("node.role==manager", NodeRole, Eq, "manager"),
            ("node.platform.os==linux", NodePlatformOs, Eq, "linux"),
            ("node.platform.arch!=arm64", NodePlatformArch, Ne, "arm64"),
            ("node.labels.zone==a", NodeLabel("zone".into()), Eq, "a"),
            ("Node.Labels.Zone==a", NodeLabel("Zone".into()), Eq, "a"),
            ("engine.labels.ssd==true", EngineLabel("ssd".into()), Eq, "true"),
        ];
        for (s, key, op, value) in ok {
            let c: Constraint = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((&c.key, c.op, c.value.as_str()), (key, *op, *value), "{s}");
        }
        let bad: &[(&str, ConstraintError)] = &[
            ("node.labels.zone=a", ConstraintError::NoOperator("node.labels.zone=a".into())),
            ("node.labels.zone==", ConstraintError::EmptyValue("node.labels.zone==".into())),
            ("node.labels.==a", ConstraintError::UnknownKey("node.labels.==a".into())),
            ("node.color==red", ConstraintError::UnknownKey("node.color==red".into())),
            ("node.role==a==b", ConstraintError::ValueHasOperator("node.role==a==b".into())),
            // Found by fuzz_constraint: these printed back as a different constraint.
            (
                "node.platform.arch!= =in arm64",
                ConstraintError::ValueHasOperator("node.platform.arch!= =in arm64".into()),
            ),
            ("node.labels.x= ==v", ConstraintError::UnknownKey("node.labels.x= ==v".into())),
        ];
        for (s, err) in bad {
            assert_eq!(s.parse::<Constraint>().as_ref(), Err(err), "{s}");
        }
    }

    #[test]
    fn sets() {
        let c: Constraint = "node.labels.region in (us-east-1, US-West-1)".parse().expect("parse");
        assert_eq!((c.op, c.value.as_str()), (Operator::In, "us-east-1,US-West-1"));
        let mut n = Node::test("n1", "h");
        assert!(!c.matches(&n), "a missing label is in no set");
        n.spec.labels.insert("region".into(), "us-west-1".into());
        assert!(c.matches(&n));
        n.spec.labels.insert("region".into(), "eu-1".into());
        assert!(!c.matches(&n));
        for bad in
            ["node.labels.region in us-east-1", "node.labels.region in (a,,b)", "node.labels.region in ()"]
        {
            assert!(bad.parse::<Constraint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_roundtrips() {
        for s in ["node.labels.zone==a", "engine.labels.x!=y", "node.role==worker", "node.labels.r in (a,b)"]
        {
            let c: Constraint = s.parse().expect("parse");
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn matching_table() {
        let mut n = Node::test("n1", "host-1");
        n.spec = NodeSpec { role: NodeRole::Manager, ..n.spec };
        n.spec.labels.insert("zone".into(), "A".into());
        n.description.engine_labels.insert("ssd".into(), "true".into());
        let cases = [
            ("node.id==n1", true),
            ("node.id!=n1", false),
            ("node.hostname==HOST-1", true),
            ("node.role==manager", true),
            ("node.role==worker", false),
            ("node.platform.os==linux", true),
            ("node.platform.arch==x86_64", true),
            ("node.labels.zone==a", true),
            ("node.labels.zone!=a", false),
            ("node.labels.rack==1", false),
            ("node.labels.rack!=1", true),
            ("engine.labels.ssd==true", true),
        ];
        for (s, want) in cases {
            let c: Constraint = s.parse().expect("parse");
            assert_eq!(c.matches(&n), want, "{s}");
        }
    }
}
