//! The cluster root CA, node certificate issuance and node-side key/CSR generation.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::identity::{
    node_dns_name, parse_x509, sha256_hex, single_attr, single_cert_from_pem, truncate, validate_node_id,
};
use crate::{PkiError, Role, MANAGER_SERVER_NAME};

/// Lifetime of a generated cluster root CA (about ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How far node certificates' `not_before` is backdated to tolerate clock skew.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// Common name of generated CA certificates (the cluster id is in O).
pub const CA_COMMON_NAME: &str = "Shoal cluster root CA";

/// Latest instant an X.509 GeneralizedTime can express: 9999-12-31T23:59:59Z.
const MAX_X509_UNIX_SECS: u64 = 253_402_300_799;

/// A cluster root CA: certificate plus signing key. `Debug` shows only the cluster id and the
/// digest; the key is never printed.
pub struct Ca {
    cluster_id: String,
    cert_pem: String,
    key_pem: String,
    digest: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cluster_id", &self.cluster_id)
            .field("digest", &self.digest)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn validate_cluster_id(cluster_id: &str) -> Result<(), PkiError> {
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 128
        && cluster_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidClusterId(truncate(cluster_id)))
    }
}

/// A random, positive, 16-byte serial number.
fn random_serial(rng: &SystemRandom) -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| PkiError::Random)?;
    // Positive and without a leading zero byte, so the DER INTEGER is exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Whole seconds since the epoch, if `t` can be written into a certificate.
fn x509_secs(t: SystemTime, what: &str) -> Result<u64, PkiError> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= MAX_X509_UNIX_SECS => Ok(d.as_secs()),
        _ => Err(PkiError::InvalidValidity(format!("{what} is outside the range a certificate can express"))),
    }
}

/// Sets `params` validity from whole-second unix times (already range checked).
fn set_validity(params: &mut CertificateParams, not_before_secs: u64, not_after_secs: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before_secs);
    params.not_after = epoch + Duration::from_secs(not_after_secs);
}

fn dns_san(name: String) -> Result<SanType, PkiError> {
    Ok(SanType::DnsName(name.try_into()?))
}

impl Ca {
    /// Generates a new root CA for `cluster_id` (`[A-Za-z0-9._-]{1,128}`): ECDSA P-256, valid
    /// for [`CA_VALIDITY`], basic constraints CA with path length 0, key usage cert sign.
    pub fn generate(cluster_id: &str) -> Result<Ca, PkiError> {
        validate_cluster_id(cluster_id)?;
        let rng = SystemRandom::new();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

        let now = x509_secs(SystemTime::now(), "the current time")?;
        let not_before = now.saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs());
        let not_after = now.saturating_add(CA_VALIDITY.as_secs()).min(MAX_X509_UNIX_SECS);

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial(&rng)?);
        set_validity(&mut params, not_before, not_after);

        let cert = params.self_signed(&key)?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from its certificate and PKCS#8 private key PEM. Checks that the certificate
    /// is a CA certificate carrying a cluster id in O and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let der = single_cert_from_pem(cert_pem, "CA certificate")?;
        let cert = parse_x509(&der)?;
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(PkiError::NotACa),
            Err(e) => return Err(PkiError::InvalidCertificate(format!("bad basic constraints: {e}"))),
        }
        let cluster_id = single_attr(cert.subject().iter_organization(), "organization (O)")
            .map_err(|e| PkiError::InvalidCertificate(format!("CA certificate: {e}")))?
            .to_owned();
        let not_after_secs = u64::try_from(cert.validity().not_after.timestamp())
            .map_err(|_| PkiError::InvalidCertificate("CA expires before 1970".into()))?;
        let not_after = UNIX_EPOCH + Duration::from_secs(not_after_secs);

        // The rcgen error for a bad key says nothing about its content, but keep it generic anyway.
        let key = KeyPair::from_pem(key_pem).map_err(|_| PkiError::InvalidPem {
            what: "CA private key",
            reason: "not a supported PKCS#8 key",
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Ca {
            cluster_id,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            digest: sha256_hex(&der),
            not_after,
            issuer,
        })
    }

    /// The cluster id (the CA certificate's O).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM. Secret: store it with [`crate::write_private_file`].
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Lowercase hex SHA-256 of the CA certificate DER (64 characters); what join tokens pin.
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// Signs a node certificate for the public key in `csr_pem` (PKCS#10, ECDSA P-256, signature
    /// verified). The CA alone decides the contents: subject CN = `node_id`, OU = role, O =
    /// cluster id; SAN `<node_id>.node.shoal`, plus `manager.shoal` for managers; EKU
    /// serverAuth + clientAuth ([`Role::Client`] and [`Role::ClientReadOnly`]: clientAuth only and
    /// no SAN, CN = the client's name); valid from `now` − 1 minute to `now + validity` (capped at the
    /// CA's own expiry). Whatever subject or extensions the CSR requested are ignored.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        validate_node_id(node_id)?;
        if validity.is_zero() {
            return Err(PkiError::InvalidValidity("validity must be positive".into()));
        }
        let public_key = parse_and_verify_csr(csr_pem)?;

        let now_secs = x509_secs(now, "now")?;
        let ca_not_after = x509_secs(self.not_after, "the CA expiry")?;
        if now_secs >= ca_not_after {
            return Err(PkiError::InvalidValidity("the CA certificate has expired".into()));
        }
        let not_before = now_secs.saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs());
        let not_after = now_secs.saturating_add(validity.as_secs().max(1)).min(ca_not_after);

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::OrganizationName, self.cluster_id.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if role.is_client() {
            // An operator's certificate authenticates a client only: no serverAuth, no DNS name.
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let mut sans = vec![dns_san(node_dns_name(node_id))?];
            if role == Role::Manager {
                sans.push(dns_san(MANAGER_SERVER_NAME.to_owned())?);
            }
            params.subject_alt_names = sans;
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(&SystemRandom::new())?);
        set_validity(&mut params, not_before, not_after);

        let cert = params.signed_by(&public_key, &self.issuer)?;
        tracing::debug!(node_id, role = role.as_str(), "issued node certificate");
        Ok(cert.pem())
    }
}

/// Parses a PEM CSR, verifies its self-signature and checks that it carries an ECDSA P-256 key.
fn parse_and_verify_csr(csr_pem: &str) -> Result<rcgen::PublicKey, PkiError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| PkiError::InvalidCsr("no CERTIFICATE REQUEST PEM block".into()))?;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| PkiError::InvalidCsr(format!("cannot parse: {e}")))?;
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(PkiError::InvalidCsr("only ECDSA P-256 keys are accepted".into()));
    }
    // rcgen verifies the CSR signature and extracts the public key.
    let params = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            PkiError::InvalidCsr("signature does not verify".into())
        }
        other => PkiError::InvalidCsr(other.to_string()),
    })?;
    if params.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::InvalidCsr("CSR must be signed with ECDSA P-256 / SHA-256".into()));
    }
    Ok(params.public_key)
}

/// Generates a node's ECDSA P-256 key and a CSR for it, on the node itself: the key never
/// leaves the node, only the CSR is sent to a manager. Returns `(key_pem, csr_pem)`.
pub fn generate_key_and_csr(node_id: &str) -> Result<(String, String), PkiError> {
    validate_node_id(node_id)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Lowercase hex SHA-256 digest of a PEM certificate (e.g. a CA certificate received out of
/// band), for comparison with a join token's CA digest.
pub fn cert_pem_digest(cert_pem: &str) -> Result<String, PkiError> {
    Ok(sha256_hex(&single_cert_from_pem(cert_pem, "certificate")?))
}

/// PEM of a DER certificate.
pub fn cert_der_to_pem(cert: &CertificateDer<'_>) -> String {
    crate::encoding::pem_encode("CERTIFICATE", cert.as_ref())
}
