//! Encryption at rest: every Raft log entry and the snapshot file are sealed with the manager's
//! data key (AES-256-GCM, ring), so a copy of a manager's data directory without the key shows
//! neither the CA key, the join tokens, secrets, the key-value store nor any spec.
//!
//! - The data key is 32 random bytes in `raft.key` beside the store (mode 0600), made when the
//!   store is made (or when a store from before encryption is first opened). The store records
//!   that it is sealed (`raft_meta.sealed`), so a missing key file is refused at start instead of
//!   being replaced by a new key that opens nothing.
//! - A sealed record is `SHOAL-SEALED-1\n`, a 96-bit random nonce, then the ciphertext and its
//!   tag; the additional data binds it to its place (a log entry's index, the snapshot file), so
//!   records cannot be swapped undetected. Records written before encryption (plain JSON) are
//!   still read: they go as the log is purged behind snapshots.
//! - Each manager has its own key: entries travel between managers in the clear over mutual
//!   TLS and are sealed by each store.
//! - **Autolock**: the key file then holds the data key *wrapped* (AES-256-GCM under a key
//!   derived with HKDF-SHA256 from the cluster's unlock key, `SHLKEY-1-…`), which is never
//!   stored on disk: a restarted manager waits for `shoal cluster unlock`. The unlock key itself
//!   is replicated in the (sealed) state, so every manager rewraps its own data key when autolock
//!   is turned on, rotated or turned off.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const MAGIC: &[u8] = b"SHOAL-SEALED-1\n";
const UNLOCK_PREFIX: &str = "SHLKEY-1-";
/// The wrapped data key's additional data.
const WRAP_PLACE: &[u8] = b"raft.key";

/// The manager's data key (its bytes kept for rewrapping under another unlock key).
pub struct DataKey {
    aead: LessSafeKey,
    raw: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// What the key file holds (JSON): the key, or (autolock) the key wrapped by the unlock key.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    format: u32,
    /// The key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The key sealed under the unlock key's wrapping key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
}

/// Why the key file does not give the data key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Autolock: the unlock key is needed.
    #[error("this manager is locked (autolock): unlock it with `shoal cluster unlock` and the cluster's unlock key")]
    Locked,
    #[error("the unlock key does not open this manager's data key")]
    WrongUnlockKey,
    #[error("{0}")]
    Other(String),
}

/// A new unlock key: `SHLKEY-1-` and 32 random bytes (URL-safe base64).
pub fn new_unlock_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness for an unlock key".to_string())?;
    Ok(format!("{UNLOCK_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Checks the form of an unlock key (`SHLKEY-1-` and 32 bytes).
pub fn check_unlock_key(unlock: &str) -> Result<(), KeyError> {
    unlock_secret(unlock).map(|_| ())
}

fn unlock_secret(unlock: &str) -> Result<Vec<u8>, KeyError> {
    let bad =
        || KeyError::Other("not an unlock key (SHLKEY-1-…, as `shoal cluster unlock-key` prints it)".into());
    let body = unlock.trim().strip_prefix(UNLOCK_PREFIX).ok_or_else(bad)?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
    if secret.len() != 32 {
        return Err(bad());
    }
    Ok(secret)
}

/// The wrapping key an unlock key stands for (HKDF-SHA256).
fn wrapping_key(unlock: &str) -> Result<DataKey, KeyError> {
    let secret = unlock_secret(unlock)?;
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"shoal autolock 1");
    let mut out = [0u8; 32];
    salt.extract(&secret)
        .expand(&[b"raft data key wrapping"], ring::hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| KeyError::Other("deriving the wrapping key failed".into()))?;
    DataKey::from_bytes(&out).map_err(KeyError::Other)
}

/// Whether the key file at `path` is wrapped (the manager starts locked).
pub fn is_locked(path: &Path) -> Result<bool, String> {
    match std::fs::read(path) {
        Ok(text) => {
            let file: KeyFile = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: not a data key file: {e}", path.display()))?;
            Ok(file.wrapped.is_some())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl DataKey {
    fn from_bytes(bytes: &[u8]) -> Result<DataKey, String> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| "a data key must be 32 bytes".to_string())?;
        UnboundKey::new(&AES_256_GCM, &raw)
            .map(|k| DataKey { aead: LessSafeKey::new(k), raw })
            .map_err(|_| "a data key must be 32 bytes".to_string())
    }

    /// A new random key.
    pub fn generate() -> Result<DataKey, String> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness for a data key".to_string())?;
        DataKey::from_bytes(&bytes)
    }

    /// Reads the key file at `path`; a wrapped one (autolock) needs the unlock key.
    pub fn read(path: &Path, unlock: Option<&str>) -> Result<DataKey, KeyError> {
        let other = KeyError::Other;
        let text = std::fs::read(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
        let file: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| other(format!("{}: not a data key file: {e}", path.display())))?;
        if file.format != 1 {
            return Err(other(format!(
                "{}: a data key file of format {} (this binary knows 1): upgrade this binary",
                path.display(),
                file.format
            )));
        }
        let bytes = match (&file.key, &file.wrapped) {
            (Some(key), _) => shoal_kv::base64::decode(key)
                .ok_or_else(|| other(format!("{}: the key is not base64", path.display())))?,
            (None, Some(wrapped)) => {
                let unlock = unlock.ok_or(KeyError::Locked)?;
                let sealed = shoal_kv::base64::decode(wrapped)
                    .ok_or_else(|| other(format!("{}: the wrapped key is not base64", path.display())))?;
                wrapping_key(unlock)?.open(WRAP_PLACE, &sealed).map_err(|_| KeyError::WrongUnlockKey)?
            }
            (None, None) => return Err(other(format!("{}: holds no key", path.display()))),
        };
        DataKey::from_bytes(&bytes).map_err(|e| other(format!("{}: {e}", path.display())))
    }

    /// Writes a new key file (0600, durably) and returns the key.
    pub fn create(path: &Path) -> Result<DataKey, String> {
        let key = DataKey::generate()?;
        key.write(path, None).map_err(|e| e.to_string())?;
        Ok(key)
    }

    /// Writes this key to `path` (0600, atomically and durably): in the clear, or wrapped by
    /// `unlock` (autolock).
    pub fn write(&self, path: &Path, unlock: Option<&str>) -> Result<(), KeyError> {
        let file = match unlock {
            None => KeyFile { format: 1, key: Some(shoal_kv::base64::encode(&self.raw)), wrapped: None },
            Some(u) => {
                let sealed = wrapping_key(u)?.seal(WRAP_PLACE, &self.raw).map_err(KeyError::Other)?;
                KeyFile { format: 1, key: None, wrapped: Some(shoal_kv::base64::encode(&sealed)) }
            }
        };
        let json = serde_json::to_vec(&file).map_err(|e| KeyError::Other(e.to_string()))?;
        write_private(path, &json).map_err(KeyError::Other)
    }

    /// Whether the file at `path` holds this key as `unlock` says (wrapped by it, or plain).
    pub fn stored_as(&self, path: &Path, unlock: Option<&str>) -> bool {
        if is_locked(path).unwrap_or(false) != unlock.is_some() {
            return false;
        }
        DataKey::read(path, unlock).is_ok_and(|k| k.raw == self.raw)
    }

    /// Seals `plain`, bound to `place`.
    pub fn seal(&self, place: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "no randomness for a nonce".to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place), &mut body)
            .map_err(|_| "sealing failed".to_string())?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a record sealed for `place`.
    pub fn open(&self, place: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        let rest = sealed.strip_prefix(MAGIC).ok_or("not a sealed record")?;
        let (nonce, body) = rest.split_first_chunk::<NONCE_LEN>().ok_or("a sealed record cut short")?;
        let mut body = body.to_vec();
        let plain = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(place), &mut body)
            .map_err(|_| {
                "cannot open a sealed record: another data key (raft.key replaced?) or damaged data"
            })?;
        Ok(plain.to_vec())
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically and durably.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let tmp = path.with_extension("key.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

/// Whether `bytes` is a sealed record (else: plain, written before encryption).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_their_key_and_place() {
        let k = DataKey::generate().expect("key");
        let sealed = k.seal(b"7", b"the CA key").expect("seal");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(10).any(|w| w == b"the CA key"));
        assert_eq!(k.open(b"7", &sealed).expect("open"), b"the CA key");
        assert!(k.open(b"8", &sealed).is_err(), "bound to its place");
        let other = DataKey::generate().expect("key");
        assert!(other.open(b"7", &sealed).expect_err("other key").contains("another data key"));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(k.open(b"7", &damaged).is_err());
        assert_ne!(k.seal(b"7", b"x").expect("a"), k.seal(b"7", b"x").expect("b"), "fresh nonces");
    }

    #[test]
    fn the_key_file_is_private_reads_back_and_wraps_under_an_unlock_key() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("raft.key");
        let k = DataKey::create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let again = DataKey::read(&path, None).expect("read");
        assert_eq!(again.open(b"p", &k.seal(b"p", b"v").expect("seal")).expect("open"), b"v");
        assert!(k.stored_as(&path, None));
        // Autolock: wrapped by an unlock key, never readable without it.
        let unlock = new_unlock_key().expect("unlock key");
        assert!(unlock.starts_with("SHLKEY-1-") && check_unlock_key(&unlock).is_ok(), "{unlock}");
        k.write(&path, Some(&unlock)).expect("wrap");
        assert!(is_locked(&path).expect("locked?"));
        assert!(k.stored_as(&path, Some(&unlock)) && !k.stored_as(&path, None));
        assert_eq!(DataKey::read(&path, None).expect_err("locked"), KeyError::Locked);
        let other = new_unlock_key().expect("other");
        assert_eq!(DataKey::read(&path, Some(&other)).expect_err("wrong"), KeyError::WrongUnlockKey);
        assert!(matches!(DataKey::read(&path, Some("SHLKEY-1-short")), Err(KeyError::Other(_))));
        let opened = DataKey::read(&path, Some(&unlock)).expect("unlocked");
        assert_eq!(opened.open(b"p", &k.seal(b"p", b"v").expect("seal")).expect("open"), b"v");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&shoal_kv::base64::encode(&k.raw)), "no plain key in a wrapped file");
        assert_eq!(std::fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        std::fs::write(&path, br#"{"format":2,"key":""}"#).expect("write");
        assert!(DataKey::read(&path, None).expect_err("newer").to_string().contains("upgrade this binary"));
    }
}
