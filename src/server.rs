//! The local HTTP/1 server, for running mailhook outside Lambda: a connection cap under the
//! open-file limit, a smaller one per source address, header and idle timeouts, and a graceful
//! stop on SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};

use crate::Error;
use crate::config::ConfigError;

/// A local connection that has not sent a whole request head by then is closed. hyper runs the
/// same timer while a kept-alive connection waits for its next request, so it is the idle timeout too.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A local connection whose answer cannot be written for this long, because its client stopped
/// reading, is closed: the header timeout does not run while hyper waits to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// On SIGTERM, how long requests in flight may take to finish before the server stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept for the archive, the listeners and the S3 client beside the connections
/// (the metrics endpoint's among them).
const SPARE_FILES: u64 = 64;
/// Scrapers of `/metrics` served at once; more wait in the listen backlog.
const METRICS_CONNECTIONS: usize = 8;
/// Why a connection over its source's limit is answered 503. No request on it is handled, so
/// nothing is stored, and the sender's resend will find room.
const REFUSED: &str = "Too many connections from this address: the event was not stored";
/// How often at most a source over its limit is logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `app` on `addr` (`accept_until`): at most `max_connections` at once and `per_source`
/// from one address, each closed if it sends no whole request head within `HEADER_TIMEOUT`,
/// whether new or kept alive. On SIGTERM or Ctrl-C it stops accepting, lets requests in flight
/// finish for up to `DRAIN_TIMEOUT`, and returns.
pub async fn serve(
    addr: SocketAddr,
    max_connections: usize,
    per_source: usize,
    app: axum::Router,
) -> Result<(), Error> {
    let open_files = raise_open_file_limit();
    if max_connections as u64 + SPARE_FILES > open_files {
        let problem = format!(
            "{max_connections} needs {} open files, but the limit (ulimit -n) is {open_files}: lower \
             MAX_CONNECTIONS or raise the limit",
            max_connections as u64 + SPARE_FILES
        );
        return Err(ConfigError { var: "MAX_CONNECTIONS", problem }.into());
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("LISTEN_ADDR {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, max_connections, per_source, "listening");
    let graceful = accept_until(listener, max_connections, per_source, true, app, shutdown_signal()).await;
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
    accept_until(listener, METRICS_CONNECTIONS, METRICS_CONNECTIONS, false, app, std::future::pending()).await;
}

/// Accepts connections to `app` until `stop`, at most `max_connections` at once (more wait in the
/// listen backlog), each closed if it sends no whole request head within `HEADER_TIMEOUT`, or
/// reads none of its answer within `WRITE_TIMEOUT`, and after its first answer unless
/// `keep_alive`. A connection from a source that already holds `per_source` is answered 503 and
/// closed as soon as it is accepted, so one address cannot hold the cap and keep everyone else
/// in the backlog. Returns the connections still open, to drain.
async fn accept_until(
    listener: tokio::net::TcpListener,
    max_connections: usize,
    per_source: usize,
    keep_alive: bool,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(keep_alive);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let sources = Arc::new(Sources::default());
    let mut refusals = Refusals::default();
    let refused = refused_answer();
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
        let Some(source) = sources.take(peer.ip(), per_source) else {
            refuse(stream, &refused);
            refusals.count(peer.ip());
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), request)
        });
        let mut stream = tokio_io_timeout::TimeoutWriter::new(stream);
        stream.set_timeout(Some(WRITE_TIMEOUT));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop((slot, source));
        });
    }
    graceful
}

/// Connections open per source, where a source is an IPv4 address or an IPv6 /64 (one host's
/// usual share, so hopping addresses inside it gains nothing).
#[derive(Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its source until dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    source: IpAddr,
}

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let source = source_of(ip);
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(source).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot { sources: self.clone(), source })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// The address a connection is counted under: IPv4 (also when mapped into IPv6), or the IPv6 /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// The 503 a refused connection gets, with the headers and the JSON body of every other answer.
fn refused_answer() -> Vec<u8> {
    let body = format!(r#"{{"ok":false,"error":"{REFUSED}"}}"#);
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers 503 without waiting, and closes. What the client has sent is read first, as far as it
/// has arrived, so that the close is a FIN after the answer rather than a reset that may discard
/// it. Plain syscalls on the non-blocking socket: tokio's `try_` calls would see no readiness yet.
fn refuse(stream: tokio::net::TcpStream, answer: &[u8]) {
    use std::io::{Read, Write};
    let Ok(mut stream) = stream.into_std() else { return };
    let _ = stream.read(&mut [0; 4096]);
    let _ = stream.write(answer);
}

/// Refused connections, logged at most once per `REFUSAL_LOG_INTERVAL` so a flood cannot flood the log.
#[derive(Default)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, ip: IpAddr) {
        self.since_logged += 1;
        if self.logged_at.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!(
                source = %source_of(ip),
                refused = self.since_logged,
                "connections over MAX_CONNECTIONS_PER_SOURCE answered 503"
            );
            self.since_logged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let source = |ip: &str| source_of(ip.parse().unwrap()).to_string();
        assert_eq!(source("192.0.2.7"), "192.0.2.7");
        assert_eq!(source("::ffff:192.0.2.7"), "192.0.2.7", "mapped, as a dual-stack listener sees IPv4");
        assert_eq!(source("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(source("::1"), "::");
    }

    #[test]
    fn a_source_gets_its_slots_back_as_connections_close() {
        let sources = Arc::new(Sources::default());
        let ip = "2001:db8::1".parse().unwrap();
        let first = sources.take(ip, 2).unwrap();
        let second = sources.take("2001:db8::2".parse().unwrap(), 2).unwrap();
        assert!(sources.take(ip, 2).is_none(), "the same /64");
        assert!(sources.take("2001:db8:0:1::1".parse().unwrap(), 2).is_some(), "the next /64 is another source");
        drop(first);
        let third = sources.take(ip, 2).unwrap();
        drop((second, third));
        assert!(sources.0.lock().unwrap().is_empty(), "no entry left for a source with no connection");
    }
}
