//! Stores each request's body in S3 under the request's id, and answers 200: on mailhook's SDK
//! features, with its client (rustls on ring, the platform's roots) and its Lambda credentials
//! (the role's keys in the environment), on one thread as mailhook runs under Lambda, and nothing
//! else.

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use lambda_http::{Body, Error, Request, RequestExt, Response, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .http_client(https)
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::new(&config);
    let bucket = std::env::var("BUCKET")?;
    run(service_fn(|request: Request| {
        let (s3, bucket) = (&s3, &bucket);
        async move {
            let key = format!("events/{}.json", request.lambda_context_ref().map_or("", |c| &c.request_id));
            let body = ByteStream::from(request.body().to_vec());
            s3.put_object().bucket(bucket).key(key).body(body).send().await?;
            Ok::<_, Error>(Response::new(Body::Empty))
        }
    }))
    .await
}
