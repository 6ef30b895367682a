//! Fuzz target: checkpoint archives and streams as a node or manager receives them
//! (`checkpoint::unpack_verified` and `checkpoint_stream::unpack_any`, behind
//! `POST /v1/tasks/restore` and live migration), rootfs
//! diffs (`apply_rootfs_diff`) and checkpoint manifests (`Manifest::read`). Random files and
//! byte-mutated signed archives are refused (`NotAnArchive` or `Rejected`) before anything is
//! extracted; an archive signed with the right key whose payload is hostile (a key holder gone
//! bad) is still unpacked safely: nothing outside the target directory is touched and nothing
//! inside points out of it. No input panics or hangs; every refusal has a message.

mod fuzz_support;

use fuzz_support::*;
use proptest::prelude::*;
use ring::hmac;
use shoal_driver_oci::checkpoint::{
    apply_rootfs_diff, pack_with, unpack_verified, CheckpointError, Compression, Manifest,
};
use shoal_driver_oci::checkpoint_stream::{unpack_any, write_stream, FrameWriter, FRAME_BYTES};
use std::io::Write;
use std::path::Path;

const BINDING: &[u8] = b"shoal-file/cluster/svc/Some(1)/task/ck1";
const KEY: &[u8] = b"checkpoint key";

/// `payload | HMAC | "SHOALCK1"`, signed as `pack` signs (the format is documented in
/// `checkpoint.rs`): what a holder of the key can make of any payload.
fn signed(payload: &[u8], binding: &[u8], key: &[u8]) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    ctx.update(b"shoal-checkpoint-v1\0");
    ctx.update(&(binding.len() as u64).to_be_bytes());
    ctx.update(binding);
    ctx.update(payload);
    let mut out = payload.to_vec();
    out.extend_from_slice(ctx.sign().as_ref());
    out.extend_from_slice(b"SHOALCK1");
    out
}

fn good_archive(dir: &Path, compression: Compression) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("criu")).expect("mkdir");
    std::fs::write(src.join("criu/pages-1.img"), [7u8; 3000]).expect("write");
    std::os::unix::fs::symlink("../pre-1", src.join("criu/parent")).expect("symlink");
    std::fs::create_dir_all(src.join("pre-1")).expect("mkdir");
    std::fs::write(src.join("checkpoint.json"), br#"{"format":1,"task_id":"t"}"#).expect("write");
    let out = dir.join("ck.shoal");
    pack_with(&src, &out, BINDING, KEY, compression).expect("pack");
    let data = std::fs::read(&out).expect("read");
    std::fs::remove_dir_all(&src).expect("clean");
    std::fs::remove_file(&out).expect("clean");
    data
}

/// `payload` as a stream signed for `binding` under `key`, in frames of up to `frame` bytes as
/// written (the writer cuts at `FRAME_BYTES` too).
fn signed_stream(payload: &[u8], binding: &[u8], key: &[u8], frame: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = FrameWriter::new(binding, key, |f| {
        out.push(f);
        Ok(())
    })
    .expect("stream");
    for chunk in payload.chunks(frame.max(1)) {
        w.write_all(chunk).expect("write");
    }
    w.finish().expect("finish");
    out.concat()
}

fn good_stream(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("criu")).expect("mkdir");
    std::fs::write(src.join("criu/pages-1.img"), [7u8; 3000]).expect("write");
    std::os::unix::fs::symlink("../pre-1", src.join("criu/parent")).expect("symlink");
    std::fs::write(src.join("checkpoint.json"), br#"{"format":1,"task_id":"t"}"#).expect("write");
    let mut out = Vec::new();
    write_stream(&src, BINDING, KEY, false, |f| {
        out.extend_from_slice(&f);
        Ok(())
    })
    .expect("stream");
    std::fs::remove_dir_all(&src).expect("clean");
    out
}

/// Receives `data` as a node receives a checkpoint from the network into `dest/ck`.
fn run_stream(sb: &Sandbox, data: &[u8]) -> Result<(), CheckpointError> {
    let target = sb.dest.join("ck");
    let r = unpack_any(data, &sb.tmp.path().join("spool"), BINDING, KEY, &target).map(|_| ());
    match &r {
        Ok(()) => assert_contained(&target),
        Err(e) => {
            assert!(!e.to_string().trim().is_empty());
            assert!(!target.exists(), "a refused stream left {} behind: {e}", target.display());
        }
    }
    assert!(!sb.tmp.path().join("spool").exists(), "the spool file stays behind");
    sb.assert_outside_untouched(&[]);
    r
}

/// Writes `file` beside the sandbox's target and unpacks it into `dest/ck` (absent before).
fn run(sb: &Sandbox, file: &[u8]) -> Result<(), CheckpointError> {
    let path = sb.tmp.path().join("archive");
    std::fs::write(&path, file).expect("write archive");
    let target = sb.dest.join("ck");
    let r = unpack_verified(&path, BINDING, KEY, &target).map(|_| ());
    match &r {
        Ok(()) => assert_contained(&target),
        Err(e) => {
            assert!(!e.to_string().trim().is_empty());
            assert!(!target.exists(), "a refused archive left {} behind: {e}", target.display());
        }
    }
    sb.assert_outside_untouched(&["archive"]);
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_files_are_refused(data in prop::collection::vec(any::<u8>(), 0..2048), magic in any::<bool>()) {
        let sb = sandbox();
        let mut file = data;
        if magic {
            file.extend_from_slice(b"SHOALCK1");
        }
        let r = run(&sb, &file);
        prop_assert!(matches!(r, Err(CheckpointError::NotAnArchive(_)) | Err(CheckpointError::Rejected(_))), "{:?}", r);
    }

    #[test]
    fn mutated_archives_are_refused(edits in byte_edits(), gz in any::<bool>()) {
        let sb = sandbox();
        let good = good_archive(sb.tmp.path(), if gz { Compression::Gzip } else { Compression::None });
        let bad = mutate_bytes(good.clone(), &edits);
        let r = run(&sb, &bad);
        if bad == good {
            prop_assert!(r.is_ok(), "{:?}", r);
        } else {
            prop_assert!(matches!(r, Err(CheckpointError::NotAnArchive(_)) | Err(CheckpointError::Rejected(_))), "{:?}", r);
        }
    }

    #[test]
    fn signed_hostile_payloads_are_unpacked_safely(entries in prop::collection::vec(hostile(), 1..10), gz in any::<bool>()) {
        let sb = sandbox();
        let tar = archive(&entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect::<Vec<_>>());
        let payload = if gz { gzip(&tar) } else { tar };
        let _ = run(&sb, &signed(&payload, BINDING, KEY));
    }

    #[test]
    fn signed_random_payloads(payload in prop::collection::vec(any::<u8>(), 0..2048)) {
        let sb = sandbox();
        let _ = run(&sb, &signed(&payload, BINDING, KEY));
        // The same payload for another binding or key is refused.
        let r = run(&sb, &signed(&payload, b"another task", KEY));
        prop_assert!(matches!(r, Err(CheckpointError::Rejected(_))), "{:?}", r);
    }

    #[test]
    fn random_streams_are_refused(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let sb = sandbox();
        let r = run_stream(&sb, &[b"SHOALCS1".as_slice(), &data].concat());
        prop_assert!(matches!(r, Err(CheckpointError::StreamRejected { .. })), "{:?}", r);
    }

    #[test]
    fn mutated_streams_are_refused(edits in byte_edits()) {
        let sb = sandbox();
        let good = good_stream(sb.tmp.path());
        let bad = mutate_bytes(good.clone(), &edits);
        let r = run_stream(&sb, &bad);
        if bad == good {
            prop_assert!(r.is_ok(), "{:?}", r);
        } else {
            prop_assert!(r.is_err(), "a mutated stream was accepted");
        }
    }

    #[test]
    fn signed_hostile_streams_are_unpacked_safely(entries in prop::collection::vec(hostile(), 1..10), frame in 1usize..4096) {
        let sb = sandbox();
        let tar = archive(&entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect::<Vec<_>>());
        if run_stream(&sb, &signed_stream(&tar, BINDING, KEY, frame)).is_ok() {
            std::fs::remove_dir_all(sb.dest.join("ck")).expect("clear the target");
        }
        // The same frames for another binding or key are refused.
        let r = run_stream(&sb, &signed_stream(&tar, b"another task", KEY, frame));
        prop_assert!(matches!(r, Err(CheckpointError::StreamRejected { .. })), "{:?}", r);
        let r = run_stream(&sb, &signed_stream(&tar, BINDING, b"another key", frame));
        prop_assert!(matches!(r, Err(CheckpointError::StreamRejected { .. })), "{:?}", r);
    }

    #[test]
    fn rootfs_diffs(entries in prop::collection::vec(hostile(), 1..10)) {
        let sb = sandbox();
        let diff = sb.tmp.path().join("diff.tar");
        std::fs::write(&diff, archive(&entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect::<Vec<_>>()))
            .expect("write");
        if let Err(e) = apply_rootfs_diff(&diff, &sb.dest) {
            prop_assert!(!e.to_string().is_empty());
        }
        sb.assert_outside_untouched(&["diff.tar"]);
        assert_contained(&sb.dest);
    }

    #[test]
    fn manifests(text in "\\PC{0,120}", json in prop::collection::vec(("[a-z_]{1,14}", prop_oneof![
        Just(serde_json::json!(null)), Just(serde_json::json!(-1)), Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!("x")), Just(serde_json::json!(["pre-1", "../.."])), Just(serde_json::json!({"a": 1})),
        Just(serde_json::json!(true)),
    ]), 0..6)) {
        let sb = sandbox();
        let obj: serde_json::Map<String, serde_json::Value> = json.into_iter().collect();
        for body in [text.into_bytes(), serde_json::to_vec(&obj).expect("json")] {
            std::fs::write(sb.dest.join("checkpoint.json"), &body).expect("write");
            match Manifest::read(&sb.dest) {
                Ok(m) => {
                    // What reads back writes back and reads back the same.
                    let dir = sb.dest.join("again");
                    std::fs::create_dir_all(&dir).expect("mkdir");
                    m.write(&dir).expect("write manifest");
                    prop_assert_eq!(Manifest::read(&dir).expect("read back"), m);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}

#[test]
fn a_good_stream_round_trips_and_frames_are_cut_at_the_limit() {
    let sb = sandbox();
    run_stream(&sb, &good_stream(sb.tmp.path())).expect("a good stream unpacks");
    assert_eq!(std::fs::read(sb.dest.join("ck/criu/pages-1.img")).expect("read"), [7u8; 3000]);
    let mut sizes = Vec::new();
    let mut w = FrameWriter::new(BINDING, KEY, |f| {
        sizes.push(f.len());
        Ok(())
    })
    .expect("stream");
    w.write_all(&vec![1u8; 2 * FRAME_BYTES + 1]).expect("write");
    w.finish().expect("finish");
    // The magic, two full frames (5-byte head, 32-byte tag), the last with the one byte left.
    assert_eq!(sizes, [8, FRAME_BYTES + 37, FRAME_BYTES + 37, 1 + 37]);
}

#[test]
fn a_good_archive_round_trips() {
    let sb = sandbox();
    let good = good_archive(sb.tmp.path(), Compression::Gzip);
    run(&sb, &good).expect("a good archive unpacks");
    assert_eq!(std::fs::read(sb.dest.join("ck/criu/pages-1.img")).expect("read"), [7u8; 3000]);
}
