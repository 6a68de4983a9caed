//! The other cold-start floor, in the shape of lambda-perf's Rust "hello" (a do-nothing function
//! with no tracing setup): a lambda_http function that answers "ok". `examples/floor.rs` is the
//! same with the tracing subscriber mailhook installs; bench/run measures both, interleaved.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_: Request| async { Ok::<_, Error>(Response::new(Body::from("ok"))) })).await
}
