//! `mailhook compact`: rolls closed partitions of an S3 archive's per-event objects into a few
//! large ones. (A local directory is written as segments already, and has nothing to compact.)
//!
//! One object per event keeps every write create-only, and makes the archive slow and costly to
//! read at volume. Once a partition's events are old enough that no resend can still arrive, this
//! merges them, byte for byte, into `dt=D/merged-<hash>.jsonl.gz`, then deletes what it merged.
//!
//! Exactly once, whatever stops a run: the merged objects are the record of what has been merged.
//! Each run first reads the ids in a partition's merged objects, deletes the per-event objects
//! whose id is among them, and merges only the rest. A merged object appears whole or not at all
//! (one `PutObject`), and is named by a hash of the ids in it, written
//! only if absent. So a run killed after writing a merged object and before deleting its
//! per-event objects leaves each of those events readable twice until the next run deletes the
//! copies; readers count `DISTINCT id` for an exact count.

mod lambda;
pub mod lease;
mod progress;
mod s3;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use time::{Date, OffsetDateTime};

pub use self::lambda::serve_lambda;
use self::lease::{Lease, LeaseError, Resume};
use self::progress::{Progress, Status};
use crate::config::CompactConfig;
use crate::layout::{Id, Prefix};
use crate::record::verify_line;

/// Partitions this many days before today (UTC) and older are compacted by default: every
/// event in them is at least a day old.
const DEFAULT_LAG_DAYS: i64 = 2;
/// Per-event objects younger than this are left alone: the sender's one resend comes 15 minutes
/// after the first try, and until it is merged the create-only key still stops it.
const DEFAULT_MIN_AGE: Duration = Duration::from_secs(3600);
/// A merged S3 object holds at most this many bytes of lines, before gzip (BENCHMARKS.md,
/// compaction, gives the size after). It bounds memory: the object is built in memory and sent with one conditional
/// `PutObject`, the only way S3 makes it appear whole and only if absent.
const DEFAULT_MAX_OBJECT_BYTES: usize = 128 << 20;
/// The `Handler` of the compaction function in template.yaml; the provided runtime passes it
/// on as `_HANDLER`.
pub const HANDLER: &str = "compact";
/// How long a run's lease on an S3 archive lasts between renewals. Every S3 request of a run
/// must end within a quarter of it (the client's operation timeout): a renewal and the step
/// after it then end within half the lease, and the other half allows for the clocks of two
/// machines to differ. So this bounds the largest merged object a slow link can write, and how
/// long a killed run holds the archive up.
const DEFAULT_LEASE: Duration = Duration::from_secs(600);
/// At most this many GETs are in flight at once.
pub const GETS_IN_FLIGHT: usize = 64;

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The newest partition to consider: `dt <= through`.
    pub through: Date,
    /// Per-event objects younger than this are not merged.
    pub min_age: Duration,
    /// A merged object holds at most this many bytes of lines (unless one line is longer).
    pub max_object_bytes: usize,
    /// When to stop starting new work (a Lambda's deadline, less a margin).
    pub deadline: Option<Instant>,
    /// How long the lease on an S3 archive lasts between renewals.
    pub lease: Duration,
    /// How often a run shows how far it has got (`progress.rs`).
    pub progress_every: Duration,
}

impl Options {
    /// The defaults for a run at `now`.
    pub fn defaults(now: OffsetDateTime) -> Options {
        Options {
            through: now.date() - time::Duration::days(DEFAULT_LAG_DAYS),
            min_age: DEFAULT_MIN_AGE,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            deadline: None,
            lease: DEFAULT_LEASE,
            progress_every: Duration::from_secs(10),
        }
    }
}

/// Checks that `body` is one whole stored line whose id is `id`. Anything else (a line written
/// before lines carried their id, or an object mailhook did not write) is left where it is.
pub(crate) fn mergeable(body: &[u8], id: &Id) -> bool {
    body.strip_suffix(b"\n").is_some_and(|line| !line.contains(&b'\n') && verify_line(line).as_ref() == Some(id))
}

/// What a run did, over every partition it considered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Partitions with `dt <= through`.
    pub partitions: usize,
    /// Per-event objects merged by this run.
    pub merged: u64,
    /// Per-event objects deleted because a merged object already held their event.
    pub already_merged: u64,
    /// Merged objects written.
    pub written: u64,
    /// Per-event objects left in place because they are not one verifiable line.
    pub skipped: u64,
    /// Partitions that could not be finished, with the reason.
    pub failed: Vec<(Date, String)>,
    /// Partitions left for the next run because the deadline came: what was fetched of them is
    /// merged. Not a failure.
    pub cut_off: Vec<Date>,
    /// Where the next run should start, when the deadline cut this one off: the partition after
    /// the one it was cut off in, so no partition holds the others back for more than a run.
    pub resume_from: Option<Date>,
    /// The run did nothing: another run held the lease.
    pub lease_held: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |count: u64, one: &str, many: &str| format!("{count} {}", if count == 1 { one } else { many });
        write!(
            f,
            "{} considered, {} merged into {}, {} of merged events deleted, {} skipped, {} failed",
            n(self.partitions as u64, "partition", "partitions"),
            n(self.merged, "event", "events"),
            n(self.written, "object", "objects"),
            n(self.already_merged, "copy", "copies"),
            n(self.skipped, "object", "objects"),
            n(self.failed.len() as u64, "partition", "partitions"),
        )?;
        if !self.cut_off.is_empty() {
            write!(
                f,
                ", {} left for the next run by the deadline",
                n(self.cut_off.len() as u64, "partition", "partitions")
            )?;
        }
        Ok(())
    }
}

/// What one partition's run did, counted as it goes (atomics, so that the run's progress can
/// read them while the partition is worked on); added into the `Report`.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub merged: AtomicU64,
    pub already_merged: AtomicU64,
    pub written: AtomicU64,
    pub skipped: AtomicU64,
    /// Per-event objects read: for progress only.
    pub read: AtomicU64,
}

impl Done {
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Report {
    fn add(&mut self, done: &Done) {
        self.merged += Done::get(&done.merged);
        self.already_merged += Done::get(&done.already_merged);
        self.written += Done::get(&done.written);
        self.skipped += Done::get(&done.skipped);
    }

    /// The one-line failure message: which partitions, and why.
    pub fn failure(&self) -> Option<String> {
        let (first, why) = self.failed.first()?;
        let more = match self.failed.len() {
            1 => String::new(),
            n => format!(
                " (and {} more: {})",
                n - 1,
                self.failed[1..].iter().map(|(d, _)| format!("dt={d}")).collect::<Vec<_>>().join(", ")
            ),
        };
        Some(format!("compacting partition dt={first} failed: {why}{more}"))
    }
}

/// `OutOfTime` once the deadline has come: work that would start after it does not.
pub(crate) fn in_time(options: &Options) -> Result<(), CompactError> {
    match options.deadline {
        Some(deadline) if Instant::now() >= deadline => Err(CompactError::OutOfTime),
        _ => Ok(()),
    }
}

/// Per-event objects last modified at or before this are old enough to merge. A `min_age`
/// further back than the clock can go means none is.
pub(crate) fn cutoff(options: &Options) -> SystemTime {
    SystemTime::now().checked_sub(options.min_age).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// One archive's side of a run: which partitions it has, and how to compact one of them.
pub(crate) trait Compactor: Send {
    /// The dates of the archive's partitions.
    fn dates(&mut self) -> impl Future<Output = Result<Vec<Date>, CompactError>> + Send;
    /// Compacts one partition, counting what it did in `done` as it goes.
    fn partition(
        &mut self,
        date: Date,
        options: &Options,
        done: &Done,
    ) -> impl Future<Output = Result<(), CompactError>> + Send;
}

/// The run itself, the same for every archive: partitions one after another, oldest first from
/// `resume_from` (then the older ones), none started after the deadline; a failed partition is
/// reported and the run goes on with the next, unless the lease was lost: then no step follows.
pub(crate) async fn drive(
    compactor: &mut impl Compactor,
    options: &Options,
    resume_from: Option<Date>,
) -> Result<Report, CompactError> {
    let mut dates: Vec<Date> = compactor.dates().await?.into_iter().filter(|d| *d <= options.through).collect();
    dates.sort();
    if let Some(from) = resume_from {
        let at = dates.partition_point(|d| *d < from);
        dates.rotate_left(at);
    }
    let mut report = Report::default();
    let progress = Progress::new(dates.len(), options.progress_every);
    let mut read = 0;
    for (n, &date) in dates.iter().enumerate() {
        report.partitions += 1;
        let done = Done::default();
        let status = || Status {
            partition: date,
            partitions_done: n,
            merged: report.merged + Done::get(&done.merged),
            read: read + Done::get(&done.read),
        };
        progress.between(status());
        let result = match in_time(options) {
            Err(why) => {
                report.resume_from.get_or_insert(date);
                Err(why)
            }
            Ok(()) => progress.watch(compactor.partition(date, options, &done), status).await,
        };
        read += Done::get(&done.read);
        report.add(&done);
        progress.clear();
        let merged = Done::get(&done.merged);
        match result {
            Ok(()) => tracing::info!(
                partition = %date, merged, written = Done::get(&done.written),
                already_merged = Done::get(&done.already_merged), skipped = Done::get(&done.skipped), "partition compacted"
            ),
            Err(why @ CompactError::OutOfTime) => {
                if report.resume_from.is_none() {
                    // Cut off inside this partition: what it wrote stays; the next run starts after it.
                    report.resume_from = Some(dates[(n + 1) % dates.len()]);
                }
                tracing::warn!(partition = %date, merged, "left for the next run: {why}");
                report.cut_off.push(date);
            }
            Err(lost @ CompactError::Lease(LeaseError::Lost { .. })) => return Err(lost),
            Err(why) => {
                tracing::error!(partition = %date, error = %why, "compacting a partition failed");
                report.failed.push((date, why.to_string()));
            }
        }
    }
    Ok(report)
}

/// Why a run, or a partition of it, did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The deadline came: not a failure. What was done stays, and the next run goes on from here.
    #[error("stopped before the function's timeout; the next run goes on from here")]
    OutOfTime,
    /// Another run holds the lease (`Held`), took it over (`Lost`), or it could not be written.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// An S3 request failed, after the client's retries: which one, and what S3 (or the
    /// connection) said.
    #[error("{request} failed: {detail}")]
    S3 { request: String, detail: String },
    /// A merged object holds lines that do not verify: which events it holds is not known for
    /// sure, so merging more of its partition could store an event twice.
    #[error("reading {key} failed: {bad} of its lines do not verify; it was not written by mailhook compact")]
    Unverified { key: String, bad: u64 },
    /// Compressing a merged object in memory failed.
    #[error("compressing failed: {0}")]
    Compress(std::io::Error),
}

impl CompactError {
    pub(crate) fn s3(request: impl Into<String>, detail: impl fmt::Display) -> CompactError {
        CompactError::S3 { request: request.into(), detail: detail.to_string() }
    }
}

/// Compacts the S3 archive `config` names.
pub async fn compact(config: &CompactConfig, options: &Options) -> Result<Report, CompactError> {
    let client = crate::aws::compaction_client(&config.access.s3, config.lambda, options.lease / 4).await;
    compact_s3(client, &config.bucket, &config.prefix, options).await
}

/// Compacts `s3://bucket/prefix` through `client`, whose operation timeout must be at most a
/// quarter of `options.lease`, holding the archive's lease throughout.
pub async fn compact_s3(
    client: aws_sdk_s3::Client,
    bucket: &str,
    prefix: &Prefix,
    options: &Options,
) -> Result<Report, CompactError> {
    let lease = Lease::acquire(&client, bucket, prefix, options.lease).await?;
    let resume_from = lease.resume.resume_from;
    let mut compactor = s3::S3Compactor::new(client, bucket, prefix, lease);
    let driven = drive(&mut compactor, options, resume_from).await;
    let lease = compactor.into_lease();
    let start_after = lease.resume.start_after.clone();
    match driven {
        // No longer this run's: another run's lease must not be touched.
        Err(lost @ CompactError::Lease(LeaseError::Lost { .. })) => Err(lost),
        Err(e) => {
            lease.release(Resume { resume_from: None, start_after }).await;
            Err(e)
        }
        Ok(report) => {
            lease.release(Resume { resume_from: report.resume_from, start_after }).await;
            Ok(report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_two_days_back_and_an_hour_old_and_a_huge_min_age_merges_nothing() {
        let mut o = Options::defaults(time::macros::datetime!(2026-03-01 00:30 UTC));
        // Across a month's end, from just after midnight.
        assert_eq!(o.through, time::macros::date!(2026 - 02 - 27));
        assert_eq!(o.min_age, Duration::from_secs(3600));
        assert_eq!(o.max_object_bytes, 128 << 20);
        assert_eq!(o.lease, Duration::from_secs(600));
        o.min_age = Duration::from_secs(u64::MAX);
        assert_eq!(cutoff(&o), SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn the_report_counts_in_words() {
        let one = Report { partitions: 1, merged: 1, written: 1, ..Report::default() };
        assert_eq!(
            one.to_string(),
            "1 partition considered, 1 event merged into 1 object, 0 copies of merged events deleted, 0 objects skipped, 0 partitions failed"
        );
    }

    #[test]
    fn only_one_verified_line_is_mergeable() {
        use crate::record::{Meta, Record};
        let raw = r#"{"mailbox":"a@b.c","uid":1,"tstamp":1764150000,"event":"create","folder":"INBOX"}"#;
        let event = crate::webhook::parse_body(raw.as_bytes(), 1 << 20).unwrap();
        let record = Record::new(&event, &Meta::default(), OffsetDateTime::now_utc(), "");
        let id = record.key.id;
        assert!(mergeable(&record.line, &id));
        assert!(!mergeable(&record.line[..record.line.len() - 1], &id), "no newline");
        assert!(!mergeable(&[&record.line[..], &record.line[..]].concat(), &id), "two lines");
        assert!(!mergeable(&record.line, &Id::of(b"another")), "another id");
        let legacy = String::from_utf8(record.line.to_vec()).unwrap();
        let legacy = format!("{}}}\n", &legacy[..legacy.rfind(",\"id\"").unwrap()]);
        assert!(!mergeable(legacy.as_bytes(), &id), "a line from before ids");
    }

    /// A compactor whose partitions end as `outcome` says, recording which it was asked for.
    struct Scripted {
        outcome: fn(Date) -> Result<(), CompactError>,
        asked: Vec<Date>,
    }

    impl Compactor for Scripted {
        async fn dates(&mut self) -> Result<Vec<Date>, CompactError> {
            Ok(vec![
                time::macros::date!(2026 - 01 - 03),
                time::macros::date!(2026 - 01 - 01),
                time::macros::date!(2026 - 01 - 02),
            ])
        }

        async fn partition(&mut self, date: Date, _: &Options, _: &Done) -> Result<(), CompactError> {
            self.asked.push(date);
            (self.outcome)(date)
        }
    }

    fn drive_with(outcome: fn(Date) -> Result<(), CompactError>) -> (Result<Report, CompactError>, Vec<Date>) {
        let mut compactor = Scripted { outcome, asked: Vec::new() };
        let options = Options::defaults(time::macros::datetime!(2026-03-01 00:30 UTC));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let report = runtime.block_on(drive(&mut compactor, &options, None));
        (report, compactor.asked)
    }

    #[test]
    fn the_deadline_is_no_failure_a_failed_partition_is_and_a_lost_lease_stops_the_run() {
        use time::macros::date;
        let (report, asked) =
            drive_with(|d| if d == date!(2026 - 01 - 02) { Err(CompactError::OutOfTime) } else { Ok(()) });
        let report = report.unwrap();
        assert_eq!(asked.len(), 3, "oldest first: {asked:?}");
        assert_eq!(
            (report.cut_off, report.failed, report.resume_from),
            (vec![date!(2026 - 01 - 02)], vec![], Some(date!(2026 - 01 - 03)))
        );

        let (report, _) = drive_with(|_| Err(CompactError::s3("GetObject k", "refused")));
        assert_eq!(
            report.unwrap().failure().unwrap(),
            "compacting partition dt=2026-01-01 failed: GetObject k failed: refused (and 2 more: dt=2026-01-02, dt=2026-01-03)"
        );

        let lost = |_| Err(CompactError::Lease(LeaseError::Lost { bucket: "b".into(), key: "k".into() }));
        let (report, asked) = drive_with(lost);
        assert!(matches!(report, Err(CompactError::Lease(LeaseError::Lost { .. }))), "{report:?}");
        assert_eq!(asked, vec![date!(2026 - 01 - 01)], "no step after the lease is lost");
    }
}
