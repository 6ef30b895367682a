//! Key and certificate files: permissions and atomic replacement.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use shoal_pki::{read_pem_file, write_private_file, write_public_file, Ca, PkiError};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn private_file_is_0600_and_replaced_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let ca = Ca::generate("c").expect("CA");

    write_private_file(&path, ca.key_pem()).expect("write key");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(read_pem_file(&path).expect("read"), ca.key_pem());
    let first_inode = fs::metadata(&path).expect("metadata").ino();

    // Make the existing file world-readable, then replace it: the result is 0600 again and a
    // new inode (rename, not an in-place rewrite that would keep the old permissions).
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let other = Ca::generate("c").expect("CA");
    write_private_file(&path, other.key_pem()).expect("replace key");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read_to_string(&path).expect("read"), other.key_pem());
    assert_ne!(fs::metadata(&path).expect("metadata").ino(), first_inode);

    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(names, vec!["node.key".to_owned()]);
}

#[test]
fn private_file_mode_holds_even_with_a_permissive_existing_hard_link() {
    // A hard link to the old file keeps the old content and mode; the new key is never
    // written through it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let link = dir.path().join("leak");
    fs::write(&path, "old").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::hard_link(&path, &link).expect("hard link");

    write_private_file(&path, "-----BEGIN PRIVATE KEY-----\nnew\n-----END PRIVATE KEY-----\n")
        .expect("write");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read_to_string(&link).expect("read link"), "old");
}

#[test]
fn public_file_is_0644() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    let ca = Ca::generate("c").expect("CA");
    write_public_file(&path, ca.cert_pem()).expect("write cert");
    assert_eq!(mode(&path), 0o644);
    assert_eq!(read_pem_file(&path).expect("read"), ca.cert_pem());
}

#[test]
fn errors_name_the_path_and_not_the_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing_dir = dir.path().join("missing").join("node.key");
    let err = write_private_file(&missing_dir, "SECRET-CONTENT").expect_err("directory does not exist");
    assert!(matches!(err, PkiError::Io { .. }));
    let msg = err.to_string();
    assert!(msg.contains("missing"), "{msg}");
    assert!(!msg.contains("SECRET-CONTENT"));

    let not_pem = dir.path().join("x");
    fs::write(&not_pem, "SECRET-CONTENT").expect("write");
    let err = read_pem_file(&not_pem).expect_err("not PEM");
    assert!(matches!(err, PkiError::InvalidPem { .. }));
    assert!(!err.to_string().contains("SECRET-CONTENT"));
    assert!(matches!(read_pem_file(dir.path().join("nope")), Err(PkiError::Io { .. })));
}
