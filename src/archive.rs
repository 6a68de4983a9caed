//! Where lines go: one object per event, created only if absent, in S3 or in a local directory.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

/// Content type of every stored object: newline-delimited JSON.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// How many times a write is tried while S3 reports a concurrent conditional write (409).
const CONFLICT_ATTEMPTS: u32 = 4;

/// The outcome of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This call wrote the object.
    Created,
    /// An object was already under the key: the same event, stored by an earlier delivery.
    AlreadyPresent,
}

/// A write that did not happen. The text is for the log, never for the client.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("PutObject s3://{bucket}/{key} failed: {detail}")]
    S3 { bucket: String, key: String, detail: String },
    #[error("writing {path} failed: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("storing {key} took longer than {budget:?}")]
    Timeout { key: String, budget: Duration },
}

/// The storage seam: put these bytes under this key, only if the key is absent.
/// `Ok` means the bytes are durably stored under the key, now or before.
pub trait Archive: Send + Sync + 'static {
    fn put_new(&self, key: &str, line: Bytes) -> impl Future<Output = Result<Stored, ArchiveError>> + Send;
}

/// An S3 bucket, written with `PutObject` and `If-None-Match: *`.
#[derive(Debug, Clone)]
pub struct S3Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Archive {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Archive { client, bucket: bucket.into() }
    }
}

impl Archive for S3Archive {
    async fn put_new(&self, key: &str, line: Bytes) -> Result<Stored, ArchiveError> {
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(CONTENT_TYPE)
                .if_none_match("*")
                .body(ByteStream::from(line.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Stored::Created),
                Err(err) => err,
            };
            let status = match &err {
                SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
                _ => None,
            };
            match status {
                // If-None-Match failed: the object is there already.
                Some(412) => return Ok(Stored::AlreadyPresent),
                // ConditionalRequestConflict: another write to the key is in flight; its outcome decides.
                Some(409) if attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                    attempt += 1;
                }
                _ => {
                    return Err(ArchiveError::S3 {
                        bucket: self.bucket.clone(),
                        key: key.to_owned(),
                        detail: DisplayErrorContext(&err).to_string(),
                    });
                }
            }
        }
    }
}

/// A local directory with the same key layout. Each line is written to a hidden temporary file,
/// then linked under its final name, which fails if the name exists: a reader never sees a
/// half-written file, and two concurrent copies leave one. Commits are grouped: a writer thread
/// writes whatever is waiting, and a sync thread runs one `syncfs` for everything written by the
/// time it starts, and only then releases those answers. What is acknowledged is on disk, at one
/// journal commit per batch instead of two `fsync`s per event, and writing goes on during a sync.
#[derive(Debug, Clone)]
pub struct DirArchive {
    root: PathBuf,
    jobs: mpsc::Sender<Job>,
}

#[derive(Debug)]
struct Job {
    path: PathBuf,
    line: Bytes,
    done: tokio::sync::oneshot::Sender<io::Result<Stored>>,
}

/// How the writer makes a batch durable: `syncfs` in production; tests count and fail it.
pub(crate) type SyncFn = fn(&std::fs::File) -> io::Result<()>;

impl DirArchive {
    /// Creates the directory if needed and checks that it is writable, so a bad path fails at start-up.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root, |dir| rustix::fs::syncfs(dir).map_err(io::Error::from))
    }

    /// As `open`, with `sync` in place of `syncfs`.
    pub(crate) fn open_with(root: impl Into<PathBuf>, sync: SyncFn) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        tempfile::NamedTempFile::new_in(&root)?;
        let dir = std::fs::File::open(&root)?;
        let (jobs, queue) = mpsc::channel();
        let (written, to_sync) = mpsc::channel();
        let thread = |name: &str| std::thread::Builder::new().name(format!("mailhook-{name}"));
        thread("write").spawn(move || write_batches(&queue, &written))?;
        thread("sync").spawn(move || sync_batches(&to_sync, &dir, sync))?;
        Ok(DirArchive { root, jobs })
    }
}

impl Archive for DirArchive {
    async fn put_new(&self, key: &str, line: Bytes) -> Result<Stored, ArchiveError> {
        let path = self.root.join(key);
        let (done, answer) = tokio::sync::oneshot::channel();
        let stopped = || io::Error::other("the archive writer has stopped");
        let result = match self.jobs.send(Job { path: path.clone(), line, done }) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(stopped())),
            Err(_) => Err(stopped()),
        };
        result.map_err(|source| ArchiveError::Io { path, source })
    }
}

/// The writer thread: runs until every `DirArchive` handle is gone. It writes whatever is waiting
/// and passes each batch on to the sync thread, so writing goes on while a sync runs.
fn write_batches(queue: &mpsc::Receiver<Job>, written: &mpsc::Sender<Vec<Written>>) {
    while let Ok(first) = queue.recv() {
        let batch = std::iter::once(first).chain(queue.try_iter());
        let batch: Vec<Written> = batch.map(|job| (write_new(&job.path, &job.line), job)).collect();
        if written.send(batch).is_err() {
            return;
        }
    }
}

type Written = (io::Result<Stored>, Job);

/// The sync thread: one sync for every batch written by the time it starts, then the answers.
fn sync_batches(written: &mpsc::Receiver<Vec<Written>>, dir: &std::fs::File, sync: SyncFn) {
    while let Ok(first) = written.recv() {
        let jobs: Vec<Written> = std::iter::once(first).chain(written.try_iter()).flatten().collect();
        // A file found already present may still be waiting for this very sync: it counts too.
        let synced = if jobs.iter().any(|(r, _)| r.is_ok()) { sync(dir) } else { Ok(()) };
        for (result, job) in jobs {
            let result = match (&synced, result) {
                (Ok(()), result) => result,
                (Err(e), Ok(_)) => Err(io::Error::new(e.kind(), format!("syncing the archive: {e}"))),
                (Err(_), Err(e)) => Err(e),
            };
            // The request may have timed out and gone; the line is stored either way.
            let _ = job.done.send(result);
        }
    }
}

fn write_new(path: &Path, line: &[u8]) -> io::Result<Stored> {
    let dir = path.parent().ok_or_else(|| io::Error::other("key has no directory"))?;
    if path.exists() {
        return Ok(Stored::AlreadyPresent);
    }
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(line)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(Stored::Created),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(Stored::AlreadyPresent),
        Err(e) => Err(e.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn dir_archive_creates_once() {
        let root = tempfile::tempdir().unwrap();
        let archive = DirArchive::open(root.path()).unwrap();
        let key = "dt=2026-11-26/abc.jsonl";
        assert_eq!(archive.put_new(key, Bytes::from_static(b"one\n")).await.unwrap(), Stored::Created);
        assert_eq!(archive.put_new(key, Bytes::from_static(b"two\n")).await.unwrap(), Stored::AlreadyPresent);
        assert_eq!(std::fs::read(root.path().join(key)).unwrap(), b"one\n");
        let names: Vec<_> =
            std::fs::read_dir(root.path().join("dt=2026-11-26")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["abc.jsonl"], "no temporary file is left behind");
    }

    #[tokio::test]
    async fn concurrent_copies_leave_one_file() {
        let root = tempfile::tempdir().unwrap();
        let archive = std::sync::Arc::new(DirArchive::open(root.path()).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let archive = archive.clone();
                tokio::spawn(async move {
                    archive.put_new("dt=2026-11-26/same.jsonl", Bytes::from(format!("{i}\n"))).await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await.unwrap() == Stored::Created);
        }
        assert_eq!(created, 1);
        assert_eq!(std::fs::read_dir(root.path().join("dt=2026-11-26")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn unwritable_directory_is_an_error_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let archive = DirArchive::open(root.path()).unwrap();
        // A file where the partition directory should be makes every write fail, even as root.
        std::fs::write(root.path().join("dt=2026-11-26"), b"").unwrap();
        let err = archive.put_new("dt=2026-11-26/x.jsonl", Bytes::from_static(b"x\n")).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    static SYNCS: AtomicU64 = AtomicU64::new(0);

    fn counted_sync(dir: &std::fs::File) -> io::Result<()> {
        SYNCS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        rustix::fs::syncfs(dir).map_err(io::Error::from)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_sync_serves_many_writes() {
        let root = tempfile::tempdir().unwrap();
        let archive = std::sync::Arc::new(DirArchive::open_with(root.path(), counted_sync).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let archive = archive.clone();
                tokio::spawn(async move {
                    archive.put_new(&format!("dt=2026-11-26/{i}.jsonl"), Bytes::from(format!("{i}\n"))).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Stored::Created);
        }
        let syncs = SYNCS.load(Ordering::SeqCst);
        assert!((1..64).contains(&syncs), "64 writes took {syncs} syncs");
        assert_eq!(std::fs::read_dir(root.path().join("dt=2026-11-26")).unwrap().count(), 64);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_the_write() {
        fn broken(_: &std::fs::File) -> io::Result<()> {
            Err(io::Error::other("EIO"))
        }
        let root = tempfile::tempdir().unwrap();
        let archive = DirArchive::open_with(root.path(), broken).unwrap();
        let err = archive.put_new("dt=2026-11-26/x.jsonl", Bytes::from_static(b"x\n")).await.unwrap_err();
        assert!(err.to_string().contains("EIO"), "{err}");
        // The resend finds the file but still needs a sync, and still fails while syncs fail.
        assert!(archive.put_new("dt=2026-11-26/x.jsonl", Bytes::from_static(b"x\n")).await.is_err());
    }
}
