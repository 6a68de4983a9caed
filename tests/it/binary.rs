//! The real `mailhook` binary: under a stand-in Lambda Runtime API with an S3 archive, as a
//! local HTTP server with a directory archive, and refusing a bad configuration.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::lambda::{Outcome, alarmed_metrics, runtime_api};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn lambda_env(runtime_api: SocketAddr, s3: SocketAddr) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "mailhook".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "DEBUG".into()),
        ("WEBHOOK_TOKENS", format!("old-token,{TOKEN}")),
        ("ACCOUNT_ID", ACCOUNT_ID.into()),
    ];
    vars.extend(s3_archive_env(format!("http://{s3}")));
    vars
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_runtime_serves_every_sample_and_answers_a_bad_base64_body_400() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let (api, events, mut outcomes) = runtime_api().await;
    let function = Running::start(&lambda_env(api, s3));

    let mut invocations: Vec<(String, String, u16)> = [
        ("new.json", 200),
        ("create.json", 200),
        ("wrong-token.json", 401),
        ("flags-set.json", 200),
        ("invalid-json.json", 400),
        ("empty-body.json", 400),
        ("wrong-method.json", 405),
        ("confirm.json", 200),
        ("flags-set-deleted.json", 200),
        ("base64-no-content-type.json", 200),
    ]
    .into_iter()
    .map(|(name, status)| (name.to_owned(), event_text(name), status))
    .collect();
    // lambda_http's own conversion panicked on a body flagged base64 that is not; now it is a 400.
    invocations.insert(3, ("invalid-base64.json".into(), fixture("invalid-base64.json"), 400));
    invocations.push(("new.json again".into(), event_text("new.json"), 200));

    for (i, (name, event, status)) in invocations.iter().enumerate() {
        let id = format!("invocation-{i:02}");
        events.send((id.clone(), event.clone())).await.unwrap();
        let (got_id, outcome) = tokio::time::timeout(Duration::from_secs(60), outcomes.recv())
            .await
            .unwrap_or_else(|_| panic!("no answer to {name}; output:\n{}", function.output()))
            .unwrap();
        assert_eq!(got_id, id);
        match outcome {
            Outcome::Response(r) => {
                assert_eq!(r["statusCode"], *status, "{name}: {r}");
                assert_eq!(r["headers"]["cache-control"], "no-store", "{name}");
                if name == "confirm.json" {
                    assert_eq!(r["body"], ACCOUNT_ID);
                } else {
                    let body: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                    assert_eq!(body["ok"], *status == 200, "{name}: {body}");
                }
            }
            Outcome::Error(e) => panic!("{name}: expected {status}, got an invocation error: {e}"),
        }
    }

    let client = s3_client(&s3_config(&[]), s3).await;
    let objects = bucket_objects(&client).await;
    assert_eq!(objects.len(), 5, "five distinct events, each stored once: {objects:#?}");
    let mut request_ids = Vec::new();
    for (key, line, _) in &objects {
        assert!(key.starts_with("mail/dt=") && key.ends_with(".jsonl"), "{key}");
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["ip"], "185.68.16.10");
        request_ids.push(line["request_id"].as_str().unwrap().to_owned());
    }
    request_ids.sort();
    assert_eq!(
        request_ids,
        ["invocation-00", "invocation-01", "invocation-04", "invocation-09", "invocation-10"],
        "the Lambda request id is recorded"
    );

    let logs = function.output();
    assert!(logs.lines().filter(|l| l.contains("\"accepted\"")).count() >= 5, "{logs}");
    for secret in [TOKEN, "old-token", "Рахунок", "Добрий день", "olena@example.org"] {
        assert!(!logs.contains(secret), "{secret:?} reached the logs:\n{logs}");
    }
}

async fn http_request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    (status, reply)
}

#[tokio::test]
async fn local_server_stores_into_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let server = Running::local(addr, &dir.path().join("archive"), &[("RUST_LOG", "debug")]).await;

    let (status, reply) =
        http_request(addr, b"GET /webhook-confirm.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(reply.ends_with(&format!("\r\n\r\n{ACCOUNT_ID}")), "{reply}");

    let body = event_body("create.json");
    let request = format!(
        "POST /webhook.php HTTP/1.1\r\nHost: x\r\nUser-Agent: adm.tools mail webhook\r\nX-Webhook-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        String::from_utf8(body).unwrap()
    );
    let (status, reply) = http_request(addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.ends_with("{\"ok\":true}"), "{reply}");

    let lines = stored(&dir.path().join("archive"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value = serde_json::from_slice(&lines[0].1).unwrap();
    assert_eq!(line["ip"], "127.0.0.1", "the peer address");
    assert_eq!(line["ua"], "adm.tools mail webhook");
    assert_eq!(line["webhook_id"], serde_json::Value::Null);

    // Framing a sender or a proxy may use: chunked, HTTP/1.0, and a client trickling its request.
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{\"uid\r\na\r\n\":2,\"a\":1}}\r\n0\r\n\r\n"
    );
    assert_eq!(http_request(addr, chunked.as_bytes()).await.0, 200);
    let http10 = format!("POST / HTTP/1.0\r\nX-Webhook-Token: {TOKEN}\r\nContent-Length: 9\r\n\r\n{{\"uid\":3}}");
    let (status, reply) = http_request(addr, http10.as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");
    let slow = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN}\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{{\"uid\":4}}"
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for byte in slow.as_bytes() {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(stored(&dir.path().join("archive")).len(), 4);

    // Wrong tokens and bad bodies are logged by reason, never by content, even at debug.
    let post = |token: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(http_request(addr, post("secret-guess-42", r#"{"subject":"hush"}"#).as_bytes()).await.0, 401);
    assert_eq!(http_request(addr, post(TOKEN, r#"{"subject":"hush""#).as_bytes()).await.0, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.output();
    assert!(logs.contains("accepted") && logs.contains("status=401") && logs.contains("status=400"), "{logs}");
    for secret in [TOKEN, "secret-guess-42", "hush", "Archive/2026"] {
        assert!(!logs.contains(secret), "{secret:?} reached the debug log:\n{logs}");
    }
}

/// METRICS_ADDR serves OpenMetrics text on a listener of its own, on the same HTTP/1 connections
/// as the webhook server but one request each, and only `/metrics` there.
#[tokio::test]
async fn local_server_serves_metrics_on_a_listener_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let metrics = std::iter::repeat_with(closed_port).find(|port| *port != addr).unwrap();
    let metrics_addr = metrics.to_string();
    let _server = Running::local(addr, &dir.path().join("archive"), &[("METRICS_ADDR", &metrics_addr)]).await;
    let body = String::from_utf8(event_body("create.json")).unwrap();
    let post = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http_request(addr, post.as_bytes()).await.0, 200);

    // Two scrapes sent on one connection: the first is answered, and the connection closed.
    let scrapes = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let (status, reply) = http_request(metrics, scrapes).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 1, "one request a connection: {reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert!(reply.contains("mailhook_requests_total{outcome=\"stored\"} 1"), "{reply}");
    assert!(reply.contains("text/plain; version=0.0.4"), "Prometheus text unless OpenMetrics is asked for: {reply}");
    let ask = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n";
    let (status, reply) = http_request(metrics, ask).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("application/openmetrics-text") && reply.ends_with("# EOF\n"), "{reply}");
    let (status, _) =
        http_request(metrics, b"GET /webhook-confirm.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 404, "only /metrics on the metrics listener");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_variable() {
    for (vars, variable) in [
        (vec![("ARCHIVE_URI", "/tmp/x".to_owned())], "WEBHOOK_TOKENS"),
        (vec![("WEBHOOK_TOKENS", "t".to_owned()), ("MAX_BODY_BYTES", "lots".to_owned())], "MAX_BODY_BYTES"),
        (vec![("WEBHOOK_TOKENS", "t".to_owned()), ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9".to_owned())], "ARCHIVE_URI"),
        (
            vec![
                ("WEBHOOK_TOKENS", "t".to_owned()),
                ("ARCHIVE_URI", "s3://bucket-a/mail/".to_owned()),
                // Read only for an https endpoint other than AWS's.
                ("AWS_ENDPOINT_URL_S3", "https://minio.internal:9000".to_owned()),
                ("SSL_CERT_FILE", "/dev/null".to_owned()),
            ],
            "SSL_CERT_FILE",
        ),
        (vec![("WEBHOOK_TOKENS", "t".to_owned()), ("METRICS_ADDR", "everywhere".to_owned())], "METRICS_ADDR"),
        (
            vec![("WEBHOOK_TOKENS", "t".to_owned()), ("MAX_CONNECTIONS_PER_SOURCE", "0".to_owned())],
            "MAX_CONNECTIONS_PER_SOURCE",
        ),
    ] {
        let mut run = Running::start(&vars);
        let status = run.child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "{}", run.output());
        let output = run.output();
        assert_eq!(output.lines().count(), 1, "{output}");
        assert!(output.contains(&format!("configuration error: {variable} ")), "{output}");
    }
}

/// Under Lambda every webhook request writes one EMF line to stdout, and together a stored, a
/// duplicate, a refused, a bad and a failed request emit every custom metric an alarm watches,
/// in the alarm's namespace with the alarm's dimensions. At every log level the template offers,
/// those lines, and the "store failed" error line up to ERROR, pass Lambda's log-level filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_emits_every_metric_the_alarms_watch_at_every_log_level() {
    let levels = alarmed_levels();
    assert!(levels.len() >= 5, "{levels:?}");
    for level in levels {
        emits_every_alarmed_metric_at(&level).await;
    }
}

fn alarmed_levels() -> Vec<String> {
    support::lambda::allowed_values("LogLevel")
}

async fn emits_every_alarmed_metric_at(level: &str) {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let proxy = support::fault_proxy::FaultProxy::start(s3).await;
    let (api, events, mut outcomes) = runtime_api().await;
    let mut env = lambda_env(api, proxy.addr);
    env.push(("AWS_LAMBDA_FUNCTION_NAME", "mailhook-Function-1A2B3C".into()));
    env.push(("AWS_LAMBDA_LOG_LEVEL", level.into()));
    let function = Running::start(&env);

    let flags_set = event_text("flags-set.json");
    let cases = [
        ("new.json", event_text("new.json"), 200, None),
        ("new.json again", event_text("new.json"), 200, None),
        ("wrong-token.json", event_text("wrong-token.json"), 401, None),
        ("invalid-json.json", event_text("invalid-json.json"), 400, None),
        ("flags-set.json, S3 refuses", flags_set, 500, Some(support::fault_proxy::Fault::Error(403, "AccessDenied"))),
    ];
    for (i, (name, event, status, fault)) in cases.into_iter().enumerate() {
        if let Some(fault) = fault {
            proxy.always(fault);
        }
        let id = format!("invocation-{i}");
        events.send((id.clone(), event)).await.unwrap();
        let (_, outcome) = tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await.unwrap().unwrap();
        match outcome {
            Outcome::Response(r) => assert_eq!(r["statusCode"], status, "{level}, {name}: {r}"),
            Outcome::Error(e) => panic!("{level}, {name}: {e}"),
        }
    }

    let output = function.output();
    let kept = support::lambda::kept_by_lambda(&output, level).join("\n");
    let lines = support::emf_lines(&kept);
    assert_eq!(lines.len(), 5, "at {level}, one EMF line per webhook request reaches CloudWatch:\n{output}");
    let sum = |metric: &str| lines.iter().map(|l| l[metric].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(
        [sum("Stored"), sum("Duplicate"), sum("Accepted"), sum("Rejected"), sum("SenderRefused"), sum("StoreFailed")],
        [1, 1, 2, 2, 1, 1],
        "stored, duplicate, accepted, rejected (401 and 400), the 401 from the provider, failed:\n{output}"
    );
    if level != "FATAL" {
        assert!(kept.contains("store failed"), "at {level} the error line reaches CloudWatch:\n{output}");
    }

    let alarms = alarmed_metrics();
    let custom: Vec<_> = alarms
        .iter()
        .filter(|(_, namespace, metric, _)| !namespace.starts_with("AWS/") && !metric.starts_with("Compaction"))
        .collect();
    assert!(custom.len() >= 3, "the template's custom alarms: {alarms:?}");
    for (alarm, namespace, metric, dimensions) in custom {
        let emitting = lines.iter().find(|line| {
            let directive = &line["_aws"]["CloudWatchMetrics"][0];
            directive["Namespace"] == namespace.as_str()
                && directive["Metrics"].as_array().unwrap().iter().any(|m| m["Name"] == metric.as_str())
                && directive["Dimensions"][0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap())
                    .eq(dimensions.iter().map(String::as_str))
                && line[metric.as_str()].as_u64() > Some(0)
        });
        let line = emitting.unwrap_or_else(|| {
            panic!("{alarm} watches {namespace}/{metric} by {dimensions:?}: not emitted at {level}\n{output}")
        });
        for dimension in dimensions {
            assert_eq!(line[dimension.as_str()], "mailhook-Function-1A2B3C", "{alarm}: the function's name");
        }
    }
    let failed = lines.iter().find(|l| l["StoreFailed"] == 1).unwrap();
    assert!(failed["StoreLatency"].as_f64().is_some(), "a failed store has its latency: {failed}");
}

/// Function URL events anyone can cause (a query string `http::Uri` refuses, a bad
/// X-Forwarded-Proto or Host, headers and bodies that are not valid HTTP, a payload that is not a
/// request at all) each get a 4xx or a 200 with a JSON body, never an invocation error; a request
/// that is whole but for its query string or proxy headers is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_answers_every_hostile_function_url_event() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let (api, events, mut outcomes) = runtime_api().await;
    let function = Running::start(&lambda_env(api, s3));
    let sample: serde_json::Value = serde_json::from_str(&event_text("new.json")).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut event = sample.clone();
        edit(&mut event);
        event.to_string()
    };
    let cases: Vec<(&str, String, u16)> = vec![
        ("a space in the query", with(&|e| e["rawQueryString"] = "a b".into()), 200),
        ("quotes and brackets in the query", with(&|e| e["rawQueryString"] = "q=\"<>`{|}\\^".into()), 200),
        ("a control byte in the query", with(&|e| e["rawQueryString"] = "x=\u{1}\u{7f}".into()), 200),
        ("X-Forwarded-Proto not a scheme", with(&|e| e["headers"]["x-forwarded-proto"] = "ht tp:/".into()), 200),
        ("a Host with a space", with(&|e| e["headers"]["host"] = "exa mple.com:x".into()), 200),
        ("a path with a space and quotes", with(&|e| e["rawPath"] = "/a b\"<>".into()), 200),
        ("cookies", with(&|e| e["cookies"] = serde_json::json!(["a=b", "c d;;="])), 200),
        ("a body flagged base64 that is not", with(&|e| e["isBase64Encoded"] = true.into()), 400),
        ("a control byte in a header value", with(&|e| e["headers"]["x-webhook-id"] = "a\u{1}b".into()), 400),
        ("a header name with a space", with(&|e| e["headers"]["x webhook"] = "1".into()), 400),
        ("a header that is a number", with(&|e| e["headers"]["x-webhook-id"] = 7.into()), 400),
        ("headers that are a list", with(&|e| e["headers"] = serde_json::json!(["a"])), 400),
        ("a body that is a number", with(&|e| e["body"] = 42.into()), 400),
        ("no method", with(&|e| e["requestContext"]["http"] = serde_json::json!({})), 400),
        ("a method with a space", with(&|e| e["requestContext"]["http"]["method"] = "PO ST".into()), 400),
        ("an empty object", "{}".into(), 400),
        ("a list", "[1,2]".into(), 400),
        ("a string", "\"GET / HTTP/1.1\"".into(), 400),
    ];
    for (i, (name, event, status)) in cases.into_iter().enumerate() {
        events.send((format!("hostile-{i:02}"), event)).await.unwrap();
        let (_, outcome) = tokio::time::timeout(Duration::from_secs(60), outcomes.recv())
            .await
            .unwrap_or_else(|_| panic!("no answer to {name}; output:\n{}", function.output()))
            .unwrap();
        match outcome {
            Outcome::Response(r) => {
                assert_eq!(r["statusCode"], status, "{name}: {r}");
                let body: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
                assert_eq!(body["ok"], status == 200, "{name}: {body}");
            }
            Outcome::Error(e) => panic!("{name}: an invocation error: {e}"),
        }
    }
    let client = s3_client(&s3_config(&[]), s3).await;
    assert_eq!(bucket_objects(&client).await.len(), 1, "the one event, stored once");
}

/// Set by hand past what the template offers, TRACE still logs no token and no body: trace-level
/// events are compiled out (tracing's `max_level_debug`), the Lambda runtime's "raw JSON event"
/// line among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_level_set_by_hand_logs_no_token_and_no_body() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let (api, events, mut outcomes) = runtime_api().await;
    let mut vars = lambda_env(api, s3);
    vars.retain(|(k, _)| *k != "AWS_LAMBDA_LOG_LEVEL");
    vars.extend([("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned()), ("RUST_LOG", "trace".to_owned())]);
    let function = Running::start(&vars);
    for (i, name) in ["new.json", "invalid-json.json"].into_iter().enumerate() {
        events.send((format!("trace-{i}"), event_text(name))).await.unwrap();
        let (_, outcome) = tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await.unwrap().unwrap();
        assert!(matches!(outcome, Outcome::Response(_)), "{name}: {outcome:?}");
    }
    let logs = function.output();
    assert!(logs.contains("DEBUG"), "debug lines are still there:\n{logs}");
    for secret in [TOKEN, "Рахунок", "olena@example.org", "raw JSON event"] {
        assert!(!logs.contains(secret), "{secret:?} reached the logs at TRACE:\n{logs}");
    }
}

/// The first deploy, as the README's "Deploy" steps it: the stack goes up before the panel has
/// issued a token (`WebhookTokens` empty), the panel confirms the URL, and its first events get
/// 503; the token is then set (a redeploy: a new process) and each event's one resend, 15 minutes
/// later, is stored. The wait itself changes nothing mailhook does (the key comes from the
/// event's `tstamp`), so the resends follow at once. Every event ends up stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_before_the_token_loses_no_event() {
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let samples =
        ["new.json", "create.json", "flags-set.json", "flags-set-deleted.json", "base64-no-content-type.json"];
    async fn invoke(
        events: &tokio::sync::mpsc::Sender<(String, String)>,
        outcomes: &mut tokio::sync::mpsc::Receiver<(String, Outcome)>,
        name: &str,
    ) -> serde_json::Value {
        events.send((format!("invocation-{name}"), event_text(name))).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await.unwrap().unwrap().1 {
            Outcome::Response(r) => r,
            Outcome::Error(e) => panic!("an invocation error: {e}"),
        }
    }

    // Each deploy is a new execution environment with a Runtime API of its own, so the killed
    // first process's last poll cannot take an event meant for the second.
    let (api, events, mut outcomes) = runtime_api().await;
    let mut first = lambda_env(api, s3);
    first.retain(|(k, _)| *k != "WEBHOOK_TOKENS");
    first.push(("WEBHOOK_TOKENS", String::new()));
    let deploy = Running::start(&first);
    let confirm = invoke(&events, &mut outcomes, "confirm.json").await;
    assert_eq!((confirm["statusCode"].as_u64(), confirm["body"].as_str()), (Some(200), Some(ACCOUNT_ID)));
    for name in samples {
        let r = invoke(&events, &mut outcomes, name).await;
        assert_eq!(r["statusCode"], 503, "{name}: not 200, so the sender resends it: {r}");
        assert!(r["body"].as_str().unwrap().contains("No webhook token is configured yet"), "{name}: {r}");
    }
    let output = deploy.output();
    assert!(output.contains("WEBHOOK_TOKENS is empty"), "said at start-up:\n{output}");
    let refused = support::emf_lines(&output).iter().map(|l| l["SenderRefused"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(refused, 5, "the provider's refused requests fire SenderRefusedAlarm:\n{output}");
    let client = s3_client(&s3_config(&[]), s3).await;
    assert_eq!(bucket_objects(&client).await.len(), 0);
    drop(deploy);

    // The token from the panel's Token column, deployed; then each event's one resend.
    let (api, events, mut outcomes) = runtime_api().await;
    let redeploy = Running::start(&lambda_env(api, s3));
    for name in samples {
        let r = invoke(&events, &mut outcomes, name).await;
        assert_eq!(r["statusCode"], 200, "{name}'s resend: {r}\n{}", redeploy.output());
    }
    let mut stored: Vec<String> = bucket_objects(&client).await.into_iter().map(|(key, _, _)| key).collect();
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), samples.len(), "each event stored once: {stored:#?}");
}

/// The exit codes main.rs documents, one case each that no other test covers: 0 done (a usage
/// line asked for), 1 failed while running (the listening address is taken), 2 refused to start,
/// for an argument or a configuration that cannot work here, from every path that finds one: the
/// arguments, the environment (above), the archive directory, and the open-file limit
/// (`server::max_connections_must_fit_under_the_raised_open_file_limit`). 3 (another compaction
/// holds the archive) is `compact::sigkill_at_each_point_then_a_rerun_finishes...`.
#[test]
fn exit_codes_are_what_main_documents() {
    let ended = |mut run: Running| {
        let status = run.child.wait().unwrap();
        (status.code(), run.output())
    };
    for args in [&["--help"][..], &["compact", "--help"]] {
        let (code, output) = ended(Running::start_args(args, &[]));
        assert_eq!(code, Some(0), "{args:?}: {output}");
        assert!(output.starts_with("usage: mailhook"), "{args:?}: {output}");
    }
    for args in [&["serve"][..], &["compact", "--dry-run"]] {
        let (code, output) = ended(Running::start_args(args, &[]));
        assert_eq!(code, Some(2), "{args:?}: {output}");
    }

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = |extra: &[(&'static str, String)]| {
        let archive = tempfile::tempdir().unwrap();
        let mut vars = vec![
            ("WEBHOOK_TOKENS", "t".to_owned()),
            ("ARCHIVE_URI", archive.path().display().to_string()),
            ("LISTEN_ADDR", taken.local_addr().unwrap().to_string()),
        ];
        vars.extend_from_slice(extra);
        vars
    };
    let (code, output) = ended(Running::start(&local(&[])));
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("LISTEN_ADDR"), "{output}");

    let (code, output) = ended(Running::start(&local(&[("ARCHIVE_URI", "/dev/null/archive".to_owned())])));
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("configuration error: ARCHIVE_URI directory /dev/null/archive is not writable"),
        "{output}"
    );
}
