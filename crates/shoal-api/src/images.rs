//! Images across the cluster: a node fetches an oci image it lacks from a peer that has it.
//!
//! Every node reports the images of its oci store in its description (`name:tag` → config
//! digest). A node's agent that must start an oci task whose image it lacks asks its plane for
//! ready peers that report it ([`sources`]; over the dispatcher's `GET
//! /internal/dispatcher/images?reference=R` on a worker) and fetches it from the first that
//! delivers, over the node-to-node mutual-TLS listener (the peer's certificate name verified):
//!
//! - `GET /internal/agent/images/{reference}` — the image record ([`ImageManifest`]: config
//!   digest, ordered layer digests and sizes). The reference is percent-encoded in the path and
//!   checked ([`shoal_driver_oci::store::validate_reference`]); a pinned one
//!   (`name:tag@sha256:…`) is found by its digest.
//! - `GET /internal/agent/blobs/sha256/{hex}` — one blob, streamed from the file.
//!
//! Both answer only node certificates of this cluster (managers and workers; an operator's
//! client certificate is refused). The fetching side bounds the record and every blob by the
//! size the record declares ([`MAX_BLOB`] at most), streams each blob into the store through a
//! small channel (never a whole layer in memory), where `put_blob` verifies its sha256 before the
//! atomic rename; the config digest must be the pinned one; `commit_image` then checks the layers
//! against the config's diff ids while unpacking them.

use crate::server::ApiError;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_driver_oci::store::{validate_digest, validate_reference, ImageStore};
use shoal_pki::{NodeIdentity, Role};
use shoal_state::ClusterState;
use shoal_types::{NodeId, NodeState};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The largest blob a node accepts from a peer.
pub const MAX_BLOB: u64 = 16 << 30;
/// The largest image config accepted from a peer.
pub const MAX_CONFIG: u64 = 4 << 20;
/// The most layers an image fetched from a peer may have.
pub const MAX_LAYERS: usize = 256;
/// The largest image record accepted from a peer.
const MAX_MANIFEST: usize = 256 << 10;
/// How long a peer may stay silent in the middle of an answer.
const IDLE: Duration = Duration::from_secs(60);

/// One blob of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// What a node answers about an image in its store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// `name:tag` in the peer's store.
    pub name: String,
    pub config: BlobRef,
    /// Base layer first.
    pub layers: Vec<BlobRef>,
}

/// A node that reports an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    pub node_id: String,
    pub hostname: String,
    /// Its node-to-node listener.
    pub addr: String,
}

/// Ready nodes other than `except` that report `reference` in their description, in node id
/// order.
pub fn sources(state: &ClusterState, reference: &str, except: &NodeId) -> Vec<ImageSource> {
    state
        .nodes()
        .filter(|n| &n.id != except && n.status.state == NodeState::Ready && !n.status.addr.is_empty())
        .filter(|n| n.description.has_image(reference))
        .map(|n| ImageSource {
            node_id: n.id.to_string(),
            hostname: n.description.hostname.clone(),
            addr: n.status.addr.clone(),
        })
        .collect()
}

/// Percent-encodes everything but unreserved characters (an image reference in a URL path or
/// query).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn forbidden_unless_node(peer: &Option<NodeIdentity>) -> Result<(), ApiError> {
    match peer {
        Some(id) if matches!(id.role, Role::Manager | Role::Worker) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a node certificate of this cluster is required",
        )),
    }
}

fn store_of(slot: &crate::logs::AgentSlot) -> Result<ImageStore, ApiError> {
    let agent = slot.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the agent is not running yet")
    })?;
    let root = agent.image_store_root().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node has no oci image store")
    })?;
    ImageStore::open(root)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()))
}

fn invalid(e: impl ToString) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
}

/// `GET /internal/agent/images/{reference}`: the image record, for a node fetching it.
pub async fn agent_image(
    State(slot): State<crate::logs::AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    UrlPath(reference): UrlPath<String>,
) -> Result<Json<ImageManifest>, ApiError> {
    forbidden_unless_node(&peer)?;
    validate_reference(&reference).map_err(invalid)?;
    let store = store_of(&slot)?;
    let found = tokio::task::spawn_blocking(move || -> Result<ImageManifest, ApiError> {
        let rec = store.get(&reference).map_err(invalid)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("image {reference} is not here"))
        })?;
        let blob = |d: &str| -> Result<BlobRef, ApiError> {
            let (_, size) = store
                .blob_file(d)
                .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
            Ok(BlobRef { digest: d.to_string(), size })
        };
        Ok(ImageManifest {
            name: rec.name.clone(),
            config: blob(&rec.config_digest)?,
            layers: rec.layers.iter().map(|l| blob(l)).collect::<Result<_, _>>()?,
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(found))
}

/// `GET /internal/agent/blobs/sha256/{hex}`: one blob of the store, streamed.
pub async fn agent_blob(
    State(slot): State<crate::logs::AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    UrlPath(hex): UrlPath<String>,
) -> Result<Response, ApiError> {
    forbidden_unless_node(&peer)?;
    let digest = format!("sha256:{hex}");
    validate_digest(&digest).map_err(invalid)?;
    let store = store_of(&slot)?;
    let (path, size) = store
        .blob_file(&digest)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("blob {digest}: {e}")))?;
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /internal/dispatcher/images?reference=R` on a manager: the peers of the calling node that
/// report the image (a worker's agent asks before fetching it).
#[derive(Debug, Deserialize)]
pub struct SourcesQuery {
    pub reference: String,
}

/// Fetches `reference` into the store at `store_root` from the first of `sources` that delivers
/// it; answers with that peer's hostname, or says why none did.
pub async fn fetch_image(
    tls: Arc<rustls::ClientConfig>,
    sources: Vec<ImageSource>,
    reference: &str,
    store_root: &Path,
) -> Result<String, String> {
    validate_reference(reference).map_err(|e| e.to_string())?;
    if sources.is_empty() {
        return Err(shoal_agent::NO_PEER_HAS_IT.into());
    }
    let store = ImageStore::open(store_root).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for src in sources {
        match fetch_from(tls.clone(), &src, reference, &store).await {
            Ok(()) => return Ok(src.hostname),
            Err(e) => {
                tracing::warn!(image = reference, peer = %src.hostname, error = %e, "fetching an image from a peer failed");
                errors.push(format!("{}: {e}", src.hostname));
            }
        }
    }
    Err(format!("no peer could provide it ({})", errors.join("; ")))
}

/// Checks what a peer says about `reference` before anything is fetched.
pub fn check_manifest(reference: &str, m: &ImageManifest) -> Result<(), String> {
    validate_digest(&m.config.digest).map_err(|e| e.to_string())?;
    if m.config.size > MAX_CONFIG {
        return Err(format!("the image config is {} bytes (at most {MAX_CONFIG})", m.config.size));
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(format!("{} layers (at most {MAX_LAYERS})", m.layers.len()));
    }
    for l in &m.layers {
        validate_digest(&l.digest).map_err(|e| e.to_string())?;
        if l.size > MAX_BLOB {
            return Err(format!("layer {} is {} bytes (at most {MAX_BLOB})", l.digest, l.size));
        }
    }
    if let (_, Some(pinned)) = shoal_types::node::image_ref_parts(reference) {
        if pinned != m.config.digest {
            return Err(format!(
                "the peer's image has config digest {}, not the pinned {pinned}",
                m.config.digest
            ));
        }
    }
    Ok(())
}

async fn fetch_from(
    tls: Arc<rustls::ClientConfig>,
    src: &ImageSource,
    reference: &str,
    store: &ImageStore,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let server_name = shoal_pki::node_dns_name(&src.node_id);
    let path = format!("/internal/agent/images/{}", encode(reference));
    let resp =
        crate::internal::open(tls.clone(), &src.addr, &server_name, hyper::Method::GET, &path, None).await?;
    let status = resp.status();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_MANIFEST);
    let bytes = tokio::time::timeout(IDLE, limited.collect())
        .await
        .map_err(|_| "the peer did not answer in time".to_string())?
        .map_err(|e| format!("reading the image record: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(crate::internal::remote_error(status, &bytes));
    }
    let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| format!("bad image record: {e}"))?;
    check_manifest(reference, &m)?;
    // Committed under the reference's own name (a pinned reference under its `name:tag`).
    let (name, _) = shoal_types::node::image_ref_parts(reference);
    for blob in std::iter::once(&m.config).chain(&m.layers) {
        if !store.has_blob(&blob.digest) {
            fetch_blob(tls.clone(), src, &server_name, blob, store).await?;
        }
    }
    let store = store.clone();
    let layers: Vec<String> = m.layers.iter().map(|l| l.digest.clone()).collect();
    let config = m.config.digest.clone();
    tokio::task::spawn_blocking(move || store.commit_image(&name, &config, &layers))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A blocking reader over chunks sent by the async side, refusing more than `left` bytes.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, String>>,
    buf: axum::body::Bytes,
    left: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    if b.len() as u64 > self.left {
                        return Err(std::io::Error::other("the peer sent more than the blob's size"));
                    }
                    self.left -= b.len() as u64;
                    self.buf = b;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// Streams one blob from the peer into the store (verified against its digest there).
async fn fetch_blob(
    tls: Arc<rustls::ClientConfig>,
    src: &ImageSource,
    server_name: &str,
    blob: &BlobRef,
    store: &ImageStore,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let hex = blob.digest.trim_start_matches("sha256:");
    let path = format!("/internal/agent/blobs/sha256/{hex}");
    let resp = crate::internal::open(tls, &src.addr, server_name, hyper::Method::GET, &path, None).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = http_body_util::Limited::new(body, 64 << 10).collect().await.map(|b| b.to_bytes());
        return Err(crate::internal::remote_error(status, &bytes.unwrap_or_default()));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let (store, digest, size) = (store.clone(), blob.digest.clone(), blob.size);
    let put = tokio::task::spawn_blocking(move || {
        store.put_blob(ChannelReader { rx, buf: Default::default(), left: size }, Some(&digest))
    });
    loop {
        let frame = match tokio::time::timeout(IDLE, body.frame()).await {
            Err(_) => Err("the peer stopped sending".to_string()),
            Ok(None) => break,
            Ok(Some(Err(e))) => Err(format!("reading blob {}: {e}", blob.digest)),
            Ok(Some(Ok(f))) => Ok(f),
        };
        let item = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        // The writer may have given up already (it says why below).
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    put.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_percent_encoded() {
        assert_eq!(encode("reg:5000/a/b:1@sha256:ab"), "reg%3A5000%2Fa%2Fb%3A1%40sha256%3Aab");
        assert_eq!(encode("busybox"), "busybox");
    }

    #[test]
    fn records_from_peers_are_checked() {
        let blob = |size| BlobRef { digest: D.into(), size };
        let ok = ImageManifest { name: "a:1".into(), config: blob(10), layers: vec![blob(10)] };
        assert!(check_manifest("a:1", &ok).is_ok());
        assert!(check_manifest(&format!("a:1@{D}"), &ok).is_ok());
        let other = D.replace('0', "f");
        assert!(check_manifest(&format!("a:1@{other}"), &ok).expect_err("pinned").contains("not the pinned"));
        let mut big = ok.clone();
        big.config.size = MAX_CONFIG + 1;
        assert!(check_manifest("a:1", &big).is_err());
        let mut bad = ok.clone();
        bad.layers[0].digest = "sha256:../../etc".into();
        assert!(check_manifest("a:1", &bad).is_err());
        let mut many = ok.clone();
        many.layers = vec![blob(1); MAX_LAYERS + 1];
        assert!(check_manifest("a:1", &many).is_err());
        let mut huge = ok;
        huge.layers[0].size = MAX_BLOB + 1;
        assert!(check_manifest("a:1", &huge).is_err());
    }

    #[test]
    fn only_node_certificates_may_fetch() {
        let id = |role| Some(NodeIdentity { node_id: "n1".into(), role });
        assert!(forbidden_unless_node(&id(Role::Manager)).is_ok());
        assert!(forbidden_unless_node(&id(Role::Worker)).is_ok());
        assert!(forbidden_unless_node(&id(Role::Client)).is_err());
        assert!(forbidden_unless_node(&None).is_err());
    }

    #[test]
    fn a_channel_reader_refuses_more_than_the_size() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(axum::body::Bytes::from_static(b"abcd"))).expect("send");
        tx.try_send(Ok(axum::body::Bytes::from_static(b"efgh"))).expect("send");
        drop(tx);
        let mut r = ChannelReader { rx, buf: Default::default(), left: 6 };
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
