//! Fuzz target: what a joining node sends a manager, and what a node reads back: join tokens
//! (`JoinToken::from_str`), CSRs (`Ca::issue`), certificates (`identity_from_cert`,
//! `identity_from_pem`, `cert_validity`, `cert_pem_digest`, `Ca::from_pem`) and node ids.
//! Arbitrary and mutated input (truncation, byte flips, inserted separators, unicode, DER with
//! flipped bits and lengths) never panics and is refused with a message; tokens round-trip
//! through their printed form; a certificate is only ever issued for a CSR whose signature
//! verifies, and it carries the identity the CA chose.

use base64::Engine as _;
use proptest::prelude::*;
use shoal_pki::{
    cert_pem_digest, cert_validity, generate_key_and_csr, identity_from_cert, identity_from_pem,
    validate_node_id, Ca, JoinToken, Role,
};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    ca: Ca,
    csr_pem: String,
    cert_pem: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca = Ca::generate("cluster-1").expect("ca");
        let (_key, csr_pem) = generate_key_and_csr("node-1").expect("csr");
        let cert_pem = ca
            .issue(&csr_pem, "node-1", Role::Worker, Duration::from_secs(3600), SystemTime::now())
            .expect("issue");
        Fixture { ca, csr_pem, cert_pem }
    })
}

fn der_of(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("base64")
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Byte-level edits of DER: flips, truncation, insertions, overwritten length bytes.
fn mutate_der(mut der: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, how) in edits {
        let i = at.index(der.len() + 1);
        match how {
            0 if i < der.len() => der[i] ^= byte | 1,
            1 => der.truncate(i),
            2 => der.insert(i, *byte),
            3 if i < der.len() => der[i] = 0xff,
            4 if i < der.len() => der[i] = 0x80 | (byte & 0x0f),
            _ => {}
        }
    }
    der
}

fn der_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..5), 1..4)
}

fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,120}",
        ("(SHOAL|shoal|SH0AL)?-?[0-9]?-?", "[0-9a-fA-F]{60,68}", "-?", "[a-z2-7A-Z0-9=]{0,40}", "[ \n-]?")
            .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}")),
        (any::<prop::sample::Index>(), "[-\u{e9}\u{1f600}\0 \n]{1,3}").prop_map(|(at, ins)| {
            let good = format!("SHOAL-1-{DIGEST}-abcdefghijklmnopqrstuvwxyz234567");
            let mut chars: Vec<char> = good.chars().collect();
            let i = at.index(chars.len() + 1);
            chars.splice(i..i, ins.chars());
            chars.into_iter().collect()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn join_tokens(s in token_text()) {
        match s.parse::<JoinToken>() {
            Ok(t) => {
                let back: JoinToken = t.to_string().parse().expect("a printed token parses");
                prop_assert!(back.matches(&t));
                prop_assert_eq!(t.ca_digest.len(), 64);
                prop_assert!(!format!("{t:?}").contains(&t.secret), "Debug leaks the secret");
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn generated_tokens_round_trip(secret in "[a-z2-7]{26,80}", digest in "[0-9a-f]{64}") {
        let text = format!("SHOAL-1-{digest}-{secret}\n");
        let t: JoinToken = text.parse().expect("a well-formed token");
        prop_assert_eq!((t.ca_digest.as_str(), t.secret.as_str()), (digest.as_str(), secret.as_str()));
        prop_assert_eq!(t.to_string(), text.trim());
    }

    #[test]
    fn node_ids(s in "\\PC{0,80}") {
        if let Err(e) = validate_node_id(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    // Every case verifies a signature (and may issue a certificate): fewer, costlier cases.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_csrs_are_refused_or_verified(edits in der_edits()) {
        let f = fixture();
        let der = mutate_der(der_of(&f.csr_pem), &edits);
        let pem = pem_of("CERTIFICATE REQUEST", &der);
        match f.ca.issue(&pem, "node-2", Role::Manager, Duration::from_secs(60), SystemTime::now()) {
            Ok(cert) => {
                // Only edits that leave the signed request intact (trailing bytes, say) may pass,
                // and the CA alone decides the identity.
                let id = identity_from_pem(&cert).expect("an issued certificate has an identity");
                prop_assert_eq!(id.node_id.as_str(), "node-2");
                prop_assert_eq!(id.role, Role::Manager);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_csr_text(s in "\\PC{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let f = fixture();
        for pem in [s.clone(), pem_of("CERTIFICATE REQUEST", &bytes), format!("-----BEGIN CERTIFICATE REQUEST-----\n{s}\n-----END CERTIFICATE REQUEST-----\n")] {
            let r = f.ca.issue(&pem, "node-3", Role::Worker, Duration::from_secs(60), SystemTime::now());
            prop_assert!(r.is_err(), "{:?} was accepted as a CSR", pem);
        }
    }

    #[test]
    fn mutated_certificates(edits in der_edits(), s in "\\PC{0,100}") {
        let f = fixture();
        let der = mutate_der(der_of(&f.cert_pem), &edits);
        let pem = pem_of("CERTIFICATE", &der);
        if let Err(e) = identity_from_cert(&der) {
            prop_assert!(!e.to_string().is_empty());
        }
        for text in [pem.as_str(), s.as_str(), &format!("{pem}{pem}")] {
            if let Err(e) = identity_from_pem(text) {
                prop_assert!(!e.to_string().is_empty());
            }
            if let Err(e) = cert_validity(text) {
                prop_assert!(!e.to_string().is_empty());
            }
            if let Err(e) = cert_pem_digest(text) {
                prop_assert!(!e.to_string().is_empty());
            }
            if let Err(e) = Ca::from_pem(text, f.ca.key_pem()) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn long_and_odd_inputs_are_refused() {
    let f = fixture();
    let huge = format!("SHOAL-1-{DIGEST}-{}", "a".repeat(1 << 20));
    assert!(huge.parse::<JoinToken>().is_ok(), "a long secret is still well-formed");
    assert!("SHOAL-1-".repeat(100_000).parse::<JoinToken>().is_err());
    let many = f.csr_pem.repeat(1000);
    let _ = f.ca.issue(&many, "node-4", Role::Worker, Duration::from_secs(60), SystemTime::now());
    assert!(identity_from_pem(&f.cert_pem.repeat(2)).is_err(), "two certificates are not one");
    assert!(identity_from_cert(&[]).is_err());
}
