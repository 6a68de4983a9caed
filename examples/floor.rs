//! The floor for cold-start measurements: a lambda_http function that does nothing, built with
//! the same profile and features as mailhook (`cargo build --release --example floor`).

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    run(service_fn(|_: Request| async { Ok::<_, Error>(Response::new(Body::from("ok"))) })).await
}
