//! Compaction of an S3 archive: per-event objects into `merged-<hash>.jsonl.gz` objects.
//!
//! Per partition, a pass in key order that streams its listing: a page of keys is worked on
//! while the next is listed, so memory holds two pages, whatever the partition's size. Before
//! the first page with work in it, a GET of each merged object already there (streamed through
//! gunzip, keeping 16 bytes per id); on each page, `DeleteObjects` for per-event objects whose
//! event is already merged, then the rest fetched `GETS_IN_FLIGHT` at a time, in order, into a
//! gzip stream. Before `max_object_bytes` of lines the stream becomes one object, written with
//! `If-None-Match: *`, and the per-event objects in it are deleted at once, so the window in
//! which a reader sees them twice is one `DeleteObjects` call per 1,000 events. The deadline is
//! checked before each page, merged object and fetched object; after each merged object
//! written, and when the deadline stops the pass, the last key dealt with goes into the lease,
//! and the partition's next pass starts after it.

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

use super::lease::Lease;
use super::{CompactError, Compactor, Done, GETS_IN_FLIGHT, Options, cutoff, in_time, mergeable};
use crate::aws::status;
use crate::layout::{Id, Prefix, event_file_id, is_merged};
use crate::record::verify_line;

/// `DeleteObjects` takes at most this many keys a call.
const DELETE_BATCH: usize = 1000;
const MERGED_CONTENT_TYPE: &str = "application/gzip";

/// One run over an S3 archive. Its steps are taken one at a time (only the GETs of a page are
/// in flight together), so the lease is a plain field, renewed in place.
pub(super) struct S3Compactor {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: Prefix,
    lease: Lease,
}

impl Compactor for S3Compactor {
    async fn dates(&mut self) -> Result<Vec<Date>, CompactError> {
        self.partitions().await
    }

    async fn partition(&mut self, date: Date, options: &Options, done: &Done) -> Result<(), CompactError> {
        self.lease.keep().await?;
        self.compact(date, options, done).await
    }
}

impl S3Compactor {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &Prefix, lease: Lease) -> S3Compactor {
        S3Compactor { client, bucket: bucket.to_owned(), prefix: prefix.clone(), lease }
    }

    /// The lease, to release.
    pub fn into_lease(self) -> Lease {
        self.lease
    }

    /// The dates of the `dt=` prefixes under the archive's prefix.
    async fn partitions(&self) -> Result<Vec<Date>, CompactError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.prefix.as_str())
            .delimiter("/")
            .into_paginator()
            .send();
        let mut dates = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                CompactError::s3(format!("listing s3://{}/{}", self.bucket, self.prefix), DisplayErrorContext(&e))
            })?;
            for common in page.common_prefixes() {
                if let Some(date) = common.prefix().and_then(|p| self.prefix.parse_partition(p)) {
                    dates.push(date);
                }
            }
        }
        Ok(dates)
    }

    async fn compact(&mut self, date: Date, options: &Options, done: &Done) -> Result<(), CompactError> {
        let dir = self.prefix.partition(date);
        let start_after = self.lease.resume.start_after.get(&date).cloned();
        let mut part = Partition {
            date,
            cutoff: cutoff(options),
            known: None,
            floor: start_after.as_deref().and_then(|k| event_file_id(k.rsplit('/').next()?)),
            chunk: Chunk::new(),
            last: start_after.clone(),
            dir,
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&part.dir)
            .delimiter("/")
            .set_start_after(start_after)
            .into_paginator()
            .send();
        let dir = part.dir.clone();
        let list_failed = |e| CompactError::s3(format!("listing {dir}"), DisplayErrorContext(&e));
        let mut next = until(options, pages.next()).await?;
        while let Some(page) = next {
            let page = page.map_err(list_failed)?;
            // The next page is listed while this one is worked on, and no further: memory holds
            // two pages of keys, whatever the partition's size.
            let mut listing = std::pin::pin!(pages.next());
            let mut listed = None;
            let worked = {
                let mut work = std::pin::pin!(self.page(&mut part, page.contents(), options, done));
                loop {
                    tokio::select! {
                        worked = &mut work => break worked,
                        page = &mut listing, if listed.is_none() => listed = Some(page),
                    }
                }
            };
            next = match (worked, listed) {
                (Err(CompactError::OutOfTime), _) => return self.stop(part, done).await,
                (Err(why), _) => return Err(why),
                (Ok(()), Some(page)) => page,
                (Ok(()), None) => match until(options, listing).await {
                    Ok(page) => page,
                    Err(_) => return self.stop(part, done).await,
                },
            };
            if in_time(options).is_err() {
                return self.stop(part, done).await;
            }
            // Pages with nothing to fetch (objects too young, say) can take a while too.
            self.lease.keep().await?;
        }
        if !part.chunk.keys.is_empty() {
            self.flush(part.date, std::mem::replace(&mut part.chunk, Chunk::new()), done).await?;
        }
        // A pass over the partition is done: the next starts from its first key again.
        self.lease.resume.start_after.remove(&date);
        Ok(())
    }

    /// Deals with one page of the partition's listing, in key order: copies of merged events are
    /// deleted, and the rest fetched into the chunk, which is written each time it is full.
    async fn page(
        &mut self,
        part: &mut Partition,
        objects: &[aws_sdk_s3::types::Object],
        options: &Options,
        done: &Done,
    ) -> Result<(), CompactError> {
        let mut candidates = Vec::new();
        for object in objects {
            let Some(key) = object.key() else { continue };
            let name = &key[part.dir.len().min(key.len())..];
            if let Some(id) = event_file_id(name) {
                let modified = object.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                if modified.is_some_and(|m| m <= part.cutoff) {
                    candidates.push((key.to_owned(), id));
                }
            }
        }
        let page_end = objects.last().and_then(|o| o.key()).map(str::to_owned);
        if candidates.is_empty() {
            part.last = page_end.or(part.last.take());
            return Ok(());
        }
        if part.known.is_none() {
            part.known = Some(self.merged_ids(part.date, part.floor, options).await?);
        }
        let known = part.known.as_ref().expect("read just above");
        let (stale, fresh): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(_, id)| known.contains(id));
        // Copies left by a run that stopped after writing their merged object.
        let stale: Vec<String> = stale.into_iter().map(|(key, _)| key).collect();
        self.delete(&stale).await?;
        Done::count(&done.already_merged, stale.len() as u64);

        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let mut bodies = futures_util::stream::iter(fresh)
            .map(|(key, id)| {
                let (client, bucket) = (&client, &bucket);
                async move {
                    let body = get(client, bucket, &key).await;
                    (key, id, body)
                }
            })
            .buffered(GETS_IN_FLIGHT);
        while let Some((key, id, body)) = bodies.next().await {
            // Gone since the LIST: only a compaction deletes, after merging it.
            if let Some(body) = body? {
                Done::count(&done.read, 1);
                if !mergeable(&body, &id) {
                    tracing::warn!(key = %key, "left in place: not one stored line ending with the id its key names");
                    Done::count(&done.skipped, 1);
                } else {
                    if !part.chunk.keys.is_empty() && part.chunk.lines + body.len() > options.max_object_bytes {
                        let full = std::mem::replace(&mut part.chunk, Chunk::new());
                        self.flush(part.date, full, done).await?;
                        self.progress(part);
                    }
                    part.chunk.push(key.clone(), id, &body).map_err(CompactError::Compress)?;
                }
            }
            part.last = Some(key);
            in_time(options)?;
            self.lease.keep().await?;
        }
        part.last = page_end.or(part.last.take());
        Ok(())
    }

    /// Cut off by the deadline: every run makes progress, so what is fetched is written, and the
    /// partition's next listing starts after the last key dealt with.
    async fn stop(&mut self, mut part: Partition, done: &Done) -> Result<(), CompactError> {
        if !part.chunk.keys.is_empty() {
            let chunk = std::mem::replace(&mut part.chunk, Chunk::new());
            self.flush(part.date, chunk, done).await?;
        }
        self.progress(&part);
        Err(CompactError::OutOfTime)
    }

    /// Records that every key of the partition up to `part.last` is dealt with (merged, deleted
    /// as a copy, or left for a reason), once what was merged of them is written: every later
    /// write of the lease carries it.
    fn progress(&mut self, part: &Partition) {
        if let Some(last) = &part.last {
            self.lease.resume.start_after.insert(part.date, last.clone());
        }
    }

    /// The ids in the partition's merged objects (above `floor` only: no key at or below it is
    /// listed in this pass), each object read as a stream.
    async fn merged_ids(&self, date: Date, floor: Option<Id>, options: &Options) -> Result<HashSet<Id>, CompactError> {
        let dir = self.prefix.partition(date);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.prefix.merged_in(date))
            .into_paginator()
            .send();
        let mut known = HashSet::new();
        while let Some(page) = until(options, pages.next()).await? {
            let page = page.map_err(|e| CompactError::s3(format!("listing {dir}"), DisplayErrorContext(&e)))?;
            for key in page.contents().iter().filter_map(|o| o.key()).filter(|k| is_merged(k)) {
                in_time(options)?;
                self.read_ids(key, floor, &mut known).await?;
            }
        }
        Ok(known)
    }

    /// Adds the id (above `floor`) of every line of the merged object `key` to `ids`, reading it
    /// as a stream.
    async fn read_ids(&self, key: &str, floor: Option<Id>, ids: &mut HashSet<Id>) -> Result<(), CompactError> {
        let fail = |detail: String| CompactError::s3(format!("reading {key}"), detail);
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
        let mut body = got.body;
        let mut lines = GzDecoder::new(LineIds { ids, floor, partial: Vec::new(), bad: 0 });
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
            lines.write_all(&piece).map_err(|e| fail(e.to_string()))?;
        }
        let lines = lines.finish().map_err(|e| fail(e.to_string()))?;
        if lines.bad > 0 || !lines.partial.is_empty() {
            // Then which events it holds is not known for sure: merging more could duplicate them.
            let bad = lines.bad + u64::from(!lines.partial.is_empty());
            return Err(CompactError::Unverified { key: key.to_owned(), bad });
        }
        Ok(())
    }

    /// Writes `chunk` as one merged object, if no object of that name is there, then deletes
    /// the per-event objects in it.
    async fn flush(&mut self, date: Date, chunk: Chunk, done: &Done) -> Result<(), CompactError> {
        // Named by the first half of a SHA-256 over the ids in it, in order.
        let name =
            self.prefix.merged(date, Id::from_bytes(chunk.ids.finalize()[..16].try_into().expect("16 of 32 bytes")));
        let gzip = chunk.encoder.finish().map_err(CompactError::Compress)?;
        self.lease.fence().await?;
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
            Ok(_) => Done::count(&done.written, 1),
            // A run that stopped before its deletes wrote this very object: the same ids, in order.
            Err(e) if status(&e) == Some(412) => {}
            Err(e) => return Err(CompactError::s3(format!("PutObject {name}"), DisplayErrorContext(&e))),
        }
        self.delete(&chunk.keys).await?;
        Done::count(&done.merged, chunk.keys.len() as u64);
        Ok(())
    }

    async fn delete(&mut self, keys: &[String]) -> Result<(), CompactError> {
        for batch in keys.chunks(DELETE_BATCH) {
            self.lease.fence().await?;
            let objects =
                batch.iter().map(|key| ObjectIdentifier::builder().key(key).build()).collect::<Result<_, _>>();
            let delete = objects
                .and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build())
                .map_err(|e| CompactError::s3("DeleteObjects", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| CompactError::s3("DeleteObjects", DisplayErrorContext(&e)))?;
            if let Some(first) = out.errors().first() {
                return Err(CompactError::s3(
                    "DeleteObjects",
                    format!(
                        "left {} of {} keys, the first {}: {}",
                        out.errors().len(),
                        batch.len(),
                        first.key().unwrap_or("?"),
                        first.code().unwrap_or("?")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The object's bytes, or `None` if it is gone.
async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Bytes>, CompactError> {
    let fail = |detail: String| CompactError::s3(format!("GetObject {key}"), detail);
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(got) => {
            let body = got.body.collect().await.map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
            Ok(Some(body.into_bytes()))
        }
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(fail(DisplayErrorContext(&e).to_string())),
    }
}

/// Where a run is in one partition.
struct Partition {
    date: Date,
    dir: String,
    /// Per-event objects last modified after this are left for a later run.
    cutoff: SystemTime,
    /// The ids in the partition's merged objects, read before its first candidate.
    known: Option<HashSet<Id>>,
    /// The id of the key this pass started after.
    floor: Option<Id>,
    chunk: Chunk,
    /// The last key dealt with, in listing (key) order; what it merged may still be in `chunk`.
    last: Option<String>,
}

/// `work`, unless the deadline comes first.
async fn until<T>(options: &Options, work: impl std::future::Future<Output = T>) -> Result<T, CompactError> {
    match options.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work).await.map_err(|_| CompactError::OutOfTime),
        None => Ok(work.await),
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
    floor: Option<Id>,
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
                    if self.floor.is_none_or(|floor| id > floor) {
                        self.ids.insert(id);
                    }
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
