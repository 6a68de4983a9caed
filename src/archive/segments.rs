//! The local archive: append-only segment files, many lines each, with group commit.
//!
//! Under the root, each partition directory (`dt=YYYY-MM-DD`) holds:
//! - `<segment>.jsonl`: a sealed segment, or the published snapshot of the live one. Readers
//!   (`dt=*/*.jsonl`) see only these, and only whole lines.
//! - `.<segment>.live`: the segment being appended to. Only its durable length counts. Its name
//!   has no `.jsonl` in it, so a reader's glob (`*.jsonl*`, which matches hidden files too in
//!   DuckDB) never picks up its zeros ahead.
//!
//! One writer thread takes every waiting line, appends each partition's lines with one write,
//! makes them durable with one `fdatasync`, and only then answers them. An id index per partition
//! (loaded from the segments when the partition is first touched) turns a resend into
//! `AlreadyPresent`, across restarts too. Every few seconds the live segment's durable part is
//! copied to its visible name, so readers see an acknowledged line within `PUBLISH_AFTER` plus a
//! tick. A segment is sealed (renamed to its visible name) at `SEGMENT_BYTES`, on shutdown, and at
//! the next start if the process died: then its tail is cut back to the last line that verifies.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::{Archive, ArchiveError, Stored};
use crate::record::{parse_hex, verify_line};

/// A segment is sealed, and a new one begun, before a batch would take it past this size.
pub(crate) const SEGMENT_BYTES: u64 = 32 << 20;
/// The live segment is written with zeros this far ahead of its lines, so that an `fdatasync`
/// after a batch writes data only: appending past the file's end would also write its inode each
/// time (about 40 % slower here). Zeros are no line, so the recovery cuts them like a torn tail.
const ZEROS_AHEAD: u64 = 1 << 20;
/// How long an acknowledged line may wait before the live segment's snapshot shows it to readers.
const PUBLISH_AFTER: Duration = Duration::from_secs(5);
/// How often an idle writer wakes to publish and to let go of partitions no write can reach.
const TICK: Duration = Duration::from_millis(500);
/// Partitions older than this are dropped from memory: the dt rule writes at most 30 days back.
const INDEX_DAYS: i64 = 32;
/// Held while a process writes the directory, so two cannot append to the same segments.
const LOCK_FILE: &str = ".mailhook.lock";
const LIVE_SUFFIX: &str = ".live";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// What the first segment version called them; a start after an upgrade seals and removes these too.
/// A segment `mailhook compact` is writing; renamed to `<name>.jsonl` once synced.
pub(crate) const MERGE_SUFFIX: &str = ".merge";
const OLD_LIVE_SUFFIX: &str = ".jsonl.live";
const OLD_SNAPSHOT_SUFFIX: &str = ".jsonl.snap";

/// An event id: 16 bytes, the hash that names its key.
type Id = [u8; 16];

/// How the writer makes a batch durable: `fdatasync` in production; tests count and fail it.
pub(crate) type SyncFn = fn(&File) -> io::Result<()>;

/// The writer's settings; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub sync: SyncFn,
    pub segment_bytes: u64,
    pub publish_after: Duration,
    /// How often the writer looks for partitions to let go of.
    pub evict_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            sync: File::sync_data,
            segment_bytes: SEGMENT_BYTES,
            publish_after: PUBLISH_AFTER,
            evict_every: Duration::from_secs(60),
        }
    }
}

/// The local archive. Cloning shares the one writer.
#[derive(Debug, Clone)]
pub struct DirArchive {
    root: PathBuf,
    jobs: mpsc::Sender<Msg>,
}

#[derive(Debug)]
enum Msg {
    Put(Job),
    /// Seal every live segment, answer, and stop.
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Job {
    /// The key's directory, relative to the root: `dt=YYYY-MM-DD`.
    partition: String,
    id: Id,
    line: Bytes,
    done: oneshot::Sender<io::Result<Stored>>,
}

impl DirArchive {
    /// Creates the directory if needed, takes its lock, seals what an earlier run left open
    /// (cutting a torn tail), and starts the writer. A bad path fails here, at start-up.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root, Tuning::default())
    }

    /// As `open`, with other settings.
    pub(crate) fn open_with(root: impl Into<PathBuf>, tuning: Tuning) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let lock = lock(&root)?;
        recover(&root)?;
        sync_dir(&root)?;
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            root: root.clone(),
            tuning,
            names: Names::new(),
            partitions: HashMap::new(),
            evicted_at: Instant::now(),
            _lock: lock,
        };
        std::thread::Builder::new().name("mailhook-archive".into()).spawn(move || writer.run(&queue))?;
        Ok(DirArchive { root, jobs })
    }
}

/// Takes the directory's lock, held as long as the file stays open.
pub(crate) fn lock(root: &Path) -> io::Result<File> {
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(root.join(LOCK_FILE))?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => io::Error::other(format!(
            "another process holds {}: only one mailhook may write a directory",
            root.join(LOCK_FILE).display()
        )),
        fs::TryLockError::Error(e) => e,
    })?;
    Ok(lock)
}

impl Archive for DirArchive {
    async fn put_new(&self, key: &str, line: Bytes) -> Result<Stored, ArchiveError> {
        let fail = |source| ArchiveError::Io { path: self.root.join(key), source };
        let (partition, name) = key.rsplit_once('/').ok_or_else(|| fail(io::Error::other("key has no directory")))?;
        let name = name.strip_suffix(".jsonl").unwrap_or(name);
        let (done, answer) = oneshot::channel();
        let job = Job { partition: partition.to_owned(), id: id_of(name), line, done };
        let stopped = || io::Error::other("the archive writer has stopped");
        let result = match self.jobs.send(Msg::Put(job)) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(stopped())),
            Err(_) => Err(stopped()),
        };
        result.map_err(fail)
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Msg::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// A key's file name as an id: the 32 hex digits mailhook writes; anything else (hand-made keys
/// in tests) hashed to the same size.
fn id_of(name: &str) -> Id {
    parse_hex(name.as_bytes()).unwrap_or_else(|| Sha256::digest(name)[..16].try_into().expect("32 bytes"))
}

struct Writer {
    root: PathBuf,
    tuning: Tuning,
    names: Names,
    partitions: HashMap<String, Partition>,
    evicted_at: Instant,
    _lock: File,
}

impl Writer {
    /// Runs until `Close`, or until every `DirArchive` handle is gone.
    fn run(mut self, queue: &mpsc::Receiver<Msg>) {
        loop {
            let first = match queue.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch: HashMap<String, Vec<Job>> = HashMap::new();
            let mut closing = None;
            for msg in first.into_iter().chain(queue.try_iter()) {
                match msg {
                    Msg::Put(job) => batch.entry(job.partition.clone()).or_default().push(job),
                    Msg::Close(done) => closing = Some(done),
                }
            }
            for (partition, jobs) in batch {
                self.commit(partition, jobs);
            }
            if let Some(done) = closing {
                self.seal_all();
                drop(self); // lets go of the lock before the answer, so the directory can be reopened
                let _ = done.send(());
                return;
            }
            self.publish_due();
            self.evict_old();
        }
        self.seal_all();
    }

    /// Appends one partition's new lines, makes them durable, then answers every job.
    fn commit(&mut self, name: String, jobs: Vec<Job>) {
        let partition = match self.partitions.entry(name) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match Partition::load(&self.root, e.key()) {
                Ok(p) => e.insert(p),
                Err(err) => return answer_all(jobs.into_iter(), &err),
            },
        };
        // Each new id once, with every job that waits for it; ids already durable are answered now.
        let mut fresh: Vec<(Id, Vec<Job>)> = Vec::new();
        let mut position: HashMap<Id, usize> = HashMap::new();
        let mut lines = Vec::new();
        for job in jobs {
            if partition.ids.contains(&job.id) {
                let _ = job.done.send(Ok(Stored::AlreadyPresent));
            } else if let Some(&at) = position.get(&job.id) {
                fresh[at].1.push(job);
            } else {
                lines.extend_from_slice(&job.line);
                position.insert(job.id, fresh.len());
                fresh.push((job.id, vec![job]));
            }
        }
        if fresh.is_empty() {
            return;
        }
        match partition.append(&lines, &mut self.names, &self.tuning) {
            Ok(()) => {
                for (id, jobs) in fresh {
                    partition.ids.insert(id);
                    for (n, job) in jobs.into_iter().enumerate() {
                        // The request may have timed out and gone; the line is stored either way.
                        let _ = job.done.send(Ok(if n == 0 { Stored::Created } else { Stored::AlreadyPresent }));
                    }
                }
            }
            Err(err) => {
                tracing::error!(partition = %partition.dir.display(), error = %err, "appending to the archive failed");
                answer_all(fresh.into_iter().flat_map(|(_, jobs)| jobs), &err);
            }
        }
    }

    fn publish_due(&mut self) {
        for partition in self.partitions.values_mut() {
            if let Err(e) = partition.publish(self.tuning.publish_after) {
                tracing::error!(partition = %partition.dir.display(), error = %e, "publishing a segment failed");
            }
        }
    }

    /// Lets go of partitions that the dt rule can no longer write to, sealing their segments.
    fn evict_old(&mut self) {
        if self.evicted_at.elapsed() < self.tuning.evict_every {
            return;
        }
        self.evicted_at = Instant::now();
        let today = OffsetDateTime::now_utc().date();
        self.partitions.retain(|name, partition| {
            let keep = reachable(name, today);
            if !keep {
                partition.seal();
            }
            keep
        });
    }

    fn seal_all(&mut self) {
        for partition in self.partitions.values_mut() {
            partition.seal();
        }
    }
}

fn answer_all(jobs: impl Iterator<Item = Job>, err: &io::Error) {
    for job in jobs {
        let _ = job.done.send(Err(io::Error::new(err.kind(), err.to_string())));
    }
}

/// Whether the dt rule can still write to the partition `name` on `today`: it is at most
/// `INDEX_DAYS` old, or not dated at all.
fn reachable(name: &str, today: time::Date) -> bool {
    partition_date(name).is_none_or(|date| date >= today - time::Duration::days(INDEX_DAYS))
}

/// The date a partition directory's name gives (`dt=YYYY-MM-DD`, after any prefix).
fn partition_date(name: &str) -> Option<time::Date> {
    let (_, date) = name.rsplit_once("dt=")?;
    time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// Segment names: this start's UTC time and a counter, so names sort by age and a new start
/// never appends to an old segment.
pub(crate) struct Names {
    run: String,
    next: u32,
}

impl Names {
    pub(crate) fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        let run = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        Names { run, next: 1 }
    }

    pub(crate) fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{:04}", self.run, self.next - 1)
    }
}

struct Partition {
    dir: PathBuf,
    /// The ids of every durable line in the partition.
    ids: HashSet<Id>,
    live: Option<Segment>,
}

struct Segment {
    file: File,
    /// The file name without `.jsonl`: sealed or published as `<name>.jsonl`.
    name: String,
    /// The durable length: every byte before it is a whole, synced line.
    len: u64,
    /// The file's length: zeros from `len` on.
    zeroed_to: u64,
    /// How much of it the visible snapshot holds.
    published: u64,
    /// Since when durable lines have waited to be published.
    unpublished_since: Option<Instant>,
}

impl Partition {
    /// Opens a partition, creating its directory, and indexes the ids of every line in it: the
    /// segments' lines that verify, and the per-event files written before segments, by name.
    fn load(root: &Path, name: &str) -> io::Result<Partition> {
        let dir = root.join(name);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            sync_dir(dir.parent().unwrap_or(root))?;
        }
        let mut ids = HashSet::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jsonl")) else {
                continue;
            };
            if let Some(id) = parse_hex(stem.as_bytes()) {
                ids.insert(id);
            } else if !stem.starts_with('.') {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let whole = whole_lines(&file, |id| {
                    ids.insert(id);
                })?;
                if whole < file.metadata()?.len() {
                    // Only a failed sync followed by a crash leaves this: a cut that never reached the disk.
                    tracing::warn!(segment = %path.display(), kept = whole, "cut a sealed segment back to its whole lines");
                    file.set_len(whole)?;
                    file.sync_all()?;
                }
            }
        }
        Ok(Partition { dir, ids, live: None })
    }

    /// Appends `lines` to the live segment (a new one if there is none or it is full) and syncs.
    /// On failure nothing of `lines` counts: the segment is rolled back to its durable length.
    fn append(&mut self, lines: &[u8], names: &mut Names, tuning: &Tuning) -> io::Result<()> {
        let sync = tuning.sync;
        if self.live.as_ref().is_some_and(|s| s.len > 0 && s.len + lines.len() as u64 > tuning.segment_bytes) {
            self.seal();
        }
        if self.live.is_none() {
            self.live = Some(Segment::create(&self.dir, names)?);
        }
        let segment = self.live.as_mut().expect("just made");
        let end = segment.len + lines.len() as u64;
        if end > segment.zeroed_to {
            // Best effort: on a full disk the lines may still fit without the zeros.
            let ahead = end + ZEROS_AHEAD.min(tuning.segment_bytes.saturating_sub(end));
            match write_zeros(&segment.file, segment.zeroed_to, ahead) {
                Ok(()) => segment.zeroed_to = ahead,
                Err(_) => {
                    let _ = segment.file.set_len(segment.len);
                    segment.zeroed_to = segment.len;
                }
            }
        }
        if let Err(e) = segment.file.write_all_at(lines, segment.len) {
            // Nothing was synced, so the cache still matches the disk up to `len`: cut back and go on.
            match segment.file.set_len(segment.len) {
                Ok(()) if segment.len > 0 => segment.zeroed_to = segment.len,
                _ => self.abandon(),
            }
            return Err(e);
        }
        if let Err(e) = sync(&segment.file) {
            // After a failed sync the page cache cannot be trusted: those lines may or may not be
            // on disk. Cut the file back to what was durable, try to make that cut durable, and
            // seal it; the next batch starts a new segment. Should the cut not reach the disk, the
            // partition's next load cuts whatever fails to verify.
            match segment.file.set_len(segment.len) {
                Ok(()) => {
                    segment.zeroed_to = segment.len;
                    let _ = sync(&segment.file);
                    self.seal();
                }
                Err(_) => self.abandon(),
            }
            return Err(io::Error::new(e.kind(), format!("syncing the archive: {e}")));
        }
        segment.len += lines.len() as u64;
        segment.unpublished_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Shows readers the live segment's durable lines: copies them to a hidden file and renames
    /// it over `<name>.jsonl`. The copy needs no sync: the live segment holds the durable lines.
    fn publish(&mut self, after: Duration) -> io::Result<()> {
        let Some(segment) = self.live.as_mut() else { return Ok(()) };
        let due = segment.unpublished_since.is_some_and(|since| since.elapsed() >= after);
        if !due || segment.published == segment.len {
            return Ok(());
        }
        let snapshot = self.dir.join(format!(".{}{SNAPSHOT_SUFFIX}", segment.name));
        let mut out = File::create(&snapshot)?;
        let mut source = &segment.file;
        source.seek(SeekFrom::Start(0))?;
        io::copy(&mut io::Read::take(source, segment.len), &mut out)?;
        fs::rename(&snapshot, self.dir.join(format!("{}.jsonl", segment.name)))?;
        segment.published = segment.len;
        segment.unpublished_since = None;
        Ok(())
    }

    /// Renames the live segment to its visible name (over its snapshot), or removes it if it
    /// holds nothing. Logged, not returned: the lines are durable either way, and a segment
    /// left hidden is sealed by the next start.
    fn seal(&mut self) {
        let Some(segment) = self.live.take() else { return };
        let live = self.dir.join(format!(".{}{LIVE_SUFFIX}", segment.name));
        let result = if segment.len == 0 {
            fs::remove_file(&live)
        } else {
            // The zeros ahead go first, durably, so a reader never meets them under the visible name.
            let cut = if segment.zeroed_to > segment.len {
                segment.file.set_len(segment.len).and_then(|()| segment.file.sync_all())
            } else {
                Ok(())
            };
            cut.and_then(|()| fs::rename(&live, self.dir.join(format!("{}.jsonl", segment.name))))
                .and_then(|()| sync_dir(&self.dir))
        };
        if let Err(e) = result {
            tracing::error!(segment = %live.display(), error = %e, "sealing a segment failed; the next start seals it");
        }
    }

    /// Stops using a live segment that could not be cut back: readers must not see its tail, so
    /// it stays hidden for the next start to cut back and seal. An empty one is removed.
    fn abandon(&mut self) {
        if let Some(segment) = self.live.take()
            && segment.len == 0
        {
            let _ = fs::remove_file(self.dir.join(format!(".{}{LIVE_SUFFIX}", segment.name)));
        }
    }
}

impl Segment {
    /// A new, empty live segment whose name is durable before any line in it is acknowledged.
    fn create(dir: &Path, names: &mut Names) -> io::Result<Segment> {
        loop {
            let name = names.next();
            if dir.join(format!("{name}.jsonl")).exists() {
                continue;
            }
            let live = dir.join(format!(".{name}{LIVE_SUFFIX}"));
            match OpenOptions::new().read(true).write(true).create_new(true).open(&live) {
                Ok(file) => {
                    sync_dir(dir)?;
                    return Ok(Segment { file, name, len: 0, zeroed_to: 0, published: 0, unpublished_since: None });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Seals every live segment an earlier run left in the partitions under `root`, each cut back
/// to its last line that verifies, and removes leftover snapshots and unfinished merges.
pub(crate) fn recover(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        let mut changed = false;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let hidden = file_name.strip_prefix('.');
            // Snapshots are copies, and a merge a compaction did not finish still has its per-event files.
            if hidden
                .is_some_and(|n| [SNAPSHOT_SUFFIX, OLD_SNAPSHOT_SUFFIX, MERGE_SUFFIX].iter().any(|s| n.ends_with(s)))
            {
                fs::remove_file(&path)?;
            } else if let Some(name) =
                hidden.and_then(|n| n.strip_suffix(OLD_LIVE_SUFFIX).or_else(|| n.strip_suffix(LIVE_SUFFIX)))
            {
                recover_segment(&path, &dir.join(format!("{name}.jsonl")))?;
                changed = true;
            }
        }
        if changed {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}

/// Cuts a live segment back to its whole lines and seals it as `sealed`.
fn recover_segment(live: &Path, sealed: &Path) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(live)?;
    let len = file.metadata()?.len();
    let whole = whole_lines(&file, |_| {})?;
    if whole < len {
        // Zeros written ahead, and after a power loss possibly a line cut short or garbled.
        tracing::warn!(segment = %live.display(), kept = whole, cut = len - whole, "cut back to its last whole line");
        file.set_len(whole)?;
        file.sync_all()?;
    }
    if whole == 0 {
        // Its snapshot, if any, could only hold lines of this segment: none were durable.
        let _ = fs::remove_file(sealed);
        fs::remove_file(live)
    } else {
        fs::rename(live, sealed)
    }
}

/// Passes the id of each line of a segment to `f`, up to the first line that does not verify
/// (or has no newline), and returns the length of the lines before it. Whatever follows such a
/// line was never acknowledged: an acknowledged line was synced after every line before it.
/// Reads through a buffer, so memory stays small.
pub(crate) fn whole_lines(file: &File, mut f: impl FnMut(Id)) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    let mut whole = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        let Some(id) = line.strip_suffix(b"\n").and_then(verify_line) else { return Ok(whole) };
        f(id);
        whole += read as u64;
    }
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
