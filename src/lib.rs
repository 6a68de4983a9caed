//! mailhook: receives adm.tools mail webhooks and archives each event as one JSON line in
//! date-partitioned objects, under AWS Lambda (function URL) or as a plain HTTP server.

pub mod archive;
pub mod compact;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::archive::{Archive, DirArchive, S3Archive};
use crate::config::{ArchiveTarget, Config, Runtime};
use crate::http::AppState;
use crate::metrics::{Metrics, Prometheus};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A local client that has not sent its whole body by then gets 408 and its connection back.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A local connection that has not sent a whole request head by then is closed. hyper runs the
/// same timer while a kept-alive connection waits for its next request, so it is the idle timeout too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On SIGTERM, how long requests in flight may take to finish before the server stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept for the archive, the listener and the S3 client beside the connections.
const SPARE_FILES: u64 = 64;

/// Builds the archive the configuration names and serves until the runtime stops.
pub async fn run(config: Config) -> Result<(), Error> {
    match config.archive.clone() {
        ArchiveTarget::S3 { bucket, prefix } => {
            let client = s3_client(&config, sdk_loader(config.runtime == Runtime::Lambda)).await;
            serve(config, S3Archive::new(client, bucket), prefix).await
        }
        ArchiveTarget::Dir(path) => {
            let archive = DirArchive::open(&path).map_err(|e| {
                format!("configuration error: ARCHIVE_URI directory {} is not writable: {e}", path.display())
            })?;
            serve(config, archive, String::new()).await
        }
    }
}

/// The SDK's configuration loader for the archive's S3 client. Under Lambda the credentials are
/// the function role's keys, which Lambda puts in the environment, so only that provider is
/// built: the default chain also builds an STS client (for web identity) while loading, and
/// checking that client's configuration builds a TLS connector, root certificates and all, for a
/// client a Lambda never uses (about half a millisecond of Init; BENCHMARKS.md). Elsewhere the
/// default chain stays: profiles, web identity, containers and instance roles.
pub fn sdk_loader(lambda: bool) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    if lambda {
        loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new())
    } else {
        loader
    }
}

/// The S3 client, built once from `loader` (the SDK's defaults in production; tests add an
/// endpoint and keys). Loading reads the environment only; credentials are fetched on first use.
/// Timeouts keep a stalled S3 well inside the store budget, so the sender gets a 5xx (and its one
/// resend) rather than a Lambda timeout.
pub async fn s3_client(config: &Config, loader: aws_config::ConfigLoader) -> aws_sdk_s3::Client {
    let budget = config.store_timeout;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(budget.min(std::time::Duration::from_secs(2)))
        .operation_attempt_timeout(budget / 2)
        .operation_timeout(budget)
        .build();
    // Three tries with short backoff: a throttled or failing S3 gets two more chances inside the
    // budget, and what still fails is answered 500 so the sender's own resend takes over.
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(std::time::Duration::from_millis(100))
        .with_max_backoff(std::time::Duration::from_secs(1));
    build_s3_client(loader, config.s3_force_path_style, timeouts, retries).await
}

/// An S3 client on the SDK's hyper 1 client with rustls on ring, with these timeouts and retries.
pub async fn build_s3_client(
    loader: aws_config::ConfigLoader,
    force_path_style: bool,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_sdk_s3::Client {
    let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = loader.http_client(https).timeout_config(timeouts).retry_config(retries).load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}

async fn serve<A: Archive>(config: Config, archive: A, prefix: String) -> Result<(), Error> {
    let metrics = match (config.runtime, config.metrics_addr) {
        (Runtime::Lambda, _) => Metrics::Emf { function_name: config.function_name.clone() },
        (Runtime::Http(_), Some(_)) => Metrics::Prometheus(Prometheus::default()),
        (Runtime::Http(_), None) => Metrics::Off,
    };
    let state = Arc::new(AppState {
        tokens: config.tokens,
        account_id: config.account_id,
        max_body_bytes: config.max_body_bytes,
        store_timeout: config.store_timeout,
        body_timeout: BODY_TIMEOUT,
        prefix,
        archive,
        metrics,
    });
    if let (Runtime::Http(_), Some(addr)) = (config.runtime, config.metrics_addr) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("METRICS_ADDR {addr}: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        tokio::spawn(axum::serve(listener, http::metrics_router(state.clone())).into_future());
    }
    let app = http::router(state.clone());
    let served = match config.runtime {
        Runtime::Lambda => lambda_http::run(app).await,
        Runtime::Http(addr) => serve_http(addr, config.max_connections, app).await,
    };
    state.archive.close().await;
    served
}

/// The local HTTP/1 server: at most `max_connections` at once (more wait in the listen
/// backlog), each closed if it sends no whole request head within `HEADER_TIMEOUT`, whether new
/// or kept alive. On SIGTERM or Ctrl-C it stops accepting, lets requests in flight finish for up
/// to `DRAIN_TIMEOUT`, and returns.
async fn serve_http(addr: SocketAddr, max_connections: usize, app: axum::Router) -> Result<(), Error> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let open_files = raise_open_file_limit();
    if max_connections as u64 + SPARE_FILES > open_files {
        return Err(format!(
            "configuration error: MAX_CONNECTIONS {max_connections} needs {} open files, but the limit (ulimit -n) is \
             {open_files}: lower MAX_CONNECTIONS or raise the limit",
            max_connections as u64 + SPARE_FILES
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("LISTEN_ADDR {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, max_connections, "listening");
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "stopping: draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "stopping with connections still open");
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, as servers do, and returns it.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
