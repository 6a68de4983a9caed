//! Shared test parts: the sample events, an in-process call of the handler, and a real
//! S3-compatible server (s3s-fs) listening on loopback.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod lambda;
pub mod moto;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use mailhook::archive::{Archive, DirArchive};
use mailhook::config::Config;
use mailhook::http::{AppState, router};
use mailhook::webhook::Tokens;
use tower::ServiceExt;

/// The token the sample events carry.
pub const TOKEN: &str = "example-token";
pub const ACCOUNT_ID: &str = "123456";
pub const ACCESS_KEY: &str = "AKIAMAILHOOKTEST";
pub const SECRET_KEY: &str = "mailhook-test-secret";
pub const BUCKET: &str = "mail-archive";

pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

/// A sample event file as text.
pub fn event_text(name: &str) -> String {
    std::fs::read_to_string(events_dir().join(name)).unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

/// A sample event as the request the Lambda front door hands to the handler, with the event's
/// own request id.
pub fn event(name: &str) -> axum::http::Request<axum::body::Body> {
    let json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    let id = json["requestContext"]["requestId"].as_str().unwrap_or("test-request").to_owned();
    let request = mailhook::lambda::request(serde_json::from_value(json).unwrap(), &id);
    assert!(request.extensions().get::<mailhook::http::Malformed>().is_none(), "events/{name} is malformed");
    request
}

/// The request body of a sample event, decoded.
pub fn event_body(name: &str) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_str(&event_text(name)).unwrap();
    let body = json["body"].as_str().unwrap_or_default();
    if json["isBase64Encoded"] == true {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

pub fn state<A: Archive>(archive: A, prefix: &str) -> Arc<AppState<A>> {
    state_with_budget(archive, prefix, Duration::from_secs(2))
}

pub fn state_with_budget<A: Archive>(archive: A, prefix: &str, store_timeout: Duration) -> Arc<AppState<A>> {
    Arc::new(AppState {
        tokens: Tokens::parse(&format!("old-token,{TOKEN}")).unwrap().into(),
        account_id: Some(ACCOUNT_ID.into()),
        max_body_bytes: 1024 * 1024,
        store_timeout,
        body_timeout: Duration::from_millis(500),
        prefix: prefix.into(),
        archive,
        metrics: mailhook::telemetry::metrics::Metrics::Off,
    })
}

/// A router over a fresh directory archive, and the directory.
pub fn dir_app() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let archive = DirArchive::open(dir.path()).unwrap();
    (router(state(archive, "")), dir)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Calls the handler in-process through the local server's router (the Lambda front door calls
/// the same `http::handle`).
pub async fn call<B>(app: &Router, request: axum::http::Request<B>) -> Reply
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = app.clone().oneshot(request.map(axum::body::Body::new)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A process that is killed when the test ends, with its output in a file.
pub struct Running {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Running {
    pub fn start(vars: &[(&str, String)]) -> Running {
        Running::start_args(&[], vars)
    }

    /// mailhook with these arguments and only these variables (and PATH).
    pub fn start_args(args: &[&str], vars: &[(&str, String)]) -> Running {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailhook"));
        command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in vars {
            command.env(k, v);
        }
        let child =
            command.stdin(Stdio::null()).stdout(log.reopen().unwrap()).stderr(log.reopen().unwrap()).spawn().unwrap();
        Running { child, log }
    }

    /// mailhook as a local server on `addr` archiving into `archive`, once it accepts connections.
    pub async fn local(addr: SocketAddr, archive: &Path, extra: &[(&str, &str)]) -> Running {
        let mut vars = vec![
            ("LISTEN_ADDR", addr.to_string()),
            ("ARCHIVE_URI", archive.display().to_string()),
            ("WEBHOOK_TOKENS", TOKEN.to_owned()),
            ("ACCOUNT_ID", ACCOUNT_ID.to_owned()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let server = Running::start(&vars);
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "server did not start:\n{}", server.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `root`, as (path relative to root, content), sorted.
pub fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// The key a stored line belongs under, by the partition rule worked out from its own fields:
/// the event's date when it is at most 30 days before and one day after the receive time, the
/// receive date otherwise. The samples are dated 2026-11-26, so which applies depends on the day
/// the tests run, and this holds on any day.
pub fn expected_key(prefix: &str, line: &serde_json::Value) -> String {
    use time::format_description::well_known::Rfc3339;
    let time = |field: &str| line[field].as_str().and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok());
    let received = time("ts").expect("every line has its receive time");
    let dt = match time("event_time") {
        Some(t) if t >= received - time::Duration::days(30) && t <= received + time::Duration::days(1) => t.date(),
        _ => received.date(),
    };
    format!("{prefix}dt={dt}/{}.jsonl", line["id"].as_str().expect("every line has its id"))
}

/// What a directory archive holds, as (key, line) sorted by key: each line of its segments (a
/// live segment in place of its published snapshot) keyed `<partition>/<id>.jsonl` as in S3, and
/// each per-event file of older versions by its name. A line missing its newline is kept as it is,
/// so an assertion on the bytes catches it.
pub fn stored(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (path, bytes) in files(root) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let stem = name.strip_prefix('.').unwrap_or(name);
        let Some(stem) = stem.strip_suffix(".jsonl").or_else(|| stem.strip_suffix(".live")) else {
            continue; // the lock file and half-copied snapshots
        };
        if !name.starts_with('.') && root.join(dir).join(format!(".{}.live", name.trim_end_matches(".jsonl"))).exists()
        {
            continue; // a snapshot of the live segment read below
        }
        if stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push((path, bytes));
            continue;
        }
        // A live segment is written with zeros ahead of its lines: they are no line.
        let live = name.ends_with(".live");
        let end = if live { bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1) } else { bytes.len() };
        for line in bytes[..end].split_inclusive(|&b| b == b'\n') {
            let id = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned));
            out.push((format!("{dir}/{}.jsonl", id.unwrap_or_else(|| "unreadable".into())), line.to_vec()));
        }
    }
    out.sort();
    out
}

/// An S3-compatible server (s3s-fs) on a loopback port, storing under `root`, with `BUCKET` made.
pub async fn s3_server(root: &Path) -> SocketAddr {
    s3_server_on(root, "127.0.0.1:0".parse().unwrap()).await
}

/// The same on a given address.
pub async fn s3_server_on(root: &Path, addr: SocketAddr) -> SocketAddr {
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;

    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

/// The environment that points the mailhook binary at the archive `s3://BUCKET/mail/` on an
/// S3-compatible server at `endpoint_url`: path-style, the test keys, and none of the machine's
/// own AWS profile (empty files, which the SDK reads without a warning).
pub fn s3_archive_env(endpoint_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("ARCHIVE_URI", format!("s3://{BUCKET}/mail/")),
        ("AWS_ENDPOINT_URL_S3", endpoint_url),
        ("S3_FORCE_PATH_STYLE", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// The EMF lines (JSON with an `_aws` member) among a function's output lines.
pub fn emf_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect()
}

/// A loopback port with nothing listening on it, and never handed out before in this test
/// process: the kernel may give a port it just released to the next bind, so two tests starting
/// a server (moto_server) at once could otherwise both wait on the first one's, and share it.
pub fn closed_port() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

/// mailhook's configuration for an S3 archive at `endpoint`.
pub fn s3_config(extra: &[(&str, &str)]) -> Config {
    let mut vars =
        vec![("WEBHOOK_TOKENS", TOKEN), ("ARCHIVE_URI", "s3://mail-archive/mail/"), ("S3_FORCE_PATH_STYLE", "true")];
    vars.extend_from_slice(extra);
    Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())).unwrap()
}

/// mailhook's own S3 client (timeouts, retries, path style), pointed at `endpoint` with test keys.
pub async fn s3_client(config: &Config, endpoint: SocketAddr) -> aws_sdk_s3::Client {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{endpoint}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests"));
    mailhook::aws::receiver_client(&config.access.s3, config.store_timeout, loader).await
}

/// Says that a test did not run, past the test harness's capture: a plain `cargo test` shows
/// the line without `--show-output`.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The keys and bytes of every object in the bucket, read back through S3.
pub async fn bucket_objects(client: &aws_sdk_s3::Client) -> Vec<(String, String, Option<String>)> {
    let listed = client.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let mut out = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_owned();
        let got = client.get_object().bucket(BUCKET).key(&key).send().await.unwrap();
        let content_type = got.content_type().map(str::to_owned);
        let bytes = String::from_utf8(got.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
        out.push((key, bytes, content_type));
    }
    out.sort();
    out
}

/// How the tests' S3 clients reach their server: path-style, at the loader's endpoint, trusting
/// `trust`.
pub fn path_style(trust: mailhook::aws::Trust) -> mailhook::aws::Connection {
    let sdk = mailhook::aws::Endpoint::Sdk;
    mailhook::aws::Connection { endpoint: sdk.clone(), ssm_endpoint: sdk, force_path_style: true, trust }
}
