//! The AWS clients, built once at start-up on the SDK's hyper 1 client with rustls on ring (S3's,
//! and the SSM client that reads the token parameter, tokens.rs): how they reach AWS
//! (`Connection`: endpoints, addressing, trusted roots), the trust decision, and the one reading
//! of an SDK error that mailhook needs: its HTTP status.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::SdkError;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};

/// How the clients reach S3 and SSM, decided once at start-up (`config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// S3's endpoint: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    pub endpoint: Endpoint,
    /// SSM's endpoint, for the token parameter: `AWS_ENDPOINT_URL_SSM`, else `AWS_ENDPOINT_URL`.
    pub ssm_endpoint: Endpoint,
    /// Address the bucket as `endpoint/bucket/key`, for MinIO and other S3-compatible servers.
    pub force_path_style: bool,
    pub trust: Trust,
}

/// Which endpoint a client uses. The SDK would read the variables itself, but take an empty one
/// for an endpoint named "": the template declares `AWS_ENDPOINT_URL_S3` (and `_SSM`) empty, so
/// that `sam local invoke --env-vars` can set them. So each client is told explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Neither the service's variable nor `AWS_ENDPOINT_URL` is set: the SDK's own choice (AWS's
    /// endpoint for the region, or a profile's `endpoint_url`).
    Sdk,
    /// Set, but empty: no endpoint of its own, AWS's for the region.
    Aws,
    /// The service's variable, else `AWS_ENDPOINT_URL`: another store (MinIO, R2, a test server).
    Url(String),
}

impl Endpoint {
    /// What to set on a client's own configuration, where it wins over what the SDK read from
    /// the variables (an endpoint given to the loader would not: the service's variable comes
    /// first); `None`: leave it to the SDK.
    fn explicit(&self) -> Option<Option<String>> {
        match self {
            Endpoint::Sdk => None,
            Endpoint::Aws => Some(None),
            Endpoint::Url(url) => Some(Some(url.clone())),
        }
    }

    fn is_https(&self) -> bool {
        matches!(self, Endpoint::Url(url) if url.starts_with("https://"))
    }
}

/// The roots the S3 client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The Amazon Trust Services roots, compiled in (`ATS_ROOTS`): every certificate of AWS's own
    /// S3 endpoints chains to one of them, and a few roots parse much faster than a system
    /// bundle during every Init (BENCHMARKS.md, cold start).
    AmazonTrustServices,
    /// The platform's roots, as rustls-native-certs reads them: `SSL_CERT_FILE`'s bundle if it is
    /// set, else the system's store.
    Platform,
    /// `SSL_CERT_FILE` names a file that does not exist (a guess that missed): the system's
    /// store, found as OpenSSL finds it without the variable, handed to the client.
    SystemStore { missing: String },
}

impl Trust {
    /// The roots for an S3 archive: the compiled-in ones under Lambda in AWS's commercial
    /// partition, talking to S3 itself; the platform's anywhere else, and for any other https
    /// endpoint, whose CA mailhook cannot know (a plain http endpoint makes no TLS connection).
    /// Outside Lambda a profile's `endpoint_url` can name another store, which the environment
    /// would not show; the China, GovCloud and ISO partitions are not promised to chain to
    /// Amazon Trust Services. `Err` says what is wrong with `SSL_CERT_FILE`, when it is read.
    pub fn decide(
        lambda: bool,
        region: Option<&str>,
        endpoints: [&Endpoint; 2],
        ssl_cert_file: Option<&str>,
    ) -> Result<Trust, String> {
        let region = region.unwrap_or_default();
        let commercial = !region.is_empty()
            && !region.starts_with("cn-")
            && !region.starts_with("us-gov-")
            && !region.contains("-iso");
        let another_https_store = endpoints.iter().any(|e| e.is_https());
        if lambda && commercial && !another_https_store {
            return Ok(Trust::AmazonTrustServices);
        }
        // A file that holds no certificate would leave no trusted roots and fail every write, so
        // it stops start-up; a path that does not exist falls back to the system's store.
        let Some(path) = ssl_cert_file else { return Ok(Trust::Platform) };
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Trust::SystemStore { missing: path.to_owned() }),
            Ok(meta) if meta.is_file() => match CertificateDer::from_pem_file(path) {
                Ok(_) => Ok(Trust::Platform),
                Err(e) => Err(format!("{path} holds no PEM certificate ({e:?}): it must name a PEM CA bundle")),
            },
            Ok(_) => Err(format!("{path} is not a file: it must name a PEM CA bundle")),
            Err(e) => Err(format!("{path} cannot be read ({e}): it must name a PEM CA bundle")),
        }
    }

    /// The TLS context for these roots; `None` for the platform's, the SDK's default.
    fn context(&self) -> Option<TlsContext> {
        let roots = match self {
            Trust::Platform => return None,
            Trust::AmazonTrustServices => ATS_ROOTS.as_bytes().to_vec(),
            Trust::SystemStore { missing } => {
                tracing::warn!(path = %missing, "SSL_CERT_FILE does not exist; using the system's trust store");
                system_roots()
            }
        };
        let store = TrustStore::empty().with_native_roots(false).with_pem_certificate(roots);
        Some(TlsContext::builder().with_trust_store(store).build().expect("a trust store of parsed roots"))
    }
}

/// The system's roots as PEM, found where OpenSSL looks (ignoring an `SSL_CERT_FILE` that names
/// nothing), each one a root rustls can use: the client's trust store takes no other.
fn system_roots() -> Vec<u8> {
    use base64::Engine;
    let found = openssl_probe::probe();
    let certs = rustls_native_certs::load_certs_from_paths(
        found.cert_file.as_deref(),
        found.cert_dir.first().map(|d| d.as_path()),
    );
    let mut pem = Vec::new();
    for cert in certs.certs.iter().filter(|c| webpki::anchor_from_trusted_cert(c).is_ok()) {
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
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
/// environment only; credentials are fetched on first use. Connect and attempt timeouts let a
/// stalled attempt be retried; the whole store is bounded by the caller, which wraps it in
/// `tokio::time::timeout(store_timeout, …)` (`http::accept`), so the sender gets a 5xx (and its
/// one resend) rather than a Lambda timeout.
pub async fn receiver_config(
    trust: &Trust,
    store_timeout: Duration,
    loader: aws_config::ConfigLoader,
) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(store_timeout.min(Duration::from_secs(2)))
        .operation_attempt_timeout(store_timeout / 2)
        .build();
    // No operation timeout: the handler's own timeout (http.rs) ends the whole store, retries
    // and the conflict loop included, at `store_timeout`. A second timer at the same deadline
    // would cost every event a timer registration, and a wake-up of the runtime's I/O driver.
    // Three tries with short backoff: a throttled or failing S3 gets two more chances inside the
    // budget, and what still fails is answered 500 so the sender's own resend takes over.
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(1));
    load(loader, trust, timeouts, retries).await
}

/// The SSM client that reads the token parameter (tokens.rs), at `connection`'s SSM endpoint. A
/// read comes before the store, so both must fit in the function's timeout: the read gets at
/// most `TOKEN_READ_BUDGET`, or half the store budget if that is shorter, retries included.
pub fn token_client(
    shared: &aws_config::SdkConfig,
    connection: &Connection,
    store_timeout: Duration,
) -> aws_sdk_ssm::Client {
    let budget = TOKEN_READ_BUDGET.min(store_timeout / 2);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(budget / 2)
        .operation_attempt_timeout(budget / 2)
        .operation_timeout(budget)
        .build();
    let mut ssm = aws_sdk_ssm::config::Builder::from(shared);
    if let Some(url) = connection.ssm_endpoint.explicit() {
        ssm.set_endpoint_url(url);
    }
    aws_sdk_ssm::Client::from_conf(ssm.timeout_config(timeouts).build())
}

/// The most a read of the token parameter may take, retries included.
pub const TOKEN_READ_BUDGET: Duration = Duration::from_secs(2);

/// The receiver's S3 client (see `receiver_config`).
pub async fn receiver_client(
    connection: &Connection,
    store_timeout: Duration,
    loader: aws_config::ConfigLoader,
) -> aws_sdk_s3::Client {
    client(&receiver_config(&connection.trust, store_timeout, loader).await, connection)
}

/// The compaction's client: longer attempts than the receiver's (a merged object is up to
/// `--max-object-bytes`), and more retries, since nobody is waiting on an answer; but every
/// request, retries included, ends within `operation_timeout`, which the lease relies on.
pub async fn compaction_client(
    connection: &Connection,
    lambda: bool,
    operation_timeout: Duration,
) -> aws_sdk_s3::Client {
    compaction_client_from(sdk_loader(lambda), connection, operation_timeout).await
}

/// As `compaction_client`, from another loader (tests add an endpoint and keys).
pub async fn compaction_client_from(
    loader: aws_config::ConfigLoader,
    connection: &Connection,
    operation_timeout: Duration,
) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(operation_timeout))
        .operation_attempt_timeout(Duration::from_secs(120).min(operation_timeout))
        .operation_timeout(operation_timeout)
        .build();
    let retries = RetryConfig::standard().with_max_attempts(5);
    build(loader, connection, timeouts, retries).await
}

/// An S3 client on the SDK's hyper 1 client with rustls on ring, reaching S3 as `connection`
/// says, with these timeouts and retries.
pub async fn build(
    loader: aws_config::ConfigLoader,
    connection: &Connection,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_sdk_s3::Client {
    client(&load(loader, &connection.trust, timeouts, retries).await, connection)
}

/// The SDK configuration on the SDK's hyper 1 client with rustls on ring, trusting `trust`'s
/// roots, with these timeouts and retries.
pub async fn load(
    loader: aws_config::ConfigLoader,
    trust: &Trust,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_config::SdkConfig {
    let mut https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
    if let Some(context) = trust.context() {
        https = https.tls_context(context);
    }
    let https = https.build_https();
    loader.http_client(https).timeout_config(timeouts).retry_config(retries).load().await
}

/// The S3 client on `shared`, at `connection`'s endpoint and addressing.
pub fn client(shared: &aws_config::SdkConfig, connection: &Connection) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(shared);
    if let Some(url) = connection.endpoint.explicit() {
        s3.set_endpoint_url(url);
    }
    aws_sdk_s3::Client::from_conf(s3.force_path_style(connection.force_path_style).build())
}

/// The HTTP status S3 answered with, if the request got as far as an answer.
pub(crate) fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn a_missing_ssl_cert_file_falls_back_to_the_system_store_with_every_root_usable() {
        if openssl_probe::probe().cert_file.is_none() {
            println!("SKIPPED: no system CA bundle on this machine");
            return;
        }
        let pem = system_roots();
        let roots: Vec<_> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().unwrap();
        assert!(roots.len() > ATS_ROOTS.matches("BEGIN CERTIFICATE").count(), "{} roots", roots.len());
        for root in &roots {
            webpki::anchor_from_trusted_cert(root).expect("only roots the client's trust store takes");
        }
        assert!(Trust::SystemStore { missing: "/nonexistent/ca-bundle.crt".into() }.context().is_some());
        assert!(Trust::Platform.context().is_none(), "the SDK's default");
    }

    #[test]
    fn the_compiled_in_roots_are_for_s3_itself_under_lambda_with_no_other_https_store() {
        let (sdk, other) = (Endpoint::Sdk, Endpoint::Url("https://minio.internal:9000".into()));
        let plain = Endpoint::Url("http://127.0.0.1:9000".into());
        let decide = |lambda, endpoints| Trust::decide(lambda, Some("eu-central-1"), endpoints, None).unwrap();
        assert_eq!(decide(true, [&sdk, &sdk]), Trust::AmazonTrustServices);
        assert_eq!(decide(true, [&plain, &Endpoint::Aws]), Trust::AmazonTrustServices, "no TLS to another store");
        assert_eq!(decide(true, [&sdk, &other]), Trust::Platform, "the SSM endpoint counts too");
        assert_eq!(decide(false, [&sdk, &sdk]), Trust::Platform);
    }

    /// The template declares `AWS_ENDPOINT_URL_S3` empty; the SDK reads that as an endpoint named
    /// "" (as `endpoint_url("")` here). Told `Endpoint::Aws`, the client uses AWS's endpoint for
    /// the region. An interceptor stops the request before it is sent: nothing leaves the machine.
    #[tokio::test]
    async fn an_empty_endpoint_variable_names_no_endpoint() {
        use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
        use aws_sdk_s3::config::{ConfigBag, Credentials, Intercept, RuntimeComponents, SharedCredentialsProvider};

        #[derive(Debug)]
        struct Unsent;
        impl Intercept for Unsent {
            fn name(&self) -> &'static str {
                "Unsent"
            }
            fn read_before_transmit(
                &self,
                context: &BeforeTransmitInterceptorContextRef<'_>,
                _: &RuntimeComponents,
                _: &mut ConfigBag,
            ) -> Result<(), aws_sdk_s3::error::BoxError> {
                Err(format!("unsent, to {}", context.request().uri()).into())
            }
        }

        let https =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let shared = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-central-1"))
            .endpoint_url("")
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "test")))
            .http_client(https)
            .build();
        let connection = Connection {
            endpoint: Endpoint::Aws,
            ssm_endpoint: Endpoint::Aws,
            force_path_style: false,
            trust: Trust::Platform,
        };
        let sent = client(&shared, &connection).list_buckets().customize().interceptor(Unsent).send().await;
        let text = aws_sdk_s3::error::DisplayErrorContext(sent.expect_err("stopped before it was sent")).to_string();
        assert!(text.contains("unsent, to https://s3.eu-central-1.amazonaws.com"), "{text}");
    }
}
