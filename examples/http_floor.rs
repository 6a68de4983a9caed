//! The throughput floor of bench/run's stage 5: the same hyper HTTP/1 connection and tokio
//! runtime as mailhook's local server, answering every request 200 once its body is read, and
//! storing nothing. No receiver built on this stack can answer faster on the same machine and
//! wrk settings; the report gives mailhook as a fraction of it.
//!
//! `cargo run --release --example http_floor -- 127.0.0.1:PORT`

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("binding the address");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"OK"))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
