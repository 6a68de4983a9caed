//! The local archive: append-only segment files, many lines each, with group commit.
//!
//! Under the root, each partition directory (`dt=YYYY-MM-DD`) holds:
//! - `<segment>.jsonl`: a sealed segment, or the published snapshot of the live one. Readers
//!   (`dt=*/*.jsonl`) see only these, and only whole lines.
//! - `.<segment>.live`: the segment being appended to. Only its durable length counts.
//!
//! - `writer.rs`: the one writer thread, which answers a line only after its `fdatasync`;
//! - `partition.rs`: a partition's id index (so a resend, across restarts too, is
//!   `AlreadyPresent`) and its live segment: append, publish every few seconds, seal;
//! - `files.rs`: the lock, hidden names, and the recovery that seals what a dead process left,
//!   cut back to its last line that verifies;
//! - `compact.rs`: `mailhook compact` for a directory, which merges per-event files into segments.

pub(crate) mod compact;
mod files;
mod partition;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use self::files::{Names, lock, recover, sync_dir};
use self::writer::{Job, Msg, Writer};
use super::{Archive, ArchiveError, Stored};
use crate::key::Key;

/// A segment is sealed, and a new one begun, before a batch would take it past this size.
pub(crate) const SEGMENT_BYTES: u64 = 32 << 20;
/// How long an acknowledged line may wait before the live segment's snapshot shows it to readers.
const PUBLISH_AFTER: Duration = Duration::from_secs(5);

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

impl DirArchive {
    /// Creates the directory if needed, takes its lock, seals what an earlier run left open
    /// (cutting a torn tail), and starts the writer. A bad path fails here, at start-up; another
    /// process holding the lock is `io::ErrorKind::ResourceBusy`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root, Tuning::default())
    }

    /// As `open`, with other settings.
    pub(crate) fn open_with(root: impl Into<PathBuf>, tuning: Tuning) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
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

impl Archive for DirArchive {
    async fn put_new(&self, key: &Key, line: Bytes) -> Result<Stored, ArchiveError> {
        let fail = |source| ArchiveError::Io { path: self.root.join(key.partition()), source };
        let (done, answer) = oneshot::channel();
        let job = Job { date: key.date, id: key.id, line, done };
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

#[cfg(test)]
mod tests;
