//! mailhook: receives adm.tools mail webhooks and archives each event as one JSON line in
//! date-partitioned objects, under AWS Lambda (function URL) or as a plain HTTP server.
//!
//! A request goes `http` (routes) → `webhook` (pure checks) → `record` (the stored line, under a
//! key that `layout` names) → `archive` (S3, or a local `dir` of segments). `compact` merges
//! closed S3 partitions; `config`, `logging`, `metrics`, `s3` (the client) and `server` (the
//! local HTTP server) are the rest.

pub mod archive;
pub mod aws;
pub mod compact;
pub mod config;
pub mod http;
pub mod lambda;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod server;
pub mod tokens;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::archive::{Archive, DirArchive, S3Archive};
use crate::config::{ArchiveTarget, Config, Runtime};
use crate::http::AppState;
use crate::layout::Prefix;
use crate::metrics::{Metrics, Prometheus};
use crate::tokens::{ParameterTokens, TokenSource};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A local client that has not sent its whole body by then gets 408 and its connection back.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the archive the configuration names and serves until the runtime stops.
pub async fn run(config: Config) -> Result<(), Error> {
    let lambda = config.runtime == Runtime::Lambda;
    let needs_aws = matches!(config.access.archive, ArchiveTarget::S3 { .. }) || config.tokens_parameter.is_some();
    let aws = match needs_aws {
        true => {
            Some(aws::receiver_config(&config.access.s3.trust, config.store_timeout, aws::sdk_loader(lambda)).await)
        }
        false => None,
    };
    let tokens = match (&config.tokens_parameter, &aws) {
        (Some(name), Some(shared)) => {
            let client = aws::token_client(shared, &config.access.s3, config.store_timeout);
            TokenSource::Parameter(ParameterTokens::new(client, name.clone()))
        }
        _ => TokenSource::Fixed(config.tokens.clone()),
    };
    match (config.access.archive.clone(), aws) {
        (ArchiveTarget::S3 { bucket, prefix }, Some(aws)) => {
            let client = aws::client(&aws, &config.access.s3);
            serve(config, tokens, S3Archive::new(client, bucket), prefix).await
        }
        (ArchiveTarget::S3 { .. }, None) => unreachable!("an S3 archive loads the SDK configuration"),
        (ArchiveTarget::Dir(path), _) => {
            let archive = DirArchive::open(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::ResourceBusy => format!("ARCHIVE_URI directory {} is in use: {e}", path.display()),
                _ => format!("configuration error: ARCHIVE_URI directory {} is not writable: {e}", path.display()),
            })?;
            serve(config, tokens, archive, Prefix::default()).await
        }
    }
}

async fn serve<A: Archive>(config: Config, tokens: TokenSource, archive: A, prefix: Prefix) -> Result<(), Error> {
    let metrics = match (config.runtime, config.metrics_addr) {
        (Runtime::Lambda, _) => Metrics::Emf { function_name: config.function_name.clone() },
        (Runtime::Http(_), Some(_)) => Metrics::Prometheus(Prometheus::default()),
        (Runtime::Http(_), None) => Metrics::Off,
    };
    if matches!(&tokens, TokenSource::Fixed(t) if !t.is_configured()) {
        tracing::warn!(
            "WEBHOOK_TOKENS is empty: every webhook request gets 503 (and one resend 15 minutes later) \
             until the panel's token is set"
        );
    }
    let state = Arc::new(AppState {
        tokens,
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
        tokio::spawn(server::serve_metrics(listener, http::metrics_router(state.clone())));
    }
    let app = http::router(state.clone());
    let served = match config.runtime {
        Runtime::Lambda => lambda::serve(app).await,
        Runtime::Http(addr) => {
            server::serve(addr, config.max_connections, config.max_connections_per_source, app).await
        }
    };
    state.archive.close().await;
    served
}
