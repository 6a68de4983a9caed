//! The S3 client (and the SSM client of tokens.rs), built once at start-up on the SDK's hyper 1 client with rustls on ring, and
//! the one reading of an SDK error that mailhook needs: its HTTP status.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::SdkError;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};

use crate::config::Access;

/// The roots the S3 client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The Amazon Trust Services roots, compiled in (`ATS_ROOTS`): every certificate of AWS's own
    /// S3 endpoints chains to one of them. Five roots parse in a fraction of the time the ~150
    /// of a system bundle take, during every Init (BENCHMARKS.md, cold start).
    AmazonTrustServices,
    /// The platform's roots: `SSL_CERT_FILE`, else the system's store. For any other endpoint
    /// (`AWS_ENDPOINT_URL_S3`: MinIO, R2, a test server), whose CA mailhook cannot know.
    System,
}

/// Amazon Root CA 1 to 4 and Starfield Services Root G2, as amazontrust.com lists them.
pub const ATS_ROOTS: &str = include_str!("ats-roots.pem");

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

/// The receiver's SDK configuration, from `loader` (the SDK's defaults in production; tests add
/// an endpoint and keys): its S3 client, and the SSM client that reads the tokens if they live in
/// a parameter, share its HTTP client, credentials, timeouts and retries. Loading reads the
/// environment only; credentials are fetched on first use. Timeouts keep a stalled service well
/// inside the store budget, so the sender gets a 5xx (and its one resend) rather than a Lambda
/// timeout.
pub async fn receiver_config(
    trust: Trust,
    store_timeout: Duration,
    loader: aws_config::ConfigLoader,
) -> aws_config::SdkConfig {
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
    load(loader, trust, timeouts, retries).await
}

/// The SSM client that reads the token parameter (tokens.rs). A read comes before the store, so
/// both must fit in the function's timeout: the read gets at most `TOKEN_READ_BUDGET`, or half the
/// store budget if that is shorter, retries included.
pub fn token_client(shared: &aws_config::SdkConfig, store_timeout: Duration) -> aws_sdk_ssm::Client {
    let budget = TOKEN_READ_BUDGET.min(store_timeout / 2);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(budget / 2)
        .operation_attempt_timeout(budget / 2)
        .operation_timeout(budget)
        .build();
    let ssm = aws_sdk_ssm::config::Builder::from(shared).timeout_config(timeouts).build();
    aws_sdk_ssm::Client::from_conf(ssm)
}

/// The most a read of the token parameter may take, retries included.
pub const TOKEN_READ_BUDGET: Duration = Duration::from_secs(2);

/// The receiver's S3 client (see `receiver_config`).
pub async fn receiver_client(
    access: &Access,
    store_timeout: Duration,
    loader: aws_config::ConfigLoader,
) -> aws_sdk_s3::Client {
    client(&receiver_config(access.trust, store_timeout, loader).await, access.s3_force_path_style)
}

/// The compaction's client: longer attempts than the receiver's (a merged object is up to
/// `--max-object-bytes`), and more retries, since nobody is waiting on an answer; but every
/// request, retries included, ends within `operation_timeout`, which the lease relies on.
pub async fn compaction_client(access: &Access, lambda: bool, operation_timeout: Duration) -> aws_sdk_s3::Client {
    compaction_client_from(sdk_loader(lambda), access.s3_force_path_style, access.trust, operation_timeout).await
}

/// As `compaction_client`, from another loader (tests add an endpoint and keys).
pub async fn compaction_client_from(
    loader: aws_config::ConfigLoader,
    force_path_style: bool,
    trust: Trust,
    operation_timeout: Duration,
) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(operation_timeout))
        .operation_attempt_timeout(Duration::from_secs(120).min(operation_timeout))
        .operation_timeout(operation_timeout)
        .build();
    let retries = RetryConfig::standard().with_max_attempts(5);
    build(loader, force_path_style, trust, timeouts, retries).await
}

/// An S3 client on the SDK's hyper 1 client with rustls on ring, trusting `trust`'s roots, with
/// these timeouts and retries.
pub async fn build(
    loader: aws_config::ConfigLoader,
    force_path_style: bool,
    trust: Trust,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_sdk_s3::Client {
    client(&load(loader, trust, timeouts, retries).await, force_path_style)
}

/// The SDK configuration on the SDK's hyper 1 client with rustls on ring, trusting `trust`'s
/// roots, with these timeouts and retries.
pub async fn load(
    loader: aws_config::ConfigLoader,
    trust: Trust,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_config::SdkConfig {
    let mut https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
    if trust == Trust::AmazonTrustServices {
        let roots = TrustStore::empty().with_native_roots(false).with_pem_certificate(ATS_ROOTS);
        let context = TlsContext::builder().with_trust_store(roots).build().expect("a trust store of our own roots");
        https = https.tls_context(context);
    }
    let https = https.build_https();
    loader.http_client(https).timeout_config(timeouts).retry_config(retries).load().await
}

pub fn client(shared: &aws_config::SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(shared).force_path_style(force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// The HTTP status S3 answered with, if the request got as far as an answer.
pub(crate) fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}
