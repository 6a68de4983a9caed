//! `mailhook compact`: rolls closed partitions of per-event objects into a few large ones.
//!
//! One object per event keeps every write create-only, and makes the archive slow and costly to
//! read at volume. Once a partition's events are old enough that no resend can still arrive, this
//! merges them, byte for byte, into `dt=D/merged-<hash>.jsonl.gz` (S3) or a segment (a local
//! directory), then deletes what it merged.
//!
//! Exactly once, whatever stops a run: the merged objects are the record of what has been merged.
//! Each run first reads the ids in a partition's merged objects, deletes the per-event objects
//! whose id is among them, and merges only the rest. A merged object appears whole or not at all
//! (one `PutObject`, or a rename after `fsync`), and is named by a hash of the ids in it, written
//! only if absent. So a run killed after writing a merged object and before deleting its
//! per-event objects leaves each of those events readable twice until the next run deletes the
//! copies; readers count `DISTINCT id` for an exact count.

mod dir;
mod s3;

use std::fmt;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use time::{Date, OffsetDateTime};

use crate::config::{ArchiveTarget, CompactConfig};
use crate::record::{parse_hex, verify_line};

/// Partitions this many days before today (UTC) and older are compacted by default: every
/// event in them is at least a day old.
const DEFAULT_LAG_DAYS: i64 = 2;
/// Per-event objects younger than this are left alone: the sender's one resend comes 15 minutes
/// after the first try, and until it is merged the create-only key still stops it.
const DEFAULT_MIN_AGE: Duration = Duration::from_secs(3600);
/// A merged S3 object holds at most this many bytes of lines (before gzip, so 10 to 30 MiB
/// after). It bounds memory: the object is built in memory and sent with one conditional
/// `PutObject`, the only way S3 makes it appear whole and only if absent. Local segments keep
/// their own, smaller cap.
const DEFAULT_MAX_OBJECT_BYTES: usize = 128 << 20;
/// The `Handler` of the compaction function in template.yaml; the provided runtime passes it
/// on as `_HANDLER`.
pub const HANDLER: &str = "compact";
/// Under Lambda a run stops starting new work this long (or a tenth of its time, if less) before
/// the function's deadline, so it ends with a report (and a metric) rather than being cut off.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
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
}

impl Options {
    /// The defaults for a run at `now`.
    pub fn defaults(now: OffsetDateTime) -> Options {
        Options {
            through: now.date() - time::Duration::days(DEFAULT_LAG_DAYS),
            min_age: DEFAULT_MIN_AGE,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            deadline: None,
        }
    }

    /// Reads `[--through YYYY-MM-DD] [--min-age SECONDS] [--max-object-bytes N]`.
    pub fn parse(args: impl IntoIterator<Item = String>, now: OffsetDateTime) -> Result<Options, String> {
        let mut options = Options::defaults(now);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
                None => (flag, None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--through" => {
                    options.through =
                        parse_date(&value()?).ok_or_else(|| "--through must be a date such as 2026-11-26".to_owned())?
                }
                "--min-age" => {
                    let v = value()?;
                    options.min_age = Duration::from_secs(
                        v.parse().map_err(|_| format!("--min-age must be a whole number of seconds, got {v:?}"))?,
                    );
                }
                "--max-object-bytes" => {
                    let v = value()?;
                    options.max_object_bytes = v
                        .parse()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| format!("--max-object-bytes must be a whole number of bytes, got {v:?}"))?;
                }
                other => {
                    return Err(format!(
                        "unknown argument {other:?}: usage: mailhook compact [--through YYYY-MM-DD] [--min-age SECONDS] [--max-object-bytes N]"
                    ));
                }
            }
        }
        Ok(options)
    }
}

fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// The date of a partition directory or prefix named `dt=YYYY-MM-DD`.
fn partition_date(name: &str) -> Option<Date> {
    parse_date(name.trim_end_matches('/').strip_prefix("dt=")?)
}

/// The id a per-event key's file name spells: `<32 hex>.jsonl`.
fn per_event_id(file_name: &str) -> Option<[u8; 16]> {
    parse_hex(file_name.strip_suffix(".jsonl")?.as_bytes())
}

/// Checks that `body` is one whole stored line whose id is `id`. Anything else (a line written
/// before lines carried their id, or an object mailhook did not write) is left where it is.
fn mergeable(body: &[u8], id: &[u8; 16]) -> bool {
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
    /// Merged objects (or segments) written.
    pub written: u64,
    /// Per-event objects left in place because they are not one verifiable line.
    pub skipped: u64,
    /// Partitions that could not be finished, with the reason.
    pub failed: Vec<(Date, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} partitions considered, {} events merged into {} objects, {} copies of merged events deleted, {} objects skipped, {} partitions failed",
            self.partitions,
            self.merged,
            self.written,
            self.already_merged,
            self.skipped,
            self.failed.len()
        )
    }
}

/// What one partition's run did; added into the `Report`.
#[derive(Debug, Default)]
struct Done {
    merged: u64,
    already_merged: u64,
    written: u64,
    skipped: u64,
}

impl Report {
    fn add(&mut self, done: &Done) {
        self.merged += done.merged;
        self.already_merged += done.already_merged;
        self.written += done.written;
        self.skipped += done.skipped;
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

/// Stops work that would start after the deadline.
fn out_of_time(options: &Options) -> Option<String> {
    options
        .deadline
        .filter(|d| Instant::now() >= *d)
        .map(|_| "stopped before the function's timeout; the next run goes on from here".to_owned())
}

/// Compacts the archive `config` names. Partitions are done one after another, oldest first; a
/// failed partition is reported and the run goes on with the next.
pub async fn run(config: &CompactConfig, options: &Options) -> Result<Report, String> {
    match &config.access.archive {
        ArchiveTarget::S3 { bucket, prefix } => {
            let client = s3_client(config).await;
            s3::Compactor { client, bucket: bucket.clone(), prefix: prefix.clone() }.run(options).await
        }
        ArchiveTarget::Dir(root) => {
            let (root, options) = (root.clone(), options.clone());
            tokio::task::spawn_blocking(move || dir::run(&root, &options))
                .await
                .map_err(|e| format!("the local compaction stopped: {e}"))?
        }
    }
}

/// The S3 client for compaction: longer attempts than the receiver's (a merged object is up to
/// `max_object_bytes`), and more retries, since nobody is waiting on an answer.
async fn s3_client(config: &CompactConfig) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build();
    let retries = RetryConfig::standard().with_max_attempts(5);
    crate::build_s3_client(crate::sdk_loader(config.lambda), config.access.s3_force_path_style, timeouts, retries).await
}

/// The compaction function: each invocation (the daily schedule) runs once. The event may hold
/// `{"through": "YYYY-MM-DD", "min_age_seconds": N}`; anything else in it is ignored. A run that
/// leaves a partition unfinished returns an error, which Lambda counts in `Errors`, after one
/// EMF line whose `CompactionFailed` the template's alarm watches.
pub async fn serve_lambda(config: CompactConfig) -> Result<(), crate::Error> {
    use lambda_http::{LambdaEvent, service_fn};
    let config = &config;
    lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let mut options = Options::defaults(OffsetDateTime::now_utc());
        if let Some(through) = event.payload.get("through").and_then(|v| v.as_str()) {
            options.through = parse_date(through)
                .ok_or_else(|| format!("\"through\" must be a date such as 2026-11-26, got {through:?}"))?;
        }
        if let Some(seconds) = event.payload.get("min_age_seconds").and_then(serde_json::Value::as_u64) {
            options.min_age = Duration::from_secs(seconds);
        }
        let deadline = std::time::UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        let left = deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        options.deadline = Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN.min(left / 10)));
        let report = run(config, &options).await.map_err(|e| {
            let failed = Report { failed: vec![(options.through, e.clone())], ..Report::default() };
            emit(&config.function_name, &failed);
            tracing::error!("{e}");
            CompactionFailed(e)
        })?;
        emit(&config.function_name, &report);
        tracing::info!(through = %options.through, "{report}");
        match report.failure() {
            None => Ok(serde_json::json!({ "merged": report.merged, "written": report.written })),
            Some(message) => {
                tracing::error!("{message}");
                Err(CompactionFailed(message))
            }
        }
    }))
    .await
}

/// What a failed invocation reports to Lambda.
#[derive(Debug)]
pub struct CompactionFailed(String);

impl From<String> for CompactionFailed {
    fn from(message: String) -> Self {
        CompactionFailed(message)
    }
}

impl From<CompactionFailed> for lambda_http::lambda_runtime::Diagnostic {
    fn from(e: CompactionFailed) -> Self {
        lambda_http::lambda_runtime::Diagnostic { error_type: "CompactionFailed".into(), error_message: e.0 }
    }
}

fn emit(function_name: &str, report: &Report) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", emf_line(function_name, report, std::time::SystemTime::now()));
}

/// One EMF line for a compaction run: `CompactionFailed` (partitions not finished) is what the
/// template's alarm watches.
pub fn emf_line(function_name: &str, report: &Report, now: std::time::SystemTime) -> String {
    let metric = |name: &str| serde_json::json!({ "Name": name, "Unit": "Count" });
    serde_json::json!({
        "_aws": {
            "Timestamp": now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
            "CloudWatchMetrics": [{
                "Namespace": crate::metrics::NAMESPACE,
                "Dimensions": [[crate::metrics::DIMENSION]],
                "Metrics": [metric("CompactionFailed"), metric("CompactedEvents"), metric("CompactedObjectsWritten")],
            }],
        },
        crate::metrics::DIMENSION: function_name,
        "CompactionFailed": report.failed.len(),
        "CompactedEvents": report.merged,
        "CompactedObjectsWritten": report.written,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| (*s).to_owned()), time::macros::datetime!(2026-03-01 00:30 UTC))
    }

    #[test]
    fn defaults_are_two_days_back_and_an_hour_old() {
        let o = parse(&[]).unwrap();
        // Across a month's end, from just after midnight.
        assert_eq!(o.through, time::macros::date!(2026 - 02 - 27));
        assert_eq!(o.min_age, Duration::from_secs(3600));
        assert_eq!(o.max_object_bytes, 128 << 20);
    }

    #[test]
    fn flags_are_read_and_checked() {
        let o = parse(&["--through", "2026-01-31", "--min-age=0", "--max-object-bytes", "1000"]).unwrap();
        assert_eq!(o.through, time::macros::date!(2026 - 01 - 31));
        assert_eq!(o.min_age, Duration::ZERO);
        assert_eq!(o.max_object_bytes, 1000);
        assert!(parse(&["--through", "2026-02-30"]).unwrap_err().contains("--through"));
        assert!(parse(&["--min-age", "-1"]).unwrap_err().contains("--min-age"));
        assert!(parse(&["--min-age"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--max-object-bytes", "0"]).unwrap_err().contains("--max-object-bytes"));
        assert!(parse(&["--dry-run"]).unwrap_err().contains("usage"));
    }

    #[test]
    fn names_are_read_strictly() {
        assert_eq!(partition_date("dt=2026-11-26/"), Some(time::macros::date!(2026 - 11 - 26)));
        assert_eq!(partition_date("dt=2026-11-26"), Some(time::macros::date!(2026 - 11 - 26)));
        assert_eq!(partition_date("dt=2026-11"), None);
        assert_eq!(partition_date("year=2026"), None);
        assert!(per_event_id("0123456789abcdef0123456789abcdef.jsonl").is_some());
        assert!(per_event_id("0123456789abcdef0123456789abcdef.jsonl.gz").is_none());
        assert!(per_event_id("merged-0123456789abcdef0123456789abcdef.jsonl").is_none());
    }

    #[test]
    fn only_one_verified_line_is_mergeable() {
        use crate::record::{Meta, Record};
        let raw = r#"{"mailbox":"a@b.c","uid":1,"tstamp":1764150000,"event":"create","folder":"INBOX"}"#;
        let event = crate::webhook::parse_body(raw.as_bytes(), 1 << 20).unwrap();
        let record = Record::new(&event, &Meta::default(), OffsetDateTime::now_utc(), "");
        let name = record.key.rsplit_once('/').unwrap().1;
        let id = per_event_id(name).unwrap();
        assert!(mergeable(&record.line, &id));
        assert!(!mergeable(&record.line[..record.line.len() - 1], &id), "no newline");
        assert!(!mergeable(&[&record.line[..], &record.line[..]].concat(), &id), "two lines");
        assert!(!mergeable(&record.line, &[0; 16]), "another id");
        let legacy = String::from_utf8(record.line.to_vec()).unwrap();
        let legacy = format!("{}}}\n", &legacy[..legacy.rfind(",\"id\"").unwrap()]);
        assert!(!mergeable(legacy.as_bytes(), &id), "a line from before ids");
    }

    #[test]
    fn the_emf_line_names_the_alarm_metric() {
        let report =
            Report { failed: vec![(time::macros::date!(2026 - 11 - 26), "x".into())], merged: 5, ..Report::default() };
        let line: serde_json::Value =
            serde_json::from_str(&emf_line("compactor", &report, std::time::SystemTime::now())).unwrap();
        assert_eq!(line["CompactionFailed"], 1);
        assert_eq!(line["CompactedEvents"], 5);
        assert_eq!(line["FunctionName"], "compactor");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "mailhook");
        assert_eq!(report.failure().unwrap(), "compacting partition dt=2026-11-26 failed: x");
    }
}
