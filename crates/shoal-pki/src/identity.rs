//! Node identities, node ids, roles, certificate parsing helpers and renewal timing.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::encoding::hex_lower;
use crate::PkiError;

/// The DNS suffix of every node's own SAN: `<node_id>.node.shoal`.
pub const NODE_NAME_SUFFIX: &str = ".node.shoal";

/// Maximum length of a node id.
pub const MAX_NODE_ID_LEN: usize = 64;

/// What a node may do in the cluster. Carried in the certificate subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the replicated control plane; its certificate also names `manager.shoal`.
    Manager,
    /// Runs workloads; can never act as a manager server.
    Worker,
    /// An operator's client certificate for the TCP API (`shoal -H tcp://…`): CN = a name, not
    /// a node id. It can never act as a node (no Raft, no dispatcher) nor as a server. Full
    /// access (the `admin` client role): every certificate issued before read-only ones existed
    /// carries this OU and stays an admin's.
    Client,
    /// A read-only operator's client certificate (OU `client-ro`, the `read-only` client role):
    /// like [`Role::Client`], but the APIs serve it only reads that reveal no secret. A manager
    /// that predates this role cannot parse the OU and refuses the certificate altogether.
    #[serde(rename = "client-ro")]
    ClientReadOnly,
}

impl Role {
    /// The lowercase name used in certificates and on the wire (`"manager"` / `"worker"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Client => "client",
            Role::ClientReadOnly => "client-ro",
        }
    }

    /// Whether this is an operator's certificate (of either client role), never a node's.
    pub fn is_client(self) -> bool {
        matches!(self, Role::Client | Role::ClientReadOnly)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            "client" => Ok(Role::Client),
            "client-ro" => Ok(Role::ClientReadOnly),
            other => Err(PkiError::InvalidIdentity(format!("unknown role {:?}", truncate(other)))),
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node id (certificate CN).
    pub node_id: String,
    /// The node's role (certificate OU).
    pub role: Role,
}

/// Checks that `node_id` is `[a-z0-9-]{1,64}`.
pub fn validate_node_id(node_id: &str) -> Result<(), PkiError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= MAX_NODE_ID_LEN
        && node_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidNodeId(truncate(node_id)))
    }
}

/// The DNS SAN every node certificate carries: `<node_id>.node.shoal`.
pub fn node_dns_name(node_id: &str) -> String {
    format!("{node_id}{NODE_NAME_SUFFIX}")
}

/// Shortens untrusted input before it goes into an error message.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

/// Lowercase hex SHA-256 of `der` (64 characters). For a CA certificate this is the digest a
/// join token pins.
pub fn sha256_hex(der: &[u8]) -> String {
    hex_lower(&Sha256::digest(der))
}

/// Decodes exactly one certificate from `pem`.
pub(crate) fn single_cert_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<CertificateDer<'static>, PkiError> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certs.push(cert.map_err(|_| PkiError::InvalidPem { what, reason: "malformed PEM" })?);
    }
    match certs.len() {
        0 => Err(PkiError::InvalidPem { what, reason: "no CERTIFICATE block found" }),
        1 => Ok(certs.remove(0)),
        _ => Err(PkiError::InvalidPem { what, reason: "expected exactly one CERTIFICATE block" }),
    }
}

pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::InvalidCertificate("trailing data after certificate".into())),
        Err(e) => Err(PkiError::InvalidCertificate(format!("cannot parse DER: {e}"))),
    }
}

/// Returns the single value of a subject attribute, failing if it is absent, repeated or not a
/// string.
pub(crate) fn single_attr<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    what: &str,
) -> Result<&'a str, PkiError> {
    let first = values.next().ok_or_else(|| PkiError::InvalidIdentity(format!("subject has no {what}")))?;
    if values.next().is_some() {
        return Err(PkiError::InvalidIdentity(format!("subject has more than one {what}")));
    }
    first.as_str().map_err(|_| PkiError::InvalidIdentity(format!("subject {what} is not a string")))
}

/// Reads the node identity (CN = node id, OU = role) from a DER certificate.
///
/// This does **not** verify the certificate: call it on a peer certificate that a TLS handshake
/// with [`crate::server_config`] / [`crate::client_config`] already verified against the CA.
pub fn identity_from_cert(cert_der: &[u8]) -> Result<NodeIdentity, PkiError> {
    let cert = parse_x509(cert_der)?;
    let subject = cert.subject();
    let node_id = single_attr(subject.iter_common_name(), "common name (CN)")?;
    validate_node_id(node_id).map_err(|_| {
        PkiError::InvalidIdentity(format!("common name {:?} is not a valid node id", truncate(node_id)))
    })?;
    let role: Role = single_attr(subject.iter_organizational_unit(), "organizational unit (OU)")?.parse()?;
    Ok(NodeIdentity { node_id: node_id.to_owned(), role })
}

/// The node identity of a PEM certificate (this node's own, read from disk; not verified).
pub fn identity_from_pem(cert_pem: &str) -> Result<NodeIdentity, PkiError> {
    identity_from_cert(&single_cert_from_pem(cert_pem, "certificate")?)
}

/// `(not_before, not_after)` of a PEM certificate.
pub fn cert_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), PkiError> {
    let der = single_cert_from_pem(cert_pem, "certificate")?;
    let cert = parse_x509(&der)?;
    let validity = cert.validity();
    Ok((
        unix_to_system_time(validity.not_before.timestamp())?,
        unix_to_system_time(validity.not_after.timestamp())?,
    ))
}

fn unix_to_system_time(secs: i64) -> Result<SystemTime, PkiError> {
    let abs = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 { UNIX_EPOCH.checked_add(abs) } else { UNIX_EPOCH.checked_sub(abs) };
    t.ok_or_else(|| PkiError::InvalidCertificate("validity time not representable".into()))
}

/// When to renew a certificate valid from `not_before` to `not_after`: at
/// `not_before + lifetime × (0.5 + 0.3 × fraction)`, i.e. somewhere between 50 % and 80 % of
/// the lifetime. `fraction` should be uniformly random in `[0, 1]` so that a fleet does not renew
/// in lock step; it is clamped to that range (NaN counts as 0).
///
/// If `not_after` is not after `not_before`, returns `not_before` (renew now).
pub fn renewal_at(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
    let factor = 0.5 + 0.3 * fraction;
    // factor is within [0.5, 0.8], so the product never exceeds the lifetime and cannot panic.
    not_before.checked_add(lifetime.mul_f64(factor)).unwrap_or(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_strings_and_serde() {
        assert_eq!(Role::Manager.as_str(), "manager");
        assert_eq!(Role::Worker.to_string(), "worker");
        assert_eq!("worker".parse::<Role>().expect("valid role"), Role::Worker);
        assert_eq!(Role::Client.as_str(), "client");
        assert_eq!("client".parse::<Role>().expect("valid role"), Role::Client);
        assert_eq!(Role::ClientReadOnly.as_str(), "client-ro");
        assert_eq!("client-ro".parse::<Role>().expect("valid role"), Role::ClientReadOnly);
        assert!(Role::Client.is_client() && Role::ClientReadOnly.is_client());
        assert!(!Role::Manager.is_client() && !Role::Worker.is_client());
        assert!("Manager".parse::<Role>().is_err());
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn node_id_validation() {
        for ok in ["a", "node-1", "0", &"x".repeat(64)] {
            assert!(validate_node_id(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in ["", "Node", "node_1", "node.1", "node 1", "nöde", &"x".repeat(65)] {
            assert!(
                matches!(validate_node_id(bad), Err(PkiError::InvalidNodeId(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn renewal_bounds() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(1000);
        assert_eq!(renewal_at(nb, na, 0.0), nb + Duration::from_secs(500));
        assert_eq!(renewal_at(nb, na, 1.0), nb + Duration::from_secs(800));
        assert_eq!(renewal_at(nb, na, 0.5), nb + Duration::from_secs(650));
        // Out-of-range fractions are clamped.
        assert_eq!(renewal_at(nb, na, -3.0), nb + Duration::from_secs(500));
        assert_eq!(renewal_at(nb, na, 7.0), nb + Duration::from_secs(800));
        assert_eq!(renewal_at(nb, na, f64::NAN), nb + Duration::from_secs(500));
        // A degenerate validity renews immediately.
        assert_eq!(renewal_at(na, nb, 0.5), na);
        for i in 0..=100 {
            let at = renewal_at(nb, na, f64::from(i) / 100.0);
            assert!(at >= nb + Duration::from_secs(500) && at <= nb + Duration::from_secs(800));
        }
    }

    #[test]
    fn identity_rejects_garbage() {
        assert!(matches!(identity_from_cert(b"not a certificate"), Err(PkiError::InvalidCertificate(_))));
        assert!(matches!(cert_validity("nope"), Err(PkiError::InvalidPem { .. })));
    }
}
