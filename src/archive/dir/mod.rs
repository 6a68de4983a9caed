//! The local archive: append-only segment files, many lines each, with group commit.
//!
//! Under the root, each partition directory (`dt=YYYY-MM-DD`) holds:
//! - `<segment>.jsonl`: a sealed segment, or the published snapshot of the live one. Readers
//!   (`dt=*/*.jsonl`) see only these, and only whole lines.
//! - `.<segment>.live`: the segment being appended to. Only its durable length counts.
//! - `.<segment>.<hash>.quarantined`: what was moved out of a sealed segment because it does not
//!   verify (a media error, a hand edit); never read or removed by mailhook.
//!
//! - `writer.rs`: the one writer thread, which answers a line only after its `fdatasync`;
//! - `partition.rs`: a partition's id index (so a resend, across restarts too, is
//!   `AlreadyPresent`) and its live segment: append, publish every few seconds, seal;
//! - `files.rs`: the lock, hidden names, and the recovery that seals what a dead process left,
//!   cut back to its last line that verifies, and the quarantine of sealed segments;
//! - `disk.rs`: the seam every disk step goes through, so tests can enumerate crash states;
//! - `tests/`: test-only, apart: the edge tests, the simulated disk and its crash states.

pub(crate) mod disk;
mod files;
mod partition;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use self::disk::{Disk, DiskFile, RealDisk};
use self::files::{Names, lock, recover, started_before};
use self::writer::{Job, Msg, Writer};
use super::{Archive, ArchiveError, Stored};
use crate::layout::Key;

/// A segment is sealed, and a new one begun, before a batch would take it past this size.
pub(crate) const SEGMENT_BYTES: u64 = 32 << 20;
/// How long an acknowledged line may wait before the live segment's snapshot shows it to readers.
const PUBLISH_AFTER: Duration = Duration::from_secs(5);
/// How many lines may wait for the writer. Requests hold at most `MAX_CONNECTIONS` of them; the
/// rest are lines whose request timed out while a sync hung, and past this they are refused
/// with 503 rather than kept in memory until the process is killed.
const QUEUE_LIMIT: usize = 2048;

/// How the writer makes a batch durable: `fdatasync` in production; tests count, fail and hang it.
pub(crate) type SyncFn = fn(&dyn DiskFile) -> io::Result<()>;

/// The writer's settings; tests shrink them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub sync: SyncFn,
    pub segment_bytes: u64,
    pub publish_after: Duration,
    /// How often the writer looks for partitions to let go of.
    pub evict_every: Duration,
    pub queue_limit: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            sync: |file| file.sync_data(),
            segment_bytes: SEGMENT_BYTES,
            publish_after: PUBLISH_AFTER,
            evict_every: Duration::from_secs(60),
            queue_limit: QUEUE_LIMIT,
        }
    }
}

/// The local archive. Cloning shares the one writer.
#[derive(Debug, Clone)]
pub struct DirArchive {
    root: PathBuf,
    jobs: mpsc::SyncSender<Msg>,
    queue_limit: usize,
    /// Runs of bytes the writer moved out of sealed segments into quarantine files.
    quarantined: Arc<AtomicU64>,
}

impl DirArchive {
    /// Creates the directory if needed, takes its lock, seals what an earlier run left open
    /// (cutting a torn tail), and starts the writer. A bad path fails here, at start-up; another
    /// process holding the lock is `io::ErrorKind::ResourceBusy`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root, Tuning::default())
    }

    /// How many runs of bytes that do not verify this archive has moved out of sealed segments
    /// into quarantine files since it was opened: the hook for a local metric (and alarm).
    pub fn quarantined_runs(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// As `open`, with other settings.
    pub(crate) fn open_with(root: impl Into<PathBuf>, tuning: Tuning) -> io::Result<Self> {
        Self::open_on(RealDisk::shared(), root.into(), tuning)
    }

    /// As `open`, on another disk.
    pub(crate) fn open_on(disk: Arc<dyn Disk>, root: PathBuf, tuning: Tuning) -> io::Result<Self> {
        let writer = Writer::start(disk, root.clone(), tuning)?;
        let quarantined = writer.quarantined.clone();
        let (jobs, queue) = mpsc::sync_channel(tuning.queue_limit);
        std::thread::Builder::new().name("mailhook-archive".into()).spawn(move || writer.work(&queue))?;
        Ok(DirArchive { root, jobs, queue_limit: tuning.queue_limit, quarantined })
    }
}

impl Writer {
    /// Takes the directory's lock and recovers what an earlier run left open.
    pub(super) fn start(disk: Arc<dyn Disk>, root: PathBuf, tuning: Tuning) -> io::Result<Writer> {
        // The archive's own entry, and those of every directory on the way to it, must be durable
        // too. All are synced at every start, not only the ones this start made: an earlier start
        // may have made them and been killed before its syncs, and then they exist, in the page
        // cache only. A directory this start made must be synced. One that was there before and
        // that this user may not open, or whose file system cannot sync a directory, is no reason
        // to refuse to start (only warned about for the archive's own parent); any other failure,
        // such as EIO, is. So is a failure to sync the archive's own parent until a start has got
        // past these syncs: the archive may be a directory an earlier start made, then refused
        // (or was killed) before it could make its entry durable.
        let first = !started_before(&*disk, &root);
        let missing: Vec<PathBuf> = root
            .ancestors()
            .take_while(|dir| !dir.as_os_str().is_empty() && !disk.is_dir(dir))
            .map(Path::to_path_buf)
            .collect();
        disk.create_dir_all(&root)?;
        for dir in root.ancestors() {
            let Some(parent) = dir.parent() else { break };
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            match disk.sync_dir(parent) {
                Ok(()) => {}
                Err(e) if !may_skip(&e) || missing.iter().any(|made| made == dir) || (first && dir == root) => {
                    return Err(e);
                }
                Err(e) if dir == root => {
                    tracing::warn!(dir = %root.display(), error = %e, "could not sync the archive's parent directory");
                }
                Err(_) => {}
            }
        }
        let lock = lock(&*disk, &root)?;
        recover(&*disk, &root)?;
        disk.sync_dir(&root)?;
        Ok(Writer {
            disk,
            root,
            tuning,
            names: Names::new(),
            partitions: BTreeMap::new(),
            evicted_at: Instant::now(),
            quarantined: Arc::default(),
            _lock: lock,
        })
    }
}

/// A failure to sync a directory that was there before that does not stop a start: this user
/// may not open it, or its file system does not sync directories (EINVAL).
fn may_skip(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported)
}

impl Archive for DirArchive {
    async fn put_new(&self, key: &Key, line: Bytes) -> Result<Stored, ArchiveError> {
        let fail = |source| ArchiveError::Io { path: self.root.join(key.partition()), source };
        let (done, answer) = oneshot::channel();
        let job = Job { date: key.date, id: key.id, line, done };
        let stopped = || io::Error::other("the archive writer has stopped");
        let result = match self.jobs.try_send(Msg::Put(job)) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(stopped())),
            Err(mpsc::TrySendError::Full(_)) => return Err(ArchiveError::Busy { waiting: self.queue_limit }),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(stopped()),
        };
        result.map_err(fail)
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        let mut close = Msg::Close(done);
        // A full queue means a hung disk: wait a while for room, then stop without sealing (the
        // next start seals what is open).
        for _ in 0..1000 {
            match self.jobs.try_send(close) {
                Ok(()) => {
                    let _ = closed.await;
                    return;
                }
                Err(mpsc::TrySendError::Full(msg)) => close = msg,
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::error!("the archive writer did not take the close within 10 s; the next start seals what is open");
    }
}

#[cfg(test)]
mod tests;
