//! The crate's error type. Messages never contain key material or join-token secrets.

use std::path::PathBuf;

/// Why a join token string could not be parsed.
///
/// The offending input is never echoed: it may contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    /// The token does not start with `SHOAL-`.
    #[error("join token must start with \"SHOAL-\"")]
    WrongPrefix,
    /// The version field is missing or is not `1`.
    #[error("unsupported join token version (expected \"1\")")]
    WrongVersion,
    /// The CA digest field does not have exactly 64 characters.
    #[error("join token CA digest must be 64 hex characters, found {found}")]
    DigestLength {
        /// How many characters the digest field had.
        found: usize,
    },
    /// The CA digest field contains something other than lowercase hex.
    #[error("join token CA digest must contain only lowercase hex characters [0-9a-f]")]
    DigestChars,
    /// The secret field is missing.
    #[error("join token has no secret")]
    MissingSecret,
    /// The secret is shorter than 26 base32 characters (128 bits).
    #[error("join token secret is too short: {found} characters, need at least {min}")]
    SecretTooShort {
        /// How many characters the secret had.
        found: usize,
        /// The minimum length.
        min: usize,
    },
    /// The secret contains something other than lowercase base32.
    #[error("join token secret must contain only lowercase base32 characters [a-z2-7]")]
    SecretChars,
}

/// Everything that can go wrong in `shoal-pki`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A node id is not `[a-z0-9-]{1,64}`.
    #[error("invalid node id {0:?}: must be 1-64 characters of [a-z0-9-]")]
    InvalidNodeId(String),
    /// A cluster id is not `[A-Za-z0-9._-]{1,128}`.
    #[error("invalid cluster id {0:?}: must be 1-128 characters of [A-Za-z0-9._-]")]
    InvalidClusterId(String),
    /// PEM input could not be decoded (the content is deliberately not shown).
    #[error("invalid PEM for {what}: {reason}")]
    InvalidPem {
        /// What the PEM was supposed to contain.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A certificate could not be parsed or lacks a required property.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A certificate signing request is malformed, has a bad signature or an unsupported key.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// The CA certificate and private key do not belong together.
    #[error("the CA private key does not match the CA certificate")]
    KeyMismatch,
    /// A certificate is not a CA certificate.
    #[error("the certificate is not a CA certificate (basic constraints CA:TRUE missing)")]
    NotACa,
    /// The requested validity is unusable (zero, too large, or outside the CA's lifetime).
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    /// A certificate subject does not carry a usable Shoal identity (CN node id, OU role).
    #[error("certificate does not carry a Shoal node identity: {0}")]
    InvalidIdentity(String),
    /// rcgen failed to build or sign a certificate or CSR.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    /// A SHA-256 digest string is not 64 lowercase hex characters.
    #[error("invalid CA digest: must be 64 lowercase hex characters")]
    InvalidDigest,
    /// A join token could not be parsed.
    #[error("invalid join token: {0}")]
    JoinToken(#[from] JoinTokenError),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// rustls rejected a configuration (certificate/key mismatch, unsupported key, ...).
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls could not build a certificate verifier.
    #[error("TLS verifier configuration error: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A certificate chain was empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// A file could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
