//! The image store: import, docker-archive and OCI-layout loads, resolve, remove, concurrency.

use sha2::{Digest, Sha256};
use shoal_driver_oci::store::normalize_name;
use shoal_driver_oci::{ImageStore, StoreError};
use std::io::Write;

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).expect("append");
}

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in files {
        add(&mut b, p, d);
    }
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gz");
    gz.finish().expect("gz")
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--flag"], "Env": ["A=1"], "WorkingDir": "/srv", "User": "nobody", "Labels": null},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config")
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = ImageStore::open(tmp.path().join("images")).expect("open");
    (tmp, s)
}

#[test]
fn names_are_normalized() {
    assert_eq!(normalize_name("busybox").expect("n"), "busybox:latest");
    assert_eq!(normalize_name("a/b:1").expect("n"), "a/b:1");
    assert_eq!(normalize_name("localhost:5000/a").expect("n"), "localhost:5000/a:latest");
    assert!(normalize_name("").is_err());
    assert!(normalize_name("a b").is_err());
}

#[test]
fn import_resolve_list_remove() {
    let (_t, s) = store();
    let rootfs = layer(&[("bin/app", b"app"), ("etc/conf", b"c")]);
    let rec = s.import(&rootfs[..], "app").expect("import");
    assert_eq!(rec.name, "app:latest");
    let r = s.resolve("app").expect("resolve");
    assert_eq!(r.layer_dirs.len(), 1);
    assert_eq!(std::fs::read(r.layer_dirs[0].join("bin/app")).expect("read"), b"app");
    assert!(r.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(s.list().expect("list").len(), 1);
    // A second image sharing the layer keeps it alive when the first goes.
    s.import(&gzip(&rootfs)[..], "app-gz:1").expect("import gz");
    s.import(&rootfs[..], "app2").expect("import again");
    s.remove("app").expect("remove");
    assert!(s.resolve("app2").expect("resolve app2").layer_dirs[0].join("bin/app").exists());
    assert!(matches!(s.remove("app"), Err(StoreError::NotFound(_))));
    assert!(matches!(s.resolve("nope"), Err(StoreError::NotFound(_))));
    s.remove("app2").expect("remove");
    s.remove("app-gz:1").expect("remove");
    assert_eq!(std::fs::read_dir(s.root().join("layers")).expect("layers").count(), 0);
    assert_eq!(std::fs::read_dir(s.root().join("blobs/sha256")).expect("blobs").count(), 0);
}

fn docker_archive(tamper_config: bool, tamper_layer: bool) -> Vec<u8> {
    let l1 = layer(&[("bin/app", b"v1")]);
    let l2 = layer(&[("bin/app", b"v2"), ("etc/.wh.old", b"")]);
    let cfg = config(&[sha(&l1), sha(&if tamper_layer { layer(&[("x", b"y")]) } else { l2.clone() })]);
    let cfg_name = format!("{}.json", sha(&cfg).trim_start_matches("sha256:"));
    let manifest = serde_json::json!([{ "Config": cfg_name, "RepoTags": ["docker/app:2"], "Layers": ["l1/layer.tar", "l2/layer.tar"] }]);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "manifest.json", &serde_json::to_vec(&manifest).expect("json"));
    let cfg_data = if tamper_config { config(&[]) } else { cfg };
    add(&mut b, &cfg_name, &cfg_data);
    add(&mut b, "l1/layer.tar", &l1);
    add(&mut b, "l2/layer.tar", &l2);
    b.into_inner().expect("tar")
}

#[test]
fn loads_docker_archives_and_verifies_digests() {
    let (_t, s) = store();
    let loaded = s.load(&docker_archive(false, false)[..], None).expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, "docker/app:2");
    let r = s.resolve("docker/app:2").expect("resolve");
    assert_eq!(r.entrypoint, vec!["/bin/app"]);
    assert_eq!(r.cmd, vec!["--flag"]);
    assert_eq!(r.workdir, "/srv");
    assert_eq!(r.user, "nobody");
    assert_eq!(r.layer_dirs.len(), 2);
    assert_eq!(std::fs::read(r.layer_dirs[1].join("bin/app")).expect("read"), b"v2");

    let (_t, s) = store();
    let err = s.load(&docker_archive(true, false)[..], None).expect_err("tampered config");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let err = s.load(&docker_archive(false, true)[..], None).expect_err("tampered layer");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(s.list().expect("list").is_empty());
    let err = s.load(&layer(&[("random", b"x")])[..], None).expect_err("not an image");
    assert!(matches!(err, StoreError::InvalidArchive(_)), "{err}");
}

#[test]
fn loads_oci_layouts() {
    let l1 = gzip(&layer(&[("bin/app", b"oci")]));
    let diff = sha(&layer(&[("bin/app", b"oci")]));
    let cfg = config(&[diff]);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&l1), "size": l1.len()}],
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "v3"}}],
    }))
    .expect("index");
    let build = |corrupt: bool| {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add(&mut b, "index.json", &index);
        for blob in [&cfg, &manifest, &l1] {
            let mut data = blob.clone();
            if corrupt && blob == &l1 {
                data[10] ^= 0xff;
            }
            add(&mut b, &format!("blobs/sha256/{}", sha(blob).trim_start_matches("sha256:")), &data);
        }
        b.into_inner().expect("tar")
    };
    let (_t, s) = store();
    let loaded = s.load(&build(false)[..], Some("oci/app")).expect("load");
    assert_eq!(loaded[0].name, "oci/app:v3");
    let r = s.resolve("oci/app:v3").expect("resolve");
    assert_eq!(std::fs::read(r.layer_dirs[0].join("bin/app")).expect("read"), b"oci");
    let (_t, s) = store();
    assert!(s.load(&build(false)[..], None).is_ok(), "a bare ref name is kept as is");
    let (_t, s) = store();
    let err = s.load(&build(true)[..], Some("oci/app")).expect_err("corrupt");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
}

#[test]
fn concurrent_imports_share_layers() {
    let (_t, s) = store();
    let rootfs = layer(&[("bin/app", b"same"), ("a/b/c", b"deep")]);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let rootfs = rootfs.clone();
            std::thread::spawn(move || s.import(&rootfs[..], &format!("img{i}")).expect("import"))
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(s.list().expect("list").len(), 8);
    assert_eq!(std::fs::read_dir(s.root().join("layers")).expect("layers").count(), 1);
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).expect("tmp").count(), 0);
}

#[test]
fn hostile_layer_fails_the_load() {
    let (_t, s) = store();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut evil = h.as_bytes().to_vec();
    evil.push(b'x');
    evil.extend(std::iter::repeat_n(0u8, 511 + 1024));
    let err = s.import(&evil[..], "evil").expect_err("must fail");
    assert!(err.to_string().contains(".."), "{err}");
    assert!(s.list().expect("list").is_empty());
    assert!(!s.root().join("escape").exists());
    assert_eq!(std::fs::read_dir(s.root().join("tmp")).expect("tmp").count(), 0);
}

/// A small tmpfs of its own, unmounted on drop (the store's disk filling up, for real).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tmp");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount a tmpfs (tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn image_data_never_fills_the_disk_past_the_reserve() {
    use std::io::Read;
    let disk = SmallDisk::new(32);
    let store = ImageStore::open(disk.0.path().join("images")).expect("store").with_min_free(16 << 20);
    // 8 MiB fits above the reserve; 40 MiB would not, and stops with the reason, leaving nothing.
    store.put_blob(std::io::repeat(1).take(8 << 20), None).expect("a blob that fits");
    let err = store.put_blob(std::io::repeat(2).take(40 << 20), None).expect_err("disk full");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("not enough disk space"), "{err}");
    let leftovers = std::fs::read_dir(disk.0.path().join("images/tmp")).expect("tmp").count();
    assert_eq!(leftovers, 0, "no partial blob left");
    // A layer that would not fit unpacked is refused the same way.
    let big = layer(&[("big.bin", &vec![7u8; 20 << 20])]);
    let err = store.import(&big[..], "big:1").expect_err("no room");
    assert!(err.to_string().contains("not enough disk space"), "{err}");
}
