//! Routes and responses: `handle` answers the Lambda function URL's requests and, through
//! `router`, the local server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use time::OffsetDateTime;

use crate::archive::{Archive, ArchiveError, Stored};
use crate::layout::Prefix;
use crate::record::{Meta, Record};
use crate::telemetry::metrics::{Metrics, Outcome, Sample};
use crate::tokens::{TokenError, TokenSource};
use crate::webhook::{self, Rejection};

/// Who a function URL request is, as the Lambda front door (`lambda.rs`) read it from the event:
/// a request extension.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub source_ip: Option<String>,
}

/// A request extension from the Lambda front door: why its event could not become a request as
/// sent. The webhook answers it with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The path the provider fetches to confirm that the URL is the account's.
pub const CONFIRM_PATH: &str = "/webhook-confirm.txt";

/// What the routes need, built once at start-up.
pub struct AppState<A> {
    pub tokens: TokenSource,
    pub account_id: Option<String>,
    pub max_body_bytes: usize,
    pub store_timeout: Duration,
    /// How long a client may take to send its body (local server; Lambda bodies arrive whole).
    pub body_timeout: Duration,
    /// Prepended to every key.
    pub prefix: Prefix,
    pub archive: A,
    /// Where each request's outcome is counted.
    pub metrics: Metrics,
}

/// The whole service: `/webhook-confirm.txt` for GET and HEAD, the webhook for everything else,
/// every answer marked not to be cached or sniffed. The Lambda front door calls it directly, once
/// an event; the local server through [`router`].
pub async fn handle<A: Archive>(state: &AppState<A>, request: Request) -> Response {
    let head = request.method() == Method::HEAD;
    let mut response = if request.uri().path() == CONFIRM_PATH && (head || request.method() == Method::GET) {
        confirm(state, &request)
    } else {
        receive(state, request).await
    };
    let length = axum::body::HttpBody::size_hint(response.body()).exact();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if head {
        // What a GET would have had, its length included, without its body (RFC 9110, 9.3.2).
        *response.body_mut() = Body::empty();
    }
    response
}

/// [`handle`] as the local server's service.
pub fn router<A: Archive>(state: Arc<AppState<A>>) -> Router {
    Router::new()
        .fallback(async |State(state): State<Arc<AppState<A>>>, request: Request| handle(&state, request).await)
        .with_state(state)
}

/// The local metrics listener: `GET /metrics`, as OpenMetrics text to a scraper that asks for it
/// (Prometheus does), and as Prometheus's text format 0.0.4 otherwise.
pub fn metrics_router<A: Archive>(state: Arc<AppState<A>>) -> Router {
    async fn metrics<A: Archive>(State(state): State<Arc<AppState<A>>>, headers: HeaderMap) -> Response {
        let openmetrics = headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("application/openmetrics-text"));
        let content_type = if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        match &state.metrics {
            crate::telemetry::metrics::Metrics::Prometheus(p) => {
                ([(header::CONTENT_TYPE, content_type)], p.text(openmetrics)).into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    Router::new().route("/metrics", get(metrics::<A>)).with_state(state)
}

/// Why a request did not end in a stored line.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] ArchiveError),
    /// The tokens could not be read (`WEBHOOK_TOKENS_PARAMETER`): not the sender's fault, so
    /// answered and counted as a failure of ours, and the sender's resend may find them.
    #[error("{0}")]
    TokensUnreadable(String),
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Rejected(r) => Failure::Rejected(r),
            unreadable @ TokenError::Unreadable { .. } => Failure::TokensUnreadable(unreadable.to_string()),
        }
    }
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Rejected(r) => match r {
                Rejection::NotFound => StatusCode::NOT_FOUND,
                Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                Rejection::BadToken => StatusCode::UNAUTHORIZED,
                Rejection::NoTokenYet => StatusCode::SERVICE_UNAVAILABLE,
                Rejection::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
                Rejection::EmptyBody
                | Rejection::Malformed(_)
                | Rejection::UnreadableBody
                | Rejection::NotUtf8
                | Rejection::InvalidJson(_)
                | Rejection::NotAnObject(_) => StatusCode::BAD_REQUEST,
            },
            Failure::Store(ArchiveError::Busy { .. }) | Failure::TokensUnreadable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one place where an outcome becomes HTTP: client errors say what was wrong, a failed
/// write says only that it failed (its details are logged once, by the handler).
impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let error = match &self {
            Failure::Rejected(r) => r.to_string(),
            Failure::Store(ArchiveError::Busy { .. }) => "The archive is busy: the event was not stored".to_owned(),
            Failure::Store(_) => "Failed to store the event".to_owned(),
            Failure::TokensUnreadable(_) => "Could not read the webhook tokens: the event was not stored".to_owned(),
        };
        let mut response = reply(self.status(), Some(&error));
        if matches!(self, Failure::Rejected(Rejection::MethodNotAllowed)) {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// `{"ok":true}` or `{"ok":false,"error":"..."}`, in that key order, as the reference receiver answers.
fn reply(status: StatusCode, error: Option<&str>) -> Response {
    #[derive(serde::Serialize)]
    struct Reply<'a> {
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let body = serde_json::to_string(&Reply { ok: error.is_none(), error }).expect("two plain fields serialise");
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

fn confirm<A: Archive>(state: &AppState<A>, request: &Request) -> Response {
    let meta = meta(request);
    let response = match &state.account_id {
        Some(id) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], id.clone()).into_response(),
        None => Failure::from(Rejection::NotFound).into_response(),
    };
    tracing::info!(request_id = %meta.request_id, status = response.status().as_u16(), path = CONFIRM_PATH, "confirm");
    response
}

/// The webhook: check, record, store, answer. Logs one line, never the token or the body.
async fn receive<A: Archive>(state: &AppState<A>, request: Request) -> Response {
    let started = Instant::now();
    let meta = meta(&request);
    let mut store_time = None;
    let outcome = accept(state, request, &meta, &mut store_time).await;
    let elapsed_ms = crate::telemetry::metrics::millis(started.elapsed());
    state.metrics.record(Sample {
        outcome: match &outcome {
            Ok((_, Stored::Created)) => Outcome::Stored,
            Ok((_, Stored::AlreadyPresent)) => Outcome::Duplicate,
            Err(Failure::Rejected(_)) => Outcome::Rejected,
            Err(Failure::Store(ArchiveError::Busy { .. })) => Outcome::Busy,
            Err(Failure::Store(_) | Failure::TokensUnreadable(_)) => Outcome::Failed,
        },
        sender_refused: matches!(outcome, Err(Failure::Rejected(Rejection::BadToken | Rejection::NoTokenYet)))
            && meta.ua.as_deref() == Some(webhook::SENDER_USER_AGENT),
        store: store_time,
    });
    match outcome {
        Ok((record, stored)) => {
            tracing::info!(
                request_id = %meta.request_id,
                status = 200,
                event = record.event.as_deref().unwrap_or(""),
                partition = %record.key.partition(),
                id = %record.key.id,
                stored = ?stored,
                duration_ms = elapsed_ms,
                "accepted"
            );
            reply(StatusCode::OK, None)
        }
        Err(failure) => {
            let status = failure.status().as_u16();
            match &failure {
                Failure::Store(e) => {
                    tracing::error!(request_id = %meta.request_id, status, error = %e, duration_ms = elapsed_ms, "store failed")
                }
                Failure::TokensUnreadable(e) => {
                    tracing::error!(request_id = %meta.request_id, status, error = %e, duration_ms = elapsed_ms, "tokens unreadable")
                }
                Failure::Rejected(r) => {
                    tracing::info!(request_id = %meta.request_id, status, reason = %r, duration_ms = elapsed_ms, "rejected")
                }
            }
            failure.into_response()
        }
    }
}

/// Checks, records and stores one request; `store_time` is set to how long the store took, if
/// it was tried.
async fn accept<A: Archive>(
    state: &AppState<A>,
    request: Request,
    meta: &Meta,
    store_time: &mut Option<Duration>,
) -> Result<(Record, Stored), Failure> {
    if let Some(Malformed(what)) = request.extensions().get() {
        return Err(Rejection::Malformed(what).into());
    }
    webhook::check_method(request.method())?;
    state.tokens.check(request.headers()).await?;
    webhook::check_encoding(request.headers())?;
    let body = tokio::time::timeout(state.body_timeout, read_body(request.into_body(), state.max_body_bytes))
        .await
        .map_err(|_| Rejection::BodyTimeout)??;
    let event = webhook::parse_body(&body, state.max_body_bytes)?;
    let record = Record::new(&event, meta, OffsetDateTime::now_utc(), &state.prefix);
    let put = state.archive.put_new(&record.key, record.line.clone());
    let started = Instant::now();
    let stored = tokio::time::timeout(state.store_timeout, put).await;
    *store_time = Some(started.elapsed());
    let stored =
        stored.map_err(|_| ArchiveError::Timeout { key: record.key.to_string(), budget: state.store_timeout })??;
    Ok((record, stored))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Rejection> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Rejection::TooLarge { limit }),
        Err(_) => Err(Rejection::UnreadableBody),
    }
}

/// The request's id, source address and sender headers: from the function URL's request context
/// under Lambda, from the connection locally.
fn meta(request: &Request) -> Meta {
    let headers = request.headers();
    let (request_id, ip) = match request.extensions().get::<Invocation>() {
        Some(invocation) => (invocation.request_id.clone(), invocation.source_ip.clone()),
        None => {
            (local_request_id(), request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip().to_string()))
        }
    };
    Meta {
        request_id,
        ip,
        ua: header_text(headers, header::USER_AGENT.as_str()),
        webhook_id: header_text(headers, "x-webhook-id"),
    }
}

/// A version 4 UUID for a request the local server received, as Lambda gives each invocation.
/// Its random bits come from fastrand's per-thread generator, seeded once from the OS (the AWS
/// SDK's invocation ids are made the same way), not from a `getrandom` call per request: the id
/// only tells requests apart in the lines and logs, and nothing depends on it being unguessable.
fn local_request_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid().to_string()
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| super::local_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }
}
