//! The local HTTP/1 server, for running mailhook outside Lambda: a connection cap under the
//! open-file limit, header and idle timeouts, and a graceful stop on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

use crate::Error;

/// A local connection that has not sent a whole request head by then is closed. hyper runs the
/// same timer while a kept-alive connection waits for its next request, so it is the idle timeout too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// On SIGTERM, how long requests in flight may take to finish before the server stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept for the archive, the listeners and the S3 client beside the connections
/// (the metrics endpoint's among them).
const SPARE_FILES: u64 = 64;
/// Scrapers of `/metrics` served at once; more wait in the listen backlog.
const METRICS_CONNECTIONS: usize = 8;

/// Serves `app` on `addr` (`accept_until`): at most `max_connections` at once, each closed if it
/// sends no whole request head within `HEADER_TIMEOUT`, whether new or kept alive. On SIGTERM or Ctrl-C it stops accepting, lets requests in flight finish for up to
/// `DRAIN_TIMEOUT`, and returns.
pub async fn serve(addr: SocketAddr, max_connections: usize, app: axum::Router) -> Result<(), Error> {
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
    let graceful = accept_until(listener, max_connections, true, app, shutdown_signal()).await;
    tracing::info!(connections = graceful.count(), "stopping: draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "stopping with connections still open");
    }
    Ok(())
}

/// Serves `app` (`/metrics`, METRICS_ADDR) on `listener` for as long as the process runs, on the
/// same HTTP/1 connections with the same header timeout, at most `METRICS_CONNECTIONS` at once,
/// and one request each: a scraper cannot hold a slot between scrapes, or by never reading its
/// answers. Nothing is drained at a stop: a scrape cut off is the scraper's to retry.
pub async fn serve_metrics(listener: tokio::net::TcpListener, app: axum::Router) {
    accept_until(listener, METRICS_CONNECTIONS, false, app, std::future::pending()).await;
}

/// Accepts connections to `app` until `stop`, at most `max_connections` at once (more wait in the
/// listen backlog), each closed if it sends no whole request head within `HEADER_TIMEOUT`, and
/// after its first answer unless `keep_alive`. Returns the connections still open, to drain.
async fn accept_until(
    listener: tokio::net::TcpListener,
    max_connections: usize,
    keep_alive: bool,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(keep_alive);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
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
    graceful
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
