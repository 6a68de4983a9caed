//! The S3 client, built once at start-up on the SDK's hyper 1 client with rustls on ring, and
//! the one reading of an SDK error that mailhook needs: its HTTP status.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::SdkError;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::config::Access;

/// The SDK's configuration loader. Under Lambda the credentials are the function role's keys,
/// which Lambda puts in the environment, so only that provider is built: the default chain also
/// builds an STS client (for web identity) while loading, and checking that client's
/// configuration builds a TLS connector, root certificates and all, for a client a Lambda never
/// uses (BENCHMARKS.md, cold start). Elsewhere the default chain stays: profiles, web identity,
/// containers and instance roles.
pub fn sdk_loader(lambda: bool) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    if lambda {
        loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new())
    } else {
        loader
    }
}

/// The receiver's client, from `loader` (the SDK's defaults in production; tests add an endpoint
/// and keys). Loading reads the environment only; credentials are fetched on first use. Timeouts
/// keep a stalled S3 well inside the store budget, so the sender gets a 5xx (and its one resend)
/// rather than a Lambda timeout.
pub async fn receiver_client(
    access: &Access,
    store_timeout: Duration,
    loader: aws_config::ConfigLoader,
) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(store_timeout.min(Duration::from_secs(2)))
        .operation_attempt_timeout(store_timeout / 2)
        .operation_timeout(store_timeout)
        .build();
    // Three tries with short backoff: a throttled or failing S3 gets two more chances inside the
    // budget, and what still fails is answered 500 so the sender's own resend takes over.
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(1));
    build(loader, access.s3_force_path_style, timeouts, retries).await
}

/// The compaction's client: longer attempts than the receiver's (a merged object is up to
/// `--max-object-bytes`), and more retries, since nobody is waiting on an answer; but every
/// request, retries included, ends within `operation_timeout`, which the lease relies on.
pub async fn compaction_client(access: &Access, lambda: bool, operation_timeout: Duration) -> aws_sdk_s3::Client {
    compaction_client_from(sdk_loader(lambda), access.s3_force_path_style, operation_timeout).await
}

/// As `compaction_client`, from another loader (tests add an endpoint and keys).
pub async fn compaction_client_from(
    loader: aws_config::ConfigLoader,
    force_path_style: bool,
    operation_timeout: Duration,
) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(operation_timeout))
        .operation_attempt_timeout(Duration::from_secs(120).min(operation_timeout))
        .operation_timeout(operation_timeout)
        .build();
    let retries = RetryConfig::standard().with_max_attempts(5);
    build(loader, force_path_style, timeouts, retries).await
}

/// An S3 client on the SDK's hyper 1 client with rustls on ring, with these timeouts and retries.
pub async fn build(
    loader: aws_config::ConfigLoader,
    force_path_style: bool,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_sdk_s3::Client {
    let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = loader.http_client(https).timeout_config(timeouts).retry_config(retries).load().await;
    let s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// The HTTP status S3 answered with, if the request got as far as an answer.
pub(crate) fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}
