//! The local server against slow and stalled clients, and stopping on SIGTERM: the real binary
//! over real sockets.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server waits for a request head, or to write an answer (src/server.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn event_request(uid: u32) -> Vec<u8> {
    let body = format!(r#"{{"mailbox":"info@example.com","uid":{uid},"tstamp":1795711572,"event":"create"}}"#);
    format!("POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// Sends one event on a fresh connection and reads the status line.
async fn send_event(addr: SocketAddr, uid: u32) -> u16 {
    send_event_from(Ipv4Addr::LOCALHOST, addr, uid).await
}

/// A second loopback address, which Linux routes on `lo` with no setup.
const OTHER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A connection to `addr` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(addr).await
}

async fn send_event_from(source: Ipv4Addr, addr: SocketAddr, uid: u32) -> u16 {
    let mut stream = connect_from(source, addr).await.unwrap();
    stream.write_all(&event_request(uid)).await.unwrap();
    read_status(&mut stream).await
}

async fn read_status(stream: &mut TcpStream) -> u16 {
    let mut reply = vec![0; 4096];
    let n = stream.read(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply[..n])[9..12].parse().unwrap()
}

/// Opens a connection that sends half a request head and then nothing.
async fn stalled(addr: SocketAddr) -> TcpStream {
    stalled_from(Ipv4Addr::LOCALHOST, addr).await
}

async fn stalled_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(source, addr).await.unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Webh").await.unwrap();
    stream
}

/// Waits until the server closes `stream` (end of file or reset), and says when.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let mut buf = [0; 1024];
    let end = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    end.await.is_ok()
}

#[tokio::test]
async fn stalled_clients_do_not_starve_a_real_sender_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    // One address stands in for many clients here: this is about the global cap and the timeout.
    let server = Running::local(addr, dir.path(), &[("MAX_CONNECTIONS_PER_SOURCE", "1024")]).await;

    let mut stalls = Vec::new();
    for _ in 0..550 {
        stalls.push(stalled(addr).await);
    }
    // A kept-alive connection that has had its answer and then goes quiet.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&event_request(1)).await.unwrap();
    assert_eq!(read_status(&mut idle).await, 200);

    let started = Instant::now();
    assert_eq!(send_event(addr, 2).await, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "the real sender waited {:?}", started.elapsed());

    let since = Instant::now();
    let limit = HEADER_TIMEOUT + Duration::from_secs(10);
    let mut closes = tokio::task::JoinSet::new();
    for stream in stalls.into_iter().chain([idle]) {
        closes.spawn(closed_within(stream, limit));
    }
    let closed = closes.join_all().await;
    assert!(
        closed.iter().all(|&c| c),
        "{} of 551 quiet connections still open after {limit:?}",
        closed.iter().filter(|&&c| !c).count()
    );
    assert!(since.elapsed() >= HEADER_TIMEOUT - Duration::from_secs(1), "closed early: {:?}", since.elapsed());
    assert_eq!(send_event(addr, 3).await, 200, "still serving:\n{}", server.output());
    assert_eq!(stored(dir.path()).len(), 3);
}

/// The sockets `server` holds open: its connections, and besides them the listener and the
/// runtime's own signal pipes (Unix sockets), up to 4.
fn sockets(server: &Running) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .filter(|fd| {
            std::fs::read_link(fd.as_ref().unwrap().path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// At the connection cap, further connections wait in the listen backlog instead of taking
/// file descriptors; they are served once the stalled ones are closed.
#[tokio::test]
async fn the_connection_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let server = Running::local(addr, dir.path(), &[("MAX_CONNECTIONS", "8")]).await;
    let mut stalls = Vec::new();
    for _ in 0..12 {
        stalls.push(stalled(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sockets = sockets(&server);
    assert!((8..=8 + 4).contains(&sockets), "{sockets} sockets open with MAX_CONNECTIONS=8 and 12 clients");
    let started = Instant::now();
    assert_eq!(send_event(addr, 1).await, 200);
    // Behind the 4 stalled clients that did not fit: served once the first 8 time out.
    assert!(started.elapsed() < HEADER_TIMEOUT * 2, "{:?}", started.elapsed());
    drop(stalls);
}

/// The review's finding 7: one address churning half-sent heads held every slot, and a sender on
/// another address waited in the backlog for them to time out. Over MAX_CONNECTIONS_PER_SOURCE
/// the churn is refused at once, so the sender gets each answer without waiting for a timeout.
#[tokio::test]
async fn one_source_cannot_hold_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let limits = [("MAX_CONNECTIONS", "32"), ("MAX_CONNECTIONS_PER_SOURCE", "8")];
    let server = Running::local(addr, dir.path(), &limits).await;

    // 64 half-sent heads at once, twice the cap, then 50 more a second, none closed by the client.
    let (burst_sent, burst) = tokio::sync::oneshot::channel();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let attack = tokio::spawn(async move {
        let (mut open, mut burst_sent) = (Vec::new(), Some(burst_sent));
        while stopped.try_recv().is_err() && open.len() < 2_000 {
            let mut stream = connect_from(Ipv4Addr::LOCALHOST, addr).await.unwrap();
            // A refused connection may be closed before its head is written.
            let _ = stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Webh").await;
            open.push(stream);
            if open.len() >= 64 {
                if let Some(sent) = burst_sent.take() {
                    let _ = sent.send(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    burst.await.unwrap();

    for uid in 1..=20 {
        let started = Instant::now();
        // Generous: well under the header timeout the stalled heads would need to expire.
        let answer = tokio::time::timeout(HEADER_TIMEOUT / 2, send_event_from(OTHER_SOURCE, addr, uid)).await;
        assert_eq!(answer.ok(), Some(200), "answer {uid} of 20, after {:?}:\n{}", started.elapsed(), server.output());
    }
    let _ = stop.send(());
    attack.await.unwrap();
    assert_eq!(stored(dir.path()).len(), 20);
}

/// A connection over its source's limit is answered 503 and closed at once, without taking a
/// slot; other sources are served, and the source gets room again as its connections close.
#[tokio::test]
async fn a_source_over_its_limit_is_answered_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let server = Running::local(addr, dir.path(), &[("MAX_CONNECTIONS_PER_SOURCE", "4")]).await;
    // Not 127.0.0.1, where the connections that waited for the server to start may still count.
    let source = Ipv4Addr::new(127, 0, 0, 3);
    let mut stalls = Vec::new();
    for _ in 0..4 {
        stalls.push(stalled_from(source, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = sockets(&server);
    let started = Instant::now();
    for _ in 0..2 {
        let mut over = connect_from(source, addr).await.unwrap();
        let mut answer = String::new();
        over.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nCache-Control: no-store\r\n") && head.contains("nosniff"), "{head}");
        assert!(body.starts_with(r#"{"ok":false,"error":"#), "{body}");
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut over = stalled_from(source, addr).await;
        assert_eq!(read_status(&mut over).await, 503);
        assert!(closed_within(over, Duration::from_secs(1)).await);
    }
    assert!(started.elapsed() < HEADER_TIMEOUT / 2, "refused after {:?}", started.elapsed());
    assert!(sockets(&server) <= held, "{} sockets open after 4 refused, {held} before", sockets(&server));
    assert_eq!(send_event_from(OTHER_SOURCE, addr, 1).await, 200);

    drop(stalls.pop());
    let since = Instant::now();
    let status = loop {
        // The server sees the close a moment later.
        match send_event_from(source, addr, 2).await {
            503 if since.elapsed() < HEADER_TIMEOUT / 2 => tokio::time::sleep(Duration::from_millis(20)).await,
            status => break status,
        }
    };
    assert_eq!(status, 200, "{}", server.output());
    assert_eq!(stored(dir.path()).len(), 2);
    let log = server.output();
    assert_eq!(log.matches("over MAX_CONNECTIONS_PER_SOURCE").count(), 1, "logged once in 10 s:\n{log}");
    assert!(log.contains("source=127.0.0.3 refused=1"), "{log}");
}

/// A client that sends requests and never reads the answers stops hyper writing, and while hyper
/// waits to write no header timeout runs: without a write timeout it held its slot for good.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let server = Running::local(addr, dir.path(), &[("MAX_CONNECTIONS", "1")]).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    // Pipelined requests (each answered 405) until the server stops reading them.
    let requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut sent = 0;
    while sent < 1_000_000 {
        match tokio::time::timeout(Duration::from_millis(500), reader.write_all(&requests)).await {
            Ok(written) => written.unwrap(),
            Err(_) => break,
        }
        sent += 1000;
    }
    assert!(sent < 1_000_000, "the server read {sent} requests without being able to answer them");

    let started = Instant::now();
    let answer = tokio::time::timeout(HEADER_TIMEOUT * 2, send_event_from(OTHER_SOURCE, addr, 1)).await;
    assert_eq!(answer.ok(), Some(200), "after {:?}", started.elapsed());
    assert_eq!(stored(dir.path()).len(), 1, "{}", server.output().lines().last().unwrap_or_default());
    drop(reader);
}

/// SIGTERM with stalled clients connected and a request in flight: the request is finished and
/// stored, the server exits within its drain deadline, and the segment is sealed for readers.
#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let mut server = Running::local(addr, dir.path(), &[]).await;
    let mut stalls = Vec::new();
    for _ in 0..20 {
        stalls.push(stalled(addr).await);
    }
    assert_eq!(send_event(addr, 1).await, 200);
    // A request whose body is still arriving when the signal comes.
    let request = event_request(2);
    let (head, tail) = request.split_at(request.len() - 10);
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let killed = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    in_flight.write_all(tail).await.unwrap();
    assert_eq!(read_status(&mut in_flight).await, 200, "{}", server.output());
    assert!(TcpStream::connect(addr).await.is_err(), "no new connection is taken while draining");

    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not stopped within the drain deadline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}:\n{}", server.output());
    let files: Vec<String> = files(dir.path()).into_iter().map(|(name, _)| name).collect();
    assert!(files.iter().all(|f| !f.contains(".live")), "every segment is sealed: {files:?}");
    assert_eq!(stored(dir.path()).len(), 2);
    drop(stalls);
}

/// mailhook under open-file limits set by `ulimit` (soft, then hard), with `MAX_CONNECTIONS`.
fn under_limits(
    soft: u32,
    hard: u32,
    max_connections: u32,
    addr: SocketAddr,
    dir: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\""),
            env!("CARGO_BIN_EXE_mailhook"),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", addr.to_string())
        .env("ARCHIVE_URI", dir.display().to_string())
        .env("WEBHOOK_TOKENS", TOKEN)
        .env("MAX_CONNECTIONS", max_connections.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The README's claim at its edge: the server raises its soft open-file limit to the hard one,
/// and starts only if MAX_CONNECTIONS plus 64 spare files fit under it.
#[tokio::test]
async fn max_connections_must_fit_under_the_raised_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 136 + 64 = 200 files: fits the hard limit, which the soft limit of 50 is raised to.
    let addr = closed_port();
    let mut fits = under_limits(50, 200, 136, addr, dir.path());
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(fits.try_wait().unwrap().is_none(), "exited: {:?}", fits.wait_with_output().unwrap());
        assert!(started.elapsed() < Duration::from_secs(30), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send_event(addr, 1).await, 200);
    let _ = fits.kill();
    let _ = fits.wait();

    // One more connection than fits: refused at start as a configuration error (exit 2), naming
    // the variable and the limit.
    let refused = under_limits(200, 200, 137, closed_port(), dir.path()).wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let output = String::from_utf8_lossy(&refused.stdout).into_owned() + &String::from_utf8_lossy(&refused.stderr);
    assert!(output.contains("MAX_CONNECTIONS 137 needs 201 open files, but the limit (ulimit -n) is 200"), "{output}");
}
