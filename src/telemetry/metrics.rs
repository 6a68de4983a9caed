//! What became of each webhook request, counted where an operator can alarm on it.
//!
//! - Under Lambda: one CloudWatch Embedded Metric Format line per request on stdout, which
//!   CloudWatch Logs turns into metrics. No API call, no added latency, no extra permission.
//! - Locally, with `METRICS_ADDR`: Prometheus (OpenMetrics) text at `/metrics`, on a listener of
//!   its own, from prometheus-client.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The CloudWatch namespace of the EMF metrics; template.yaml's alarms watch it.
pub const NAMESPACE: &str = "mailhook";
/// The one dimension: each distinct dimension set is a metric, billed monthly.
pub const DIMENSION: &str = "FunctionName";

/// What became of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored now.
    Stored,
    /// Stored before: a resend.
    Duplicate,
    /// Refused with a 4xx: nothing to store, or not allowed to.
    Rejected,
    /// The write failed or ran out of time: 500, and the sender's one resend is the last chance.
    Failed,
    /// The local writer's queue was full (its disk is not keeping up): 503, nothing stored.
    Busy,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Busy => "busy",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// One request's figures.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub outcome: Outcome,
    /// A 401 to a request carrying the provider's User-Agent: almost surely a token that changed
    /// in the panel, which loses every event until it is fixed.
    pub sender_refused: bool,
    /// How long the store call took, when there was one.
    pub store: Option<Duration>,
}

/// Where samples go.
#[derive(Debug, Default)]
pub enum Metrics {
    /// Nowhere: a local server without `METRICS_ADDR`, and tests.
    #[default]
    Off,
    /// EMF lines on stdout, with the function's name as the dimension.
    Emf { function_name: String },
    /// Prometheus counters, read by the `/metrics` listener.
    Prometheus(Prometheus),
}

impl Metrics {
    pub fn record(&self, sample: Sample) {
        match self {
            Metrics::Off => {}
            Metrics::Emf { function_name } => print(&emf_line(function_name, sample, SystemTime::now())),
            Metrics::Prometheus(p) => {
                p.requests.get_or_create(&OutcomeLabel { outcome: sample.outcome }).inc();
                if let Some(store) = sample.store {
                    p.store_seconds.observe(store.as_secs_f64());
                }
            }
        }
    }
}

/// The EMF line for one request: every count (0 or 1) each time, so a sum over any period is
/// exact, and the store latency when a store was tried.
pub fn emf_line(function_name: &str, sample: Sample, now: SystemTime) -> String {
    let is = |outcome| f64::from(u8::from(sample.outcome == outcome));
    let mut values = vec![
        ("Stored", COUNT, is(Outcome::Stored)),
        ("Duplicate", COUNT, is(Outcome::Duplicate)),
        // Stored or a resend of a stored event: the silence alarm's metric. Only a request with a
        // valid token and a body that was stored can make it 1.
        ("Accepted", COUNT, is(Outcome::Stored) + is(Outcome::Duplicate)),
        ("Rejected", COUNT, is(Outcome::Rejected)),
        // Lambda stores in S3, which is never Busy; counted as a failure should that change.
        ("StoreFailed", COUNT, is(Outcome::Failed) + is(Outcome::Busy)),
        ("SenderRefused", COUNT, f64::from(u8::from(sample.sender_refused))),
    ];
    if let Some(store) = sample.store {
        values.push(("StoreLatency", "Milliseconds", millis(store)));
    }
    emf(function_name, &values, now, emf_level())
}

/// Writes one EMF line for a compaction run.
pub fn emit_compaction(function_name: &str, report: &crate::compact::Report) {
    print(&compaction_emf_line(function_name, report, SystemTime::now()));
}

/// Writes an EMF line to stdout, where CloudWatch Logs reads it. Not println!, which panics if
/// stdout is gone: a lost metric must not fail a request or a run.
fn print(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `d` in milliseconds, rounded to two decimals: a store's latency, a request's duration.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// The EMF line for a compaction run: `CompactionFailed` (partitions not finished) is what the
/// template's alarm watches.
pub fn compaction_emf_line(function_name: &str, report: &crate::compact::Report, now: SystemTime) -> String {
    let values = [
        ("CompactionFailed", COUNT, report.failed.len() as f64),
        ("CompactedEvents", COUNT, report.merged as f64),
        ("CompactedObjectsWritten", COUNT, report.written as f64),
        ("CompactionLeaseHeld", COUNT, f64::from(u8::from(report.lease_held))),
    ];
    emf(function_name, &values, now, emf_level())
}

const COUNT: &str = "Count";

/// One Embedded Metric Format line: the values as (name, unit, value), under the one dimension.
///
/// It carries a `level` and an RFC 3339 `timestamp`, as Lambda's log-level filtering reads them:
/// a JSON line without either is taken as INFO, and dropped at WARN, ERROR and FATAL, which
/// would silence every alarm. The level is the function's own setting, the least severe one the
/// filter keeps, so the line reaches CloudWatch at every setting.
fn emf(function_name: &str, values: &[(&'static str, &'static str, f64)], now: SystemTime, level: &str) -> String {
    use serde::ser::{SerializeMap, Serializer as _};

    /// A metric's declaration in the `_aws` directive.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Definition {
        name: &'static str,
        unit: &'static str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Directive<'a> {
        namespace: &'static str,
        dimensions: [[&'static str; 1]; 1],
        metrics: &'a [Definition],
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Aws<'a> {
        timestamp: u64,
        cloud_watch_metrics: [Directive<'a>; 1],
    }

    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = time::OffsetDateTime::UNIX_EPOCH + since_epoch;
    let definitions: Vec<Definition> = values.iter().map(|&(name, unit, _)| Definition { name, unit }).collect();
    let aws = Aws {
        timestamp: since_epoch.as_millis() as u64,
        cloud_watch_metrics: [Directive { namespace: NAMESPACE, dimensions: [[DIMENSION]], metrics: &definitions }],
    };
    // Written straight into the line, in this order; a serializer over a Vec cannot fail.
    const INFALLIBLE: &str = "serialising to a Vec";
    let mut line = Vec::with_capacity(640);
    let mut serializer = serde_json::Serializer::new(&mut line);
    let mut map = serializer.serialize_map(None).expect(INFALLIBLE);
    map.serialize_entry("level", level).expect(INFALLIBLE);
    let stamp = timestamp.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    map.serialize_entry("timestamp", &stamp).expect(INFALLIBLE);
    map.serialize_entry("_aws", &aws).expect(INFALLIBLE);
    map.serialize_entry(DIMENSION, function_name).expect(INFALLIBLE);
    for &(name, _, value) in values {
        // Counts as integers, as CloudWatch shows them.
        if value.fract() == 0.0 && value.abs() < 1e15 {
            map.serialize_entry(name, &(value as i64)).expect(INFALLIBLE);
        } else {
            map.serialize_entry(name, &value).expect(INFALLIBLE);
        }
    }
    map.end().expect(INFALLIBLE);
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

/// The level stamped on EMF lines: `AWS_LAMBDA_LOG_LEVEL` (which Lambda sets from the function's
/// ApplicationLogLevel), read once.
fn emf_level() -> &'static str {
    static LEVEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    LEVEL.get_or_init(|| level_kept_at(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref()))
}

/// The least severe level Lambda's filter keeps at this setting; INFO, as Lambda assumes, for
/// none or one it does not know.
pub fn level_kept_at(setting: Option<&str>) -> &'static str {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let setting = setting.unwrap_or_default().trim();
    LEVELS.into_iter().find(|level| level.eq_ignore_ascii_case(setting)).unwrap_or("INFO")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

/// The local server's counters.
#[derive(Debug)]
pub struct Prometheus {
    requests: Family<OutcomeLabel, Counter>,
    store_seconds: Histogram,
    registry: Registry,
}

impl Default for Prometheus {
    fn default() -> Self {
        let requests = Family::<OutcomeLabel, Counter>::default();
        // Every outcome from the start, at 0, so a rate or an alert on `failed` has a series to read.
        for outcome in [Outcome::Stored, Outcome::Duplicate, Outcome::Rejected, Outcome::Failed, Outcome::Busy] {
            drop(requests.get_or_create(&OutcomeLabel { outcome }));
        }
        // 1 ms to 10 s: from a local sync to an S3 write near the store budget (BENCHMARKS.md).
        let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let store_seconds = Histogram::new(buckets);
        let mut registry = Registry::with_prefix("mailhook");
        registry.register("requests", "Webhook requests by outcome", requests.clone());
        registry.register("store_seconds", "Time to store an event, retries included", store_seconds.clone());
        Prometheus { requests, store_seconds, registry }
    }
}

impl Prometheus {
    /// Every counter, as OpenMetrics text (`openmetrics`), or else as Prometheus's own text format
    /// 0.0.4, which promtool and older scrapers read.
    pub fn text(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let written = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        written.expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_what_it_carries() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_711_572_123);
        let stored =
            Sample { outcome: Outcome::Stored, sender_refused: false, store: Some(Duration::from_micros(12_345)) };
        let line: serde_json::Value = serde_json::from_str(&emf_line("mailhook-fn", stored, at)).unwrap();
        assert_eq!(line["_aws"]["Timestamp"], 1_795_711_572_123u64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([[DIMENSION]]));
        assert_eq!(line[DIMENSION], "mailhook-fn");
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(line[metric["Name"].as_str().unwrap()].is_number(), "{metric} has its value: {line}");
        }
        assert_eq!((line["Stored"].as_u64(), line["StoreFailed"].as_u64()), (Some(1), Some(0)));
        assert_eq!(line["StoreLatency"], 12.35);

        let refused = Sample { outcome: Outcome::Rejected, sender_refused: true, store: None };
        let line: serde_json::Value = serde_json::from_str(&emf_line("f", refused, at)).unwrap();
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"StoreLatency") && line.get("StoreLatency").is_none(), "no store, no latency");
        assert_eq!((line["Rejected"].as_u64(), line["SenderRefused"].as_u64()), (Some(1), Some(1)));
    }

    #[test]
    fn prometheus_counts_by_outcome() {
        let metrics = Metrics::Prometheus(Prometheus::default());
        for outcome in [Outcome::Stored, Outcome::Stored, Outcome::Failed] {
            metrics.record(Sample { outcome, sender_refused: false, store: Some(Duration::from_millis(3)) });
        }
        let Metrics::Prometheus(p) = &metrics else { unreachable!() };
        let text = p.text(true);
        assert!(text.contains("mailhook_requests_total{outcome=\"stored\"} 2"), "{text}");
        assert!(text.contains("mailhook_store_seconds_count 3"), "{text}");
        assert!(text.contains("mailhook_requests_total{outcome=\"duplicate\"} 0"), "every outcome is there: {text}");
        let text = p.text(false);
        assert!(text.contains("# TYPE mailhook_requests_total counter") && !text.contains("# EOF"), "{text}");
    }

    #[test]
    fn the_compaction_emf_line_names_the_alarm_metric() {
        use crate::compact::Report;
        let report =
            Report { failed: vec![(time::macros::date!(2026 - 11 - 26), "x".into())], merged: 5, ..Report::default() };
        let line: serde_json::Value =
            serde_json::from_str(&compaction_emf_line("compactor", &report, std::time::SystemTime::now())).unwrap();
        assert_eq!(line["CompactionFailed"], 1);
        assert_eq!(line["CompactedEvents"], 5);
        assert_eq!(line["FunctionName"], "compactor");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "mailhook");
        assert_eq!(report.failure().unwrap(), "compacting partition dt=2026-11-26 failed: x");
    }
}
