//! Backups of the replicated state: `GET /v1/cluster/backup` (`shoal cluster backup -o FILE`)
//! and `POST /v1/cluster/restore` (`shoal cluster init --restore FILE`).
//!
//! A backup is everything Raft replicates — the cluster state with its CA (key included), join
//! tokens, nodes, services, tasks, networks and the key-value store — as of a linearizable read,
//! so it has every write acknowledged before it was asked for. **It holds the CA key and the join
//! tokens: whoever has the file can add nodes to the cluster; keep it like the CA key** (there is
//! no encryption yet).
//!
//! The file (format [`FORMAT_VERSION`]):
//!
//! ```text
//! SHOAL-BACKUP 1\n
//! {header: format, state_format, cluster_id, raft_term, raft_index, state_index, created_at, …}\n
//! {the state, as the Raft snapshot holds it}\n
//! sha256 <hex of every byte above>\n
//! ```
//!
//! The checksum covers the magic line, the header and the state, so a flipped byte anywhere or
//! a truncated file is refused before anything is restored; a file of a newer format (the
//! magic line's number or the state's) is refused with "upgrade this binary".

use crate::app::{App, AppError, AppResult, Kind};
use serde::{Deserialize, Serialize};
use shoal_manager::{Consistency, InitError};
use shoal_types::Timestamp;

/// The backup file's format.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC_PREFIX: &str = "SHOAL-BACKUP ";
const TRAILER_PREFIX: &[u8] = b"sha256 ";

/// The header line: what the backup is of, for people and for the checks on restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The file's format ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The state's format ([`shoal_state::FORMAT_VERSION`] of the binary that wrote it).
    pub state_format: u32,
    pub cluster_id: String,
    /// The Raft log position the state reflects (the last applied entry).
    pub raft_term: u64,
    pub raft_index: u64,
    /// The cluster-state index (the version of the newest object).
    pub state_index: u64,
    pub created_at: Timestamp,
    /// The Shoal release that wrote it.
    pub shoal_version: String,
    /// Bytes of the state line (without its newline).
    pub state_bytes: u64,
}

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Shoal backup file")]
    NotABackup,
    #[error("{0}")]
    Newer(#[from] shoal_state::NewerFormat),
    #[error("the backup is truncated or corrupt: {0}")]
    Corrupt(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a backup file's bytes for `state` at Raft position `(term, index)`.
pub fn encode(
    state: &shoal_state::Snapshot,
    position: Option<(u64, u64)>,
    created_at: Timestamp,
) -> Result<(BackupHeader, Vec<u8>), serde_json::Error> {
    let body = serde_json::to_vec(state)?;
    let (raft_term, raft_index) = position.unwrap_or_default();
    let header = BackupHeader {
        format: FORMAT_VERSION,
        state_format: state.format,
        cluster_id: state.cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        raft_term,
        raft_index,
        state_index: state.index,
        created_at,
        shoal_version: env!("CARGO_PKG_VERSION").to_string(),
        state_bytes: body.len() as u64,
    };
    let mut out = format!("{MAGIC_PREFIX}{FORMAT_VERSION}\n").into_bytes();
    out.extend_from_slice(&serde_json::to_vec(&header)?);
    out.push(b'\n');
    out.extend_from_slice(&body);
    out.push(b'\n');
    let sum = sha256_hex(&out);
    out.extend_from_slice(TRAILER_PREFIX);
    out.extend_from_slice(sum.as_bytes());
    out.push(b'\n');
    Ok((header, out))
}

/// Reads and checks a backup file: format, checksum, header, state (nothing is trusted before
/// the checksum matched).
pub fn decode(bytes: &[u8]) -> Result<(BackupHeader, shoal_state::Snapshot), BackupError> {
    let corrupt = |m: &str| BackupError::Corrupt(m.to_string());
    let rest = bytes.strip_prefix(MAGIC_PREFIX.as_bytes()).ok_or(BackupError::NotABackup)?;
    let nl = rest.iter().position(|b| *b == b'\n').ok_or(BackupError::NotABackup)?;
    let version: u32 = std::str::from_utf8(&rest[..nl])
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or(BackupError::NotABackup)?;
    shoal_state::check_format("the backup file", version, FORMAT_VERSION)?;
    // The trailer: the last line, `sha256 <64 hex digits>`.
    let body_end =
        bytes.len().checked_sub(TRAILER_PREFIX.len() + 64 + 1).ok_or_else(|| corrupt("no checksum"))?;
    let (covered, trailer) = bytes.split_at(body_end);
    let sum = trailer
        .strip_prefix(TRAILER_PREFIX)
        .and_then(|t| t.strip_suffix(b"\n"))
        .ok_or_else(|| corrupt("no checksum at the end (the file was cut short?)"))?;
    if !covered.ends_with(b"\n") {
        return Err(corrupt("no checksum at the end (the file was cut short?)"));
    }
    if sum != sha256_hex(covered).as_bytes() {
        return Err(corrupt("checksum mismatch"));
    }
    let after_magic = &covered[MAGIC_PREFIX.len() + nl + 1..];
    let hl = after_magic.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("no header"))?;
    let header: BackupHeader =
        serde_json::from_slice(&after_magic[..hl]).map_err(|e| corrupt(&format!("header: {e}")))?;
    shoal_state::check_format("the backup's state", header.state_format, shoal_state::FORMAT_VERSION)?;
    let state = &after_magic[hl + 1..after_magic.len() - 1];
    if state.len() as u64 != header.state_bytes {
        return Err(corrupt("the state's length does not match the header"));
    }
    let snap: shoal_state::Snapshot =
        serde_json::from_slice(state).map_err(|e| corrupt(&format!("state: {e}")))?;
    shoal_state::check_format("the backup's state", snap.format, shoal_state::FORMAT_VERSION)?;
    if snap.cluster.is_none() {
        return Err(corrupt("it holds no cluster (CA and tokens)"));
    }
    Ok((header, snap))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::new(Kind::Unavailable, e.to_string()))
}

impl App {
    /// The backup file of the replicated state as of now (a linearizable read: it has every
    /// acknowledged write), from any manager.
    pub async fn backup(&self) -> AppResult<(BackupHeader, Vec<u8>)> {
        self.read(Consistency::Linearizable, |_| ()).await?;
        let (state, position) = self.manager().node.state_image();
        if state.cluster.is_none() {
            return Err(AppError::new(
                Kind::Unavailable,
                "this node is not in a cluster: nothing to back up",
            ));
        }
        let now = Timestamp::from_system_time(std::time::SystemTime::now());
        blocking(move || encode(&state, position, now))
            .await?
            .map_err(|e| AppError::new(Kind::Unavailable, format!("encoding the backup: {e}")))
    }

    /// `cluster init --restore`: checks the file, then starts a new cluster on this manager with
    /// its state. Refused (and nothing changed) for a corrupt or newer file, or a node already
    /// in a cluster.
    pub async fn restore(&self, bytes: Vec<u8>) -> AppResult<BackupHeader> {
        let m = self.manager();
        let in_cluster = |id: &str| {
            AppError::conflict(format!(
                "this node is already part of a cluster ({id}): restore on a fresh daemon (see `shoal cluster inspect`)"
            ))
        };
        // A member whose replica has no cluster yet (a restore that was cut short after Raft
        // started, or a joiner still catching up) goes on: `restore_cluster` asks the leader.
        if let Some(id) = m.node.local(|s| s.cluster().map(|c| c.id.clone())) {
            return Err(in_cluster(&id));
        }
        let (header, snap) = blocking(move || decode(&bytes))
            .await?
            .map_err(|e| AppError::invalid(format!("cannot restore: {e}")))?;
        m.restore_cluster(snap).await.map_err(|e| match e {
            InitError::AlreadyInitialized(id) => in_cluster(&id),
            InitError::Write(shoal_manager::WriteError::Refused(c)) => AppError::invalid(c.message),
            e => AppError::new(Kind::Unavailable, e.to_string()),
        })?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> shoal_state::Snapshot {
        let cluster = shoal_state::ClusterObject {
            id: "c1".into(),
            created_at: Timestamp::ZERO,
            ca_cert_pem: "ca".into(),
            ca_key_pem: "key".into(),
            worker_token: "w".into(),
            manager_token: "m".into(),
            data_path_port: 4789,
        };
        let mut s = shoal_state::ClusterState::new();
        s.apply(Timestamp::from_secs(1), shoal_state::Command::InitCluster { cluster: Box::new(cluster) })
            .expect("init");
        s.snapshot()
    }

    #[test]
    fn a_backup_reads_back_and_any_damage_is_refused() {
        let (header, bytes) = encode(&state(), Some((3, 42)), Timestamp::from_secs(5)).expect("encode");
        let (back, snap) = decode(&bytes).expect("decode");
        assert_eq!(back, header);
        assert_eq!((back.raft_term, back.raft_index, back.cluster_id.as_str()), (3, 42, "c1"));
        assert_eq!(snap, state());
        // Every truncation and every flipped byte is refused.
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in [20, bytes.len() / 2, bytes.len() - 80] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            let e = decode(&bad).expect_err("flipped byte");
            assert!(matches!(e, BackupError::Corrupt(_)), "byte {at}: {e}");
        }
        assert!(matches!(decode(b"hello"), Err(BackupError::NotABackup)));
    }

    #[test]
    fn a_newer_format_is_refused_with_upgrade_this_binary() {
        let (_, bytes) = encode(&state(), None, Timestamp::ZERO).expect("encode");
        let newer =
            String::from_utf8(bytes).expect("utf8").replacen("SHOAL-BACKUP 1\n", "SHOAL-BACKUP 7\n", 1);
        let e = decode(newer.as_bytes()).expect_err("newer file");
        assert_eq!(
            e.to_string(),
            format!("the backup file was written by a newer Shoal (format 7, this binary knows up to {FORMAT_VERSION}): upgrade this binary")
        );
        let mut s = state();
        s.format = shoal_state::FORMAT_VERSION + 1;
        let (_, bytes) = encode(&s, None, Timestamp::ZERO).expect("encode");
        let e = decode(&bytes).expect_err("newer state");
        assert!(e.to_string().contains("written by a newer Shoal"), "{e}");
    }
}
