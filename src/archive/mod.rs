//! Where lines go. The seam is one call, "put this line under this key if the key is absent",
//! with two homes behind it:
//! - `s3.rs`: one object per event in an S3 bucket, created only if absent;
//! - `dir/`: a local directory of append-only segment files, many lines each.
//!
//! Both take the same `Key` (`layout.rs`).

pub(crate) mod dir;
mod s3;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::layout::Key;
pub use dir::DirArchive;
pub use s3::S3Archive;

/// Content type of every stored object: newline-delimited JSON.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The outcome of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This call stored the line.
    Created,
    /// The key was already there: the same event, stored by an earlier delivery.
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
    /// The local writer already has this many lines waiting: its disk is not keeping up.
    #[error("the archive writer has {waiting} lines waiting; refused another")]
    Busy { waiting: usize },
}

/// The storage seam: put these bytes under this key, only if the key is absent.
/// `Ok` means the bytes are durably stored under the key, now or before.
pub trait Archive: Send + Sync + 'static {
    fn put_new(&self, key: &Key, line: Bytes) -> impl Future<Output = Result<Stored, ArchiveError>> + Send;

    /// Finishes what is open (the local archive seals its segments) before the process exits.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
