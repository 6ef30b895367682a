//! Certificate issuance from CSRs and parsing identities back.

use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use shoal_pki::{
    cert_der_to_pem, cert_pem_digest, cert_validity, generate_key_and_csr, identity_from_cert, Ca,
    NodeIdentity, PkiError, Role, MANAGER_SERVER_NAME,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("valid certificate PEM")
}

fn dns_sans(cert_der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).expect("parsable certificate");
    let san = cert.subject_alternative_name().expect("well-formed SAN").expect("SAN present");
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => (*d).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn issue(ca: &Ca, node_id: &str, role: Role) -> String {
    let (_key, csr) = generate_key_and_csr(node_id).expect("key and CSR");
    ca.issue(&csr, node_id, role, 30 * DAY, SystemTime::now()).expect("issue")
}

#[test]
fn ca_properties() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    assert_eq!(ca.cluster_id(), "cluster-a");
    let digest = ca.digest();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(cert_pem_digest(ca.cert_pem()).expect("digest"), digest);

    let ca_der = der(ca.cert_pem());
    let (_, cert) = X509Certificate::from_der(&ca_der).expect("parse CA");
    assert!(cert.basic_constraints().expect("ok").expect("present").value.ca);
    assert!(cert.key_usage().expect("ok").expect("present").value.key_cert_sign());
    let (nb, na) = cert_validity(ca.cert_pem()).expect("validity");
    let lifetime = na.duration_since(nb).expect("positive lifetime");
    assert!(lifetime > 9 * 365 * DAY && lifetime < 11 * 365 * DAY, "lifetime {lifetime:?}");

    // Debug never shows the key.
    let debug = format!("{ca:?}");
    assert!(debug.contains(&digest));
    assert!(!debug.contains("PRIVATE KEY"));
    let key_body: String = ca.key_pem().lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!debug.contains(&key_body[..20]));

    // Two CAs differ.
    let other = Ca::generate("cluster-a").expect("generate CA");
    assert_ne!(other.digest(), digest);
}

#[test]
fn ca_round_trips_through_pem_and_rejects_mismatches() {
    let ca = Ca::generate("c1").expect("generate CA");
    let loaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).expect("reload CA");
    assert_eq!(loaded.digest(), ca.digest());
    assert_eq!(loaded.cluster_id(), "c1");
    // A certificate issued by the reloaded CA verifies under the original one's identity.
    let cert = issue(&loaded, "n1", Role::Worker);
    assert_eq!(
        identity_from_cert(&der(&cert)).expect("identity"),
        NodeIdentity { node_id: "n1".into(), role: Role::Worker }
    );

    let other = Ca::generate("c1").expect("generate CA");
    assert!(matches!(Ca::from_pem(ca.cert_pem(), other.key_pem()), Err(PkiError::KeyMismatch)));
    assert!(matches!(Ca::from_pem("garbage", ca.key_pem()), Err(PkiError::InvalidPem { .. })));
    assert!(matches!(Ca::from_pem(ca.cert_pem(), "garbage"), Err(PkiError::InvalidPem { .. })));
    // A node certificate is not a CA.
    let (key, csr) = generate_key_and_csr("n2").expect("key and CSR");
    let leaf = ca.issue(&csr, "n2", Role::Manager, DAY, SystemTime::now()).expect("issue");
    assert!(matches!(Ca::from_pem(&leaf, &key), Err(PkiError::NotACa)));

    assert!(matches!(Ca::generate(""), Err(PkiError::InvalidClusterId(_))));
    assert!(matches!(Ca::generate("has space"), Err(PkiError::InvalidClusterId(_))));
}

#[test]
fn manager_and_worker_certificates() {
    let ca = Ca::generate("cluster-a").expect("generate CA");

    let manager = issue(&ca, "mgr-1", Role::Manager);
    let manager_der = der(&manager);
    assert_eq!(
        identity_from_cert(&manager_der).expect("identity"),
        NodeIdentity { node_id: "mgr-1".into(), role: Role::Manager }
    );
    assert_eq!(dns_sans(&manager_der), vec!["mgr-1.node.shoal".to_owned(), MANAGER_SERVER_NAME.to_owned()]);

    let worker = issue(&ca, "worker-7", Role::Worker);
    let worker_der = der(&worker);
    assert_eq!(
        identity_from_cert(&worker_der).expect("identity"),
        NodeIdentity { node_id: "worker-7".into(), role: Role::Worker }
    );
    assert_eq!(dns_sans(&worker_der), vec!["worker-7.node.shoal".to_owned()]);

    let (_, cert) = X509Certificate::from_der(&worker_der).expect("parse");
    let eku = cert.extended_key_usage().expect("ok").expect("EKU present").value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.basic_constraints().expect("ok").is_some_and(|bc| bc.value.ca));
    let org: Vec<_> = cert.subject().iter_organization().map(|o| o.as_str().expect("utf8")).collect();
    assert_eq!(org, vec!["cluster-a"]);
    assert_eq!(cert.issuer(), X509Certificate::from_der(&der(ca.cert_pem())).expect("parse CA").1.subject());
}

#[test]
fn the_ca_decides_the_identity_not_the_csr() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    // The CSR says "mgr-evil" but the manager issues for the id it assigned.
    let (_key, csr) = generate_key_and_csr("mgr-evil").expect("key and CSR");
    let cert = ca.issue(&csr, "worker-3", Role::Worker, DAY, SystemTime::now()).expect("issue");
    let id = identity_from_cert(&der(&cert)).expect("identity");
    assert_eq!(id, NodeIdentity { node_id: "worker-3".into(), role: Role::Worker });
}

#[test]
fn validity_window() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    let (_key, csr) = generate_key_and_csr("n1").expect("key and CSR");
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after epoch").as_secs(),
        );
    let cert = ca.issue(&csr, "n1", Role::Worker, 7 * DAY, now).expect("issue");
    let (nb, na) = cert_validity(&cert).expect("validity");
    assert_eq!(nb, now - Duration::from_secs(60));
    assert_eq!(na, now + 7 * DAY);

    // Capped at the CA's own expiry.
    let cert = ca.issue(&csr, "n1", Role::Worker, 100 * 365 * DAY, now).expect("issue");
    let (_, na) = cert_validity(&cert).expect("validity");
    let (_, ca_na) = cert_validity(ca.cert_pem()).expect("CA validity");
    assert_eq!(na, ca_na);

    assert!(matches!(
        ca.issue(&csr, "n1", Role::Worker, Duration::ZERO, now),
        Err(PkiError::InvalidValidity(_))
    ));
    // After the CA has expired nothing is issued.
    assert!(matches!(
        ca.issue(&csr, "n1", Role::Worker, DAY, ca_na + DAY),
        Err(PkiError::InvalidValidity(_))
    ));
}

#[test]
fn bad_node_ids_are_rejected() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    let (_key, csr) = generate_key_and_csr("n1").expect("key and CSR");
    let too_long = "a".repeat(65);
    for bad in ["", "UPPER", "dot.ted", "under_score", "sp ace", "manager.shoal", too_long.as_str()] {
        assert!(
            matches!(
                ca.issue(&csr, bad, Role::Manager, DAY, SystemTime::now()),
                Err(PkiError::InvalidNodeId(_))
            ),
            "{bad:?} accepted by issue"
        );
        assert!(matches!(generate_key_and_csr(bad), Err(PkiError::InvalidNodeId(_))), "{bad:?} accepted");
    }
    let max = "a".repeat(64);
    assert!(ca.issue(&csr, &max, Role::Worker, DAY, SystemTime::now()).is_ok());
}

#[test]
fn bad_csrs_are_rejected() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    let now = SystemTime::now();
    let (key, csr) = generate_key_and_csr("n1").expect("key and CSR");

    // Not PEM at all / wrong PEM type.
    for bad in ["", "hello", key.as_str(), ca.cert_pem()] {
        assert!(matches!(ca.issue(bad, "n1", Role::Worker, DAY, now), Err(PkiError::InvalidCsr(_))));
    }

    // A CSR whose signature was tampered with: flip a bit in the last byte (inside the signature).
    let mut der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .expect("parse CSR")
        .as_ref()
        .to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem("CERTIFICATE REQUEST", &der);
    match ca.issue(&tampered, "n1", Role::Worker, DAY, now) {
        Err(PkiError::InvalidCsr(msg)) => assert!(msg.contains("signature"), "{msg}"),
        other => panic!("tampered CSR: {other:?}"),
    }

    // Tamper with the subject instead (signature no longer covers the content).
    let mut der2 = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .expect("parse CSR")
        .as_ref()
        .to_vec();
    let pos = der2.windows(2).position(|w| w == b"n1").expect("CN in CSR");
    der2[pos] = b'm';
    let tampered = pem("CERTIFICATE REQUEST", &der2);
    assert!(matches!(ca.issue(&tampered, "n1", Role::Worker, DAY, now), Err(PkiError::InvalidCsr(_))));

    // Truncated DER.
    let truncated = pem("CERTIFICATE REQUEST", &der2[..der2.len() / 2]);
    assert!(matches!(ca.issue(&truncated, "n1", Role::Worker, DAY, now), Err(PkiError::InvalidCsr(_))));

    // A non-P-256 key (P-384) is refused.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let p384_csr =
        rcgen::CertificateParams::default().serialize_request(&p384).expect("CSR").pem().expect("CSR PEM");
    match ca.issue(&p384_csr, "n1", Role::Worker, DAY, now) {
        Err(PkiError::InvalidCsr(msg)) => assert!(msg.contains("P-256"), "{msg}"),
        other => panic!("P-384 CSR: {other:?}"),
    }

    // The untampered CSR still works.
    assert!(ca.issue(&csr, "n1", Role::Worker, DAY, now).is_ok());
}

#[test]
fn identity_needs_cn_and_known_ou() {
    // A certificate without the Shoal subject layout.
    let key = rcgen::KeyPair::generate().expect("key");
    let plain = rcgen::CertificateParams::new(vec!["x.example".to_owned()]).expect("params");
    let cert = plain.self_signed(&key).expect("self-signed");
    assert!(matches!(identity_from_cert(cert.der()), Err(PkiError::InvalidIdentity(_))));

    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "n1");
    dn.push(rcgen::DnType::OrganizationalUnitName, "admin");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).expect("self-signed");
    match identity_from_cert(cert.der()) {
        Err(PkiError::InvalidIdentity(msg)) => assert!(msg.contains("role"), "{msg}"),
        other => panic!("unknown role accepted: {other:?}"),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    cert_der_to_pem(&CertificateDer::from(der)).replace("CERTIFICATE", label)
}

#[test]
fn client_certificates_authenticate_clients_only() {
    let ca = Ca::generate("cluster-a").expect("generate CA");
    for (role, ou) in [(Role::Client, "client"), (Role::ClientReadOnly, "client-ro")] {
        let client = issue(&ca, "alice", role);
        let client_der = der(&client);
        assert_eq!(
            identity_from_cert(&client_der).expect("identity"),
            NodeIdentity { node_id: "alice".into(), role }
        );
        let (_, cert) = X509Certificate::from_der(&client_der).expect("parse");
        let found: Vec<&str> =
            cert.subject().iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect();
        assert_eq!(found, [ou], "the role is the OU");
        // No DNS names at all (in particular not manager.shoal) and no serverAuth.
        assert!(cert.subject_alternative_name().expect("well-formed").is_none());
        let eku = cert.extended_key_usage().expect("ok").expect("EKU present").value;
        assert!(eku.client_auth && !eku.server_auth);
    }
}
