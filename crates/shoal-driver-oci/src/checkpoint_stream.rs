//! The checkpoint stream: how a checkpoint directory travels to the node that restores it,
//! packed, sent, verified and unpacked as one pipeline, with no archive file on either side.
//!
//! [`crate::checkpoint::pack_with`]'s archive carries one MAC at its end, so the receiver must
//! hold all of it before it may unpack anything: the whole archive is written, read, received,
//! written again, read to verify and read again to unpack. The stream carries a MAC per frame
//! instead, and the receiver unpacks each frame as soon as it is verified.
//!
//! Format: the magic `"SHOALCS1"`, then frames `len (u32 BE) | last (u8, 0 or 1) | payload
//! (len bytes, at most FRAME_BYTES) | tag (32 bytes)`, where the tag is HMAC-SHA256 under the
//! checkpoint's key over a domain string, the length-prefixed binding (task and cluster), the
//! frame's index, `last`, `len` and the payload. The payloads, in order, are an uncompressed tar
//! of the checkpoint directory. The index makes frames unmovable, the binding makes them
//! useless for another checkpoint, `last` (on exactly one frame, the final one, after which
//! nothing may follow) makes a cut stream detectable.
//!
//! The receiver ([`unpack_stream`]) checks each frame's tag before any byte of its payload
//! reaches the (safe) unpacker; a stream that fails a tag, ends early or goes on after its last
//! frame is refused with [`CheckpointError::StreamRejected`] and what it had unpacked so far is
//! removed. So, as with the archive, nothing that was not made by a holder of the key is ever
//! unpacked, and a refused stream leaves nothing behind.

use crate::checkpoint::{append_entry, constant_time_eq, discard_dest, io, take_dest, walk, CheckpointError};
use crate::unpack::{self, UnpackLimits, UnpackReport};
use ring::hmac;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

/// The first bytes of every stream.
pub const MAGIC: &[u8; 8] = b"SHOALCS1";
/// The largest payload of one frame.
pub const FRAME_BYTES: usize = 1 << 20;
const DOMAIN: &[u8] = b"shoal-checkpoint-stream-v1\0";
const HEAD: usize = 5;
const TAG_LEN: usize = 32;

/// The MAC state after the domain and binding: cloned for every frame.
fn base(binding: &[u8], key: &[u8]) -> Result<hmac::Context, CheckpointError> {
    crate::checkpoint::mac_context_in(DOMAIN, binding, key)
}

fn tag(base: &hmac::Context, index: u64, head: &[u8], payload: &[u8]) -> hmac::Tag {
    let mut ctx = base.clone();
    ctx.update(&index.to_be_bytes());
    ctx.update(head);
    ctx.update(payload);
    ctx.sign()
}

/// Cuts what is written through it into signed frames and hands each finished frame (head,
/// payload and tag in one buffer, no copy) to `emit`. [`FrameWriter::finish`] sends the last.
pub struct FrameWriter<F: FnMut(Vec<u8>) -> std::io::Result<()>> {
    base: hmac::Context,
    emit: F,
    index: u64,
    buf: Vec<u8>,
    written: u64,
    /// The `corrupt-checkpoint` failpoint: this frame's payload gets one byte flipped after it
    /// was signed.
    corrupt_frame: Option<u64>,
}

fn empty_frame() -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEAD + FRAME_BYTES + TAG_LEN);
    buf.resize(HEAD, 0);
    buf
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> FrameWriter<F> {
    /// Starts a stream for `binding` under `key`; the magic is the first thing emitted.
    pub fn new(binding: &[u8], key: &[u8], mut emit: F) -> Result<Self, CheckpointError> {
        let base = base(binding, key)?;
        emit(MAGIC.to_vec()).map_err(io("sending the checkpoint"))?;
        Ok(FrameWriter {
            base,
            emit,
            index: 0,
            buf: empty_frame(),
            written: MAGIC.len() as u64,
            corrupt_frame: None,
        })
    }

    fn send(&mut self, last: bool) -> std::io::Result<()> {
        let mut frame = std::mem::replace(&mut self.buf, if last { Vec::new() } else { empty_frame() });
        let len = frame.len() - HEAD;
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
        frame[4] = u8::from(last);
        let t = tag(&self.base, self.index, &frame[..HEAD], &frame[HEAD..]);
        frame.extend_from_slice(t.as_ref());
        if self.corrupt_frame == Some(self.index) && len > 0 {
            frame[HEAD + len / 2] ^= 0xff;
        }
        self.index += 1;
        self.written += frame.len() as u64;
        (self.emit)(frame)
    }

    /// Sends the last frame; returns the stream's size in bytes.
    pub fn finish(mut self) -> Result<u64, CheckpointError> {
        self.send(true).map_err(io("sending the checkpoint"))?;
        Ok(self.written)
    }
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> Write for FrameWriter<F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = HEAD + FRAME_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == HEAD + FRAME_BYTES {
            self.send(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the checkpoint directory `src_dir` for `binding` under `key` into `emit`, frame by
/// frame (see the module documentation); `corrupt` flips a byte in the middle of it after
/// signing (the `corrupt-checkpoint` failpoint). Returns the bytes emitted.
pub fn write_stream<F: FnMut(Vec<u8>) -> std::io::Result<()>>(
    src_dir: &Path,
    binding: &[u8],
    key: &[u8],
    corrupt: bool,
    emit: F,
) -> Result<u64, CheckpointError> {
    let entries = walk(src_dir)?;
    let mut w = FrameWriter::new(binding, key, emit)?;
    if corrupt {
        let bytes: u64 = entries.iter().filter(|(_, m)| m.is_file()).map(|(_, m)| m.len()).sum();
        w.corrupt_frame = Some(bytes / 2 / FRAME_BYTES as u64);
    }
    let mut b = tar::Builder::new(w);
    for (rel, meta) in &entries {
        if !append_entry(&mut b, rel, &src_dir.join(rel), meta)? {
            tracing::debug!(path = %rel.display(), "skipping a special file in the checkpoint");
        }
    }
    let w = b.into_inner().map_err(io("sending the checkpoint"))?;
    w.finish()
}

/// A reader of the payloads of a stream (after its magic) that verifies each frame before it
/// gives out any of its bytes. A verification failure is an `InvalidData` error, and
/// [`StreamReader::rejected`] says which frame and why.
pub struct StreamReader<R: Read> {
    inner: R,
    base: hmac::Context,
    index: u64,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    rejected: Option<(u64, &'static str)>,
    payload_bytes: u64,
}

impl<R: Read> StreamReader<R> {
    pub fn new(inner: R, binding: &[u8], key: &[u8]) -> Result<Self, CheckpointError> {
        Ok(StreamReader {
            inner,
            base: base(binding, key)?,
            index: 0,
            cur: Vec::with_capacity(FRAME_BYTES + TAG_LEN),
            pos: 0,
            done: false,
            rejected: None,
            payload_bytes: 0,
        })
    }

    /// Why the stream was refused: the frame's index and what was wrong with it.
    pub fn rejected(&self) -> Option<(u64, &'static str)> {
        self.rejected
    }

    fn reject(&mut self, why: &'static str) -> std::io::Error {
        self.rejected = Some((self.index, why));
        std::io::Error::new(ErrorKind::InvalidData, why)
    }

    /// `read_exact` that calls an early end a rejection.
    fn fill(&mut self, n: usize) -> std::io::Result<()> {
        self.cur.resize(n, 0);
        match self.inner.read_exact(&mut self.cur) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(self.reject("the stream ends early")),
            r => r,
        }
    }

    /// Reads and verifies the next frame into `cur`.
    fn next_frame(&mut self) -> std::io::Result<()> {
        self.fill(HEAD)?;
        let head: [u8; HEAD] = [self.cur[0], self.cur[1], self.cur[2], self.cur[3], self.cur[4]];
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > FRAME_BYTES || head[4] > 1 {
            return Err(self.reject("a frame's header is invalid"));
        }
        self.fill(len + TAG_LEN)?;
        let t = tag(&self.base, self.index, &head, &self.cur[..len]);
        if !constant_time_eq(t.as_ref(), &self.cur[len..]) {
            return Err(self.reject("a frame's tag does not match"));
        }
        self.cur.truncate(len);
        self.pos = 0;
        self.index += 1;
        self.payload_bytes += len as u64;
        if head[4] == 1 {
            self.done = true;
            let mut extra = [0u8; 1];
            loop {
                match self.inner.read(&mut extra) {
                    Ok(0) => break,
                    Ok(_) => return Err(self.reject("data follows the last frame")),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.rejected.is_some() {
            return Err(std::io::Error::new(ErrorKind::InvalidData, "the checkpoint stream was refused"));
        }
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Unpacks a stream (`inner` positioned after its magic) for `binding` under `key` into
/// `dest_dir` (absent or empty), verifying each frame before unpacking it. Refused streams leave
/// nothing in `dest_dir`.
pub fn unpack_stream<R: Read>(
    inner: R,
    binding: &[u8],
    key: &[u8],
    dest_dir: &Path,
) -> Result<UnpackReport, CheckpointError> {
    let mut reader = StreamReader::new(inner, binding, key)?;
    let created = take_dest(dest_dir)?;
    let limits = UnpackLimits { max_bytes: u64::MAX, max_entries: 1_000_000 };
    let unpacked = unpack::unpack_tar(&mut reader, dest_dir, limits);
    // The tar ends before the stream does (padding, the last frame): read and verify the rest.
    let rest = unpacked.and_then(|r| {
        std::io::copy(&mut reader, &mut std::io::sink())
            .map(|_| r)
            .map_err(|source| unpack::UnpackError::Io { path: "the checkpoint stream".into(), source })
    });
    match (rest, reader.rejected()) {
        (Ok(r), None) => Ok(r),
        (_, Some((frame, why))) => {
            discard_dest(dest_dir, created);
            Err(CheckpointError::StreamRejected { frame, why })
        }
        (Err(e), None) => {
            discard_dest(dest_dir, created);
            Err(e.into())
        }
    }
}

/// Unpacks a checkpoint that is either a stream or an archive of
/// [`crate::checkpoint::pack_with`] (told apart by the stream's magic), from `reader`. An
/// archive is first written to `spool` (it must be whole before it can be verified), which is
/// removed afterwards.
pub fn unpack_any<R: Read>(
    mut reader: R,
    spool: &Path,
    binding: &[u8],
    key: &[u8],
    dest_dir: &Path,
) -> Result<UnpackReport, CheckpointError> {
    let mut first = Vec::with_capacity(MAGIC.len());
    (&mut reader).take(MAGIC.len() as u64).read_to_end(&mut first).map_err(io("receiving the checkpoint"))?;
    if first == MAGIC {
        return unpack_stream(reader, binding, key, dest_dir);
    }
    let spooled = (|| {
        let mut f = std::fs::File::create(spool)?;
        f.write_all(&first)?;
        std::io::copy(&mut reader, &mut f)?;
        Ok::<(), std::io::Error>(())
    })();
    let r = spooled
        .map_err(io(format!("writing {}", spool.display())))
        .and_then(|()| crate::checkpoint::unpack_verified(spool, binding, key, dest_dir));
    let _ = std::fs::remove_file(spool);
    r
}

/// [`unpack_any`] for a checkpoint in a file: an archive is verified where it lies.
pub fn unpack_file(
    file: &Path,
    binding: &[u8],
    key: &[u8],
    dest_dir: &Path,
) -> Result<UnpackReport, CheckpointError> {
    let mut f = std::fs::File::open(file).map_err(io(format!("opening {}", file.display())))?;
    let mut first = Vec::with_capacity(MAGIC.len());
    (&mut f)
        .take(MAGIC.len() as u64)
        .read_to_end(&mut first)
        .map_err(io(format!("reading {}", file.display())))?;
    if first == MAGIC {
        return unpack_stream(std::io::BufReader::with_capacity(1 << 20, f), binding, key, dest_dir);
    }
    crate::checkpoint::unpack_verified(file, binding, key, dest_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"key";
    const BINDING: &[u8] = b"shoal/c/t/ck";

    fn checkpoint_dir(root: &Path, big: usize) -> std::path::PathBuf {
        let src = root.join("src");
        std::fs::create_dir_all(src.join("criu")).expect("mkdir");
        let pages: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(src.join("criu/pages-1.img"), pages).expect("write");
        std::os::unix::fs::symlink("../pre-1", src.join("criu/parent")).expect("symlink");
        std::fs::write(src.join("checkpoint.json"), br#"{"format":1}"#).expect("write");
        src
    }

    fn stream_of(src: &Path, binding: &[u8], corrupt: bool) -> (Vec<Vec<u8>>, u64) {
        let mut frames = Vec::new();
        let n = write_stream(src, binding, KEY, corrupt, |f| {
            frames.push(f);
            Ok(())
        })
        .expect("stream");
        (frames, n)
    }

    fn unpack(frames: &[Vec<u8>], dest: &Path) -> Result<UnpackReport, CheckpointError> {
        let all = frames.concat();
        assert_eq!(&all[..8], MAGIC);
        unpack_stream(&all[8..], BINDING, KEY, dest)
    }

    fn same_tree(a: &Path, b: &Path) {
        let (wa, wb) = (walk(a).expect("walk"), walk(b).expect("walk"));
        let names = |w: &Vec<(std::path::PathBuf, std::fs::Metadata)>| {
            w.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&wa), names(&wb));
        for (rel, m) in &wa {
            if m.is_file() {
                assert_eq!(
                    std::fs::read(a.join(rel)).expect("read"),
                    std::fs::read(b.join(rel)).expect("read")
                );
            }
        }
        assert_eq!(std::fs::read_link(b.join("criu/parent")).expect("link"), Path::new("../pre-1"));
    }

    #[test]
    fn a_stream_unpacks_to_the_same_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = checkpoint_dir(tmp.path(), 3 * FRAME_BYTES + 12345);
        let (frames, n) = stream_of(&src, BINDING, false);
        assert!(frames.len() >= 4, "{} frames", frames.len() - 1);
        assert_eq!(n, frames.iter().map(|f| f.len() as u64).sum::<u64>());
        let dest = tmp.path().join("dest");
        unpack(&frames, &dest).expect("unpack");
        same_tree(&src, &dest);
        // unpack_any tells it from an archive by the magic.
        let dest2 = tmp.path().join("dest2");
        let all = frames.concat();
        unpack_any(&all[..], &tmp.path().join("spool"), BINDING, KEY, &dest2).expect("any");
        same_tree(&src, &dest2);
        let file = tmp.path().join("stream");
        std::fs::write(&file, &all).expect("write");
        let dest3 = tmp.path().join("dest3");
        unpack_file(&file, BINDING, KEY, &dest3).expect("file");
        same_tree(&src, &dest3);
    }

    #[test]
    fn an_archive_is_still_accepted_by_unpack_any() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = checkpoint_dir(tmp.path(), 5000);
        let archive = tmp.path().join("a.ckpt");
        crate::checkpoint::pack_with(&src, &archive, BINDING, KEY, crate::checkpoint::Compression::None)
            .expect("pack");
        let data = std::fs::read(&archive).expect("read");
        let spool = tmp.path().join("spool");
        let dest = tmp.path().join("dest");
        unpack_any(&data[..], &spool, BINDING, KEY, &dest).expect("unpack");
        same_tree(&src, &dest);
        assert!(!spool.exists(), "the spool file is removed");
        let dest = tmp.path().join("from-file");
        unpack_file(&archive, BINDING, KEY, &dest).expect("unpack a file");
        same_tree(&src, &dest);
        let mut bad = data.clone();
        bad[100] ^= 1;
        let dest = tmp.path().join("bad");
        let e = unpack_any(&bad[..], &spool, BINDING, KEY, &dest).expect_err("tampered");
        assert!(matches!(e, CheckpointError::Rejected(_)), "{e}");
        assert!(!dest.exists() && !spool.exists());
    }

    #[test]
    fn altered_streams_are_refused_and_leave_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = checkpoint_dir(tmp.path(), 2 * FRAME_BYTES + 777);
        let (frames, _) = stream_of(&src, BINDING, false);
        let (magic, body) = (frames[0].clone(), frames[1..].to_vec());
        let n = body.len();
        assert!(n >= 3);
        let mut cases: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
        let mut flipped = body.clone();
        flipped[1][HEAD + 10] ^= 1;
        cases.push(("a flipped payload byte", flipped));
        let mut swapped = body.clone();
        swapped.swap(0, 1);
        cases.push(("two frames swapped", swapped));
        cases.push(("the last frame dropped", body[..n - 1].to_vec()));
        cases.push(("a frame dropped", [&body[..1], &body[2..]].concat()));
        cases.push(("a frame repeated", [&body[..2], &body[1..]].concat()));
        let mut cut = body.clone();
        let last = cut[n - 2].len();
        cut[n - 2].truncate(last - 1);
        cases.push(("cut inside a frame", cut[..n - 1].to_vec()));
        let mut tail = body.clone();
        tail.push(b"x".to_vec());
        cases.push(("data after the last frame", tail));
        let mut big = body.clone();
        big[0][..4].copy_from_slice(&(FRAME_BYTES as u32 + 1).to_be_bytes());
        cases.push(("an oversized frame", big));
        let mut flag = body.clone();
        flag[0][4] = 1;
        cases.push(("a frame marked last early", flag));
        let (other, _) = stream_of(&src, b"shoal/c/another-task/ck", false);
        cases.push(("made for another binding", other[1..].to_vec()));
        let (corrupt, _) = stream_of(&src, BINDING, true);
        cases.push(("the corrupt-checkpoint failpoint", corrupt[1..].to_vec()));
        for (i, (what, frames)) in cases.into_iter().enumerate() {
            let dest = tmp.path().join(format!("dest{i}"));
            let all = [vec![magic.clone()], frames].concat();
            let e = unpack(&all, &dest).expect_err(what);
            assert!(matches!(e, CheckpointError::StreamRejected { .. }), "{what}: {e}");
            assert!(!dest.exists(), "{what}: {} was left behind", dest.display());
        }
        // An existing empty destination is emptied again rather than removed.
        let dest = tmp.path().join("kept");
        std::fs::create_dir(&dest).expect("mkdir");
        let all = [vec![magic], body[..n - 1].to_vec()].concat();
        unpack(&all, &dest).expect_err("cut");
        assert_eq!(std::fs::read_dir(&dest).expect("dir").count(), 0);
    }

    #[test]
    fn an_empty_key_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = checkpoint_dir(tmp.path(), 10);
        let e = write_stream(&src, BINDING, b"", false, |_| Ok(())).expect_err("empty key");
        assert!(matches!(e, CheckpointError::EmptyKey));
    }
}
