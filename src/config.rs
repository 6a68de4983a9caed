//! Configuration: every setting comes from one environment variable, is read once at start-up and
//! validated there, so a bad deployment fails at init with one line that names the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::aws::{Connection, Endpoint, Trust};
use crate::layout::Prefix;
use crate::webhook::Tokens;

/// The largest body a Lambda function URL accepts (6 MB); a bigger limit could never be reached.
const MAX_BODY_CEILING: usize = 6 * 1024 * 1024;

/// Everything mailhook needs to run, typed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `WEBHOOK_TOKENS`: the accepted `X-Webhook-Token` values, comma-separated (old and new while rotating).
    pub tokens: Tokens,
    /// `WEBHOOK_TOKENS_PARAMETER`: the SSM parameter that holds the tokens instead (tokens.rs).
    pub tokens_parameter: Option<String>,
    /// `ACCOUNT_ID`: the adm.tools account ID served at `/webhook-confirm.txt`; without it that path is 404.
    pub account_id: Option<String>,
    /// `ARCHIVE_URI`, the S3 endpoint, `S3_FORCE_PATH_STYLE`, `SSL_CERT_FILE`: the archive and how to reach it.
    pub access: Access,
    /// `MAX_BODY_BYTES`: larger bodies are answered 413.
    pub max_body_bytes: usize,
    /// `STORE_TIMEOUT_MS`: the whole budget for storing one line, retries included; past it the answer is 500.
    pub store_timeout: Duration,
    /// `AWS_LAMBDA_RUNTIME_API` (set by Lambda) or `LISTEN_ADDR`: how requests arrive.
    pub runtime: Runtime,
    /// `MAX_CONNECTIONS`: how many connections the local server holds open at once.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_SOURCE`: how many of those one IPv4 address or IPv6 /64 may hold.
    pub max_connections_per_source: usize,
    /// `METRICS_ADDR`: where the local server serves Prometheus text at `/metrics`; unset, nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda): the dimension of the EMF metrics.
    pub function_name: String,
}

/// Where the archive lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTarget {
    /// An S3 bucket, and where the archive's keys start in it.
    S3 { bucket: String, prefix: Prefix },
    /// A local directory, written with the same key layout.
    Dir(PathBuf),
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Under the Lambda Runtime API (function URL events).
    Lambda,
    /// A plain HTTP server on this address.
    Http(SocketAddr),
}

/// A configuration problem, phrased as one sentence that names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

/// `value` of `var` as a number in `range`, or `default` when it is unset: "must be `what` from
/// <start> to <end>" otherwise.
fn ranged(
    value: Option<String>,
    var: &'static str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    what: &str,
) -> Result<usize, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match v.trim().parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(var, format!("must be {what} from {} to {}, got {v:?}", range.start(), range.end()))),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`, so tests never touch the process environment.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let runtime = if get("AWS_LAMBDA_RUNTIME_API").is_some() {
            Runtime::Lambda
        } else {
            let addr = get("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
            Runtime::Http(addr.trim().parse().map_err(|_| {
                bad("LISTEN_ADDR", format!("must be an address and port such as 127.0.0.1:8080, got {addr:?}"))
            })?)
        };

        // The tokens come from one place. An SSM parameter's name, or WEBHOOK_TOKENS: set but
        // empty is the first deploy, before the panel has issued the token; unset is a mistake.
        let tokens_parameter = get("WEBHOOK_TOKENS_PARAMETER").map(|v| v.trim().to_owned());
        if let Some(name) = &tokens_parameter
            && !is_parameter_name(name)
        {
            return Err(bad(
                "WEBHOOK_TOKENS_PARAMETER",
                format!(
                    "must be an SSM parameter's name (/path/name, of letters, digits and _.-) or its ARN, got {name:?}"
                ),
            ));
        }
        let tokens = match (&tokens_parameter, lookup("WEBHOOK_TOKENS"), get("WEBHOOK_TOKENS")) {
            (Some(_), _, Some(_)) => Err(bad(
                "WEBHOOK_TOKENS",
                "is set as well as WEBHOOK_TOKENS_PARAMETER: give the tokens in one place (leave WEBHOOK_TOKENS \
                 empty to read them from the parameter)",
            )),
            (Some(_), _, None) => Ok(Tokens::none_yet()),
            (None, None, _) => Err(bad(
                "WEBHOOK_TOKENS",
                "is not set: give the webhook's secret token (several comma-separated while rotating), \
                 or set it empty until the panel has issued one, or name an SSM parameter that holds \
                 them in WEBHOOK_TOKENS_PARAMETER",
            )),
            (None, Some(_), None) => Ok(Tokens::none_yet()),
            (None, Some(_), Some(v)) => Tokens::parse(&v)
                .ok_or_else(|| bad("WEBHOOK_TOKENS", "holds no token: give one or more comma-separated tokens")),
        }?;

        let account_id = get("ACCOUNT_ID").map(|v| v.trim().to_owned());
        if let Some(id) = &account_id
            && id.chars().any(char::is_control)
        {
            return Err(bad("ACCOUNT_ID", "must be a single line"));
        }

        let access = Access::from_lookup(&lookup, &get, runtime == Runtime::Lambda, tokens_parameter.is_some())?;

        let number = |var, default, range, what| ranged(get(var), var, default, range, what);
        let max_body_bytes = number("MAX_BODY_BYTES", 1024 * 1024, 1..=MAX_BODY_CEILING, "a whole number of bytes")?;
        let store_timeout =
            Duration::from_millis(number("STORE_TIMEOUT_MS", 5000, 100..=60_000, "milliseconds")? as u64);
        let max_connections = number("MAX_CONNECTIONS", 1024, 1..=65_536, "a whole number")?;
        let max_connections_per_source = number("MAX_CONNECTIONS_PER_SOURCE", 128, 1..=65_536, "a whole number")?;

        let metrics_addr = match get("METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                bad("METRICS_ADDR", format!("must be an address and port such as 127.0.0.1:9090, got {v:?}"))
            })?),
        };
        let function_name = get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "mailhook".into());

        Ok(Config {
            tokens,
            tokens_parameter,
            account_id,
            access,
            max_body_bytes,
            store_timeout,
            runtime,
            max_connections,
            max_connections_per_source,
            metrics_addr,
            function_name,
        })
    }
}

/// SSM's rule for a parameter's name, or an `arn:…:ssm:…:parameter/…` ARN: what SSM would refuse
/// on every read is refused at start-up instead.
fn is_parameter_name(name: &str) -> bool {
    let path = match name.strip_prefix("arn:") {
        Some(arn) => match arn.split_once(":parameter/") {
            Some((service, path)) if service.contains(":ssm:") => path,
            _ => return false,
        },
        None if name.contains('/') && !name.starts_with('/') => return false,
        None => name,
    };
    !path.is_empty()
        && path.len() <= 1011
        && !path.contains("//")
        && path.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
}

/// The AWS SDK's endpoint settings of each client mailhook builds, the service's own first, as
/// the SDK reads them.
const S3_ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];
const SSM_ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL"];

/// The archive and how to reach it: what the receiver and `mailhook compact` both need.
#[derive(Debug, Clone)]
pub struct Access {
    /// `ARCHIVE_URI`: where lines go, `s3://bucket/prefix/` or a local directory.
    pub archive: ArchiveTarget,
    /// The S3 and SSM endpoints, `S3_FORCE_PATH_STYLE`, and the roots the clients trust
    /// (`SSL_CERT_FILE`, `AWS_REGION`; `aws::Trust::decide`).
    pub s3: Connection,
}

impl Access {
    /// Reads `ARCHIVE_URI`, the endpoints, `S3_FORCE_PATH_STYLE` and `SSL_CERT_FILE` through
    /// `get` (empty values already dropped; `lookup` sees them), those of AWS only if the
    /// archive is in S3 or the tokens in an SSM parameter. Under Lambda the archive must be in S3.
    fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        get: &impl Fn(&str) -> Option<String>,
        lambda: bool,
        tokens_parameter: bool,
    ) -> Result<Access, ConfigError> {
        let archive = match get("ARCHIVE_URI") {
            Some(uri) => parse_archive_uri(uri.trim())?,
            None if lambda => {
                return Err(bad("ARCHIVE_URI", "is not set: in Lambda it must be s3://bucket/prefix/"));
            }
            None => ArchiveTarget::Dir(PathBuf::from("data")),
        };
        if lambda && matches!(archive, ArchiveTarget::Dir(_)) {
            return Err(bad(
                "ARCHIVE_URI",
                "must be s3://bucket/prefix/ in Lambda: a local directory would vanish with the instance",
            ));
        }

        let force_path_style = match get("S3_FORCE_PATH_STYLE").as_deref().map(str::trim) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                return Err(bad("S3_FORCE_PATH_STYLE", format!("must be true or false, got {v:?}")));
            }
        };

        // A local directory with the tokens in place makes no AWS connection: none of these are
        // its business.
        if !matches!(archive, ArchiveTarget::S3 { .. }) && !tokens_parameter {
            let s3 = Connection {
                endpoint: Endpoint::Sdk,
                ssm_endpoint: Endpoint::Sdk,
                force_path_style,
                trust: Trust::Platform,
            };
            return Ok(Access { archive, s3 });
        }
        let endpoint = endpoint_of(lookup, get, S3_ENDPOINT_VARS)?;
        let ssm_endpoint = endpoint_of(lookup, get, SSM_ENDPOINT_VARS)?;
        let ssl_cert_file = get("SSL_CERT_FILE");
        let region = get("AWS_REGION");
        let trust = Trust::decide(lambda, region.as_deref(), [&endpoint, &ssm_endpoint], ssl_cert_file.as_deref())
            .map_err(|problem| bad("SSL_CERT_FILE", problem))?;
        Ok(Access { archive, s3: Connection { endpoint, ssm_endpoint, force_path_style, trust } })
    }
}

/// The endpoint `vars` (the service's variable, then the general one) name. The SDK reads them
/// itself, and a value it cannot use would fail every request, so say so now. Set but empty (the
/// template declares them), a variable names none.
fn endpoint_of(
    lookup: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str) -> Option<String>,
    vars: [&'static str; 2],
) -> Result<Endpoint, ConfigError> {
    let mut endpoint = Endpoint::Sdk;
    for var in vars {
        match (lookup(var), get(var)) {
            (Some(_), None) if endpoint == Endpoint::Sdk => endpoint = Endpoint::Aws,
            (_, Some(url)) => {
                let url = url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(var, format!("must be an http:// or https:// URL, got {url:?}")));
                }
                if !matches!(endpoint, Endpoint::Url(_)) {
                    endpoint = Endpoint::Url(url.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(endpoint)
}

/// What `mailhook compact` runs with: the S3 archive, and under Lambda the function's name.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    pub access: Access,
    /// The archive's bucket, from `ARCHIVE_URI`.
    pub bucket: String,
    /// The archive's prefix, from `ARCHIVE_URI`.
    pub prefix: Prefix,
    /// `AWS_LAMBDA_RUNTIME_API` is set: run as the scheduled compaction function.
    pub lambda: bool,
    /// `AWS_LAMBDA_FUNCTION_NAME`: the dimension of the EMF metrics.
    pub function_name: String,
}

impl CompactConfig {
    /// Reads the process environment. `WEBHOOK_TOKENS` and the server's settings are not needed.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`. Only an S3 archive is compacted: a local directory is written as
    /// a few segments a day already.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        if get("ARCHIVE_URI").is_none() {
            return Err(bad("ARCHIVE_URI", "is not set: compaction needs s3://bucket/prefix/"));
        }
        let access = Access::from_lookup(&lookup, &get, lambda, false)?;
        let ArchiveTarget::S3 { bucket, prefix } = access.archive.clone() else {
            return Err(bad(
                "ARCHIVE_URI",
                "must be s3://bucket/prefix/ to compact: a local directory is written as segments, with nothing to compact",
            ));
        };
        Ok(CompactConfig {
            access,
            bucket,
            prefix,
            lambda,
            function_name: get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "mailhook-compact".into()),
        })
    }
}

fn parse_archive_uri(uri: &str) -> Result<ArchiveTarget, ConfigError> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(bad(
                "ARCHIVE_URI",
                format!("names no valid bucket: expected s3://bucket/prefix/, got {uri:?}"),
            ));
        }
        return Ok(ArchiveTarget::S3 { bucket: bucket.to_owned(), prefix: Prefix::new(prefix) });
    }
    if uri.contains("://") {
        return Err(bad("ARCHIVE_URI", format!("must be s3://bucket/prefix/ or a local directory, got {uri:?}")));
    }
    Ok(ArchiveTarget::Dir(PathBuf::from(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    fn failing_var(vars: &[(&str, &str)]) -> &'static str {
        load(vars).expect_err("config should be rejected").var
    }

    #[test]
    fn local_defaults() {
        let c = load(&[("WEBHOOK_TOKENS", "t1")]).unwrap();
        assert_eq!(c.runtime, Runtime::Http("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.access.archive, ArchiveTarget::Dir(PathBuf::from("data")));
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.store_timeout, Duration::from_secs(5));
        assert_eq!(c.account_id, None);
        assert!(!c.access.s3.force_path_style);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_connections_per_source, 128);
        assert_eq!(c.metrics_addr, None);
    }

    #[test]
    fn ssl_cert_file_must_hold_a_certificate_and_falls_back_when_absent() {
        let s3 = [("WEBHOOK_TOKENS", "t"), ("ARCHIVE_URI", "s3://bucket-a/p/")];
        let endpoint = ("AWS_ENDPOINT_URL_S3", "https://minio.internal:9000");
        let with = |path: &str| load(&[s3[0], s3[1], endpoint, ("SSL_CERT_FILE", path)]);
        assert_eq!(with("/").unwrap_err().var, "SSL_CERT_FILE", "a directory");
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(with(empty.path().to_str().unwrap()).unwrap_err().var, "SSL_CERT_FILE", "an empty file");
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_pem.path(), "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
        let err = with(not_pem.path().to_str().unwrap()).unwrap_err();
        assert_eq!(err.var, "SSL_CERT_FILE", "{err}");
        let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/isrg-root-x1.pem");
        assert_eq!(with(bundle).unwrap().access.s3.trust, Trust::Platform);
        // A path that does not exist is not fatal: the system's trust store is used instead.
        let missing = with("/nonexistent/ca-bundle.crt").unwrap();
        assert_eq!(missing.access.s3.trust, Trust::SystemStore { missing: "/nonexistent/ca-bundle.crt".into() });
        // A local directory archive makes no TLS connection, so the variable is not its business.
        assert!(load(&[s3[0], ("SSL_CERT_FILE", "/")]).is_ok());
        assert_eq!(with(bundle).unwrap().access.s3.endpoint, Endpoint::Url("https://minio.internal:9000".into()));
    }

    #[test]
    fn the_compiled_in_roots_are_for_s3_itself_under_lambda_in_the_commercial_partition() {
        use crate::aws::Trust::{AmazonTrustServices, Platform as System};
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("WEBHOOK_TOKENS", "t"),
            ("ARCHIVE_URI", "s3://bucket-a/p/"),
            ("AWS_REGION", "eu-central-1"),
        ];
        let trust = |extra: &[(&'static str, &'static str)]| {
            let mut vars = lambda.to_vec();
            vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            vars.extend_from_slice(extra);
            load(&vars).unwrap().access.s3.trust
        };
        assert_eq!(trust(&[]), AmazonTrustServices);
        // Then SSL_CERT_FILE is not read at all, so a wrong one does not stop start-up.
        assert_eq!(trust(&[("SSL_CERT_FILE", "/")]), AmazonTrustServices);
        assert_eq!(trust(&[("AWS_ENDPOINT_URL_S3", "https://minio.internal:9000")]), System, "another store");
        assert_eq!(trust(&[("AWS_ENDPOINT_URL", "https://127.0.0.1:9000")]), System, "the general variable too");
        assert_eq!(trust(&[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")]), AmazonTrustServices, "no TLS");
        for region in ["cn-north-1", "us-gov-west-1", "us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1"] {
            assert_eq!(trust(&[("AWS_REGION", region)]), System, "{region}: another partition");
        }
        // Outside Lambda a profile can name another endpoint, which the environment would not show.
        let local = [lambda[1], lambda[2], lambda[3]];
        assert_eq!(load(&local).unwrap().access.s3.trust, System);
        assert_eq!(failing_var(&[local[0], local[1], local[2], ("SSL_CERT_FILE", "/")]), "SSL_CERT_FILE");
    }

    #[test]
    fn compaction_needs_no_token_and_an_s3_archive() {
        let compact = |vars: &[(&str, &str)]| {
            CompactConfig::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
        };
        assert_eq!(compact(&[]).unwrap_err().var, "ARCHIVE_URI", "no default directory to compact");
        let local = compact(&[("ARCHIVE_URI", "/tmp/a")]).unwrap_err();
        assert_eq!(local.var, "ARCHIVE_URI");
        assert!(local.problem.contains("nothing to compact"), "{local}");
        let c = compact(&[("ARCHIVE_URI", "s3://bkt/mail"), ("S3_FORCE_PATH_STYLE", "1")]).unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bkt", "mail/"));
        assert!(!c.lambda);
        assert!(c.access.s3.force_path_style);
        assert_eq!(compact(&[("ARCHIVE_URI", "s3://B")]).unwrap_err().var, "ARCHIVE_URI");
        let s3 = ("ARCHIVE_URI", "s3://bkt/");
        assert_eq!(compact(&[s3, ("S3_FORCE_PATH_STYLE", "maybe")]).unwrap_err().var, "S3_FORCE_PATH_STYLE");
        assert_eq!(compact(&[s3, ("AWS_ENDPOINT_URL_S3", "localhost:5000")]).unwrap_err().var, "AWS_ENDPOINT_URL_S3");
        assert!(compact(&[s3, ("AWS_ENDPOINT_URL_S3", "http://172.30.240.1:5000")]).is_ok());
        let endpoint = |vars: &[(&str, &str)]| compact(&[&[s3], vars].concat()).unwrap().access.s3.endpoint;
        assert_eq!(endpoint(&[]), Endpoint::Sdk);
        assert_eq!(
            endpoint(&[("AWS_ENDPOINT_URL_S3", "")]),
            Endpoint::Aws,
            "empty names none, as the template declares it"
        );
        assert_eq!(
            endpoint(&[("AWS_ENDPOINT_URL_S3", " "), ("AWS_ENDPOINT_URL", "http://g:1")]),
            Endpoint::Url("http://g:1".into())
        );
        assert_eq!(
            endpoint(&[("AWS_ENDPOINT_URL_S3", "http://s:1"), ("AWS_ENDPOINT_URL", "http://g:1")]),
            Endpoint::Url("http://s:1".into())
        );
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        assert_eq!(compact(&[lambda]).unwrap_err().var, "ARCHIVE_URI", "under Lambda the archive is in S3");
        assert_eq!(compact(&[lambda, ("ARCHIVE_URI", "/tmp/a")]).unwrap_err().var, "ARCHIVE_URI");
        let c =
            compact(&[lambda, ("ARCHIVE_URI", "s3://bkt/"), ("AWS_LAMBDA_FUNCTION_NAME", "stack-compact")]).unwrap();
        assert!(c.lambda);
        assert_eq!(c.function_name, "stack-compact");
    }

    #[test]
    fn missing_tokens_names_the_variable() {
        assert_eq!(failing_var(&[]), "WEBHOOK_TOKENS");
        assert_eq!(failing_var(&[("WEBHOOK_TOKENS", " , ,")]), "WEBHOOK_TOKENS");
        let message = load(&[]).unwrap_err().to_string();
        assert!(message.starts_with("configuration error: WEBHOOK_TOKENS is not set"), "{message}");
        assert!(!message.contains('\n'));
        // Set but empty: the first deploy, before the panel has issued a token.
        for empty in ["", "  "] {
            let c = load(&[("WEBHOOK_TOKENS", empty)]).unwrap();
            assert!(!c.tokens.is_configured(), "{empty:?}");
        }
        assert!(load(&[("WEBHOOK_TOKENS", "t")]).unwrap().tokens.is_configured());
    }

    #[test]
    fn tokens_come_from_one_place() {
        // The template's two settings: the parameter's name with WEBHOOK_TOKENS declared empty,
        // or the reverse.
        let c = load(&[("WEBHOOK_TOKENS_PARAMETER", " /stack/webhook-tokens "), ("WEBHOOK_TOKENS", "")]).unwrap();
        assert_eq!(c.tokens_parameter.as_deref(), Some("/stack/webhook-tokens"));
        assert!(load(&[("WEBHOOK_TOKENS_PARAMETER", "/stack/webhook-tokens")]).is_ok(), "WEBHOOK_TOKENS unset");
        let c = load(&[("WEBHOOK_TOKENS_PARAMETER", ""), ("WEBHOOK_TOKENS", "t")]).unwrap();
        assert_eq!((c.tokens_parameter, c.tokens.is_configured()), (None, true));
        // Both: which one counts would be a guess.
        assert_eq!(failing_var(&[("WEBHOOK_TOKENS_PARAMETER", "/p"), ("WEBHOOK_TOKENS", "t")]), "WEBHOOK_TOKENS");
        for good in [
            "/stack/webhook-tokens",
            "webhook-tokens",
            "arn:aws:ssm:eu-central-1:123456789012:parameter/stack/webhook-tokens",
        ] {
            assert!(load(&[("WEBHOOK_TOKENS_PARAMETER", good)]).is_ok(), "{good:?}");
        }
        for bad in ["/a b", "/a\tb", "a/b", "/a$b", "/a//b", "arn:aws:s3:::bucket/x", &format!("/{}", "a".repeat(1011))]
        {
            assert_eq!(failing_var(&[("WEBHOOK_TOKENS_PARAMETER", bad)]), "WEBHOOK_TOKENS_PARAMETER", "{bad:?}");
        }
        let message = load(&[]).unwrap_err().to_string();
        assert!(message.contains("WEBHOOK_TOKENS_PARAMETER"), "the other way is named: {message}");
        // The SSM client's endpoint is read for the parameter, a local archive's too; the
        // template declares AWS_ENDPOINT_URL_SSM empty, which names none.
        let ssm = |vars: &[(&str, &str)]| {
            load(&[&[("WEBHOOK_TOKENS_PARAMETER", "/p")], vars].concat()).map(|c| c.access.s3.ssm_endpoint)
        };
        assert_eq!(ssm(&[]).unwrap(), Endpoint::Sdk);
        assert_eq!(ssm(&[("AWS_ENDPOINT_URL_SSM", "")]).unwrap(), Endpoint::Aws);
        assert_eq!(
            ssm(&[("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:5000")]).unwrap(),
            Endpoint::Url("http://127.0.0.1:5000".into())
        );
        assert_eq!(ssm(&[("AWS_ENDPOINT_URL_SSM", "ssm")]).unwrap_err().var, "AWS_ENDPOINT_URL_SSM");
        assert_eq!(
            load(&[("WEBHOOK_TOKENS", "t"), ("AWS_ENDPOINT_URL_SSM", "ssm")]).unwrap().access.s3.ssm_endpoint,
            Endpoint::Sdk,
            "no parameter, no SSM"
        );
    }

    #[test]
    fn lambda_requires_an_s3_archive() {
        let lambda = [("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"), ("WEBHOOK_TOKENS", "t")];
        assert_eq!(failing_var(&lambda), "ARCHIVE_URI");
        assert_eq!(failing_var(&[lambda[0], lambda[1], ("ARCHIVE_URI", "/tmp/x")]), "ARCHIVE_URI");
        let c = load(&[lambda[0], lambda[1], ("ARCHIVE_URI", "s3://my-bucket/mail")]).unwrap();
        assert_eq!(c.runtime, Runtime::Lambda);
        assert_eq!(c.access.archive, ArchiveTarget::S3 { bucket: "my-bucket".into(), prefix: Prefix::new("mail/") });
    }

    #[test]
    fn archive_uri_forms() {
        let uri = |u: &str| load(&[("WEBHOOK_TOKENS", "t"), ("ARCHIVE_URI", u)]).map(|c| c.access.archive);
        assert_eq!(uri("s3://bkt").unwrap(), ArchiveTarget::S3 { bucket: "bkt".into(), prefix: Prefix::default() });
        assert_eq!(uri("s3://bkt/").unwrap(), ArchiveTarget::S3 { bucket: "bkt".into(), prefix: Prefix::default() });
        assert_eq!(
            uri("s3://bkt/a/b/").unwrap(),
            ArchiveTarget::S3 { bucket: "bkt".into(), prefix: Prefix::new("a/b/") }
        );
        assert_eq!(uri("./archive").unwrap(), ArchiveTarget::Dir(PathBuf::from("./archive")));
        for bad_uri in ["s3://", "s3://Upper/x", "s3://ab", "https://bkt/x", "s3://-bkt/"] {
            assert_eq!(uri(bad_uri).unwrap_err().var, "ARCHIVE_URI", "{bad_uri}");
        }
    }

    #[test]
    fn numbers_and_flags_are_validated() {
        let with = |k, v| failing_var(&[("WEBHOOK_TOKENS", "t"), (k, v)]);
        assert_eq!(with("MAX_BODY_BYTES", "0"), "MAX_BODY_BYTES");
        assert_eq!(with("MAX_BODY_BYTES", "1MB"), "MAX_BODY_BYTES");
        assert_eq!(with("MAX_BODY_BYTES", "7000000"), "MAX_BODY_BYTES");
        assert_eq!(with("STORE_TIMEOUT_MS", "10"), "STORE_TIMEOUT_MS");
        assert_eq!(with("MAX_CONNECTIONS", "0"), "MAX_CONNECTIONS");
        assert_eq!(with("MAX_CONNECTIONS", "many"), "MAX_CONNECTIONS");
        assert_eq!(with("MAX_CONNECTIONS_PER_SOURCE", "0"), "MAX_CONNECTIONS_PER_SOURCE");
        assert_eq!(with("MAX_CONNECTIONS_PER_SOURCE", "65537"), "MAX_CONNECTIONS_PER_SOURCE");
        assert_eq!(with("METRICS_ADDR", "9090"), "METRICS_ADDR");
        assert_eq!(with("S3_FORCE_PATH_STYLE", "yes please"), "S3_FORCE_PATH_STYLE");
        assert_eq!(with("LISTEN_ADDR", "localhost"), "LISTEN_ADDR");
        assert_eq!(with("ACCOUNT_ID", "12\n34"), "ACCOUNT_ID");
        let c = load(&[
            ("WEBHOOK_TOKENS", "a, b"),
            ("MAX_BODY_BYTES", "2048"),
            ("STORE_TIMEOUT_MS", "750"),
            ("S3_FORCE_PATH_STYLE", "TRUE"),
            ("LISTEN_ADDR", "0.0.0.0:9000"),
            ("ACCOUNT_ID", " 12345 "),
            ("MAX_CONNECTIONS_PER_SOURCE", "16"),
        ])
        .unwrap();
        assert_eq!(c.max_connections_per_source, 16);
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.store_timeout, Duration::from_millis(750));
        assert!(c.access.s3.force_path_style);
        assert_eq!(c.runtime, Runtime::Http("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.account_id.as_deref(), Some("12345"));
    }
}
