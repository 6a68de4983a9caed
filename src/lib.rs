//! mailhook: receives adm.tools mail webhooks and archives each event as one JSON line in
//! date-partitioned objects, under AWS Lambda (function URL) or as a plain HTTP server.

pub mod archive;
pub mod config;
pub mod http;
pub mod record;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::archive::{Archive, DirArchive, S3Archive};
use crate::config::{ArchiveTarget, Config, Runtime};
use crate::http::AppState;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A local client that has not sent its whole body by then gets 408 and its connection back.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Builds the archive the configuration names and serves until the runtime stops.
pub async fn run(config: Config) -> Result<(), Error> {
    match config.archive.clone() {
        ArchiveTarget::S3 { bucket, prefix } => {
            let client = s3_client(&config, aws_config::defaults(BehaviorVersion::latest())).await;
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
    let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = loader.http_client(https).timeout_config(timeouts).retry_config(retries).load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.s3_force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}

async fn serve<A: Archive>(config: Config, archive: A, prefix: String) -> Result<(), Error> {
    let state = AppState {
        tokens: config.tokens,
        account_id: config.account_id,
        max_body_bytes: config.max_body_bytes,
        store_timeout: config.store_timeout,
        body_timeout: BODY_TIMEOUT,
        prefix,
        archive,
    };
    let app = http::router(Arc::new(state));
    match config.runtime {
        Runtime::Lambda => lambda_http::run(app).await,
        Runtime::Http(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("LISTEN_ADDR {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            Ok(())
        }
    }
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
