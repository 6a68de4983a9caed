//! The compaction function (`Handler: compact`): each invocation, the schedule's (four a day), runs
//! once. The event may hold `{"through": "YYYY-MM-DD", "min_age_seconds": N}`; anything else in
//! it is ignored. A run that leaves a partition unfinished returns an error, which Lambda counts
//! in `Errors`, after one EMF line whose `CompactionFailed` the template's alarm watches. A run
//! that finds another holding the lease did nothing wrong: it logs so and succeeds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::lambda_runtime::Diagnostic;
use lambda_http::{LambdaEvent, service_fn};
use time::OffsetDateTime;

use super::lease::LeaseError;
use super::{CompactError, Options, Report, compact};
use crate::config::CompactConfig;
use crate::layout::parse_date;
use crate::telemetry::metrics::emit_compaction;

/// A run stops starting new work this long (or a tenth of its time, if less) before the
/// function's deadline, so it ends with a report (and a metric) rather than being cut off.
const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

pub async fn serve_lambda(config: CompactConfig) -> Result<(), crate::BoxError> {
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
        let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(event.context.deadline));
        let left = deadline.and_then(|d| d.duration_since(SystemTime::now()).ok()).unwrap_or_default();
        options.deadline = Instant::now().checked_add(left.saturating_sub(DEADLINE_MARGIN.min(left / 10)));
        let report = match compact(config, &options).await {
            // Another run is at work (one by hand: the schedule's are one at a time, by
            // ReservedConcurrentExecutions): nothing to do, and no failure. Counted as
            // CompactionLeaseHeld, whose alarm fires only when a whole day's runs found it held.
            Err(CompactError::Lease(held @ LeaseError::Held { .. })) => {
                tracing::info!("{held}");
                emit_compaction(&config.function_name, &Report { lease_held: true, ..Report::default() });
                return Ok(serde_json::json!({ "merged": 0, "written": 0, "lease_held": true }));
            }
            report => report,
        };
        let report = report.map_err(|e| {
            let e = e.to_string();
            let failed = Report { failed: vec![(options.through, e.clone())], ..Report::default() };
            emit_compaction(&config.function_name, &failed);
            tracing::error!("{e}");
            CompactionFailed(e)
        })?;
        emit_compaction(&config.function_name, &report);
        tracing::info!(through = %options.through, "{report}");
        match report.failure() {
            // Partitions the deadline left for the next run: not a failure.
            None => Ok(serde_json::json!({
                "merged": report.merged, "written": report.written, "left_for_next_run": report.cut_off.len()
            })),
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

impl From<CompactionFailed> for Diagnostic {
    fn from(e: CompactionFailed) -> Self {
        Diagnostic { error_type: "CompactionFailed".into(), error_message: e.0 }
    }
}
