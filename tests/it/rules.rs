//! One test per request rule, in the order the rules are checked.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use futures_util::StreamExt;
use mailhook::archive::{Archive, ArchiveError, DirArchive, Stored};
use mailhook::http::router;
use support::*;

const EVENT: &str =
    r#"{"mailbox":"info@example.com","uid":1,"tstamp":1795711572,"event":"create","folder":"INBOX","flags":[]}"#;

fn post() -> axum::http::request::Builder {
    Request::builder().method(Method::POST).uri("/").header("x-webhook-token", TOKEN)
}

fn webhook(body: impl AsRef<[u8]>) -> Request<Body> {
    post().body(Body::from(body.as_ref().to_vec())).unwrap()
}

async fn assert_rejected(request: Request<Body>, status: u16, error: &str) {
    let (app, dir) = dir_app();
    let reply = call(&app, request).await;
    assert_eq!(reply.status.as_u16(), status, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json(), serde_json::json!({ "ok": false, "error": error }));
    assert!(stored(dir.path()).is_empty(), "a rejected request stores nothing");
}

#[tokio::test]
async fn confirm_file_serves_the_account_id_without_a_token() {
    let (app, _dir) = dir_app();
    let reply = call(&app, Request::get("/webhook-confirm.txt").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(reply.body, ACCOUNT_ID.as_bytes());
    let head = call(&app, Request::head("/webhook-confirm.txt").body(Body::empty()).unwrap()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn confirm_file_without_account_id_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = Arc::into_inner(support::state(DirArchive::open(dir.path()).unwrap(), "")).unwrap();
    state.account_id = None;
    let app = router(Arc::new(state));
    let reply = call(&app, Request::get("/webhook-confirm.txt").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), serde_json::json!({ "ok": false, "error": "Not Found" }));
}

#[tokio::test]
async fn any_method_but_post_is_405_with_allow_post() {
    for (method, path) in [
        (Method::GET, "/"),
        (Method::HEAD, "/"),
        (Method::PUT, "/"),
        (Method::DELETE, "/"),
        (Method::PATCH, "/"),
        (Method::OPTIONS, "/"),
        (Method::GET, "/webhook.php"),
        (Method::PUT, "/webhook-confirm.txt"),
        (Method::DELETE, "/webhook-confirm.txt"),
        (Method::GET, "/x/../webhook-confirm.txt/"),
    ] {
        let (app, dir) = dir_app();
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("x-webhook-token", TOKEN)
            .body(Body::from(EVENT))
            .unwrap();
        let reply = call(&app, request).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(reply.headers[header::ALLOW], "POST");
        if method != Method::HEAD {
            assert_eq!(reply.json()["error"], "Method Not Allowed");
        }
        assert!(stored(dir.path()).is_empty());
    }
}

#[tokio::test]
async fn method_is_checked_before_the_token() {
    assert_rejected(Request::get("/").body(Body::empty()).unwrap(), 405, "Method Not Allowed").await;
}

#[tokio::test]
async fn missing_token_is_401() {
    assert_rejected(Request::post("/").body(Body::from(EVENT)).unwrap(), 401, "Incorrect webhook token").await;
}

#[tokio::test]
async fn wrong_token_is_401() {
    for wrong in ["wrong", "EXAMPLE-TOKEN", "example-token ", "example-token,old-token", ""] {
        let request = Request::post("/").header("X-Webhook-Token", wrong).body(Body::from(EVENT)).unwrap();
        assert_rejected(request, 401, "Incorrect webhook token").await;
    }
}

#[tokio::test]
async fn token_elsewhere_than_its_header_is_401() {
    let in_query = Request::post("/?token=example-token").body(Body::from(EVENT)).unwrap();
    assert_rejected(in_query, 401, "Incorrect webhook token").await;
    let in_authorization =
        Request::post("/").header("authorization", format!("Bearer {TOKEN}")).body(Body::from(EVENT)).unwrap();
    assert_rejected(in_authorization, 401, "Incorrect webhook token").await;
    let repeated = Request::post("/")
        .header("x-webhook-token", TOKEN)
        .header("x-webhook-token", "other")
        .body(Body::from(EVENT))
        .unwrap();
    assert_rejected(repeated, 401, "Incorrect webhook token").await;
}

#[tokio::test]
async fn every_configured_token_is_accepted() {
    for token in [TOKEN, "old-token"] {
        let (app, dir) = dir_app();
        let request = Request::post("/").header("X-WEBHOOK-TOKEN", token).body(Body::from(EVENT)).unwrap();
        assert_eq!(call(&app, request).await.status, StatusCode::OK, "{token}");
        assert_eq!(stored(dir.path()).len(), 1);
    }
}

#[tokio::test]
async fn token_is_checked_before_the_body() {
    assert_rejected(
        Request::post("/").header("x-webhook-token", "nope").body(Body::empty()).unwrap(),
        401,
        "Incorrect webhook token",
    )
    .await;
}

#[tokio::test]
async fn empty_body_is_400() {
    assert_rejected(webhook(b""), 400, "Empty body").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let padding = " ".repeat(1024 * 1024 - EVENT.len());
    let at_limit = format!("{EVENT}{padding}");
    let (app, dir) = dir_app();
    assert_eq!(call(&app, post().body(Body::from(at_limit.clone())).unwrap()).await.status, StatusCode::OK);
    assert_eq!(stored(dir.path()).len(), 1);
    let over = format!("{at_limit} ");
    assert_rejected(post().body(Body::from(over)).unwrap(), 413, "Body larger than 1048576 bytes").await;
}

#[tokio::test]
async fn body_that_is_not_utf8_is_400() {
    assert_rejected(webhook(b"{\"subject\":\"\xc3\x28\"}"), 400, "Invalid JSON: body is not UTF-8").await;
}

#[tokio::test]
async fn invalid_json_is_400_with_the_parser_message() {
    assert_rejected(webhook(b"{\"mailbox\":"), 400, "Invalid JSON: EOF while parsing a value at line 1 column 11")
        .await;
    assert_rejected(webhook(b"{} {}"), 400, "Invalid JSON: trailing characters at line 1 column 4").await;
}

#[tokio::test]
async fn json_that_is_not_an_object_is_400() {
    assert_rejected(webhook(b"[{\"event\":\"new\"}]"), 400, "Invalid JSON: expected an object, got an array").await;
    assert_rejected(webhook(b"\"new\""), 400, "Invalid JSON: expected an object, got a string").await;
}

#[tokio::test]
async fn compressed_body_is_415() {
    let request = post().header(header::CONTENT_ENCODING, "gzip").body(Body::from(&b"\x1f\x8b\x08\x00"[..])).unwrap();
    assert_rejected(request, 415, "Unsupported Content-Encoding: send the body uncompressed").await;
}

#[tokio::test]
async fn no_content_type_is_needed() {
    let (app, dir) = dir_app();
    let request = post().header(header::CONTENT_TYPE, "text/plain").body(Body::from(EVENT)).unwrap();
    assert_eq!(call(&app, request).await.status, StatusCode::OK);
    assert_eq!(call(&app, webhook(b"{\"event\":\"new\"}")).await.status, StatusCode::OK);
    assert_eq!(stored(dir.path()).len(), 2);
}

#[tokio::test]
async fn every_answer_is_json_with_security_headers() {
    let (app, _dir) = dir_app();
    for request in [
        webhook(EVENT),
        webhook(b""),
        Request::get("/").body(Body::empty()).unwrap(),
        Request::get("/webhook-confirm.txt").body(Body::empty()).unwrap(),
    ] {
        let reply = call(&app, request).await;
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        if reply.headers[header::CONTENT_TYPE] != "text/plain; charset=utf-8" {
            assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json; charset=utf-8");
            assert!(reply.json()["ok"].is_boolean());
        }
        assert!(!String::from_utf8_lossy(&reply.body).contains(TOKEN), "the token is never echoed");
    }
}

#[tokio::test]
async fn failed_write_is_500_and_says_nothing_internal() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(support::state(DirArchive::open(dir.path()).unwrap(), ""));
    // A file where the partition directory belongs makes the write fail: the receive date's
    // partition, today's or, should the test run across UTC midnight, tomorrow's.
    let today = time::OffsetDateTime::now_utc().date();
    for day in [today, today.next_day().unwrap()] {
        std::fs::write(dir.path().join(format!("dt={day}")), b"").unwrap();
    }
    let reply = call(&app, webhook(br#"{"event":"new","tstamp":null}"#)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json(), serde_json::json!({ "ok": false, "error": "Failed to store the event" }));
    assert!(stored(dir.path()).is_empty(), "nothing is stored");
}

/// A store that never answers: S3 stalled.
struct Stalled;

impl Archive for Stalled {
    async fn put_new(&self, _key: &mailhook::layout::Key, _line: Bytes) -> Result<Stored, ArchiveError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn stalled_store_is_500_within_the_budget() {
    let app = router(state_with_budget(Stalled, "", Duration::from_millis(300)));
    let started = Instant::now();
    let reply = call(&app, webhook(EVENT)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408() {
    let (app, dir) = dir_app();
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{\"event\":"))]);
    let stalled = first.chain(futures_util::stream::pending());
    let request = post().body(Body::from_stream(stalled)).unwrap();
    let started = Instant::now();
    let reply = call(&app, request).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.json()["error"], "Timed out reading the body");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stored(dir.path()).is_empty());
}

#[tokio::test]
async fn a_tstamp_outside_years_0_to_9999_is_stored_with_a_null_event_time() {
    // Found by the fuzzer: this used to panic while formatting the event time.
    let (app, dir) = dir_app();
    let reply = call(&app, webhook(br#"{"tstamp": "-0000090099641294", "event": "new"}"#)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let stored = stored(dir.path());
    let line: serde_json::Value = serde_json::from_slice(&stored[0].1).unwrap();
    assert_eq!(line["event_time"], serde_json::Value::Null);
    assert_eq!(stored[0].0, expected_key("", &line), "the receive date");
    assert!(stored[0].0.starts_with(&format!("dt={}/", &line["ts"].as_str().unwrap()[..10])));
}
