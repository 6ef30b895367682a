//! Registry credentials (`service create/update --with-registry-auth`, Docker's
//! `X-Registry-Auth`): read from the docker CLI's credential file on the client, sealed by the
//! application layer before they enter Raft, opened by the dispatcher only for the nodes that
//! run a task of the service.
//!
//! **Sealing**: AES-256-GCM under a key derived (HKDF-SHA256) from the cluster CA's private key,
//! a random 96-bit nonce, the service id as associated data (a sealed value copied to another
//! service does not open). The stored text is base64 of `version byte ‖ nonce ‖ ciphertext+tag`.
//! It protects against leaks of API output, events and logs, not against theft of a manager's
//! data directory, which holds the CA key unencrypted.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
pub use shoal_driver::RegistryAuth;
use shoal_kv::bytes::{decode as base64_decode, encode as base64_encode};
use shoal_types::SealedAuth;

/// The format of a sealed value (its first byte).
const SEALED_VERSION: u8 = 1;
/// The registry the docker CLI keys Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client's credential file has nothing usable (the message says why).
    #[error("{0}")]
    Config(String),
    #[error("cannot seal the registry credentials")]
    Seal,
    #[error("the registry credentials cannot be opened (not sealed by this cluster for this service)")]
    Unseal,
}

fn key(ca_key_pem: &str) -> Result<LessSafeKey, AuthError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"shoal registry-auth salt v1");
    let prk = salt.extract(ca_key_pem.as_bytes());
    let okm = prk.expand(&[b"shoal registry-auth key"], &AES_256_GCM).map_err(|_| AuthError::Seal)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seals `auth` for service `service_id` under the cluster's CA key.
pub fn seal(ca_key_pem: &str, service_id: &str, auth: &RegistryAuth) -> Result<SealedAuth, AuthError> {
    let key = key(ca_key_pem)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| AuthError::Seal)?;
    let mut data = serde_json::to_vec(auth).map_err(|_| AuthError::Seal)?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(service_id.as_bytes()),
        &mut data,
    )
    .map_err(|_| AuthError::Seal)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
    out.push(SEALED_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&data);
    Ok(SealedAuth(base64_encode(&out)))
}

/// Opens credentials sealed by [`seal`] for the same CA key and service id.
pub fn unseal(ca_key_pem: &str, service_id: &str, sealed: &SealedAuth) -> Result<RegistryAuth, AuthError> {
    let bytes = base64_decode(&sealed.0).ok_or(AuthError::Unseal)?;
    let (version, rest) = bytes.split_first().ok_or(AuthError::Unseal)?;
    if *version != SEALED_VERSION || rest.len() < NONCE_LEN {
        return Err(AuthError::Unseal);
    }
    let (nonce, data) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError::Unseal)?;
    let mut data = data.to_vec();
    let key = key(ca_key_pem)?;
    let plain = key
        .open_in_place(nonce, Aad::from(service_id.as_bytes()), &mut data)
        .map_err(|_| AuthError::Unseal)?;
    serde_json::from_slice(plain).map_err(|_| AuthError::Unseal)
}

/// The registry of an image reference, the docker way: the first path component when it has a
/// `.` or `:` or is `localhost`, else Docker Hub (`docker.io`).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            if first == "index.docker.io" {
                DOCKER_HUB.to_string()
            } else {
                first.to_string()
            }
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// A key of the credential file's `auths` as a registry host (`https://host/v1/` → `host`), the
/// way the docker CLI matches them.
fn host_of_key(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// The credentials for `image`'s registry from the docker CLI's credential file (`config.json`
/// text; `path` only names it in errors). Credential helpers are refused, as is a registry
/// without an entry.
pub fn from_docker_config(text: &str, path: &str, image: &str) -> Result<RegistryAuth, AuthError> {
    let registry = registry_of(image);
    let fail = |m: String| AuthError::Config(m);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| fail(format!("{path}: not a docker CLI config file: {e}")))?;
    if let Some(helper) = v.get("credHelpers").and_then(|h| h.as_object()).and_then(|h| {
        h.iter()
            .find(|(k, _)| host_of_key(k) == registry)
            .map(|(_, helper)| helper.as_str().unwrap_or_default())
    }) {
        return Err(fail(format!(
            "credential helpers are not supported: {path} names helper {helper:?} for {registry} \
             (log in without a helper, so the credentials are in the file's \"auths\")"
        )));
    }
    let entry = v.get("auths").and_then(|a| a.as_object()).and_then(|a| {
        a.get(if registry == DOCKER_HUB { DOCKER_HUB_KEY } else { registry.as_str() })
            .or_else(|| a.iter().find(|(k, _)| host_of_key(k) == registry).map(|(_, e)| e))
    });
    let server = if registry == DOCKER_HUB { DOCKER_HUB_KEY.to_string() } else { registry.clone() };
    let from_entry = entry.and_then(|e| {
        let s = |k: &str| e.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
        if let Some(auth) = s("auth") {
            let plain = base64_decode(auth)?;
            let plain = String::from_utf8(plain).ok()?;
            let (user, password) = plain.split_once(':')?;
            return Some(RegistryAuth {
                username: user.to_string(),
                password: password.to_string(),
                serveraddress: server.clone(),
            });
        }
        Some(RegistryAuth {
            username: s("username")?.to_string(),
            password: s("password")?.to_string(),
            serveraddress: server.clone(),
        })
    });
    if let Some(auth) = from_entry {
        return Ok(auth);
    }
    if let Some(store) = v.get("credsStore").and_then(|s| s.as_str()).filter(|s| !s.is_empty()) {
        return Err(fail(format!(
            "credential helpers are not supported: {path} keeps credentials in credsStore {store:?}, \
             none for {registry} in its \"auths\""
        )));
    }
    if entry.is_some() {
        return Err(fail(format!(
            "{path} has an entry for {registry} without a user name and password (identity tokens are not supported)"
        )));
    }
    Err(fail(format!("no credentials for registry {registry} in {path} (run docker login {registry})")))
}

/// Docker's `X-Registry-Auth` header: base64 (URL-safe or standard) of a JSON object with
/// `username`, `password` and `serveraddress`. An empty object (what the docker CLI sends
/// without credentials) is None.
pub fn from_x_registry_auth(header: &str) -> Result<Option<RegistryAuth>, AuthError> {
    let bad = || AuthError::Config("X-Registry-Auth: not base64-encoded JSON credentials".into());
    // The docker CLI sends the URL-safe alphabet.
    let standard: String = header
        .trim()
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let bytes = base64_decode(&standard).ok_or_else(bad)?;
    let auth: RegistryAuth = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((!auth.username.is_empty() || !auth.password.is_empty()).then_some(auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> RegistryAuth {
        RegistryAuth {
            username: "alice".into(),
            password: "s3cret!".into(),
            serveraddress: "localhost:5000".into(),
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let text = base64_encode(&data);
            assert_eq!(base64_decode(&text), Some(data), "{text}");
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_decode("dXNlcjpwYXNz"), Some(b"user:pass".to_vec()));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("ab$c"), None);
    }

    #[test]
    fn seal_round_trips_and_binds_key_and_service() {
        let sealed = seal("ca-key-1", "svc1", &auth()).expect("seal");
        assert!(!sealed.0.contains("s3cret"));
        assert_eq!(unseal("ca-key-1", "svc1", &sealed).expect("unseal"), auth());
        // Random nonces: the same credentials seal differently.
        assert_ne!(seal("ca-key-1", "svc1", &auth()).expect("seal").0, sealed.0);
        assert!(matches!(unseal("ca-key-2", "svc1", &sealed), Err(AuthError::Unseal)));
        assert!(matches!(unseal("ca-key-1", "svc2", &sealed), Err(AuthError::Unseal)));
        let mut bytes = base64_decode(&sealed.0).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            unseal("ca-key-1", "svc1", &SealedAuth(base64_encode(&bytes))),
            Err(AuthError::Unseal)
        ));
        bytes[last] ^= 1;
        bytes[20] ^= 0x80;
        assert!(matches!(
            unseal("ca-key-1", "svc1", &SealedAuth(base64_encode(&bytes))),
            Err(AuthError::Unseal)
        ));
        assert!(matches!(unseal("ca-key-1", "svc1", &SealedAuth("AQ==".into())), Err(AuthError::Unseal)));
        assert!(matches!(unseal("ca-key-1", "svc1", &SealedAuth("!!".into())), Err(AuthError::Unseal)));
    }

    #[test]
    fn debug_redacts_the_password() {
        let text = format!("{:?}", auth());
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("alice"));
    }

    #[test]
    fn registry_of_image_references() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("index.docker.io/library/busybox"), "docker.io");
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/x@sha256:ab"), "ghcr.io");
    }

    #[test]
    fn docker_config_entries() {
        let file = r#"{"auths": {
            "localhost:5000": {"auth": "YWxpY2U6czNjcmV0IQ=="},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "http://reg.example:8080/v2/": {"auth": "Y2Fyb2w6eDp5"},
            "tokens.example": {"identitytoken": "t"}
        }, "credHelpers": {"ecr.example": "ecr-login"}}"#;
        assert_eq!(from_docker_config(file, "c.json", "localhost:5000/x:1").expect("entry"), auth());
        let hub = from_docker_config(file, "c.json", "busybox").expect("hub");
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("bob", "pw"));
        assert_eq!(hub.serveraddress, DOCKER_HUB_KEY);
        let other = from_docker_config(file, "c.json", "reg.example:8080/a").expect("by host");
        assert_eq!((other.username.as_str(), other.password.as_str()), ("carol", "x:y"));
        let err = |image: &str| from_docker_config(file, "c.json", image).expect_err("refused").to_string();
        assert!(
            err("ecr.example/a").starts_with("credential helpers are not supported: "),
            "{}",
            err("ecr.example/a")
        );
        assert!(err("ecr.example/a").contains("ecr-login"));
        assert!(err("other.example/a").contains("no credentials for registry other.example in c.json"));
        assert!(err("tokens.example/a").contains("identity tokens"));
        let store = r#"{"auths": {"localhost:5000": {}}, "credsStore": "desktop"}"#;
        let e = from_docker_config(store, "c.json", "localhost:5000/x").expect_err("store").to_string();
        assert!(e.starts_with("credential helpers are not supported: ") && e.contains("desktop"), "{e}");
        assert!(from_docker_config("not json", "c.json", "x").is_err());
    }

    #[test]
    fn x_registry_auth_headers() {
        let json = br#"{"username":"alice","password":"s3cret!","serveraddress":"localhost:5000"}"#;
        let h = base64_encode(json).replace('+', "-").replace('/', "_");
        assert_eq!(from_x_registry_auth(&h).expect("header"), Some(auth()));
        assert_eq!(from_x_registry_auth(&base64_encode(b"{}")).expect("empty"), None);
        assert!(from_x_registry_auth("%%").is_err());
    }
}
