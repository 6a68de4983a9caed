//! Raw request → verdict → record. The first byte picks the method and which token header is
//! sent; the rest is the body. Whatever the input, nothing panics, and an accepted body is stored
//! as one JSON line whose `data` is the body compacted.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use mailhook::record::{Meta, Record, compact_json};
use mailhook::webhook::{Tokens, check_encoding, check_method, check_token, parse_body};

const METHODS: [Method; 4] = [Method::POST, Method::GET, Method::PUT, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
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
