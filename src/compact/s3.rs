//! Compaction of an S3 archive: per-event objects into `merged-<hash>.jsonl.gz` objects.
//!
//! Per partition: one paginated LIST; a GET of each merged object already there (streamed
//! through gunzip, keeping 16 bytes per id); `DeleteObjects` for per-event objects whose event is
//! already merged; then the rest, sorted by key, fetched `GETS_IN_FLIGHT` at a time, in order,
//! into a gzip stream. Before `max_object_bytes` of lines the stream becomes one object, written with
//! `If-None-Match: *`, and the per-event objects in it are deleted at once, so the window in
//! which a reader sees them twice is one `DeleteObjects` call per 1,000 events.

use std::collections::HashSet;
use std::io::{self, Write};
use std::time::SystemTime;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzDecoder, GzEncoder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use time::Date;

use super::lease::{Lease, LeaseError};
use super::{Compactor, Done, GETS_IN_FLIGHT, Options, cutoff, mergeable, out_of_time};
use crate::key::{Id, event_file_id, parse_partition, partition_name};
use crate::record::verify_line;
use crate::s3::status;

/// `DeleteObjects` takes at most this many keys a call.
const DELETE_BATCH: usize = 1000;
const MERGED_CONTENT_TYPE: &str = "application/gzip";

pub(super) struct S3Compactor {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    lease: tokio::sync::Mutex<Lease>,
    /// Set once a renewal finds another run holding the lease: no step is taken after it.
    lost: std::sync::Mutex<Option<LeaseError>>,
}

impl Compactor for S3Compactor {
    async fn dates(&mut self) -> Result<Vec<Date>, String> {
        self.partitions().await
    }

    async fn partition(&mut self, date: Date, options: &Options, done: &mut Done) -> Result<(), String> {
        if let Some(lost) = &*self.lost.lock().unwrap() {
            return Err(lost.to_string());
        }
        self.keep().await?;
        self.compact(date, options, done).await
    }
}

impl S3Compactor {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str, lease: Lease) -> S3Compactor {
        S3Compactor {
            client,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            lease: tokio::sync::Mutex::new(lease),
            lost: std::sync::Mutex::new(None),
        }
    }

    /// The lease, to release, and why it was lost, if it was.
    pub fn into_lease(self) -> (Lease, Option<LeaseError>) {
        (self.lease.into_inner(), self.lost.into_inner().unwrap())
    }

    /// Renews the lease right before a step that cannot be undone; an error means the step must
    /// not be taken.
    async fn fence(&self) -> Result<(), String> {
        self.lease.lock().await.fence().await.map_err(|e| self.note(e))
    }

    /// Renews the lease if half its time has gone.
    async fn keep(&self) -> Result<(), String> {
        self.lease.lock().await.keep().await.map_err(|e| self.note(e))
    }

    fn note(&self, e: LeaseError) -> String {
        let message = e.to_string();
        if matches!(e, LeaseError::Lost { .. }) {
            *self.lost.lock().unwrap() = Some(e);
        }
        message
    }

    /// The dates of the `dt=` prefixes under the archive's prefix.
    async fn partitions(&self) -> Result<Vec<Date>, String> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut dates = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!("listing s3://{}/{} failed: {}", self.bucket, self.prefix, DisplayErrorContext(&e))
            })?;
            for common in page.common_prefixes() {
                if let Some(date) =
                    common.prefix().and_then(|p| p.strip_prefix(self.prefix.as_str())).and_then(parse_partition)
                {
                    dates.push(date);
                }
            }
        }
        Ok(dates)
    }

    async fn compact(&self, date: Date, options: &Options, done: &mut Done) -> Result<(), String> {
        let dir = format!("{}{}/", self.prefix, partition_name(date));
        let (mut candidates, merged) = self.list(&dir, cutoff(options)).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let mut known = HashSet::new();
        for key in &merged {
            self.merged_ids(key, &mut known).await?;
        }
        candidates.sort();
        let (stale, fresh): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(_, id)| known.contains(id));
        // Copies left by a run that stopped after writing their merged object.
        let stale: Vec<String> = stale.into_iter().map(|(key, _)| key).collect();
        self.delete(&stale).await?;
        done.already_merged += stale.len() as u64;

        let mut chunk = Chunk::new();
        let mut bodies = futures_util::stream::iter(fresh)
            .map(|(key, id)| async move {
                let body = self.get(&key).await;
                (key, id, body)
            })
            .buffered(GETS_IN_FLIGHT);
        while let Some((key, id, body)) = bodies.next().await {
            let Some(body) = body? else {
                continue; // gone since the LIST: only a compaction deletes, after merging it
            };
            if !mergeable(&body, &id) {
                tracing::warn!(key = %key, "left in place: not one stored line ending with the id its key names");
                done.skipped += 1;
                continue;
            }
            if !chunk.keys.is_empty() && chunk.lines + body.len() > options.max_object_bytes {
                self.flush(&dir, std::mem::replace(&mut chunk, Chunk::new()), done).await?;
            }
            chunk.push(key, id, &body).map_err(|e| format!("compressing failed: {e}"))?;
            if let Some(why) = out_of_time(options) {
                // Every run makes progress: what is fetched is written before stopping.
                self.flush(&dir, chunk, done).await?;
                return Err(why);
            }
            self.keep().await?;
        }
        if !chunk.keys.is_empty() {
            self.flush(&dir, chunk, done).await?;
        }
        Ok(())
    }

    /// The partition's per-event objects last modified by `cutoff`, and its merged objects.
    async fn list(&self, dir: &str, cutoff: SystemTime) -> Result<(Vec<(String, Id)>, Vec<String>), String> {
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(dir).delimiter("/").into_paginator().send();
        let (mut candidates, mut merged) = (Vec::new(), Vec::new());
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("listing {dir} failed: {}", DisplayErrorContext(&e)))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let name = &key[dir.len().min(key.len())..];
                if let Some(id) = event_file_id(name) {
                    let modified = object.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                    if modified.is_some_and(|m| m <= cutoff) {
                        candidates.push((key.to_owned(), id));
                    }
                } else if name.ends_with(".jsonl.gz") {
                    merged.push(key.to_owned());
                }
            }
        }
        Ok((candidates, merged))
    }

    /// Adds the id of every line of the merged object `key` to `ids`, reading it as a stream.
    async fn merged_ids(&self, key: &str, ids: &mut HashSet<Id>) -> Result<(), String> {
        let fail = |detail: String| format!("reading {key} failed: {detail}");
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
        let mut body = got.body;
        let mut lines = GzDecoder::new(LineIds { ids, partial: Vec::new(), bad: 0 });
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
            lines.write_all(&piece).map_err(|e| fail(e.to_string()))?;
        }
        let lines = lines.finish().map_err(|e| fail(e.to_string()))?;
        if lines.bad > 0 || !lines.partial.is_empty() {
            // Then which events it holds is not known for sure: merging more could duplicate them.
            let bad = lines.bad + u64::from(!lines.partial.is_empty());
            return Err(fail(format!("{bad} of its lines do not verify; it was not written by mailhook compact")));
        }
        Ok(())
    }

    /// The object's bytes, or `None` if it is gone.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let fail = |detail: String| format!("GetObject {key} failed: {detail}");
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(got) => {
                let body = got.body.collect().await.map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(fail(DisplayErrorContext(&e).to_string())),
        }
    }

    /// Writes `chunk` as one merged object, if no object of that name is there, then deletes
    /// the per-event objects in it.
    async fn flush(&self, dir: &str, chunk: Chunk, done: &mut Done) -> Result<(), String> {
        // Named by the first half of a SHA-256 over the ids in it, in order.
        let name = format!(
            "{dir}merged-{}.jsonl.gz",
            Id::from_bytes(chunk.ids.finalize()[..16].try_into().expect("16 of 32 bytes"))
        );
        let gzip = chunk.encoder.finish().map_err(|e| format!("compressing failed: {e}"))?;
        self.fence().await?;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&name)
            .content_type(MERGED_CONTENT_TYPE)
            .if_none_match("*")
            .body(ByteStream::from(gzip))
            .send()
            .await;
        match put {
            Ok(_) => done.written += 1,
            // A run that stopped before its deletes wrote this very object: the same ids, in order.
            Err(e) if status(&e) == Some(412) => {}
            Err(e) => return Err(format!("PutObject {name} failed: {}", DisplayErrorContext(&e))),
        }
        self.delete(&chunk.keys).await?;
        done.merged += chunk.keys.len() as u64;
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), String> {
        for batch in keys.chunks(DELETE_BATCH) {
            self.fence().await?;
            let objects =
                batch.iter().map(|key| ObjectIdentifier::builder().key(key).build()).collect::<Result<_, _>>();
            let delete = objects
                .and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build())
                .map_err(|e| format!("DeleteObjects: {e}"))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| format!("DeleteObjects failed: {}", DisplayErrorContext(&e)))?;
            if let Some(first) = out.errors().first() {
                return Err(format!(
                    "DeleteObjects left {} of {} keys, the first {}: {}",
                    out.errors().len(),
                    batch.len(),
                    first.key().unwrap_or("?"),
                    first.code().unwrap_or("?")
                ));
            }
        }
        Ok(())
    }
}

/// A merged object being built: its gzip bytes, and the keys and ids in it.
struct Chunk {
    encoder: GzEncoder<Vec<u8>>,
    /// The bytes of the lines in it, before gzip.
    lines: usize,
    keys: Vec<String>,
    ids: Sha256,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            encoder: GzEncoder::new(Vec::new(), Compression::default()),
            lines: 0,
            keys: Vec::new(),
            ids: Sha256::new(),
        }
    }

    fn push(&mut self, key: String, id: Id, line: &[u8]) -> io::Result<()> {
        self.encoder.write_all(line)?;
        self.lines += line.len();
        self.keys.push(key);
        self.ids.update(id.as_bytes());
        Ok(())
    }
}

/// Collects the id of each line written through it; counts lines that do not verify.
struct LineIds<'a> {
    ids: &'a mut HashSet<Id>,
    partial: Vec<u8>,
    bad: u64,
}

impl Write for LineIds<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let line = if self.partial.is_empty() {
                &rest[..at]
            } else {
                self.partial.extend_from_slice(&rest[..at]);
                &self.partial[..]
            };
            match verify_line(line) {
                Some(id) => {
                    self.ids.insert(id);
                }
                None => self.bad += 1,
            }
            self.partial.clear();
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
