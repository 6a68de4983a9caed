//! The function URL's front door: a Lambda event in, the router's answer out.
//!
//! lambda_http's own conversion panics on requests anyone can send: a query string that
//! `http::Uri` refuses (a space, `"`, `<`, `{`, `|`, control bytes), an `X-Forwarded-Proto` that is
//! not a URL scheme, a body flagged base64 that is not. A panic ends the invocation in an error
//! instead of a 4xx, and fires the function's Errors alarm for a scanner. This conversion reads
//! only what the routes use (method, path, headers, body, the request id and source address) and
//! cannot fail: whatever cannot become part of a request marks it [`Malformed`], and the webhook
//! answers that with 400, logged and counted like every other refusal.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use base64::Engine;
use http_body_util::BodyExt;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::{Map, Value};
use tower_service::Service;

use crate::http::{Invocation, Malformed};

/// Answers function URL events with the router until the runtime stops.
pub async fn serve(app: Router) -> Result<(), crate::BoxError> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { Ok::<Value, crate::BoxError>(respond(app, &event.payload, &event.context.request_id).await) }
    }))
    .await
}

/// One event's answer, as the function URL reads it: the router's response, or a 400 for what
/// cannot be read. Never an error.
pub async fn respond(mut app: Router, event: &Value, request_id: &str) -> Value {
    let response = match app.call(request(event, request_id)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    answer(response).await
}

/// The request a function URL event describes. The query string is dropped (no route reads it),
/// a path byte a URI cannot hold is percent-encoded, and anything else that does not fit (no
/// method, a header that is not valid HTTP, a body that is not a string or not the base64 it
/// claims) makes a POST marked [`Malformed`].
pub fn request(event: &Value, request_id: &str) -> Request<Body> {
    let field = |path: &[&str]| path.iter().try_fold(event, |v, name| v.get(name));
    let mut malformed = None;
    let mut flag = |what| {
        malformed.get_or_insert(Malformed(what));
    };

    let method = match field(&["requestContext", "http", "method"]).and_then(Value::as_str) {
        Some(m) => Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| {
            flag("the method is not an HTTP method");
            Method::POST
        }),
        None => {
            flag("the event has no method");
            Method::POST
        }
    };

    let mut headers = HeaderMap::new();
    match field(&["headers"]) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            if !insert_headers(&mut headers, map) {
                flag("a header is not valid HTTP");
            }
        }
        Some(_) => flag("the headers are not an object"),
    }

    let body = match (field(&["body"]), field(&["isBase64Encoded"])) {
        (None | Some(Value::Null), _) => Vec::new(),
        (Some(Value::String(text)), Some(Value::Bool(true))) => {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_else(|_| {
                flag("the body is flagged base64 but is not base64");
                Vec::new()
            })
        }
        (Some(Value::String(text)), _) => text.clone().into_bytes(),
        (Some(_), _) => {
            flag("the body is not a string");
            Vec::new()
        }
    };

    let path = field(&["rawPath"]).and_then(Value::as_str).unwrap_or("/");
    let invocation = Invocation {
        request_id: request_id.to_owned(),
        source_ip: field(&["requestContext", "http", "sourceIp"]).and_then(Value::as_str).map(str::to_owned),
    };
    let mut request = Request::new(Body::from(body));
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

/// Adds each header of a function URL event (a value is a string, several joined by commas);
/// false if one is not valid HTTP.
fn insert_headers(headers: &mut HeaderMap, map: &Map<String, Value>) -> bool {
    let mut valid = true;
    for (name, value) in map {
        let parsed = match value {
            Value::String(v) => HeaderName::from_bytes(name.as_bytes()).ok().zip(HeaderValue::from_str(v).ok()),
            _ => None,
        };
        match parsed {
            Some((name, value)) => drop(headers.append(name, value)),
            None => valid = false,
        }
    }
    valid
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
async fn answer(response: Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<_> =
            parts.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let (body, is_base64) = match String::from_utf8(body.to_vec()) {
        Ok(text) => (text, false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&body), true),
    };
    serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": is_base64,
        "cookies": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_a_uri_cannot_hold_is_encoded() {
        assert_eq!(uri_path("/webhook-confirm.txt"), "/webhook-confirm.txt");
        assert_eq!(uri_path("a b\"<>{|}`\u{1}é"), "/a%20b%22%3C%3E%7B%7C%7D%60%01%C3%A9");
        for raw in ["", "/", "//x", "a b", "\u{7f}", "%zz", "/?#[]"] {
            assert!(uri_path(raw).parse::<axum::http::Uri>().is_ok(), "{raw:?}");
        }
    }
}
