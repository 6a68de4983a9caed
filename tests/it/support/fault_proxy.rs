//! A fault-injecting HTTP proxy in front of the S3-compatible server: each request takes the next
//! fault from a script (or the standing one) and is answered, delayed, cut or passed on.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward to the real server.
    Pass,
    /// Answer this status with an S3 error document, never reaching the server.
    Error(u16, &'static str),
    /// Wait, then forward.
    Delay(Duration),
    /// Drop the connection before the request reaches the server.
    Reset,
    /// Forward (the object is stored), then drop the connection instead of answering.
    ResetAfterForward,
    /// Never answer and never forward: the request hangs until the client goes away.
    Stall,
}

/// A standing fault for the requests whose `METHOD path?query` line a rule matches.
type Rule = (Box<dyn Fn(&str) -> bool + Send + Sync>, Fault);

pub struct FaultProxy {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Fault>>>,
    standing: Arc<Mutex<Fault>>,
    rules: Arc<Mutex<Vec<Rule>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    /// Starts on a loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy {
            addr: listener.local_addr().unwrap(),
            script: Arc::default(),
            standing: Arc::new(Mutex::new(Fault::Pass)),
            rules: Arc::default(),
            requests: Arc::default(),
        };
        let (script, standing, rules, requests) =
            (proxy.script.clone(), proxy.standing.clone(), proxy.rules.clone(), proxy.requests.clone());
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (script, standing, rules, requests, client) =
                    (script.clone(), standing.clone(), rules.clone(), requests.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let line = format!("{} {}", request.method(), request.uri());
                        let ruled =
                            rules.lock().unwrap().iter().find(|(matches, _)| matches(&line)).map(|(_, f)| f.clone());
                        let fault = ruled.unwrap_or_else(|| {
                            script.lock().unwrap().pop_front().unwrap_or_else(|| standing.lock().unwrap().clone())
                        });
                        requests.lock().unwrap().push(line);
                        let client = client.clone();
                        async move { answer(fault, request, upstream, &client).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        proxy
    }

    /// Faults for the next requests, in order; after them the standing fault applies.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.script.lock().unwrap().extend(faults);
    }

    /// The fault for every request once the script is used up.
    pub fn always(&self, fault: Fault) {
        *self.standing.lock().unwrap() = fault;
    }

    /// `fault` for every request whose `METHOD path?query` line `matches`, ahead of the script.
    pub fn when(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static, fault: Fault) {
        self.rules.lock().unwrap().push((Box::new(matches), fault));
    }

    /// Drops every rule.
    pub fn clear_rules(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// The `METHOD path?query` lines of the requests so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests reached the proxy.
    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

type Reply = Result<Response<Full<Bytes>>, std::io::Error>;

async fn answer(
    fault: Fault,
    request: Request<Incoming>,
    upstream: SocketAddr,
    client: &Client<HttpConnector, Full<Bytes>>,
) -> Reply {
    match fault {
        Fault::Pass => forward(request, upstream, client).await,
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            forward(request, upstream, client).await
        }
        Fault::Error(status, code) => {
            let _ = request.into_body().collect().await;
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected {code}</Message><RequestId>fault</RequestId></Error>"
            );
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from(xml)))
                .unwrap())
        }
        Fault::Reset => Err(std::io::Error::other("injected reset")),
        Fault::Stall => std::future::pending().await,
        Fault::ResetAfterForward => {
            forward(request, upstream, client).await?;
            Err(std::io::Error::other("injected reset after the write"))
        }
    }
}

async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    client: &Client<HttpConnector, Full<Bytes>>,
) -> Reply {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("http://{upstream}{path}").parse().unwrap();
    let response = client.request(Request::from_parts(parts, Full::new(body))).await.map_err(std::io::Error::other)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
