//! The S3 client's HTTPS path, for real: the `mailhook` binary stores through an S3-compatible
//! server (s3s-fs) behind TLS on loopback, whose certificate a test CA made with rcgen signs.
//! Trusted through `SSL_CERT_FILE`, as it is for any https endpoint other than AWS's, a write
//! succeeds; with another CA in the file, or the system's trust store, the handshake fails and the
//! sender gets a 500 with nothing stored. For AWS's own endpoints the client trusts only the
//! compiled-in Amazon Trust Services roots, which are checked here against their published
//! fingerprints.

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

/// An S3-compatible server storing under a new directory, behind a TLS front whose certificate
/// a new test CA signs: (its directory, the CA, the front's address, its handshake count).
async fn s3_behind_tls() -> (tempfile::TempDir, TestCa, SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let root = tempfile::tempdir().unwrap();
    let backend = s3_server(root.path()).await;
    let ca = test_ca("mailhook test CA");
    let (endpoint, handshakes) = tls_front(&ca, backend).await;
    (root, ca, endpoint, handshakes)
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
    let (root, ca, endpoint, handshakes) = s3_behind_tls().await;
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
    drop(server);

    // A path that does not exist falls back to the system's trust store with a warning, rather
    // than leaving no roots at all or failing to start.
    let (server, addr) = mailhook(endpoint, &[("SSL_CERT_FILE", "/nonexistent/ca-bundle.crt".to_owned())]).await;
    assert_eq!(post_event(addr, 4).await, 500, "{}", server.output());
    let log = server.output();
    assert!(log.contains("SSL_CERT_FILE does not exist; using the system's trust store"), "{log}");
    assert_eq!(objects(root.path()), 1);
    assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), before, "no untrusted handshake completed");
}

/// amazontrust.com's SHA-256 fingerprints of Amazon Root CA 1 to 4 and Starfield Services Root
/// Certificate Authority - G2, in that order.
const ATS_FINGERPRINTS: [&str; 5] = [
    "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
    "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
    "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
    "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
    "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
];

fn pem_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().expect("PEM certificates")
}

#[test]
fn the_compiled_in_roots_are_the_five_amazon_trust_services_roots() {
    use sha2::{Digest, Sha256};
    let roots = pem_certs(mailhook::aws::ATS_ROOTS.as_bytes());
    let fingerprints: Vec<String> =
        roots.iter().map(|c| Sha256::digest(c).iter().map(|b| format!("{b:02x}")).collect()).collect();
    assert_eq!(fingerprints, ATS_FINGERPRINTS, "byte for byte the roots amazontrust.com lists");
    // Each is a trust anchor rustls takes, as the SDK's client adds them (it panics on one it cannot).
    let mut store = rustls::RootCertStore::empty();
    for root in &roots {
        store.add(root.clone()).expect("a usable trust anchor");
    }
    assert_eq!(store.len(), 5);
    // And the same certificates the platform's store carries, where it is Debian's or Amazon Linux's.
    let bundle = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
        .into_iter()
        .find_map(|path| std::fs::read(path).ok());
    match bundle {
        Some(bundle) => {
            let system = pem_certs(&bundle);
            assert!(roots.iter().all(|root| system.contains(root)), "every compiled-in root is in the system bundle");
        }
        None => skipped("no system CA bundle to compare the compiled-in roots with"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_compiled_in_roots_a_server_of_another_ca_is_refused() {
    let (root, _ca, endpoint, handshakes) = s3_behind_tls().await;
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("https://localhost:{}", endpoint.port()))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests"));
    let client = mailhook::aws::build(
        loader,
        &path_style(mailhook::aws::Trust::AmazonTrustServices),
        aws_config::timeout::TimeoutConfig::disabled(),
        aws_config::retry::RetryConfig::disabled(),
    )
    .await;
    let put = client.put_object().bucket(BUCKET).key("k.jsonl").body(b"x\n".to_vec().into()).send().await;
    let error =
        aws_sdk_s3::error::DisplayErrorContext(put.expect_err("a CA outside the compiled-in roots")).to_string();
    assert!(error.contains("UnknownIssuer"), "refused for its issuer: {error}");
    assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(objects(root.path()), 0);
}

/// The template declares `AWS_ENDPOINT_URL_S3` (so `sam local invoke --env-vars` can set it),
/// empty otherwise. Empty, it names no endpoint, as when it is unset: the general
/// `AWS_ENDPOINT_URL` (here a plain S3 server) is used. (That with neither the client goes to
/// AWS's own endpoint, not to one named "", is `aws::tests::an_empty_endpoint_variable_names_no_endpoint`,
/// which sends nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_s3_endpoint_variable_leaves_the_general_one() {
    let root = tempfile::tempdir().unwrap();
    let backend = s3_server(root.path()).await;
    let empty = ("AWS_ENDPOINT_URL_S3", String::new());
    let general = ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", backend.port()));
    let (server, addr) = mailhook(backend, &[empty, general]).await;
    assert_eq!(post_event(addr, 1).await, 200, "{}", server.output());
    assert_eq!(objects(root.path()), 1, "{}", server.output());
}
