//! Shoal's cluster PKI: the root CA, node certificates, join tokens and mTLS configs.
//!
//! # Trust model
//!
//! * **One root CA per cluster.** [`Ca::generate`] makes an ECDSA P-256 root whose subject O
//!   is the cluster id. Every node certificate is signed directly by it; every TLS peer is
//!   verified against it and nothing else ([`server_config`], [`client_config`]).
//! * **Node keys never leave the node.** A node creates its key and a CSR locally
//!   ([`generate_key_and_csr`]) and sends only the CSR. The CA ([`Ca::issue`]) verifies the
//!   CSR signature, keeps only the public key and decides the identity itself: CN = node id,
//!   OU = role, O = cluster id.
//! * **Roles live in the OU.** After a handshake, [`identity_from_cert`] reads the peer's
//!   node id and [`Role`] from its (already verified) certificate.
//! * **Only managers can serve as managers.** Manager certificates carry the DNS SAN
//!   [`MANAGER_SERVER_NAME`] (`manager.shoal`) besides `<node_id>.node.shoal`; clients that
//!   talk to a manager verify that name, so a worker certificate — which lacks it — can never
//!   impersonate a manager server.
//! * **Operators hold client certificates.** [`Role::Client`] (OU `client`, CN = a name) is
//!   issued by the same CA for the TCP API: EKU clientAuth only and no DNS SAN, so it can never
//!   serve as anything; the node-to-node endpoints accept only manager and worker roles.
//!   [`Role::ClientReadOnly`] (OU `client-ro`) is the same for an operator who may only read;
//!   an OU `client` (every certificate issued before read-only ones existed) is an admin's.
//! * **The join token pins the CA.** A token is `SHOAL-1-<sha256 of CA cert>-<secret>`. A
//!   joining node has no CA yet, so it connects with [`pinned_client_config`], which accepts
//!   the server only if the CA at the end of the server's chain has exactly the token's
//!   digest and the server certificate is valid for `manager.shoal` under it. Only then does
//!   the node send the secret (checked with [`JoinToken::matches`], constant time) and its CSR.
//! * **Secrets stay secret.** Private keys are written with mode 0600 from creation
//!   ([`write_private_file`]); `Debug` of [`Ca`] and [`JoinToken`] redacts key and secret; no
//!   error or log message contains key material or a token secret. A token's `Display` shows
//!   the whole token and must therefore only be used to show it to the operator.

mod ca;
mod encoding;
mod error;
mod files;
mod identity;
mod tls;
mod token;

pub use ca::{
    cert_der_to_pem, cert_pem_digest, generate_key_and_csr, Ca, CA_COMMON_NAME, CA_VALIDITY,
    CLOCK_SKEW_ALLOWANCE,
};
pub use error::{JoinTokenError, PkiError};
pub use files::{read_pem_file, write_private_file, write_public_file, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
pub use identity::{
    cert_validity, identity_from_cert, identity_from_pem, node_dns_name, renewal_at, sha256_hex,
    validate_node_id, NodeIdentity, Role, MAX_NODE_ID_LEN, NODE_NAME_SUFFIX,
};
pub use tls::{
    client_config, extract_ca_pem_from_chain, pinned_client_config, server_config, ClientAuth,
    MANAGER_SERVER_NAME,
};
pub use token::{JoinToken, DIGEST_HEX_CHARS, JOIN_TOKEN_PREFIX, JOIN_TOKEN_VERSION, MIN_SECRET_CHARS};
