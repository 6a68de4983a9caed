//! The S3 client's HTTPS path, for real: the `mailhook` binary stores through an S3-compatible
//! server (s3s-fs) behind TLS on loopback, whose certificate a test CA made with rcgen signs.
//! Trusted through `SSL_CERT_FILE`, the way the template configures it, a write succeeds; with
//! another CA in the file, or the system's trust store, the handshake fails and the sender gets
//! a 500 with nothing stored.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A CA, and a server certificate it signs for `localhost` and 127.0.0.1.
struct TestCa {
    ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn test_ca(name: &str) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    TestCa {
        ca_pem: ca_cert.pem(),
        server_cert: cert.der().clone(),
        server_key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    }
}

/// Terminates TLS on a loopback port with `ca`'s server certificate and passes the bytes on to
/// `backend`. Counts the handshakes that completed.
async fn tls_front(ca: &TestCa, backend: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate aborts the handshake here.
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, handshakes)
}

/// mailhook as a local server with an S3 archive at `https://localhost:<port>`.
async fn mailhook(endpoint: SocketAddr, extra: &[(&str, String)]) -> (Running, SocketAddr) {
    let addr = closed_port();
    let mut vars = s3_archive_env(format!("https://localhost:{}", endpoint.port()));
    vars.extend([
        ("LISTEN_ADDR", addr.to_string()),
        ("WEBHOOK_TOKENS", TOKEN.to_owned()),
        ("STORE_TIMEOUT_MS", "3000".to_owned()),
    ]);
    vars.extend(extra.iter().cloned());
    let server = Running::start(&vars);
    let started = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "server did not start:\n{}", server.output());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (server, addr)
}

async fn post_event(addr: SocketAddr, uid: u32) -> u16 {
    let body = format!(r#"{{"mailbox":"info@example.com","uid":{uid},"tstamp":1795711572,"event":"create"}}"#);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0; 4096];
    let n = stream.read(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply[..n])[9..12].parse().unwrap()
}

fn objects(root: &Path) -> usize {
    files(&root.join(BUCKET)).into_iter().filter(|(name, _)| name.ends_with(".jsonl")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_s3_works_when_the_ca_is_trusted_through_ssl_cert_file_and_fails_with_500_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let backend = s3_server(root.path()).await;
    let ca = test_ca("mailhook test CA");
    let (endpoint, handshakes) = tls_front(&ca, backend).await;
    let files_dir = tempfile::tempdir().unwrap();
    let trusted = files_dir.path().join("ca.pem");
    std::fs::write(&trusted, &ca.ca_pem).unwrap();
    let other = files_dir.path().join("other-ca.pem");
    std::fs::write(&other, test_ca("some other CA").ca_pem).unwrap();

    // The configured CA: stored over TLS.
    let (server, addr) = mailhook(endpoint, &[("SSL_CERT_FILE", trusted.display().to_string())]).await;
    assert_eq!(post_event(addr, 1).await, 200, "{}", server.output());
    assert_eq!(objects(root.path()), 1, "stored through the TLS front");
    assert!(handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the write went over TLS");
    drop(server);

    // A bundle that holds a CA, but not this one: the handshake fails, the sender gets 500.
    let before = handshakes.load(std::sync::atomic::Ordering::SeqCst);
    let (server, addr) = mailhook(endpoint, &[("SSL_CERT_FILE", other.display().to_string())]).await;
    assert_eq!(post_event(addr, 2).await, 500, "{}", server.output());
    assert_eq!(objects(root.path()), 1, "nothing stored without a trusted certificate");
    let log = server.output();
    assert!(log.contains("store failed"), "{log}");
    drop(server);

    // No SSL_CERT_FILE: the system's trust store (the test runs with a clean environment), which
    // does not hold the test CA. The same.
    let (server, addr) = mailhook(endpoint, &[]).await;
    assert_eq!(post_event(addr, 3).await, 500, "{}", server.output());
    assert_eq!(objects(root.path()), 1);
    assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), before, "no untrusted handshake completed");
}
