//! S3 faults injected by a proxy in front of a real S3-compatible server: every failure to store
//! is a 5xx within the budget, every 200 means the object is there, exactly once.

use crate::support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use mailhook::archive::{Archive, ArchiveError, S3Archive};
use mailhook::http::router;
use support::fault_proxy::{Fault, FaultProxy};
use support::*;

struct Rig {
    _root: tempfile::TempDir,
    proxy: FaultProxy,
    app: axum::Router,
    archive: S3Archive,
    /// Reads the bucket directly, around the proxy.
    direct: aws_sdk_s3::Client,
    budget: Duration,
}

async fn rig(budget_ms: u64) -> Rig {
    let root = tempfile::tempdir().unwrap();
    let s3 = s3_server(root.path()).await;
    let proxy = FaultProxy::start(s3).await;
    let budget = budget_ms.to_string();
    let config = s3_config(&[("STORE_TIMEOUT_MS", budget.as_str())]);
    let archive = S3Archive::new(s3_client(&config, proxy.addr).await, BUCKET);
    let app = router(state_with_budget(archive.clone(), "mail/", config.store_timeout));
    let direct = s3_client(&s3_config(&[]), s3).await;
    Rig { _root: root, proxy, app, archive, direct, budget: config.store_timeout }
}

impl Rig {
    async fn send(&self, name: &str) -> (StatusCode, Duration) {
        let started = Instant::now();
        let reply = call(&self.app, support::event(name)).await;
        if reply.status != StatusCode::OK {
            assert_eq!(reply.json()["error"], "Failed to store the event", "a failed write says nothing internal");
        }
        (reply.status, started.elapsed())
    }

    async fn objects(&self) -> usize {
        bucket_objects(&self.direct).await.len()
    }

    fn assert_in_budget(&self, took: Duration) {
        assert!(took < self.budget + Duration::from_millis(1500), "answered after {took:?}, budget {:?}", self.budget);
    }
}

#[tokio::test]
async fn a_passing_5xx_is_retried_and_stored() {
    let rig = rig(5000).await;
    rig.proxy.script([Fault::Error(500, "InternalError")]);
    let (status, took) = rig.send("new.json").await;
    assert_eq!(status, StatusCode::OK);
    rig.assert_in_budget(took);
    assert_eq!(rig.proxy.requests(), 2);
    assert_eq!(rig.objects().await, 1);
}

#[tokio::test]
async fn slow_down_is_retried_with_backoff_and_stored() {
    let rig = rig(5000).await;
    rig.proxy.script([Fault::Error(503, "SlowDown"), Fault::Error(503, "SlowDown")]);
    let (status, took) = rig.send("create.json").await;
    assert_eq!(status, StatusCode::OK);
    rig.assert_in_budget(took);
    assert_eq!(rig.proxy.requests(), 3);
    assert_eq!(rig.objects().await, 1);
}

#[tokio::test]
async fn lasting_slow_down_is_500_in_time_and_stores_nothing() {
    let rig = rig(3000).await;
    rig.proxy.always(Fault::Error(503, "SlowDown"));
    let (status, took) = rig.send("create.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    rig.assert_in_budget(took);
    assert_eq!(rig.objects().await, 0);
    // S3 recovers: the sender's resend is stored.
    rig.proxy.always(Fault::Pass);
    assert_eq!(rig.send("create.json").await.0, StatusCode::OK);
    assert_eq!(rig.objects().await, 1);
}

#[tokio::test]
async fn s3_slower_than_the_budget_is_500_before_it_runs_out() {
    let rig = rig(1000).await;
    rig.proxy.always(Fault::Delay(Duration::from_secs(20)));
    let (status, took) = rig.send("flags-set.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    rig.assert_in_budget(took);
}

#[tokio::test]
async fn precondition_failed_means_already_stored() {
    let rig = rig(5000).await;
    rig.proxy.script([Fault::Error(412, "PreconditionFailed")]);
    assert_eq!(rig.send("new.json").await.0, StatusCode::OK);
    assert_eq!(rig.proxy.requests(), 1, "a 412 is final, not retried");
}

#[tokio::test]
async fn conditional_request_conflict_is_retried() {
    let rig = rig(5000).await;
    rig.proxy
        .script([Fault::Error(409, "ConditionalRequestConflict"), Fault::Error(409, "ConditionalRequestConflict")]);
    let (status, took) = rig.send("new.json").await;
    assert_eq!(status, StatusCode::OK);
    rig.assert_in_budget(took);
    assert_eq!(rig.proxy.requests(), 3);
    assert_eq!(rig.objects().await, 1);
}

#[tokio::test]
async fn lasting_conflict_is_500() {
    let rig = rig(5000).await;
    rig.proxy.always(Fault::Error(409, "ConditionalRequestConflict"));
    let (status, took) = rig.send("new.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    rig.assert_in_budget(took);
    assert_eq!(rig.objects().await, 0);
}

#[tokio::test]
async fn access_denied_is_500_and_the_error_names_bucket_and_key() {
    let rig = rig(5000).await;
    rig.proxy.always(Fault::Error(403, "AccessDenied"));
    assert_eq!(rig.send("new.json").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rig.proxy.requests(), 1, "403 is not retried");
    let key = mailhook::layout::Key::new("mail/", time::macros::date!(2026 - 11 - 26), mailhook::layout::Id::of(b"x"));
    let err = rig.archive.put_new(&key, Bytes::from_static(b"x\n")).await.unwrap_err();
    assert!(matches!(err, ArchiveError::S3 { .. }));
    let message = err.to_string();
    assert!(message.contains(&format!("s3://mail-archive/{key}")) && message.contains("AccessDenied"), "{message}");
}

#[tokio::test]
async fn reset_before_the_write_is_retried_and_stored_once() {
    let rig = rig(5000).await;
    rig.proxy.script([Fault::Reset]);
    assert_eq!(rig.send("flags-set-deleted.json").await.0, StatusCode::OK);
    assert_eq!(rig.objects().await, 1);
}

#[tokio::test]
async fn reset_after_the_write_is_200_because_the_object_is_there() {
    let rig = rig(5000).await;
    rig.proxy.script([Fault::ResetAfterForward]);
    assert_eq!(rig.send("flags-set-deleted.json").await.0, StatusCode::OK);
    assert_eq!(rig.proxy.requests(), 2, "the retry met If-None-Match");
    let objects = bucket_objects(&rig.direct).await;
    assert_eq!(objects.len(), 1);
}

#[tokio::test]
async fn lasting_resets_are_500_and_store_nothing() {
    let rig = rig(3000).await;
    rig.proxy.always(Fault::Reset);
    let (status, took) = rig.send("create.json").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    rig.assert_in_budget(took);
    assert_eq!(rig.objects().await, 0);
}
