//! Container logs in the CRI format, as containerd writes them under `/var/log/pods` and as the
//! kubelet reads them back for `kubectl logs`.
//!
//! One record per line: `2026-12-07T09:15:01.123456789Z stdout F text`. A line longer than
//! [`MAX_LINE`] is split into `P` (partial) records followed by a final `F` record; a reader
//! joins them back. Output left without a newline when a stream closes is written as a full
//! line, as containerd does.
//!
//! Writing ([`LogWriter`], [`LineSplitter`]) happens in the shim. It rotates the file itself
//! before a record would take it past the maximum size: `N.log` is renamed `N.log.<unix-nanos>`
//! and a new `N.log` is opened; the oldest rotated files are deleted so that at most
//! `max_files` files of the attempt exist (the kubelet's `--container-log-max-size` and
//! `--container-log-max-files`, done by the writer instead of a separate log manager).
//!
//! Reading ([`read_logs`]) happens in the kubelet: rotated files oldest first, then the live
//! file; `tail_lines` counts lines across all of them; `follow` keeps reading the live file,
//! moves on when it is rotated, and ends once the attempt's exit record exists and everything
//! before it has been read (the shim writes the exit record only after draining the output).
use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::state::format_time;

/// Longest content of one record; longer lines are split into partial records (containerd's
/// default `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// How often a follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(150);

/// How much a reader reads at once.
const READ_CHUNK: usize = 64 * 1024;

/// Appends CRI records to an attempt's log file, rotating it by size.
#[derive(Debug)]
pub(crate) struct LogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the live file.
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl LogWriter {
    /// Opens (creating or appending to) the live log file.
    pub(crate) fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
        })
    }

    /// Writes one record now, with the current time. One `write` per record, so a reader
    /// following the file sees whole lines.
    pub(crate) fn write_record(
        &mut self,
        stream: &str,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let ts = format_time(SystemTime::now());
        let mut rec = Vec::with_capacity(ts.len() + stream.len() + content.len() + 5);
        rec.extend_from_slice(ts.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(content);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }

    /// `N.log` → `N.log.<unix-nanos>`, a new `N.log`, and the oldest rotated files deleted.
    fn rotate(&mut self) -> io::Result<()> {
        let mut nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let rotated = loop {
            let candidate = suffixed(&self.path, nanos);
            if !candidate.exists() {
                break candidate;
            }
            nanos += 1;
        };
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        let mut old = rotated_files(&self.path)?;
        while old.len() + 1 > self.max_files {
            let (_, oldest) = old.remove(0);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn suffixed(path: &Path, nanos: u128) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{nanos}"));
    PathBuf::from(name)
}

/// The rotated files of the live file `path` (`<path>.<unix-nanos>`), oldest first.
pub(crate) fn rotated_files(path: &Path) -> io::Result<Vec<(u128, PathBuf)>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some(n) = file_name
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<u128>().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of an attempt's log, oldest first: the rotated ones, then the live one.
pub(crate) fn log_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(path)?.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Cuts a byte stream into CRI records: one per line, lines over [`MAX_LINE`] split into
/// partial records. `\r\n` counts as a line end, as for containerd.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds output; calls `emit(content, partial)` for each record it completes.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(&[u8], bool) -> io::Result<()>,
    ) -> io::Result<()> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let window = &rest[..rest.len().min(MAX_LINE + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                let mut line = &rest[..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                emit(line, false)?;
                start += i + 1;
            } else if rest.len() > MAX_LINE {
                emit(&rest[..MAX_LINE], true)?;
                start += MAX_LINE;
            } else {
                break;
            }
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// The stream closed: what is left becomes a full record.
    pub(crate) fn finish(
        &mut self,
        mut emit: impl FnMut(&[u8], bool) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.pending.is_empty() {
            emit(&self.pending, false)?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// One parsed record: its timestamp, whether it is partial, and its content.
fn parse_record(line: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some((ts, tag == b"P", content))
}

/// What `kubectl logs` asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container exits.
    pub follow: bool,
    /// Only the last N lines (across rotated files).
    pub tail_lines: Option<u64>,
    /// The previous attempt's log instead of the latest one.
    pub previous: bool,
    /// Prefix each line with its RFC 3339 timestamp (nine digits, UTC).
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Turns records into `kubectl logs` output.
struct Formatter {
    timestamps: bool,
    /// Whether the next record starts a new line (the previous one was full).
    at_line_start: bool,
    /// Bytes still allowed by `limit_bytes`.
    remaining: Option<u64>,
}

impl Formatter {
    fn push(&mut self, out: &mut Vec<u8>, line: &[u8]) {
        let Some((ts, partial, content)) = parse_record(line) else {
            return;
        };
        if self.timestamps && self.at_line_start {
            out.extend_from_slice(ts);
            out.push(b' ');
        }
        out.extend_from_slice(content);
        if !partial {
            out.push(b'\n');
        }
        self.at_line_start = !partial;
    }

    /// Applies `limit_bytes` to a chunk of output; `true` when the limit is reached.
    fn limit(&mut self, out: &mut Vec<u8>) -> bool {
        match &mut self.remaining {
            None => false,
            Some(rem) => {
                if out.len() as u64 >= *rem {
                    out.truncate(*rem as usize);
                    *rem = 0;
                    true
                } else {
                    *rem -= out.len() as u64;
                    false
                }
            }
        }
    }
}

/// Reads whole records from a file handle; keeps an unfinished last line for the next read.
struct RecordReader {
    file: tokio::fs::File,
    ino: u64,
    pending: Vec<u8>,
}

impl RecordReader {
    async fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = tokio::fs::File::open(path).await?;
        let ino = file.metadata().await?.ino();
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(RecordReader {
            file,
            ino,
            pending: Vec::new(),
        })
    }

    /// Reads up to one chunk; formats the complete records into `out`. `Ok(false)` at EOF.
    async fn read_some(&mut self, fmt: &mut Formatter, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = self.file.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        self.pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = self.pending[start..].iter().position(|&b| b == b'\n') {
            fmt.push(out, &self.pending[start..start + i]);
            start += i + 1;
        }
        self.pending.drain(..start);
        Ok(true)
    }
}

/// Where output starts: file index and byte offset in it.
type Start = (usize, u64);

/// Finds where the last `n` lines begin, walking the files newest first. A line is one or more
/// partial records and the full record that ends it; an unfinished line at the end counts.
async fn tail_start(files: &[PathBuf], n: u64) -> io::Result<Start> {
    if files.is_empty() {
        return Ok((0, 0));
    }
    if n == 0 {
        let last = files.len() - 1;
        let len = match tokio::fs::metadata(&files[last]).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        return Ok((last, len));
    }
    let mut count = 0u64;
    // The record after the one being looked at (already visited, as the walk goes backwards).
    let mut next: Option<Start> = None;
    for fi in (0..files.len()).rev() {
        let data = match tokio::fs::read(&files[fi]).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Complete records: (offset, full).
        let mut records = Vec::new();
        let mut off = 0usize;
        while let Some(i) = data[off..].iter().position(|&b| b == b'\n') {
            if let Some((_, partial, _)) = parse_record(&data[off..off + i]) {
                records.push((off as u64, !partial));
            }
            off += i + 1;
        }
        for &(off, full) in records.iter().rev() {
            if full {
                if let Some(pos) = next {
                    count += 1;
                    if count == n {
                        return Ok(pos);
                    }
                }
            }
            next = Some((fi, off));
        }
    }
    Ok((0, 0))
}

/// Tells a follower whether the attempt is over (its exit record exists, or nobody is left to
/// write it), checked *before* the last drain of the file.
pub(crate) type Finished = Box<dyn Fn() -> bool + Send + Sync>;

/// Streams an attempt's log (live file `path`) as `kubectl logs` prints it.
pub(crate) fn read_logs(
    path: PathBuf,
    opts: LogOptions,
    finished: Finished,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let reader = LogStream {
        fmt: Formatter {
            timestamps: opts.timestamps,
            at_line_start: true,
            remaining: opts.limit_bytes,
        },
        path,
        opts,
        finished,
        started: false,
        rotated: VecDeque::new(),
        live: None,
        observed: None,
        done: false,
    };
    futures::stream::unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), r)),
            Ok(None) => None,
            Err(e) => {
                r.done = true;
                Some((Err(e), r))
            }
        }
    })
}

/// The state of one log stream.
struct LogStream {
    path: PathBuf,
    opts: LogOptions,
    finished: Finished,
    fmt: Formatter,
    /// Whether the files have been listed and the tail found.
    started: bool,
    /// Files before the live one, still to be read (opened at the start, so a file rotated
    /// away meanwhile is still read through its handle).
    rotated: VecDeque<RecordReader>,
    /// The file being followed.
    live: Option<RecordReader>,
    /// When following: (attempt over, inode at the live path), observed before a drain of the
    /// live file, so that whatever was written before the observation gets read.
    observed: Option<(bool, Option<u64>)>,
    done: bool,
}

impl LogStream {
    async fn start(&mut self) -> io::Result<()> {
        let files = log_files(&self.path)?;
        let (first, offset) = match self.opts.tail_lines {
            Some(n) => tail_start(&files, n).await?,
            None => (0, 0),
        };
        for (i, f) in files.iter().enumerate().skip(first) {
            match RecordReader::open(f, if i == first { offset } else { 0 }).await {
                Ok(r) => self.rotated.push_back(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.live = self.rotated.pop_back();
        Ok(())
    }

    /// Applies the byte limit to a chunk; `None` when there is nothing to hand out.
    fn emit(&mut self, mut out: Vec<u8>) -> Option<Bytes> {
        if self.fmt.limit(&mut out) {
            self.done = true;
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// The next piece of output; `None` at the end.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.started {
            self.started = true;
            if self.fmt.remaining == Some(0) {
                self.done = true;
            } else {
                self.start().await?;
            }
        }
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(r) = self.rotated.front_mut() {
                let mut out = Vec::new();
                if r.read_some(&mut self.fmt, &mut out).await? {
                    if let Some(b) = self.emit(out) {
                        return Ok(Some(b));
                    }
                } else {
                    self.rotated.pop_front();
                }
                continue;
            }
            let follow = self.opts.follow;
            if self.live.is_none() {
                if !follow {
                    self.done = true;
                    continue;
                }
                // Nothing written yet: wait for the live file to appear.
                let over = (self.finished)();
                if let Ok(r) = RecordReader::open(&self.path, 0).await {
                    self.live = Some(r);
                    continue;
                }
                if over {
                    self.done = true;
                    continue;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
            if follow && self.observed.is_none() {
                let over = (self.finished)();
                let ino = std::fs::metadata(&self.path).ok().map(|m| m.ino());
                self.observed = Some((over, ino));
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            let mut out = Vec::new();
            if live.read_some(&mut self.fmt, &mut out).await? {
                if let Some(b) = self.emit(out) {
                    return Ok(Some(b));
                }
                continue;
            }
            // End of the file for now.
            let live_ino = live.ino;
            let Some((over, path_ino)) = self.observed.take() else {
                self.done = true;
                continue;
            };
            match path_ino {
                Some(ino) if ino != live_ino => {
                    // Rotated: the old file is complete; go on with the file after it.
                    let next = next_file(&self.path, live_ino)?;
                    match RecordReader::open(&next, 0).await {
                        Ok(r) => self.live = Some(r),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => self.done = true,
                        Err(e) => return Err(e),
                    }
                }
                // The log was removed (the pod is gone).
                None => self.done = true,
                Some(_) if over => self.done = true,
                Some(_) => tokio::time::sleep(FOLLOW_POLL).await,
            }
        }
    }
}

/// The file that follows the one with inode `ino` among an attempt's log files; the live file
/// when that one is already deleted.
fn next_file(path: &Path, ino: u64) -> io::Result<PathBuf> {
    let mut seen = false;
    for f in log_files(path)? {
        if seen {
            return Ok(f);
        }
        seen = std::fs::metadata(&f)
            .map(|m| m.ino() == ino)
            .unwrap_or(false);
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn records(splitter: &mut LineSplitter, data: &[u8]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        splitter
            .feed(data, |c, p| {
                out.push((String::from_utf8_lossy(c).into_owned(), p));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn splitter_cuts_lines_and_long_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(
            records(&mut s, b"a\nb\r\nc"),
            [("a".to_string(), false), ("b".to_string(), false)]
        );
        assert_eq!(records(&mut s, b"d\n"), [("cd".to_string(), false)]);
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let got = records(&mut s, &long);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(c, p)| c.len() == MAX_LINE && *p));
        let got = records(&mut s, b"\n");
        assert_eq!(got, [("x".repeat(10), false)]);
        // Exactly MAX_LINE bytes and a newline: one full record.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        let got = records(&mut s, &exact);
        assert_eq!(got.len(), 1);
        assert!(!got[0].1);
        records(&mut s, b"tail");
        let mut last = Vec::new();
        s.finish(|c, p| {
            last.push((c.to_vec(), p));
            Ok(())
        })
        .unwrap();
        assert_eq!(last, [(b"tail".to_vec(), false)]);
    }

    async fn collect(path: &Path, opts: LogOptions) -> String {
        let s = read_logs(path.to_path_buf(), opts, Box::new(|| true));
        let chunks: Vec<_> = s.collect().await;
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&c.unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn rotation_keeps_max_files_and_tail_spans_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // Records are 43 bytes ("<30-byte ts> stdout F lineNN\n"): three per 150-byte file.
        let mut w = LogWriter::open(&path, 150, 3).unwrap();
        for i in 0..20 {
            w.write_record("stdout", false, format!("line{i:02}").as_bytes())
                .unwrap();
        }
        let files = log_files(&path).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 150);
        }
        let all = collect(&path, LogOptions::default()).await;
        assert!(all.ends_with("line18\nline19\n"), "{all}");
        let kept = all.lines().count();
        assert!((7..=9).contains(&kept), "{all}");
        let tail = collect(
            &path,
            LogOptions {
                tail_lines: Some(5),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(tail, "line15\nline16\nline17\nline18\nline19\n");
        let none = collect(
            &path,
            LogOptions {
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(none, "");
        let more = collect(
            &path,
            LogOptions {
                tail_lines: Some(100),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(more, all);
    }

    #[tokio::test]
    async fn partial_records_are_joined_and_timestamps_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2026-12-07T09:15:01.123456789Z stdout P hel\n\
             2026-12-07T09:15:01.223456789Z stdout F lo\n\
             2026-12-07T09:15:02.000000000Z stderr F oops\n\
             2026-12-07T09:15:03.000000000Z stdout P unfinished\n",
        )
        .unwrap();
        assert_eq!(
            collect(&path, LogOptions::default()).await,
            "hello\noops\nunfinished"
        );
        assert_eq!(
            collect(
                &path,
                LogOptions {
                    timestamps: true,
                    tail_lines: Some(2),
                    ..Default::default()
                }
            )
            .await,
            "2026-12-07T09:15:02.000000000Z oops\n2026-12-07T09:15:03.000000000Z unfinished"
        );
        assert_eq!(
            collect(
                &path,
                LogOptions {
                    tail_lines: Some(3),
                    ..Default::default()
                }
            )
            .await,
            "hello\noops\nunfinished"
        );
        assert_eq!(
            collect(
                &path,
                LogOptions {
                    limit_bytes: Some(8),
                    ..Default::default()
                }
            )
            .await,
            "hello\noo"
        );
    }

    #[tokio::test]
    async fn follow_reads_across_rotation_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut w = LogWriter::open(&path, 100, 5).unwrap();
        w.write_record("stdout", false, b"first").unwrap();
        let d = done.clone();
        let stream = read_logs(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            Box::new(move || d.load(std::sync::atomic::Ordering::SeqCst)),
        );
        let reader = tokio::spawn(async move {
            let chunks: Vec<_> = stream.collect().await;
            chunks
                .into_iter()
                .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
                .collect::<String>()
        });
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            w.write_record("stdout", false, format!("later{i}").as_bytes())
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("follow ends once finished")
            .unwrap();
        assert_eq!(
            got,
            "first\nlater0\nlater1\nlater2\nlater3\nlater4\nlater5\n"
        );
        assert!(rotated_files(&path).unwrap().len() >= 2);
    }
}
