//! Work per event, in process: request → checks → record → key, with the store stubbed out.
//! `pure` is the checks and the record alone; `router` is the whole service as the local server
//! calls it (`http::handle`, which the Lambda front door calls directly, through axum). Run with
//! `cargo bench --bench request`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailhook::archive::{Archive, ArchiveError, Stored};
use mailhook::http::{AppState, router};
use mailhook::record::{Meta, Record};
use mailhook::webhook::{Tokens, parse_body};
use tower::ServiceExt;

/// Accepts every line without storing it.
struct Discard;

impl Archive for Discard {
    async fn put_new(&self, _key: &mailhook::layout::Key, _line: Bytes) -> Result<Stored, ArchiveError> {
        Ok(Stored::Created)
    }
}

/// The accepted sample events' bodies, plus a new-mail event with a 20 KB snippet.
fn bodies() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in ["new", "create", "flags-set", "flags-set-deleted"] {
        let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        out.push((name.to_owned(), event["body"].as_str().unwrap().as_bytes().to_vec()));
    }
    let mut big: serde_json::Value = serde_json::from_slice(&out[0].1).unwrap();
    big["snippet"] =
        serde_json::Value::from("Добрий день! Lorem ipsum dolor sit amet. ".repeat(400)[..20_000].to_owned());
    out.push(("new-20kb-snippet".to_owned(), serde_json::to_vec(&big).unwrap()));
    out
}

fn pure(c: &mut Criterion) {
    let mut group = c.benchmark_group("pure");
    let meta = Meta {
        request_id: "4f0c6a52-7d1e-4b8f-9e0a-1c2d3e4f5001".into(),
        ip: Some("185.68.16.10".into()),
        ..Meta::default()
    };
    let received = time::OffsetDateTime::now_utc();
    for (name, body) in bodies() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            b.iter(|| {
                let event = parse_body(std::hint::black_box(body), 1 << 20).unwrap();
                Record::new(&event, &meta, received, "mail/")
            })
        });
    }
    group.finish();
}

fn whole_router(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = router(Arc::new(AppState {
        tokens: Tokens::parse("example-token").unwrap().into(),
        account_id: Some("123456".into()),
        max_body_bytes: 1 << 20,
        store_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(10),
        prefix: "mail/".into(),
        archive: Discard,
        metrics: mailhook::telemetry::metrics::Metrics::Off,
    }));
    let mut group = c.benchmark_group("router");
    for (name, body) in bodies() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let body = Bytes::from(body);
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            b.to_async(&runtime).iter(|| async {
                let request = Request::post("/")
                    .header("x-webhook-token", "example-token")
                    .header("user-agent", "adm.tools mail webhook")
                    .body(Body::from(body.clone()))
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = pure, whole_router
}
criterion_main!(benches);
