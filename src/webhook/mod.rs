//! The pure checks a request goes through, in the provider's order: method, token, body.
//! Nothing here does I/O, so every rejection is a plain function call in the tests. How a body
//! is read as JSON, every value checked and four fields picked out, is `json.rs`.

use std::fmt;

use axum::http::{HeaderMap, Method, header};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::json::Fields;

mod json;

/// The User-Agent the provider's requests carry.
pub const SENDER_USER_AGENT: &str = "adm.tools mail webhook";

/// The header the provider puts the secret token in.
pub const TOKEN_HEADER: &str = "x-webhook-token";

/// Every way a request can be refused, one variant each. The texts are what the client sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("Not Found")]
    NotFound,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("Incorrect webhook token")]
    BadToken,
    /// No token is configured yet (the first deploy, before the panel issued one): 503, so that
    /// the sender resends the event 15 minutes later.
    #[error("No webhook token is configured yet: the event was not stored")]
    NoTokenYet,
    #[error("Unsupported Content-Encoding: send the body uncompressed")]
    UnsupportedEncoding,
    #[error("Empty body")]
    EmptyBody,
    #[error("Body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("Could not read body")]
    UnreadableBody,
    #[error("Timed out reading the body")]
    BodyTimeout,
    /// A function URL event that does not describe a request as sent (lambda.rs).
    #[error("Malformed request: {0}")]
    Malformed(&'static str),
    #[error("Invalid JSON: body is not UTF-8")]
    NotUtf8,
    #[error("Invalid JSON: {0}")]
    InvalidJson(String),
    #[error("Invalid JSON: expected an object, got {0}")]
    NotAnObject(&'static str),
}

/// The accepted tokens, kept only as SHA-256 digests so that comparing them takes the same time
/// whatever the length or content of the presented value.
#[derive(Clone)]
pub struct Tokens(Vec<[u8; 32]>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// No token yet: every webhook request is refused with 503 until one is configured.
    pub fn none_yet() -> Self {
        Tokens(Vec::new())
    }

    /// How many tokens are accepted.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// False before the first token is configured.
    pub fn is_configured(&self) -> bool {
        !self.0.is_empty()
    }

    /// Parses a comma-separated list; blanks around each token are dropped. `None` if none is left.
    pub fn parse(list: &str) -> Option<Self> {
        let digests: Vec<_> = list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(digest).collect();
        (!digests.is_empty()).then_some(Tokens(digests))
    }

    /// True if `presented` equals one of the tokens. Every token is compared, in constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        self.0.iter().fold(subtle::Choice::from(0), |hit, t| hit | t.ct_eq(&presented)).into()
    }
}

fn digest(token: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(token.as_ref()).into()
}

/// Only POST delivers events.
pub fn check_method(method: &Method) -> Result<(), Rejection> {
    if method == Method::POST { Ok(()) } else { Err(Rejection::MethodNotAllowed) }
}

/// Exactly one `X-Webhook-Token` header, equal to a configured token. No other place counts.
pub fn check_token(headers: &HeaderMap, tokens: &Tokens) -> Result<(), Rejection> {
    if !tokens.is_configured() {
        return Err(Rejection::NoTokenYet);
    }
    let mut values = headers.get_all(TOKEN_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if tokens.accepts(value.as_bytes()) => Ok(()),
        _ => Err(Rejection::BadToken),
    }
}

/// The sender never compresses; a compressed body is refused rather than misread as bad JSON.
pub fn check_encoding(headers: &HeaderMap) -> Result<(), Rejection> {
    match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes().trim_ascii()) {
        None | Some(b"") => Ok(()),
        Some(v) if v.eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(_) => Err(Rejection::UnsupportedEncoding),
    }
}

/// An accepted body: the sender's JSON text, and the few fields mailhook reads from it,
/// still as raw JSON since their types are not documented.
#[derive(Debug)]
pub struct Event<'a> {
    /// The whole body, a valid JSON object, exactly as sent.
    pub raw: &'a str,
    pub mailbox: Option<&'a RawValue>,
    pub event: Option<&'a RawValue>,
    pub tstamp: Option<&'a RawValue>,
    pub flags: Option<&'a RawValue>,
}

/// Checks that the body is one JSON object of at most `limit` bytes and picks out its fields.
pub fn parse_body(body: &[u8], limit: usize) -> Result<Event<'_>, Rejection> {
    if body.is_empty() {
        return Err(Rejection::EmptyBody);
    }
    if body.len() > limit {
        return Err(Rejection::TooLarge { limit });
    }
    // simdutf8, because checking a long non-ASCII snippet is much of a request's work
    // (BENCHMARKS.md, work per event).
    let raw = simdutf8::basic::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
    let kind = match raw.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        _ => None,
    };
    let fields: Fields = serde_json::from_str(raw).map_err(|e| Rejection::InvalidJson(e.to_string()))?;
    if let Some(kind) = kind {
        return Err(Rejection::NotAnObject(kind));
    }
    Ok(Event { raw, mailbox: fields.mailbox, event: fields.event, tstamp: fields.tstamp, flags: fields.flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn only_post_is_allowed() {
        assert_eq!(check_method(&Method::POST), Ok(()));
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            assert_eq!(check_method(&m), Err(Rejection::MethodNotAllowed), "{m}");
        }
    }

    #[test]
    fn any_configured_token_is_accepted() {
        let tokens = Tokens::parse(" old-token , new-token ").unwrap();
        assert_eq!(check_token(&headers(&[("X-Webhook-Token", b"old-token")]), &tokens), Ok(()));
        assert_eq!(check_token(&headers(&[("x-webhook-token", b"new-token")]), &tokens), Ok(()));
    }

    #[test]
    fn wrong_tokens_of_every_length_are_rejected() {
        let tokens = Tokens::parse("s3cret-token").unwrap();
        for len in 0..=64 {
            let wrong = "x".repeat(len);
            assert!(!tokens.accepts(wrong.as_bytes()), "length {len}");
        }
        for wrong in [
            "S3CRET-TOKEN",
            "s3cret-token ",
            " s3cret-token",
            "s3cret-toke",
            "s3cret-tokenn",
            "s3cret-token,s3cret-token",
        ] {
            assert_eq!(
                check_token(&headers(&[(TOKEN_HEADER, wrong.as_bytes())]), &tokens),
                Err(Rejection::BadToken),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn token_must_be_in_its_header_once() {
        let tokens = Tokens::parse("tok").unwrap();
        assert_eq!(check_token(&HeaderMap::new(), &tokens), Err(Rejection::BadToken));
        assert_eq!(check_token(&headers(&[("authorization", b"tok")]), &tokens), Err(Rejection::BadToken));
        let twice = headers(&[(TOKEN_HEADER, b"tok"), (TOKEN_HEADER, b"tok")]);
        assert_eq!(check_token(&twice, &tokens), Err(Rejection::BadToken));
    }

    #[test]
    fn tokens_do_not_show_in_debug() {
        let tokens = Tokens::parse("very-secret").unwrap();
        assert!(!format!("{tokens:?}").contains("very-secret"));
    }

    #[test]
    fn compressed_bodies_are_refused() {
        assert_eq!(check_encoding(&HeaderMap::new()), Ok(()));
        assert_eq!(check_encoding(&headers(&[("content-encoding", b"identity")])), Ok(()));
        assert_eq!(check_encoding(&headers(&[("content-encoding", b"gzip")])), Err(Rejection::UnsupportedEncoding));
    }

    #[test]
    fn body_rejections() {
        assert_eq!(parse_body(b"", 100).unwrap_err(), Rejection::EmptyBody);
        assert_eq!(parse_body(b"{\"a\":1}", 6).unwrap_err(), Rejection::TooLarge { limit: 6 });
        assert!(parse_body(b"{\"a\":1}", 7).is_ok(), "a body exactly at the limit is accepted");
        assert_eq!(parse_body(b"{\"a\":\"\xff\"}", 100).unwrap_err(), Rejection::NotUtf8);
        assert_eq!(parse_body(b"[1,2]", 100).unwrap_err(), Rejection::NotAnObject("an array"));
        assert_eq!(parse_body(b" 42 ", 100).unwrap_err(), Rejection::NotAnObject("a number"));
        assert_eq!(parse_body(b"null", 100).unwrap_err(), Rejection::NotAnObject("null"));
        assert_eq!(parse_body(b"\"s\"", 100).unwrap_err(), Rejection::NotAnObject("a string"));
        for bad in
            [&b"{"[..], b"{\"a\":1}x", b"{} {}", b"{\"a\":NaN}", b"{\"a\":Infinity}", b"\xef\xbb\xbf{}", b"   ", b"[1,"]
        {
            let err = parse_body(bad, 100).unwrap_err();
            assert!(matches!(err, Rejection::InvalidJson(_)), "{:?} gave {err:?}", String::from_utf8_lossy(bad));
        }
        for deep in [
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200)),
        ] {
            assert!(
                matches!(parse_body(deep.as_bytes(), 1000).unwrap_err(), Rejection::InvalidJson(m) if m.contains("recursion"))
            );
        }
        for lone in [&br#"{"a":"\ud800"}"#[..], br#"{"\udc00":1}"#, br#"{"mailbox":"\ud800x"}"#, br#"{"a":["\udfff"]}"#]
        {
            assert!(
                matches!(parse_body(lone, 100).unwrap_err(), Rejection::InvalidJson(_)),
                "{}",
                String::from_utf8_lossy(lone)
            );
        }
        assert!(parse_body(br#"{"a":"\ud83d\ude00"}"#, 100).is_ok(), "a surrogate pair is fine");
    }

    #[test]
    fn parser_message_is_passed_on() {
        let Rejection::InvalidJson(message) = parse_body(b"{\"a\":}", 100).unwrap_err() else { panic!() };
        assert_eq!(message, "expected value at line 1 column 6");
    }

    #[test]
    fn fields_are_picked_out_raw() {
        let body =
            br#"{"mailbox":"a@b.c","uid":7,"tstamp":1764175572,"event":"new","extra":{"x":[1]},"mailbox":"last@b.c"}"#;
        let e = parse_body(body, 1000).unwrap();
        assert_eq!(e.raw.as_bytes(), body);
        assert_eq!(e.mailbox.unwrap().get(), r#""last@b.c""#, "a repeated key keeps its last value");
        assert_eq!(e.event.unwrap().get(), r#""new""#);
        assert_eq!(e.tstamp.unwrap().get(), "1764175572");
        let escaped = parse_body(br#"{"mail\u0062ox":"x"}"#, 100).unwrap();
        assert_eq!(escaped.mailbox.unwrap().get(), r#""x""#);
        assert!(parse_body(b"{}", 100).unwrap().event.is_none());
    }
}
