//! A stand-in for the Lambda Runtime API, and the alarms template.yaml defines.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc};

/// What the function posted back for one invocation.
#[derive(Debug)]
pub enum Outcome {
    Response(serde_json::Value),
    Error(String),
}

/// The part of the Lambda Runtime API a function uses: hands out queued events, collects answers.
struct RuntimeApi {
    events: Mutex<mpsc::Receiver<(String, String)>>,
    outcomes: mpsc::Sender<(String, Outcome)>,
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> (HeaderMap, String) {
    let (id, event) = api.events.lock().await.recv().await.expect("test ended");
    let deadline =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert("lambda-runtime-deadline-ms", deadline.as_millis().to_string().parse().unwrap());
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-central-1:123456789012:function:mailhook".parse().unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", "Root=1-6747d0d4-0a1b2c3d4e5f607182930000".parse().unwrap());
    (headers, event)
}

async fn response(State(api): State<Arc<RuntimeApi>>, UrlPath(id): UrlPath<String>, body: String) -> &'static str {
    api.outcomes.send((id, Outcome::Response(serde_json::from_str(&body).unwrap()))).await.unwrap();
    "{}"
}

async fn error(State(api): State<Arc<RuntimeApi>>, UrlPath(id): UrlPath<String>, body: String) -> &'static str {
    api.outcomes.send((id, Outcome::Error(body))).await.unwrap();
    "{}"
}

pub async fn runtime_api() -> (SocketAddr, mpsc::Sender<(String, String)>, mpsc::Receiver<(String, Outcome)>) {
    let (event_tx, event_rx) = mpsc::channel(16);
    let (outcome_tx, outcome_rx) = mpsc::channel(16);
    let api = Arc::new(RuntimeApi { events: Mutex::new(event_rx), outcomes: outcome_tx });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, event_tx, outcome_rx)
}

/// The custom metrics that template.yaml's alarms watch: (alarm, namespace, metric, dimension
/// names), read from the template's text. Each alarm is written in the same block form there.
pub fn alarmed_metrics() -> Vec<(String, String, String, Vec<String>)> {
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml")).unwrap();
    let resources = &template[template.find("\nResources:").unwrap()..template.find("\nOutputs:").unwrap()];
    let mut alarms = Vec::new();
    // A resource starts at a line indented by exactly two spaces.
    let mut starts: Vec<usize> =
        resources.match_indices("\n  ").filter(|(i, _)| !resources[i + 3..].starts_with(' ')).map(|(i, _)| i).collect();
    starts.push(resources.len());
    for pair in starts.windows(2) {
        let block = &resources[pair[0]..pair[1]];
        if !block.contains("Type: AWS::CloudWatch::Alarm") {
            continue;
        }
        let field = |name: &str| {
            block.lines().find_map(|l| l.trim().strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default()
        };
        let dimensions =
            block.lines().filter_map(|l| l.trim().strip_prefix("- Name:")).map(|v| v.trim().to_owned()).collect();
        let name = block.lines().nth(1).unwrap().trim().trim_end_matches(':').to_owned();
        alarms.push((name, field("Namespace:"), field("MetricName:"), dimensions));
    }
    alarms
}

/// The values a template parameter allows, read from its `AllowedValues: [..]` line.
pub fn allowed_values(parameter: &str) -> Vec<String> {
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml")).unwrap();
    let block = &template[template.find(&format!("\n  {parameter}:\n")).unwrap_or_else(|| panic!("no {parameter}"))..];
    let line = block.lines().find(|l| l.trim().starts_with("AllowedValues:")).unwrap();
    let list = line.trim().trim_start_matches("AllowedValues:").trim().trim_start_matches('[').trim_end_matches(']');
    list.split(',').map(|v| v.trim().trim_matches('"').to_owned()).collect()
}

/// The lines of a function's output that Lambda's log-level filtering sends to CloudWatch Logs at
/// this ApplicationLogLevel (AWS docs, "Log-level filtering"): a JSON line has the level of its
/// `level` field if that is a valid level and its `timestamp` is valid RFC 3339; every other line
/// is INFO. A line is kept if its level is at least as severe as the setting.
pub fn kept_by_lambda(output: &str, setting: &str) -> Vec<String> {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rank = |level: &str| LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level));
    let threshold = rank(setting).unwrap_or_else(|| panic!("{setting} is not a Lambda log level"));
    let level_of = |line: &str| {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        let timestamp = json.get("timestamp")?.as_str()?;
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).ok()?;
        rank(json.get("level")?.as_str()?)
    };
    output.lines().filter(|line| level_of(line).unwrap_or(2) >= threshold).map(str::to_owned).collect()
}
