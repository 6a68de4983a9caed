//! mailhook: receives adm.tools mail webhooks and archives each event as one JSON line in
//! date-partitioned objects, under AWS Lambda (function URL) or as a plain HTTP server.
//!
//! A request goes `http` (routes) → `webhook` (pure checks) → `record` (the stored line, under a
//! key that `layout` names) → `archive` (S3, or a local `dir` of segments). `compact` merges
//! closed S3 partitions; `cli` (the command line), `config`, `telemetry` (logs and metrics), `aws`
//! (the clients) and `server` (the local HTTP server) are the rest. `execute` runs a command, and
//! `Error` is why one stopped, with its exit code.

pub mod archive;
pub mod aws;
pub mod cli;
pub mod compact;
pub mod config;
pub mod http;
pub mod lambda;
pub mod layout;
pub mod record;
pub mod server;
pub mod telemetry;
pub mod tokens;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::archive::{Archive, DirArchive, S3Archive};
use crate::cli::Command;
use crate::compact::{CompactError, lease::LeaseError};
use crate::config::{ArchiveTarget, CompactConfig, Config, ConfigError, Runtime};
use crate::http::AppState;
use crate::layout::Prefix;
use crate::telemetry::metrics::{Metrics, Prometheus};
use crate::tokens::{ParameterTokens, TokenSource};

/// What the Lambda runtime and the servers fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a command stopped before its end. Each kind has its exit code (`exit_code`), and its
/// message is logged once, by `main`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument: refused to start.
    #[error("{0}")]
    Usage(String),
    /// A bad configuration, or one that cannot work here: refused to start.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A compaction run that did not get to its end.
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// Failed while running.
    #[error("{0}")]
    Failed(BoxError),
}

impl Error {
    /// The exit codes `main` documents: 1 failed while running, 2 refused to start (arguments
    /// or configuration), 3 another compaction holds the archive (this run did nothing, or
    /// stopped before its next write).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Compact(CompactError::Lease(LeaseError::Held { .. } | LeaseError::Lost { .. })) => 3,
            Error::Compact(_) | Error::Failed(_) => 1,
        }
    }
}

impl From<BoxError> for Error {
    fn from(e: BoxError) -> Error {
        Error::Failed(e)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Failed(message.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Failed(e.into())
    }
}

/// Runs `command` to its end, on a runtime of its own.
pub fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Help(usage) => {
            println!("{usage}");
            Ok(())
        }
        Command::Serve => {
            let config = Config::from_env()?;
            runtime(config.runtime == Runtime::Lambda).block_on(serve(config))
        }
        Command::CompactLambda => {
            let config = CompactConfig::from_env()?;
            Ok(runtime(true).block_on(compact::serve_lambda(config))?)
        }
        Command::Compact(options) => {
            let config = CompactConfig::from_env()?;
            // One gzip stream takes one core, and the GETs feeding it are I/O: on one thread, no
            // response crosses threads to reach it (BENCHMARKS.md, compaction).
            let report = runtime(true).block_on(compact::compact(&config, &options))?;
            tracing::info!(through = %options.through, "{report}");
            report.failure().map_or(Ok(()), |message| Err(message.into()))
        }
    }
}

/// Under Lambda one request (or one compaction run) is in flight at a time, so a thread of its
/// own is all the runtime needs, and Init spawns no worker threads (BENCHMARKS.md, cold start).
/// A compaction run is one thread's work anywhere. The local server serves many connections at
/// once on every core.
fn runtime(single: bool) -> tokio::runtime::Runtime {
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().expect("starting the runtime")
}

/// A local client that has not sent its whole body by then gets 408 and its connection back.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the archive the configuration names and serves webhooks until the runtime stops.
pub async fn serve(config: Config) -> Result<(), Error> {
    let lambda = config.runtime == Runtime::Lambda;
    let load = || aws::receiver_config(&config.access.s3.trust, config.store_timeout, aws::sdk_loader(lambda));
    match config.access.archive.clone() {
        ArchiveTarget::S3 { bucket, prefix } => {
            let shared = load().await;
            let tokens = token_source(&config, async || shared.clone()).await;
            let client = aws::client(&shared, &config.access.s3);
            serve_from(config, tokens, S3Archive::new(client, bucket), prefix).await
        }
        ArchiveTarget::Dir(path) => {
            let tokens = token_source(&config, load).await;
            let archive = DirArchive::open(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::ResourceBusy => {
                    Error::from(format!("ARCHIVE_URI directory {} is in use: {e}", path.display()))
                }
                _ => ConfigError {
                    var: "ARCHIVE_URI",
                    problem: format!("directory {} is not writable: {e}", path.display()),
                }
                .into(),
            })?;
            serve_from(config, tokens, archive, Prefix::default()).await
        }
    }
}

/// The tokens from the SSM parameter the configuration names, through the connection of the SDK
/// configuration `shared` gives (loaded only then), or else from `WEBHOOK_TOKENS`.
async fn token_source(config: &Config, shared: impl AsyncFnOnce() -> aws_config::SdkConfig) -> TokenSource {
    match &config.tokens_parameter {
        Some(name) => {
            let client = aws::token_client(&shared().await, &config.access.s3, config.store_timeout);
            TokenSource::Parameter(ParameterTokens::new(client, name.clone()))
        }
        None => TokenSource::Fixed(config.tokens.clone()),
    }
}

async fn serve_from<A: Archive>(config: Config, tokens: TokenSource, archive: A, prefix: Prefix) -> Result<(), Error> {
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
    let served = match config.runtime {
        Runtime::Lambda => lambda::serve(state.clone()).await.map_err(Error::from),
        Runtime::Http(addr) => {
            let app = http::router(state.clone());
            server::serve(addr, config.max_connections, config.max_connections_per_source, app).await
        }
    };
    state.archive.close().await;
    served
}
