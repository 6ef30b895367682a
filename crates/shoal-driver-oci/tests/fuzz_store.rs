//! Fuzz target: image archives as `shoal image load` / `image import` receive them
//! (`ImageStore::load`: `docker save` archives with `manifest.json`, OCI image layouts with
//! `index.json`, their configs and manifests, and the layers inside) and image references from
//! elsewhere (`normalize_name`, `validate_reference`, `validate_digest`). Random bytes, archives
//! built from random (hostile) entries and manifests, and byte-mutated valid archives never panic
//! or hang and are refused with a message; nothing is ever written outside the store (checked on
//! the filesystem); every image that loads has a name that passes `validate_reference`, and its
//! layers are unpacked inside the store with nothing pointing out of them.

mod fuzz_support;

use fuzz_support::*;
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use shoal_driver_oci::store::{normalize_name, validate_digest, validate_reference};
use shoal_driver_oci::unpack::UnpackLimits;
use shoal_driver_oci::ImageStore;

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn store(sb: &Sandbox) -> ImageStore {
    ImageStore::open(&sb.dest)
        .expect("store")
        .with_min_free(0)
        .with_limits(UnpackLimits { max_bytes: 1 << 20, max_entries: 64 })
}

fn layer(entries: &[Vec<u8>]) -> Vec<u8> {
    archive(entries)
}

fn config(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json")
}

/// A `docker save` archive of one image named `tags`, its layers given.
fn docker_archive(tags: &serde_json::Value, layers: &[Vec<u8>], extra: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let cfg = config(&refs);
    let cfg_name = format!("{}.json", sha(&cfg));
    let layer_names: Vec<String> = layers.iter().map(|l| format!("{}/layer.tar", sha(l))).collect();
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": cfg_name, "RepoTags": tags, "Layers": layer_names}]),
    )
    .expect("json");
    let mut entries =
        vec![raw("manifest.json", REG, "", &manifest, None), raw(&cfg_name, REG, "", &cfg, None)];
    for (n, l) in layer_names.iter().zip(layers) {
        entries.push(raw(n, REG, "", l, None));
    }
    entries.extend_from_slice(extra);
    archive(&entries)
}

/// An OCI image layout of one image, named by the annotation `name`.
fn oci_layout(name: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let cfg = config(&refs);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{}", sha(l)), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name}}],
    }))
    .expect("json");
    let mut entries = vec![
        raw("oci-layout", REG, "", br#"{"imageLayoutVersion":"1.0.0"}"#, None),
        raw("index.json", REG, "", &index, None),
        raw(&format!("blobs/sha256/{}", sha(&manifest)), REG, "", &manifest, None),
        raw(&format!("blobs/sha256/{}", sha(&cfg)), REG, "", &cfg, None),
    ];
    for l in layers {
        entries.push(raw(&format!("blobs/sha256/{}", sha(l)), REG, "", l, None));
    }
    archive(&entries)
}

fn good_layer() -> Vec<u8> {
    layer(&[
        raw("bin/", DIR, "", b"", None),
        raw("bin/busybox", REG, "", b"#!fake\n", None),
        raw("bin/sh", SYM, "busybox", b"", None),
    ])
}

fn check(sb: &Sandbox, data: Vec<u8>, default_name: Option<&str>) {
    let s = store(sb);
    match s.load(std::io::Cursor::new(data), default_name) {
        Ok(images) => {
            for rec in images {
                if let Err(e) = validate_reference(&rec.name) {
                    panic!("an image loaded under a name that is not a reference: {:?}: {e}", rec.name);
                }
                let resolved = s.resolve(&rec.name).expect("a loaded image resolves");
                for dir in &resolved.layer_dirs {
                    assert!(dir.starts_with(s.root()), "{}", dir.display());
                    assert_contained(dir);
                }
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
    sb.assert_outside_untouched(&[]);
    // Staging is cleaned up, whatever happened.
    let tmp: Vec<_> = std::fs::read_dir(s.root().join("tmp")).expect("tmp").collect();
    assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
}

fn tags() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(["busybox:1"])),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([])),
        prop::collection::vec("[a-zA-Z0-9./:@_\u{e9} -]{0,20}", 1..3).prop_map(|v| serde_json::json!(v)),
        Just(serde_json::json!(["../../outside/file:1", "/abs:1", "a//b:1", "a\nb", ""])),
        Just(serde_json::json!([1, 2])),
        Just(serde_json::json!({"a": "b"})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048), gz in any::<bool>()) {
        let sb = sandbox();
        check(&sb, if gz { gzip(&data) } else { data }, Some("x:1"));
    }

    #[test]
    fn docker_archives_with_hostile_parts(
        tags in tags(),
        layer_entries in prop::collection::vec(hostile(), 0..6),
        outer in prop::collection::vec(hostile(), 0..4),
        default in prop::option::of("[a-z0-9:/.]{0,12}"),
    ) {
        let sb = sandbox();
        let bad_layer = layer(&layer_entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect::<Vec<_>>());
        let extra: Vec<Vec<u8>> = outer.iter().map(|h| hostile_bytes(h, &sb.outside)).collect();
        check(&sb, docker_archive(&tags, &[good_layer(), bad_layer], &extra), default.as_deref());
    }

    #[test]
    fn oci_layouts_with_hostile_parts(
        name in prop_oneof![Just("busybox:1".to_string()), "[a-zA-Z0-9./:@_\u{e9} -]{0,20}"],
        layer_entries in prop::collection::vec(hostile(), 0..6),
    ) {
        let sb = sandbox();
        let bad_layer = layer(&layer_entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect::<Vec<_>>());
        check(&sb, oci_layout(&name, &[good_layer(), bad_layer]), None);
    }

    #[test]
    fn mutated_archives(edits in byte_edits(), oci in any::<bool>(), gz in any::<bool>()) {
        let sb = sandbox();
        let good = if oci { oci_layout("busybox:1", &[good_layer()]) } else { docker_archive(&serde_json::json!(["busybox:1"]), &[good_layer()], &[]) };
        let data = mutate_bytes(if gz { gzip(&good) } else { good }, &edits);
        check(&sb, data, None);
    }

    #[test]
    fn manifests_as_json_soup(manifest in "\\PC{0,80}", index in any::<bool>()) {
        let sb = sandbox();
        let name = if index { "index.json" } else { "manifest.json" };
        check(&sb, archive(&[raw(name, REG, "", manifest.as_bytes(), None)]), Some("x:1"));
    }

    #[test]
    fn references(s in "\\PC{0,60}", r in "[a-zA-Z0-9._/:@-]{0,40}") {
        for text in [s.as_str(), r.as_str()] {
            if let Err(e) = normalize_name(text) {
                prop_assert!(!e.to_string().is_empty());
            }
            if validate_reference(text).is_ok() {
                let name = text.split('@').next().unwrap_or_default();
                prop_assert!(name.split('/').all(|c| !c.is_empty() && !c.starts_with('.')), "{:?}", text);
                prop_assert!(text.len() <= 512);
            }
            if validate_digest(text).is_ok() {
                prop_assert!(text.len() == 71 && text.starts_with("sha256:"));
            }
        }
    }
}

#[test]
fn names_from_an_archive_that_are_not_references_are_refused() {
    // Found by this target: `RepoTags: ["é"]` (or an OCI `io.containerd.image.name` of
    // "a b", "../x") was recorded as an image name that no other node or API call accepts.
    for bad in ["\u{e9}", "a b:1", "../x:1", "a//b:1", "/abs:1", ".hidden:1"] {
        let sb = sandbox();
        let s = store(&sb);
        let docker = docker_archive(&serde_json::json!([bad]), &[good_layer()], &[]);
        let e = s.load(std::io::Cursor::new(docker), None).expect_err(bad);
        assert!(e.to_string().contains("invalid image reference"), "{bad}: {e}");
        let e = s.load(std::io::Cursor::new(oci_layout(bad, &[good_layer()])), None).expect_err(bad);
        assert!(e.to_string().contains("invalid image reference"), "{bad}: {e}");
        assert!(s.list().expect("list").is_empty());
    }
}

#[test]
fn a_docker_archive_loads_and_the_round_trip_holds() {
    let sb = sandbox();
    let s = store(&sb);
    let recs = s
        .load(
            std::io::Cursor::new(docker_archive(&serde_json::json!(["busybox:1"]), &[good_layer()], &[])),
            None,
        )
        .expect("load");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name, "busybox:1");
    let recs = s.load(std::io::Cursor::new(oci_layout("oci:2", &[good_layer()])), None).expect("load");
    assert_eq!(recs[0].name, "oci:2");
    sb.assert_outside_untouched(&[]);
}
