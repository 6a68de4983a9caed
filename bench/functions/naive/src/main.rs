//! Stores each request's body in S3 under the request's id, and answers 200.

use aws_sdk_s3::primitives::ByteStream;
use lambda_http::{Body, Error, Request, RequestExt, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
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
