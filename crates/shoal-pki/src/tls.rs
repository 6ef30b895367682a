//! rustls 0.23 configurations for Shoal's mTLS, always on the ring provider passed explicitly
//! (never the process-wide default provider).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::identity::single_cert_from_pem;
use crate::token::check_digest;
use crate::{cert_der_to_pem, PkiError};

/// The TLS server name every manager certificate carries and every client that talks to a
/// manager verifies. Worker certificates never carry it.
pub const MANAGER_SERVER_NAME: &str = "manager.shoal";

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate issued by the cluster CA.
    Required,
    /// Clients may connect without a certificate (the join endpoint, used by nodes that have
    /// none yet); a certificate that *is* presented must still verify against the CA.
    Optional,
}

/// The ring crypto provider, passed explicitly to every builder.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn private_key_from_pem(key_pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| PkiError::InvalidPem { what: "private key", reason: "no usable PRIVATE KEY block" })
}

fn ca_roots(ca_cert: &CertificateDer<'static>) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.clone())?;
    Ok(roots)
}

/// A server config presenting `[cert, CA]` and verifying client certificates against the CA
/// in `ca_pem` (required or optional, see [`ClientAuth`]).
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let ca = single_cert_from_pem(ca_pem, "CA certificate")?;
    let cert = single_cert_from_pem(cert_pem, "node certificate")?;
    let key = private_key_from_pem(key_pem)?;
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots(&ca)?), provider.clone());
    let verifier = match client_auth {
        ClientAuth::Required => builder.build()?,
        ClientAuth::Optional => builder.allow_unauthenticated().build()?,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca], key)?;
    Ok(Arc::new(config))
}

/// A client config that trusts only the CA in `ca_pem` and presents the node certificate.
/// Connect with [`MANAGER_SERVER_NAME`] to reach a manager.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let ca = single_cert_from_pem(ca_pem, "CA certificate")?;
    let cert = single_cert_from_pem(cert_pem, "node certificate")?;
    let key = private_key_from_pem(key_pem)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(ca_roots(&ca)?)
        .with_client_auth_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

/// A client config for a node that is joining and has neither CA nor certificate yet.
///
/// The server is accepted only if the last certificate of the chain it sends (the CA) has
/// SHA-256 digest `expected_ca_digest` (from the join token, compared in constant time) *and*
/// its end-entity certificate verifies against that CA for [`MANAGER_SERVER_NAME`] — whatever
/// server name the caller connects with. No client certificate is presented. After the
/// handshake, [`extract_ca_pem_from_chain`] on the peer certificates yields the CA to store.
pub fn pinned_client_config(expected_ca_digest: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    check_digest(expected_ca_digest).map_err(|_| PkiError::InvalidDigest)?;
    let mut expected = [0u8; 32];
    for (i, byte) in expected.iter_mut().enumerate() {
        let pair = expected_ca_digest.get(2 * i..2 * i + 2).ok_or(PkiError::InvalidDigest)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| PkiError::InvalidDigest)?;
    }
    let provider = provider();
    let verifier = PinnedCaVerifier { expected_ca_sha256: expected, provider: provider.clone() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// PEM of the last certificate of `chain` — the CA in a chain sent by [`server_config`].
/// Use it on `peer_certificates()` after a [`pinned_client_config`] handshake, which has
/// already checked that certificate's digest.
pub fn extract_ca_pem_from_chain(chain: &[CertificateDer<'_>]) -> Result<String, PkiError> {
    chain.last().map(cert_der_to_pem).ok_or(PkiError::EmptyChain)
}

/// Why a pinned verification failed; surfaces as `CertificateError::Other`, whose `Display`
/// uses this type's `Debug`, so `Debug` prints the message too.
#[derive(thiserror::Error)]
enum PinError {
    #[error("server sent no CA certificate after its own certificate")]
    NoCaInChain,
    #[error("server CA certificate digest does not match the join token")]
    DigestMismatch,
}

impl std::fmt::Debug for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn pin_error(e: PinError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

/// Accepts a server whose chain ends in the CA pinned by digest and whose end-entity
/// certificate is valid for `manager.shoal` under that CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    expected_ca_sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (ca, between) = intermediates.split_last().ok_or_else(|| pin_error(PinError::NoCaInChain))?;
        let digest = Sha256::digest(ca.as_ref());
        if !bool::from(digest.as_slice().ct_eq(&self.expected_ca_sha256)) {
            tracing::warn!("join: server CA digest does not match the join token; refusing the server");
            return Err(pin_error(PinError::DigestMismatch));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("cannot build verifier for pinned CA: {e}")))?;
        let manager = ServerName::try_from(MANAGER_SERVER_NAME)
            .map_err(|_| rustls::Error::General("invalid manager server name".into()))?;
        inner.verify_server_cert(end_entity, between, &manager, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
