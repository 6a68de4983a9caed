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
