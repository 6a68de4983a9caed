//! The function URL's front door: a Lambda event in, the handler's answer out.
//!
//! lambda_http's own conversion panics on requests anyone can send: a query string that
//! `http::Uri` refuses (a space, `"`, `<`, `{`, `|`, control bytes), an `X-Forwarded-Proto` that is
//! not a URL scheme, a body flagged base64 that is not. A panic ends the invocation in an error
//! instead of a 4xx, and fires the function's Errors alarm for a scanner. This conversion reads
//! only what the handler uses (method, path, headers, body, the request id and source address)
//! and cannot fail: whatever cannot become part of a request marks it [`Malformed`], and the
//! webhook answers that with 400, logged and counted like every other refusal.
//!
//! The event is read straight into those fields ([`UrlEvent`]), every other part of it skipped
//! unread, and the answer written straight from the response: no `serde_json::Value` of either
//! is built, which was a measurable part of the CPU a warm invocation bills at 128 MB
//! (docs/decisions.md).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use base64::Engine;
use http_body_util::BodyExt;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::http::{AppState, Invocation, Malformed, handle};

/// Answers function URL events until the runtime stops.
pub async fn serve<A: Archive>(state: Arc<AppState<A>>) -> Result<(), crate::BoxError> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<UrlEvent>| {
        let state = state.clone();
        async move { Ok::<UrlResponse, crate::BoxError>(respond(&state, event.payload, &event.context.request_id).await) }
    }))
    .await
}

/// One event's answer, as the function URL reads it: the handler's response, or a 400 for what
/// cannot be read. Never an error.
pub async fn respond<A: Archive>(state: &AppState<A>, event: UrlEvent, request_id: &str) -> UrlResponse {
    UrlResponse::from(handle(state, request(event, request_id)).await).await
}

/// What the front door reads of a function URL event (API Gateway's HTTP payload, version 2.0).
/// Any JSON reads as one: a field of another kind than expected is kept as [`Field::Other`], and
/// everything else is skipped. (A string it reads must still be valid JSON text: a lone surrogate
/// escape there fails the invocation, as it did with a `Value`; Lambda escapes what a client
/// sends, so a function URL never hands one over.) No `Debug`: it holds the token and the body,
/// which never reach the logs.
#[derive(Default)]
pub struct UrlEvent {
    method: Field<String>,
    source_ip: Field<String>,
    raw_path: Field<String>,
    headers: Field<Headers>,
    body: Field<String>,
    base64: Field<bool>,
}

/// One field of the event: absent or `null`, the kind expected, or another kind.
#[derive(Default)]
enum Field<T> {
    #[default]
    Missing,
    Is(T),
    Other,
}

impl<T> Field<T> {
    fn get(&self) -> Option<&T> {
        match self {
            Field::Is(v) => Some(v),
            _ => None,
        }
    }
}

/// The event's headers, and whether each name and value was valid HTTP. A name repeated in the
/// object (Lambda never sends one: it joins repeated headers with commas) is kept as a repeated
/// header, in the order sent.
#[derive(Default)]
struct Headers {
    map: HeaderMap,
    valid: bool,
}

/// The request a function URL event describes. The query string is dropped (no route reads it),
/// a path byte a URI cannot hold is percent-encoded, and anything else that does not fit (no
/// method, a header that is not valid HTTP, a body that is not a string or not the base64 it
/// claims) makes a POST marked [`Malformed`].
pub fn request(event: UrlEvent, request_id: &str) -> Request<Body> {
    let mut malformed = None;
    let mut flag = |what| {
        malformed.get_or_insert(Malformed(what));
    };

    let method = match &event.method {
        Field::Is(m) => Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| {
            flag("the method is not an HTTP method");
            Method::POST
        }),
        Field::Missing | Field::Other => {
            flag("the event has no method");
            Method::POST
        }
    };

    let headers = match event.headers {
        Field::Missing => HeaderMap::new(),
        Field::Is(Headers { map, valid }) => {
            if !valid {
                flag("a header is not valid HTTP");
            }
            map
        }
        Field::Other => {
            flag("the headers are not an object");
            HeaderMap::new()
        }
    };

    let body = match (event.body, event.base64) {
        (Field::Missing, _) => Body::empty(),
        (Field::Is(text), Field::Is(true)) => match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(bytes) => Body::from(bytes),
            Err(_) => {
                flag("the body is flagged base64 but is not base64");
                Body::empty()
            }
        },
        (Field::Is(text), _) => Body::from(text),
        (Field::Other, _) => {
            flag("the body is not a string");
            Body::empty()
        }
    };

    let path = event.raw_path.get().map_or("/", String::as_str);
    let invocation = Invocation { request_id: request_id.to_owned(), source_ip: event.source_ip.get().cloned() };
    let mut request = Request::new(body);
    *request.uri_mut() = uri_path(path).parse().unwrap_or_else(|_| {
        flag("the path is not a URI path");
        axum::http::Uri::from_static("/")
    });
    if let Some(malformed) = malformed {
        // A POST, so that the webhook (and not the confirmation file) answers it.
        *request.method_mut() = Method::POST;
        request.extensions_mut().insert(malformed);
    } else {
        *request.method_mut() = method;
    }
    *request.headers_mut() = headers;
    request.extensions_mut().insert(invocation);
    request
}

/// The path as a URI can hold it: every byte outside RFC 3986's path characters percent-encoded,
/// and a leading `/`.
fn uri_path(raw: &str) -> String {
    let mut path = String::with_capacity(raw.len() + 1);
    if !raw.starts_with('/') {
        path.push('/');
    }
    for &b in raw.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// The function URL's response event: status, headers (repeated ones joined by commas), and the
/// body as text, or base64 if it is not UTF-8.
pub struct UrlResponse {
    status: u16,
    headers: HeaderMap,
    body: String,
    base64: bool,
}

impl UrlResponse {
    pub async fn from(response: Response<Body>) -> UrlResponse {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let (body, base64) = match String::from_utf8(body.into()) {
            Ok(text) => (text, false),
            Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.as_bytes()), true),
        };
        UrlResponse { status: parts.status.as_u16(), headers: parts.headers, body, base64 }
    }
}

impl Serialize for UrlResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Joined<'a>(&'a HeaderMap);
        impl Serialize for Joined<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
                for name in self.0.keys() {
                    let values: Vec<_> =
                        self.0.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
                    map.serialize_entry(name.as_str(), &values.join(", "))?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("statusCode", &self.status)?;
        map.serialize_entry("headers", &Joined(&self.headers))?;
        map.serialize_entry("body", &self.body)?;
        map.serialize_entry("isBase64Encoded", &self.base64)?;
        map.serialize_entry("cookies", &[(); 0])?;
        map.end()
    }
}

// Reading the event. serde_json hands a visitor each JSON value by kind; every visitor here takes
// every kind, so no event fails to read.

/// The name of an object's field, as its index in the names given (`None`: a field not read).
struct FieldName(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == name))
    }
}

/// An object of the event that the front door reads some fields of.
trait Object: Default {
    const FIELDS: &'static [&'static str];
    /// Reads the value of `FIELDS[index]` into `self`.
    fn read<'de, A: MapAccess<'de>>(&mut self, index: usize, map: &mut A) -> Result<(), A::Error>;
}

/// Reads an [`Object`] from a JSON object, and from any other value as if it were an empty one.
struct ObjectVisitor<T>(PhantomData<T>);

/// The `visit_*` methods of the JSON kinds a visitor does not read, which give `$other`: a bool, a
/// number (under serde_json's `arbitrary_precision` a number is a one-entry map instead, which
/// `visit_map` sees), a list (skipped).
macro_rules! other_kinds {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        numbers_and_lists!($other);
    };
}

/// [`other_kinds`] but a bool.
macro_rules! numbers_and_lists {
    ($other:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
}

/// Skips a JSON object's entries.
fn skip<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de, T: Object> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut object = T::default();
        while let Some(field) = map.next_key_seed(FieldName(T::FIELDS))? {
            match field {
                Some(index) => object.read(index, &mut map)?,
                None => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(object)
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    other_kinds!(T::default());
}

impl<'de> Deserialize<'de> for UrlEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

impl Object for UrlEvent {
    const FIELDS: &'static [&'static str] = &["requestContext", "rawPath", "headers", "body", "isBase64Encoded"];
    fn read<'de, A: MapAccess<'de>>(&mut self, index: usize, map: &mut A) -> Result<(), A::Error> {
        match index {
            0 => {
                let Context(Http { method, source_ip }) = map.next_value()?;
                (self.method, self.source_ip) = (method, source_ip);
            }
            1 => self.raw_path = map.next_value()?,
            2 => self.headers = map.next_value()?,
            3 => self.body = map.next_value()?,
            _ => self.base64 = map.next_value()?,
        }
        Ok(())
    }
}

/// `requestContext`: only its `http` object is read.
#[derive(Default)]
struct Context(Http);

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

impl Object for Context {
    const FIELDS: &'static [&'static str] = &["http"];
    fn read<'de, A: MapAccess<'de>>(&mut self, _: usize, map: &mut A) -> Result<(), A::Error> {
        self.0 = map.next_value()?;
        Ok(())
    }
}

/// `requestContext.http`: the method and the source address.
#[derive(Default)]
struct Http {
    method: Field<String>,
    source_ip: Field<String>,
}

impl<'de> Deserialize<'de> for Http {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

impl Object for Http {
    const FIELDS: &'static [&'static str] = &["method", "sourceIp"];
    fn read<'de, A: MapAccess<'de>>(&mut self, index: usize, map: &mut A) -> Result<(), A::Error> {
        match index {
            0 => self.method = map.next_value()?,
            _ => self.source_ip = map.next_value()?,
        }
        Ok(())
    }
}

/// A kind of field read as one JSON scalar: each says which values are its own.
trait Scalar: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

impl Scalar for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

impl Scalar for bool {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// A string or boolean field: its own kind, `null`, or [`Field::Other`].
impl<'de, T: Scalar> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Loose<T>(PhantomData<T>);
        impl<'de, T: Scalar> Visitor<'de> for Loose<T> {
            type Value = Field<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<T>, E> {
                Ok(T::from_str(v).map_or(Field::Other, Field::Is))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<T>, E> {
                Ok(T::from_bool(v).map_or(Field::Other, Field::Is))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field<T>, E> {
                Ok(Field::Missing)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
                skip(map).map(|()| Field::Other)
            }
            numbers_and_lists!(Field::Other);
        }
        deserializer.deserialize_any(Loose(PhantomData))
    }
}

/// `headers`: each name to a string value (several joined by commas), or [`Field::Other`].
impl<'de> Deserialize<'de> for Field<Headers> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// serde_json's key for a number's text under `arbitrary_precision`: such a "map" is a
        /// number, not headers.
        const NUMBER: &str = "$serde_json::private::Number";

        /// A header name, if it is valid HTTP (the entry is kept, marked invalid, if not).
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Result<HeaderName, bool>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a header name")
            }
            /// `Err(true)`: the map is a number.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(HeaderName::from_bytes(v.as_bytes()).map_err(|_| v == NUMBER))
            }
        }
        impl<'de> DeserializeSeed<'de> for Name {
            type Value = Result<HeaderName, bool>;
            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_str(self)
            }
        }

        /// A header value, if it is a string that is valid HTTP.
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Option<HeaderValue>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(HeaderValue::from_str(v).ok())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip(map).map(|()| None)
            }
            other_kinds!(None);
        }
        impl<'de> DeserializeSeed<'de> for Text {
            type Value = Option<HeaderValue>;
            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }

        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = Field<Headers>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<Headers>, A::Error> {
                let mut headers = Headers { map: HeaderMap::new(), valid: true };
                let mut first = true;
                while let Some(name) = map.next_key_seed(Name)? {
                    match (name, map.next_value_seed(Text)?) {
                        (Ok(name), Some(value)) => {
                            // More names than a HeaderMap holds (24,576): `append` would panic
                            // here, outside the runtime's guard, and end the process.
                            if headers.map.try_append(name, value).is_err() {
                                headers.valid = false;
                                return skip(map).map(|()| Field::Is(headers));
                            }
                        }
                        (Err(true), _) if first => return skip(map).map(|()| Field::Other),
                        _ => headers.valid = false,
                    }
                    first = false;
                }
                Ok(Field::Is(headers))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Field<Headers>, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field<Headers>, E> {
                Ok(Field::Missing)
            }
            other_kinds!(Field::Other);
        }
        deserializer.deserialize_any(Map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request an event's JSON text becomes, read as the runtime reads it (from bytes).
    fn read(json: &str) -> Request<Body> {
        let event: UrlEvent = serde_json::from_slice(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        request(event, "id")
    }

    /// Why the event is malformed, if it is; read both from bytes, as the runtime reads it, and
    /// from a `Value`, as the tests' sample events are (but for serde_json's number key, which a
    /// `Value` sorts first).
    fn malformed(json: &str) -> Option<&'static str> {
        let why = read(json).extensions().get::<Malformed>().map(|m| m.0);
        if json.contains("$serde_json") {
            return why;
        }
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let event: UrlEvent = serde_json::from_value(value).unwrap_or_else(|e| panic!("{json} as a Value: {e}"));
        assert_eq!(request(event, "id").extensions().get::<Malformed>().map(|m| m.0), why, "{json} as a Value");
        why
    }

    const EVENT: &str = r#"{"version":"2.0","rawPath":"/hook","rawQueryString":"a b",
        "headers":{"X-Webhook-Token":"t","user-agent":"adm.tools mail webhook","n":"1e400"},
        "requestContext":{"requestId":"r","http":{"method":"POST","sourceIp":"203.0.113.9","path":"/x"},
        "timeEpoch":1764547200000},"body":"{\"uid\":1e400,\"s\":\"\\u00e9\"}","isBase64Encoded":false}"#;

    #[test]
    fn an_event_becomes_the_request_it_describes() {
        let request = read(EVENT);
        assert_eq!(request.extensions().get::<Malformed>(), None);
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/hook");
        assert_eq!(request.headers()["x-webhook-token"], "t");
        assert_eq!(request.headers()["n"], "1e400");
        assert_eq!(request.headers().len(), 3);
        let invocation = request.extensions().get::<Invocation>().unwrap();
        assert_eq!((invocation.request_id.as_str(), invocation.source_ip.as_deref()), ("id", Some("203.0.113.9")));
        let body = futures_util::FutureExt::now_or_never(request.into_body().collect()).unwrap().unwrap();
        assert_eq!(body.to_bytes(), r#"{"uid":1e400,"s":"\u00e9"}"#);

        let base64 = r#"{"requestContext":{"http":{"method":"GET"}},"body":"aGk=","isBase64Encoded":true}"#;
        let body = futures_util::FutureExt::now_or_never(read(base64).into_body().collect()).unwrap().unwrap();
        assert_eq!(body.to_bytes(), "hi");
    }

    /// Every JSON value reads as an event, and what does not fit a request says why.
    #[test]
    fn any_json_is_an_event_and_what_does_not_fit_is_malformed() {
        let method = r#""requestContext":{"http":{"method":"POST"}}"#;
        let cases = [
            ("null".to_owned(), Some("the event has no method")),
            ("1e400".to_owned(), Some("the event has no method")),
            ("\"GET / HTTP/1.1\"".to_owned(), Some("the event has no method")),
            ("[1,{\"a\":[]}]".to_owned(), Some("the event has no method")),
            ("true".to_owned(), Some("the event has no method")),
            (r#"{"requestContext":"x"}"#.to_owned(), Some("the event has no method")),
            (r#"{"requestContext":{"http":{"method":7}}}"#.to_owned(), Some("the event has no method")),
            (r#"{"requestContext":{"http":{"method":"PO ST"}}}"#.to_owned(), Some("the method is not an HTTP method")),
            (format!(r#"{{{method}}}"#), None),
            (format!(r#"{{{method},"headers":null,"body":null,"rawPath":7,"isBase64Encoded":"yes"}}"#), None),
            (format!(r#"{{{method},"headers":5}}"#), Some("the headers are not an object")),
            (format!(r#"{{{method},"headers":1e400}}"#), Some("the headers are not an object")),
            (format!(r#"{{{method},"headers":["a"]}}"#), Some("the headers are not an object")),
            (format!(r#"{{{method},"headers":"a: b"}}"#), Some("the headers are not an object")),
            (format!(r#"{{{method},"headers":{{"a":7}}}}"#), Some("a header is not valid HTTP")),
            (format!(r#"{{{method},"headers":{{"a":{{"b":"c"}}}}}}"#), Some("a header is not valid HTTP")),
            (format!(r#"{{{method},"headers":{{"a b":"c"}}}}"#), Some("a header is not valid HTTP")),
            (format!(r#"{{{method},"headers":{{"a":"\u0001"}}}}"#), Some("a header is not valid HTTP")),
            (
                format!(r#"{{{method},"headers":{{"a":"b","$serde_json::private::Number":"1"}}}}"#),
                Some("a header is not valid HTTP"),
            ),
            (format!(r#"{{{method},"headers":{{"a":100000000000000000000}}}}"#), Some("a header is not valid HTTP")),
            (format!(r#"{{{method},"body":42}}"#), Some("the body is not a string")),
            (
                format!(r#"{{{method},"body":-100000000000000000000,"isBase64Encoded":100000000000000000000}}"#),
                Some("the body is not a string"),
            ),
            (format!(r#"{{{method},"body":{{}}}}"#), Some("the body is not a string")),
            (
                format!(r#"{{{method},"body":"!","isBase64Encoded":true}}"#),
                Some("the body is flagged base64 but is not base64"),
            ),
        ];
        for (json, why) in cases {
            assert_eq!(malformed(&json), why, "{json}");
        }
    }

    /// More header names than a `HeaderMap` holds is a 400, not a panic while the event is read
    /// (outside the runtime's panic guard, which would end the process).
    #[test]
    fn more_header_names_than_a_request_holds_are_malformed() {
        let names: Vec<String> = (0..24_577).map(|i| format!(r#""h{i}":"v""#)).collect();
        let json = format!(
            r#"{{"requestContext":{{"http":{{"method":"POST"}}}},"headers":{{{}}},"body":"{{}}"}}"#,
            names.join(",")
        );
        assert_eq!(malformed(&json), Some("a header is not valid HTTP"));
    }

    #[test]
    fn the_answer_is_the_function_url_response_event() {
        let response = Response::builder()
            .status(401)
            .header("a", "1")
            .header("a", "2")
            .header("content-type", "application/json")
            .body(Body::from("{\"ok\":false}"))
            .unwrap();
        let answer = futures_util::FutureExt::now_or_never(UrlResponse::from(response)).unwrap();
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"statusCode": 401, "headers": {"a": "1, 2", "content-type": "application/json"},
                "body": "{\"ok\":false}", "isBase64Encoded": false, "cookies": []})
        );
        let binary = Response::new(Body::from(vec![0xff, 0]));
        let answer = futures_util::FutureExt::now_or_never(UrlResponse::from(binary)).unwrap();
        assert_eq!(serde_json::to_value(&answer).unwrap()["body"], "/wA=");
        assert_eq!(serde_json::to_value(&answer).unwrap()["isBase64Encoded"], true);
    }

    #[test]
    fn a_path_a_uri_cannot_hold_is_encoded() {
        assert_eq!(uri_path("/webhook-confirm.txt"), "/webhook-confirm.txt");
        assert_eq!(uri_path("a b\"<>{|}`\u{1}é"), "/a%20b%22%3C%3E%7B%7C%7D%60%01%C3%A9");
        for raw in ["", "/", "//x", "a b", "\u{7f}", "%zz", "/?#[]"] {
            assert!(uri_path(raw).parse::<axum::http::Uri>().is_ok(), "{raw:?}");
        }
    }
}
