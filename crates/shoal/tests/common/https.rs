//! Raw HTTP/1.1 over mutual TLS to a manager, for the tests of who may call what.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// One HTTP/1.1 request over TLS to `manager.shoal` at `addr`: the raw response, or why there
/// was none. Reads and writes have a deadline, so a refused handshake cannot hang the test.
pub fn https(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<String, String> {
    let name = rustls::pki_types::ServerName::try_from("manager.shoal").expect("name");
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: manager.shoal\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify after answering is fine.
            Err(_) if !out.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The CLI against a manager's TCP API on loopback `port`, with the certificate in `tls_dir`.
pub fn tcp_cli(port: u16, tls_dir: &Path, args: &[&str]) -> Output {
    Command::new(super::BIN)
        .args(["-H", &format!("tcp://127.0.0.1:{port}")])
        .arg("--tls-dir")
        .arg(tls_dir)
        .args(args)
        .env_remove("SHOAL_TLS_DIR")
        .env_remove("SHOAL_HOST")
        .output()
        .expect("cli")
}

pub fn tcp_ok(port: u16, tls_dir: &Path, args: &[&str]) -> String {
    let out = tcp_cli(port, tls_dir, args);
    assert!(out.status.success(), "shoal -H tcp:// {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A PEM file's text.
pub fn pem(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A TLS client with a certificate from `dir` (`ca`, `cert`, `key` are file names in it).
pub fn with_cert(dir: &Path, ca: &str, cert: &str, key: &str) -> Arc<rustls::ClientConfig> {
    shoal_pki::client_config(&pem(&dir.join(ca)), &pem(&dir.join(cert)), &pem(&dir.join(key)))
        .expect("client config")
}

/// A TLS client that trusts the cluster CA but presents no certificate.
pub fn without_cert(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA"))
        .expect("root");
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}
