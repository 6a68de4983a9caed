//! The S3 destination against a real S3-compatible server (s3s-fs) on loopback, through
//! mailhook's own client settings: key, stored bytes, create-only, and 5xx when S3 fails.

use crate::support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use mailhook::archive::{Archive, ArchiveError, CONTENT_TYPE, S3Archive, Stored};
use mailhook::http::router;
use mailhook::layout::{Id, Key};
use support::*;

#[tokio::test]
async fn accepted_event_is_one_object_under_its_partition_key() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = s3_server(root.path()).await;
    let client = s3_client(&s3_config(&[]), endpoint).await;
    let app = router(state(S3Archive::new(client.clone(), BUCKET), "mail/"));

    let reply = call(&app, support::event("new.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));

    let objects = bucket_objects(&client).await;
    assert_eq!(objects.len(), 1);
    let (key, bytes, content_type) = &objects[0];
    let line: serde_json::Value = serde_json::from_str(bytes).unwrap();
    assert_eq!(*key, expected_key("mail/", &line));
    assert_eq!(content_type.as_deref(), Some(CONTENT_TYPE));
    assert!(bytes.ends_with('\n'));
    let body = String::from_utf8(event_body("new.json")).unwrap();
    assert!(bytes.contains(&format!("\"data\":{body},")), "{bytes}");
    assert_eq!(line["event"], "new");
    assert_eq!(line["event_time"], "2026-11-26T16:46:12.000Z");
}

#[tokio::test]
async fn resend_leaves_the_first_object_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = s3_server(root.path()).await;
    let client = s3_client(&s3_config(&[]), endpoint).await;
    let app = router(state(S3Archive::new(client.clone(), BUCKET), "mail/"));

    for name in ["create.json", "flags-set.json", "flags-set-deleted.json"] {
        assert_eq!(call(&app, support::event(name)).await.status, StatusCode::OK);
    }
    let first = bucket_objects(&client).await;
    assert_eq!(first.len(), 3);
    // The resend 15 minutes later, pretty-printed this time: same key, 412 from S3, 200 to the sender.
    let compact = String::from_utf8(event_body("create.json")).unwrap();
    let pretty = compact.replace('{', "{\n  ").replace(',', ",\n  ").replace("\":", "\": ").replace('}', "\n}");
    assert_ne!(pretty, compact);
    let resend = Request::post("/").header("x-webhook-token", TOKEN).body(Body::from(pretty)).unwrap();
    assert_eq!(call(&app, resend).await.status, StatusCode::OK);
    assert_eq!(call(&app, support::event("flags-set.json")).await.status, StatusCode::OK);
    assert_eq!(bucket_objects(&client).await, first, "no object was added or overwritten");
}

#[tokio::test]
async fn archive_reports_created_then_already_present() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = s3_server(root.path()).await;
    let archive = S3Archive::new(s3_client(&s3_config(&[]), endpoint).await, BUCKET);
    let key = Key::new("mail/", time::macros::date!(2026 - 11 - 26), Id::of(b"first"));
    assert_eq!(archive.put_new(&key, Bytes::from_static(b"first\n")).await.unwrap(), Stored::Created);
    assert_eq!(archive.put_new(&key, Bytes::from_static(b"second\n")).await.unwrap(), Stored::AlreadyPresent);
    assert_eq!(std::fs::read(root.path().join(BUCKET).join(key.format())).unwrap(), b"first\n");
}

#[tokio::test]
async fn unreachable_s3_is_500_in_time_and_200_once_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let port = closed_port();
    let config = s3_config(&[("STORE_TIMEOUT_MS", "2000")]);
    let client = s3_client(&config, port).await;
    let app = router(state_with_budget(S3Archive::new(client.clone(), BUCKET), "mail/", config.store_timeout));

    let started = Instant::now();
    let reply = call(&app, support::event("create.json")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json(), serde_json::json!({ "ok": false, "error": "Failed to store the event" }));
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());

    // S3 comes back on the same address: the resend is stored.
    let back = s3_server_on(root.path(), port).await;
    assert_eq!(back, port);
    assert_eq!(call(&app, support::event("create.json")).await.status, StatusCode::OK);
    assert_eq!(bucket_objects(&client).await.len(), 1);
}

#[tokio::test]
async fn stalled_s3_is_500_before_the_budget_runs_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let config = s3_config(&[("STORE_TIMEOUT_MS", "1000")]);
    let app =
        router(state_with_budget(S3Archive::new(s3_client(&config, addr).await, BUCKET), "", config.store_timeout));
    let started = Instant::now();
    assert_eq!(call(&app, support::event("new.json")).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The store budget ends the whole store, retries included (three attempts of half the budget
    // each would run to at least 1.5 s).
    let took = started.elapsed();
    assert!(took < config.store_timeout + Duration::from_millis(400), "answered after {took:?}");
}

#[tokio::test]
async fn refused_write_is_an_error_naming_bucket_and_key() {
    let root = tempfile::tempdir().unwrap();
    let endpoint = s3_server(root.path()).await;
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{endpoint}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, "not-the-secret", None, None, "tests"));
    let config = s3_config(&[]);
    let archive =
        S3Archive::new(mailhook::aws::receiver_client(&config.access.s3, config.store_timeout, loader).await, BUCKET);
    let key = Key::new("", time::macros::date!(2026 - 11 - 26), Id::of(b"x"));
    let err = archive.put_new(&key, Bytes::from_static(b"x\n")).await.unwrap_err();
    assert!(matches!(err, ArchiveError::S3 { .. }));
    let message = err.to_string();
    assert!(message.starts_with(&format!("PutObject s3://mail-archive/{key} failed:")), "{message}");
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(files(root.path()).is_empty());
}
