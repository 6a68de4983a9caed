//! Hostile and malformed requests, table-driven: each gets its exact status, a JSON error, and
//! stores nothing.

use crate::support;

use axum::body::Body;
use axum::http::{Method, Request};
use support::*;

const EVENT: &str =
    r#"{"mailbox":"info@example.com","uid":1,"tstamp":1795711572,"event":"create","folder":"INBOX","flags":[]}"#;

struct Case {
    name: &'static str,
    request: Request<Body>,
    status: u16,
}

fn post() -> axum::http::request::Builder {
    Request::post("/").header("x-webhook-token", TOKEN)
}

fn with_token(body: impl Into<Vec<u8>>) -> Request<Body> {
    Request::post("/").header("x-webhook-token", TOKEN).body(Body::from(body.into())).unwrap()
}

fn with_headers(headers: &[(&str, &[u8])], uri: &str) -> Request<Body> {
    let mut builder = Request::post(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::from(EVENT)).unwrap()
}

fn method(m: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(Method::from_bytes(m.as_bytes()).unwrap())
        .uri(uri)
        .header("x-webhook-token", TOKEN)
        .body(Body::from(EVENT))
        .unwrap()
}

fn cases() -> Vec<Case> {
    let limit = 1024 * 1024;
    let over = format!("{EVENT}{}", " ".repeat(limit + 1 - EVENT.len()));
    let deep_array = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    let long_token = "x".repeat(8 * 1024);
    let utf16: Vec<u8> = EVENT.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut cases = vec![
        Case { name: "one byte over the size limit", request: with_token(over), status: 413 },
        Case { name: "invalid UTF-8", request: with_token(b"{\"subject\":\"\xff\xfe\"}".to_vec()), status: 400 },
        Case { name: "overlong UTF-8 encoding", request: with_token(b"{\"a\":\"\xc0\xaf\"}".to_vec()), status: 400 },
        Case {
            name: "UTF-8 byte order mark",
            request: with_token([&b"\xef\xbb\xbf"[..], EVENT.as_bytes()].concat()),
            status: 400,
        },
        Case { name: "UTF-16 body", request: with_token(utf16), status: 400 },
        Case { name: "arrays nested deeper than the parser allows", request: with_token(deep_array), status: 400 },
        Case { name: "objects nested deeper than the parser allows", request: with_token(deep_object), status: 400 },
        Case { name: "trailing garbage", request: with_token(format!("{EVENT}garbage")), status: 400 },
        Case { name: "two JSON documents", request: with_token(format!("{EVENT}\n{EVENT}")), status: 400 },
        Case { name: "NaN literal", request: with_token(r#"{"uid":NaN}"#), status: 400 },
        Case { name: "Infinity literal", request: with_token(r#"{"uid":Infinity}"#), status: 400 },
        Case { name: "-Infinity literal", request: with_token(r#"{"uid":-Infinity}"#), status: 400 },
        Case { name: "lone high surrogate escape", request: with_token(r#"{"subject":"\ud83d"}"#), status: 400 },
        Case { name: "lone low surrogate escape", request: with_token(r#"{"subject":"\ude00 x"}"#), status: 400 },
        Case { name: "lone surrogate in a key", request: with_token(r#"{"\udc00":1}"#), status: 400 },
        Case { name: "raw control character in a string", request: with_token("{\"subject\":\"a\nb\"}"), status: 400 },
        Case { name: "invalid escape", request: with_token(r#"{"subject":"\x41"}"#), status: 400 },
        Case { name: "single-quoted JSON", request: with_token("{'event':'new'}"), status: 400 },
        Case { name: "unterminated object", request: with_token(r#"{"event":"new""#), status: 400 },
        Case { name: "whitespace only", request: with_token("  \r\n\t "), status: 400 },
        Case { name: "JSON array", request: with_token(format!("[{EVENT}]")), status: 400 },
        Case { name: "JSON string", request: with_token(r#""new""#), status: 400 },
        Case { name: "JSON null", request: with_token("null"), status: 400 },
        Case { name: "form-encoded body", request: with_token("mailbox=a%40b&event=new"), status: 400 },
        Case { name: "empty body", request: with_token(""), status: 400 },
        Case {
            name: "gzip Content-Encoding",
            request: post().header("content-encoding", "gzip").body(Body::from(&b"\x1f\x8b\x08\x00\x00"[..])).unwrap(),
            status: 415,
        },
        Case {
            name: "deflate Content-Encoding on plain JSON",
            request: post().header("content-encoding", "deflate").body(Body::from(EVENT)).unwrap(),
            status: 415,
        },
        Case { name: "missing token", request: with_headers(&[], "/"), status: 401 },
        Case { name: "empty token", request: with_headers(&[("x-webhook-token", b"")], "/"), status: 401 },
        Case {
            name: "token in upper case",
            request: with_headers(&[("x-webhook-token", b"EXAMPLE-TOKEN")], "/"),
            status: 401,
        },
        Case {
            name: "token with a trailing space",
            request: with_headers(&[("x-webhook-token", b"example-token ")], "/"),
            status: 401,
        },
        Case {
            name: "token with a leading tab",
            request: with_headers(&[("x-webhook-token", b"\texample-token")], "/"),
            status: 401,
        },
        Case { name: "token prefix", request: with_headers(&[("x-webhook-token", b"example-toke")], "/"), status: 401 },
        Case {
            name: "8 KiB token",
            request: with_headers(&[("x-webhook-token", long_token.as_bytes())], "/"),
            status: 401,
        },
        Case {
            name: "token with non-ASCII bytes",
            request: with_headers(&[("x-webhook-token", b"example-token\xff")], "/"),
            status: 401,
        },
        Case {
            name: "token only in the query",
            request: with_headers(&[], "/?x-webhook-token=example-token&token=example-token"),
            status: 401,
        },
        Case {
            name: "token only in Authorization",
            request: with_headers(&[("authorization", b"Bearer example-token")], "/"),
            status: 401,
        },
        Case {
            name: "token as Basic credentials",
            request: with_headers(&[("authorization", b"Basic ZXhhbXBsZS10b2tlbg==")], "/"),
            status: 401,
        },
        Case {
            name: "token in a similar header",
            request: with_headers(&[("x-webhook-tokens", TOKEN.as_bytes())], "/"),
            status: 401,
        },
        Case {
            name: "token header repeated, both right",
            request: with_headers(&[("x-webhook-token", TOKEN.as_bytes()), ("x-webhook-token", TOKEN.as_bytes())], "/"),
            status: 401,
        },
        Case {
            name: "token header repeated, wrong then right",
            request: with_headers(&[("x-webhook-token", b"wrong"), ("x-webhook-token", TOKEN.as_bytes())], "/"),
            status: 401,
        },
        Case {
            name: "two tokens joined by a comma",
            request: with_headers(&[("x-webhook-token", b"old-token,example-token")], "/"),
            status: 401,
        },
    ];
    for path in [
        "/../webhook-confirm.txt",
        "/%2e%2e/webhook-confirm.txt",
        "/x/../webhook-confirm.txt",
        "/webhook-confirm.txt/..",
        "/webhook-confirm.txt%00",
        "/webhook-confirm.txt%2f",
        "//webhook-confirm.txt",
        "/WEBHOOK-CONFIRM.TXT",
        "/webhook-confirm.txt/",
        "/%77ebhook-confirm.txt",
    ] {
        cases.push(Case {
            name: "traversal or variant of the confirmation path",
            request: method("GET", path),
            status: 405,
        });
    }
    for m in ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "post"] {
        cases.push(Case { name: "method other than POST", request: method(m, "/"), status: 405 });
    }
    for m in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "POSTX"] {
        cases.push(Case {
            name: "method other than GET on the confirmation path",
            request: method(m, "/webhook-confirm.txt"),
            status: 405,
        });
    }
    cases
}

#[tokio::test]
async fn every_hostile_request_gets_its_exact_status_and_stores_nothing() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let (app, dir) = dir_app();
    let mut failures = Vec::new();
    for case in cases {
        let head = case.request.method() == Method::HEAD;
        let reply = call(&app, case.request).await;
        if reply.status.as_u16() != case.status {
            failures.push(format!("{}: {} instead of {}", case.name, reply.status, case.status));
            continue;
        }
        if !head {
            let body = reply.json();
            if body["ok"] != false || !body["error"].is_string() {
                failures.push(format!("{}: not a JSON error: {body}", case.name));
            }
        }
        if reply.body.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()) {
            failures.push(format!("{}: the token was echoed", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(stored(dir.path()).is_empty(), "nothing is stored: {:?}", stored(dir.path()));
}

/// RFC 8259 allows any number; f64 cannot hold these, so they are kept as text, like big integers.
#[tokio::test]
async fn numbers_beyond_f64_are_stored_verbatim() {
    let (app, dir) = dir_app();
    let body = r#"{"mailbox":"a@example.com","event":"new","exp":1e400,"neg":-1E+400,"tiny":1e-400,"nested":[{"x":12.5e999}],"tstamp":1e400}"#;
    let reply = call(&app, with_token(body)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let stored = stored(dir.path());
    let line = String::from_utf8(stored[0].1.clone()).unwrap();
    assert!(line.contains(&format!("\"data\":{body},")), "{line}");
    assert!(line.contains("\"event_time\":null"), "a tstamp of 1e400 is no time: {line}");
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_is_stored() {
    let (app, dir) = dir_app();
    let at_limit = format!("{EVENT}{}", " ".repeat(1024 * 1024 - EVENT.len()));
    assert_eq!(call(&app, with_token(at_limit)).await.status, 200);
    assert_eq!(stored(dir.path()).len(), 1);
}
