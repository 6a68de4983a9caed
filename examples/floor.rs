//! A cold-start floor with mailhook's logging set up (`mailhook::telemetry::logging::init`): a lambda_http
//! function that does nothing, built with the same profile and features as mailhook (`cargo build
//! --release --example floor`). `examples/floor_bare.rs` is lambda-perf's shape, without logging.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    mailhook::telemetry::logging::init();
    run(service_fn(|_: Request| async { Ok::<_, Error>(Response::new(Body::from("ok"))) })).await
}
