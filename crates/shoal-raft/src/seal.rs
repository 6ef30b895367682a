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

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const MAGIC: &[u8] = b"SHOAL-SEALED-1\n";

/// The manager's data key.
pub struct DataKey(LessSafeKey);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// What the key file holds (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    format: u32,
    /// The key, base64.
    key: String,
}

impl DataKey {
    fn from_bytes(bytes: &[u8]) -> Result<DataKey, String> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .map(|k| DataKey(LessSafeKey::new(k)))
            .map_err(|_| "a data key must be 32 bytes".to_string())
    }

    /// A new random key.
    pub fn generate() -> Result<(DataKey, [u8; 32]), String> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| "no randomness for a data key".to_string())?;
        Ok((DataKey::from_bytes(&bytes)?, bytes))
    }

    /// Reads the key file at `path`.
    pub fn read(path: &Path) -> Result<DataKey, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a data key file: {e}", path.display()))?;
        if file.format != 1 {
            return Err(format!(
                "{}: a data key file of format {} (this binary knows 1): upgrade this binary",
                path.display(),
                file.format
            ));
        }
        let bytes = shoal_kv::base64::decode(&file.key)
            .ok_or_else(|| format!("{}: the key is not base64", path.display()))?;
        DataKey::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes a new key file (0600, durably) and returns the key.
    pub fn create(path: &Path) -> Result<DataKey, String> {
        let (key, bytes) = DataKey::generate()?;
        let json = serde_json::to_vec(&KeyFile { format: 1, key: shoal_kv::base64::encode(&bytes) })
            .map_err(|e| e.to_string())?;
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
            f.write_all(&json).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(key)
    }

    /// Seals `plain`, bound to `place`.
    pub fn seal(&self, place: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "no randomness for a nonce".to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.0
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
        let plain =
            self.0.open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(place), &mut body).map_err(
                |_| "cannot open a sealed record: another data key (raft.key replaced?) or damaged data",
            )?;
        Ok(plain.to_vec())
    }
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
        let (k, _) = DataKey::generate().expect("key");
        let sealed = k.seal(b"7", b"the CA key").expect("seal");
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(10).any(|w| w == b"the CA key"));
        assert_eq!(k.open(b"7", &sealed).expect("open"), b"the CA key");
        assert!(k.open(b"8", &sealed).is_err(), "bound to its place");
        let (other, _) = DataKey::generate().expect("key");
        assert!(other.open(b"7", &sealed).expect_err("other key").contains("another data key"));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(k.open(b"7", &damaged).is_err());
        assert_ne!(k.seal(b"7", b"x").expect("a"), k.seal(b"7", b"x").expect("b"), "fresh nonces");
    }

    #[test]
    fn the_key_file_is_private_and_reads_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("raft.key");
        let k = DataKey::create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        let again = DataKey::read(&path).expect("read");
        assert_eq!(again.open(b"p", &k.seal(b"p", b"v").expect("seal")).expect("open"), b"v");
        std::fs::write(&path, br#"{"format":2,"key":""}"#).expect("write");
        assert!(DataKey::read(&path).expect_err("newer").contains("upgrade this binary"));
    }
}
