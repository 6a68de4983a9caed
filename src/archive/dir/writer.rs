//! The one writer thread: group commit. It takes every waiting line, appends each partition's
//! lines with one write, makes them durable with one `fdatasync`, and only then answers them.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::{Date, OffsetDateTime};
use tokio::sync::oneshot;

use super::Tuning;
use super::disk::Disk;
use super::files::Names;
use super::partition::Partition;
use crate::archive::Stored;
use crate::layout::Id;

/// How often an idle writer wakes to publish and to let go of partitions no write can reach.
const TICK: Duration = Duration::from_millis(500);
/// Partitions older than this are dropped from memory: the dt rule writes at most 30 days back.
const INDEX_DAYS: i64 = 32;

#[derive(Debug)]
pub(super) enum Msg {
    Put(Job),
    /// Seal every live segment, answer, and stop.
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
pub(super) struct Job {
    pub date: Date,
    pub id: Id,
    pub line: Bytes,
    pub done: oneshot::Sender<io::Result<Stored>>,
}

pub(super) struct Writer {
    pub disk: Arc<dyn Disk>,
    pub root: PathBuf,
    pub tuning: Tuning,
    pub names: Names,
    /// Ordered, so the writer's steps come in the same order every run (the crash-state tests
    /// replay them).
    pub partitions: BTreeMap<Date, Partition>,
    pub evicted_at: Instant,
    /// Runs of bytes moved out of sealed segments, as partitions were loaded.
    pub quarantined: Arc<AtomicU64>,
    pub _lock: Box<dyn Send>,
}

impl Writer {
    /// Runs until `Close`, or until every `DirArchive` handle is gone.
    pub fn work(mut self, queue: &mpsc::Receiver<Msg>) {
        loop {
            let first = match queue.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch: BTreeMap<Date, Vec<Job>> = BTreeMap::new();
            let mut closing = None;
            for msg in first.into_iter().chain(queue.try_iter()) {
                match msg {
                    Msg::Put(job) => batch.entry(job.date).or_default().push(job),
                    Msg::Close(done) => closing = Some(done),
                }
            }
            for (date, jobs) in batch {
                self.commit(date, jobs);
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
    pub(super) fn commit(&mut self, date: Date, jobs: Vec<Job>) {
        let partition = match self.partitions.entry(date) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match Partition::load(self.disk.clone(), &self.root, date) {
                Ok(p) => {
                    self.quarantined.fetch_add(p.quarantined, Ordering::Relaxed);
                    e.insert(p)
                }
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

    pub(super) fn publish_due(&mut self) {
        for partition in self.partitions.values_mut() {
            if let Err(e) = partition.publish(self.tuning.publish_after) {
                tracing::error!(partition = %partition.dir.display(), error = %e, "publishing a segment failed");
            }
        }
    }

    /// Lets go of partitions that the dt rule can no longer write to, sealing their segments.
    pub(super) fn evict_old(&mut self) {
        if self.evicted_at.elapsed() < self.tuning.evict_every {
            return;
        }
        self.evicted_at = Instant::now();
        let today = OffsetDateTime::now_utc().date();
        // A partition whose seal fails stays: reloaded from its visible files, its index would
        // lack the lines acknowledged since the last publish, and a resend of one would be
        // stored twice.
        self.partitions.retain(|&date, partition| reachable(date, today) || !partition.seal());
    }

    pub(super) fn seal_all(&mut self) {
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

/// Whether the dt rule can still write to the partition of `date` on `today`: it is at most
/// `INDEX_DAYS` old.
pub(super) fn reachable(date: Date, today: Date) -> bool {
    today.checked_sub(time::Duration::days(INDEX_DAYS)).is_none_or(|oldest| date >= oldest)
}
