//! The task log file: format, rotation and reading.
//!
//! Every record is one line: `<RFC 3339 UTC timestamp with nanoseconds> <stdout|stderr> <line>\n`.
//! The line is lossy UTF-8 and never contains a newline; output lines longer than
//! [`MAX_LINE_BYTES`] are split into several records.
//!
//! Files: `<task_dir>/logs/output.log` is written; when writing a record would take it past
//! `max_bytes` it is renamed to `output.log.1` (`.1` to `.2`, ...). At most `max_files` files are
//! kept in all, `output.log` included; with `max_files == 1` the file is truncated instead.

use crate::{DriverError, LogLine, LogOptions, LogStream};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::Sender;

/// Output lines longer than this are split into several records.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// How often a following reader looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The directory holding the log files of a task.
pub fn log_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("logs")
}

/// `output.log` (`n == 0`) or `output.log.<n>`.
pub fn log_file(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join("output.log")
    } else {
        dir.join(format!("output.log.{n}"))
    }
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// One record, newline included.
pub fn format_record(ts: SystemTime, stream: LogStream, line: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    // A record must stay one line.
    let text = text.replace('\n', " ");
    format!("{} {} {}\n", humantime::format_rfc3339_nanos(ts), stream_name(stream), text).into_bytes()
}

/// Parses one record (without its newline); `None` when it is not one.
pub fn parse_record(record: &str) -> Option<LogLine> {
    let mut parts = record.splitn(3, ' ');
    let ts = humantime::parse_rfc3339(parts.next()?).ok()?;
    let stream = match parts.next()? {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return None,
    };
    Some(LogLine { stream, timestamp: ts, line: parts.next().unwrap_or("").to_string() })
}

/// Splits a child's output into lines of at most [`MAX_LINE_BYTES`] (longer lines are split).
pub struct LineReader<R> {
    r: R,
    /// The previous line was cut at the cap: a newline right after it ends that line, it does not
    /// start an empty one.
    just_split: bool,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(r: R) -> Self {
        Self { r, just_split: false }
    }

    /// The next line, without its newline, into `buf`; `false` at end of input.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        loop {
            let avail = match self.r.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(!buf.is_empty());
            }
            if self.just_split {
                self.just_split = false;
                if avail[0] == b'\n' {
                    self.r.consume(1);
                    continue;
                }
            }
            let room = MAX_LINE_BYTES - buf.len();
            let n = avail.len().min(room);
            if let Some(i) = avail[..n].iter().position(|&b| b == b'\n') {
                buf.extend_from_slice(&avail[..i]);
                self.r.consume(i + 1);
                return Ok(true);
            }
            buf.extend_from_slice(&avail[..n]);
            let newline_next = avail.get(n) == Some(&b'\n');
            self.r.consume(n);
            if buf.len() == MAX_LINE_BYTES {
                if newline_next {
                    self.r.consume(1);
                } else {
                    self.just_split = true;
                }
                return Ok(true);
            }
        }
    }
}

/// Appends records to `output.log`, rotating it.
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogWriter {
    /// `max_bytes == 0`: never rotate.
    pub fn open(dir: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new().create(true).append(true).open(log_file(dir, 0))?;
        let size = file.metadata()?.len();
        Ok(Self { dir: dir.to_path_buf(), file, size, max_bytes, max_files: max_files.max(1) })
    }

    pub fn write(&mut self, ts: SystemTime, stream: LogStream, line: &[u8]) -> io::Result<()> {
        let rec = format_record(ts, stream, line);
        if self.max_bytes > 0 && self.size > 0 && self.size + rec.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let last = self.max_files - 1;
        match std::fs::remove_file(log_file(&self.dir, last)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for n in (1..last).rev() {
            match std::fs::rename(log_file(&self.dir, n), log_file(&self.dir, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(log_file(&self.dir, 0), log_file(&self.dir, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(log_file(&self.dir, 0))?;
        self.size = 0;
        Ok(())
    }
}

/// The rotated files present, oldest first (`output.log` not included).
fn rotated_files(dir: &Path) -> Vec<PathBuf> {
    let mut ns: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("output.log."))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    ns.sort_unstable_by(|a, b| b.cmp(a));
    ns.into_iter().map(|n| log_file(dir, n)).collect()
}

/// Complete records found in `data`; the incomplete tail stays in `data`.
fn take_records(data: &mut Vec<u8>, out: &mut Vec<LogLine>) {
    let mut start = 0;
    while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
        let rec = String::from_utf8_lossy(&data[start..start + pos]);
        if let Some(l) = parse_record(&rec) {
            out.push(l);
        }
        start += pos + 1;
    }
    data.drain(..start);
}

fn keep(opts: &LogOptions, l: &LogLine) -> bool {
    opts.since.is_none_or(|s| l.timestamp >= s)
}

/// Streams a task's log records into `tx` (blocking; run it on a blocking thread).
pub fn stream(task_dir: &Path, opts: &LogOptions, tx: &Sender<Result<LogLine, DriverError>>) {
    if let Err(e) = stream_inner(task_dir, opts, tx) {
        let _ = tx.blocking_send(Err(DriverError::runtime("reading the task's logs", e)));
    }
}

fn stream_inner(
    task_dir: &Path,
    opts: &LogOptions,
    tx: &Sender<Result<LogLine, DriverError>>,
) -> io::Result<()> {
    let dir = log_dir(task_dir);
    let current = log_file(&dir, 0);
    let exit_file = super::exit_path(task_dir);
    let mut lines = Vec::new();
    for f in rotated_files(&dir) {
        match std::fs::read(&f) {
            Ok(mut data) => take_records(&mut data, &mut lines),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut handle = match File::open(&current) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut pending = Vec::new();
    if let Some(f) = handle.as_mut() {
        f.read_to_end(&mut pending)?;
        take_records(&mut pending, &mut lines);
    }
    lines.retain(|l| keep(opts, l));
    if let Some(n) = opts.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    for l in lines {
        if tx.blocking_send(Ok(l)).is_err() {
            return Ok(());
        }
    }
    if !opts.follow {
        return Ok(());
    }
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        let exited = exit_file.exists();
        let current_ino = std::fs::metadata(&current).ok().map(|m| (m.dev(), m.ino()));
        let mut new = Vec::new();
        if let Some(f) = handle.as_mut() {
            let pos = f.stream_position()?;
            if f.metadata()?.len() < pos {
                // Truncated in place (max_files == 1).
                f.seek(SeekFrom::Start(0))?;
                pending.clear();
            }
            f.read_to_end(&mut pending)?;
            take_records(&mut pending, &mut new);
        }
        for l in new.into_iter().filter(|l| keep(opts, l)) {
            if tx.blocking_send(Ok(l)).is_err() {
                return Ok(());
            }
        }
        let held_ino = match handle.as_ref() {
            Some(f) => Some(f.metadata().map(|m| (m.dev(), m.ino()))?),
            None => None,
        };
        if current_ino.is_some() && current_ino != held_ino {
            // Rotated (or created): the old file is drained; continue with the new one.
            handle = match File::open(&current) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => handle,
                Err(e) => return Err(e),
            };
            pending.clear();
            continue;
        }
        if exited {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn record_round_trip() {
        let ts = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let rec = format_record(ts, LogStream::Stderr, b"hello  world");
        let text = String::from_utf8(rec).expect("utf8");
        assert_eq!(text, "2023-11-14T22:13:20.123456789Z stderr hello  world\n");
        let l = parse_record(text.trim_end_matches('\n')).expect("parses");
        assert_eq!(l, LogLine { stream: LogStream::Stderr, timestamp: ts, line: "hello  world".into() });
        let empty = format_record(ts, LogStream::Stdout, b"");
        let l = parse_record(String::from_utf8_lossy(&empty).trim_end_matches('\n')).expect("parses");
        assert_eq!(l.line, "");
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("2023-11-14T22:13:20Z other x").is_none());
    }

    #[test]
    fn lossy_utf8() {
        let rec = format_record(SystemTime::UNIX_EPOCH, LogStream::Stdout, b"a\xffb");
        let l = parse_record(String::from_utf8_lossy(&rec).trim_end()).expect("parses");
        assert_eq!(l.line, "a\u{fffd}b");
    }

    #[test]
    fn long_lines_are_split() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(&[b'y'; MAX_LINE_BYTES]);
        input.push(b'\n');
        input.extend_from_slice(b"tail");
        // A tiny buffer so the cap falls on buffer boundaries too.
        let mut r = LineReader::new(std::io::BufReader::with_capacity(7, Cursor::new(input)));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while r.next_line(&mut buf).expect("read") {
            got.push(buf.clone());
        }
        let lens: Vec<usize> = got.iter().map(|l| l.len()).collect();
        assert_eq!(lens, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 10, MAX_LINE_BYTES, 4]);
        assert!(got[3].iter().all(|&b| b == b'y'));
        assert_eq!(got[4], b"tail");
    }

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open(dir.path(), 200, 3).expect("open");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..100u64 {
            w.write(t0 + Duration::from_secs(i), LogStream::Stdout, format!("line {i}").as_bytes())
                .expect("write");
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["output.log", "output.log.1", "output.log.2"]);
        for n in names {
            assert!(std::fs::metadata(dir.path().join(n)).expect("stat").len() <= 200);
        }
        // Reading back gives the newest lines, in order, ending with the last one written.
        let mut lines = Vec::new();
        for f in rotated_files(dir.path()).into_iter().chain([log_file(dir.path(), 0)]) {
            let mut data = std::fs::read(f).expect("read");
            take_records(&mut data, &mut lines);
        }
        assert_eq!(lines.last().map(|l| l.line.as_str()), Some("line 99"));
        assert!(lines.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        let first: u64 = lines[0].line.trim_start_matches("line ").parse().expect("number");
        assert_eq!(lines.len() as u64, 100 - first);
    }

    #[test]
    fn single_file_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = LogWriter::open(dir.path(), 100, 1).expect("open");
        for i in 0..50 {
            w.write(SystemTime::now(), LogStream::Stdout, format!("l{i}").as_bytes()).expect("write");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1);
        assert!(std::fs::metadata(log_file(dir.path(), 0)).expect("stat").len() <= 100);
    }

    #[tokio::test]
    async fn stream_tail_since_and_follow_end() {
        let task = tempfile::tempdir().expect("tempdir");
        let dir = log_dir(task.path());
        let mut w = LogWriter::open(&dir, 150, 4).expect("open");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..10u64 {
            w.write(t0 + Duration::from_secs(i), LogStream::Stdout, format!("n{i}").as_bytes())
                .expect("write");
        }
        let read = |opts: LogOptions| {
            let dir = task.path().to_path_buf();
            async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                tokio::task::spawn_blocking(move || stream(&dir, &opts, &tx));
                let mut out = Vec::new();
                while let Some(l) = rx.recv().await {
                    out.push(l.expect("line").line);
                }
                out
            }
        };
        assert_eq!(read(LogOptions { tail: Some(3), ..Default::default() }).await, vec!["n7", "n8", "n9"]);
        let since = LogOptions { since: Some(t0 + Duration::from_secs(8)), ..Default::default() };
        assert_eq!(read(since).await, vec!["n8", "n9"]);
        // follow ends once exit.json exists and everything was read.
        std::fs::write(super::super::exit_path(task.path()), b"{}").expect("exit.json");
        let all = read(LogOptions { follow: true, tail: Some(2), ..Default::default() }).await;
        assert_eq!(all, vec!["n8", "n9"]);
    }
}
