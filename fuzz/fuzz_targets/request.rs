//! Raw request → verdict → record. The first byte picks the method and which token header is
//! sent; the rest is the body. Whatever the input, nothing panics, and an accepted body is stored
//! as one JSON line whose `data` is the body compacted.
//!
//! With the first byte's top bit set, the rest is a whole function URL event instead, through the
//! Lambda front door and the handler: either the bytes themselves, if they are JSON, or an event
//! built from them (method, path, query string, body and headers, split at 0xFF bytes; the other
//! bits of the first byte set the base64 flag, the token and odd shapes). Whatever the event,
//! nothing panics, any JSON reads as an event, and the answer is a 200, 4xx or 5xx with a JSON
//! body (the confirmation file's text aside).
#![no_main]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mailhook::archive::{Archive, ArchiveError, Stored};
use mailhook::http::AppState;
use mailhook::lambda::UrlEvent;
use mailhook::layout::Key;
use mailhook::record::{Meta, Record, compact_json};
use mailhook::webhook::{Tokens, check_encoding, check_method, check_token, parse_body};
use serde_json::Value;

const METHODS: [Method; 4] = [Method::POST, Method::GET, Method::PUT, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    if control & 0x80 != 0 {
        return function_url(control, body);
    }
    let tokens = Tokens::parse("fuzz-token,second-token").unwrap();
    let mut headers = HeaderMap::new();
    match control >> 2 & 3 {
        0 => {}
        1 => drop(headers.insert("x-webhook-token", HeaderValue::from_static("fuzz-token"))),
        2 => {
            if let Ok(v) = HeaderValue::from_bytes(&body[..body.len().min(16)]) {
                headers.insert("x-webhook-token", v);
            }
        }
        _ => drop(headers.insert("x-webhook-token", HeaderValue::from_static("second-token"))),
    }
    if control & 16 != 0 {
        headers.insert("content-encoding", HeaderValue::from_static("gzip"));
    }

    let method = &METHODS[usize::from(control & 3)];
    let verdict = check_method(method)
        .and_then(|()| check_token(&headers, &tokens))
        .and_then(|()| check_encoding(&headers))
        .and_then(|()| parse_body(body, 4096));
    let accepted = *method == Method::POST && matches!(control >> 2 & 3, 1 | 3) && control & 16 == 0;
    let Ok(event) = verdict else {
        assert!(!accepted || body.is_empty() || body.len() > 4096 || serde_json::from_slice::<serde_json::Value>(body).map_or(true, |v| !v.is_object()));
        return;
    };

    let meta = Meta { request_id: "fuzz".into(), ..Meta::default() };
    let record = Record::new(&event, &meta, time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000), "p/");
    assert_eq!(record.line.iter().filter(|&&b| b == b'\n').count(), 1);
    // Read back without a depth limit (the line nests data one level deeper than the body).
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let line: Line = serde_json::from_slice(&record.line).expect("the stored line is JSON");
    assert_eq!(line.data.get(), compact_json(event.raw), "data is the body compacted");
    assert!(line.data.get().len() <= body.len());
    let key = record.key.format();
    assert!(key.starts_with("p/dt=") && key.ends_with(".jsonl"));
    // Every stored line verifies (the crash recovery keeps only lines that do), under its key's id.
    let id = mailhook::record::verify_line(&record.line[..record.line.len() - 1]).expect("the stored line verifies");
    assert_eq!(id, record.key.id);
});

/// Keeps every line in memory.
#[derive(Default)]
struct Memory(std::sync::Mutex<std::collections::HashSet<String>>);

impl Archive for Memory {
    async fn put_new(&self, key: &Key, _line: Bytes) -> Result<Stored, ArchiveError> {
        let created = self.0.lock().unwrap().insert(key.format());
        Ok(if created { Stored::Created } else { Stored::AlreadyPresent })
    }
}

fn function_url(control: u8, data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        static STATE: AppState<Memory> = AppState {
            tokens: Tokens::parse("fuzz-token").unwrap().into(),
            account_id: Some("123456".into()),
            max_body_bytes: 4096,
            store_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            prefix: "p/".into(),
            archive: Memory::default(),
            metrics: Default::default(),
        };
    }
    let (event, text) = match serde_json::from_slice::<Value>(data) {
        Ok(event) if control & 0x40 != 0 => (event, data.to_vec()),
        _ => {
            let event = built_event(control, data);
            let text = serde_json::to_vec(&event).unwrap();
            (event, text)
        }
    };
    // As the runtime reads it: from the bytes it was sent.
    let url_event: UrlEvent = serde_json::from_slice(&text).expect("any JSON reads as a function URL event");
    let answer = RUNTIME.with(|rt| STATE.with(|state| rt.block_on(mailhook::lambda::respond(state, url_event, "fuzz"))));
    let answer = serde_json::to_value(&answer).unwrap();
    let status = answer["statusCode"].as_u64().expect("a status code");
    assert!(status == 200 || (400..600).contains(&status), "{answer}");
    let body = answer["body"].as_str().expect("a text body");
    let confirm = event["rawPath"] == "/webhook-confirm.txt" && status == 200;
    assert!(confirm || serde_json::from_str::<Value>(body).is_ok_and(|b| b["ok"] == (status == 200)), "{answer}");
}

/// A function URL event from the fuzzer's bytes.
fn built_event(control: u8, data: &[u8]) -> Value {
    let mut parts = data.split(|&b| b == 0xFF).map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, query, body) = (next(), next(), next(), next());
    let mut headers = serde_json::Map::new();
    if control & 1 != 0 {
        headers.insert("x-webhook-token".into(), "fuzz-token".into());
    }
    loop {
        let (name, value) = (next(), next());
        if name.is_empty() && value.is_empty() {
            break;
        }
        headers.insert(name.to_ascii_lowercase(), value.into());
    }
    let method = match control >> 1 & 3 {
        0 => "POST".to_owned(),
        1 => "GET".to_owned(),
        _ => method,
    };
    let mut event = serde_json::json!({
        "version": "2.0",
        "rawPath": if control & 8 != 0 { "/webhook-confirm.txt".to_owned() } else { path },
        "rawQueryString": query,
        "headers": headers,
        "requestContext": { "http": { "method": method, "sourceIp": "203.0.113.9" }, "requestId": "fuzz" },
        "body": body,
        "isBase64Encoded": control & 16 != 0,
    });
    if control & 32 != 0 {
        event["cookies"] = serde_json::json!(["a=b", "c"]);
        event["headers"] = Value::Array(vec![]);
    }
    event
}
