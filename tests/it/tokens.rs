//! Tokens read from an SSM Parameter Store parameter (`WEBHOOK_TOKENS_PARAMETER`), against
//! moto_server's SSM on loopback: the first deploy before the panel has issued a token, a token
//! set and rotated without a redeploy, a removed token refused, and SSM out of reach.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use mailhook::tokens::{ParameterTokens, TokenError, TokenSource};
use mailhook::webhook::Rejection;
use support::lambda::{Outcome, runtime_api};
use support::moto::Moto;
use support::*;

const PARAMETER: &str = "/mailhook-test/webhook-tokens";

/// moto_server, its SSM backend loaded; `None` (SKIPPED) if it is not installed and not required.
async fn moto() -> Option<Moto> {
    let moto = support::moto::start("tokens from SSM").await?;
    let addr = moto.addr;
    // moto loads its SSM backend on the first SSM request, which can take longer than mailhook's
    // store budget; that first request is made here, with time to spare.
    let warm = client(addr, Duration::from_secs(60)).await.get_parameter().name(PARAMETER).send().await;
    assert!(warm.is_err_and(|e| e.as_service_error().is_some_and(|e| e.is_parameter_not_found())));
    Some(moto)
}

/// An SSM client as mailhook builds it (its HTTP client, timeouts and retries), at `addr`.
async fn ssm(addr: SocketAddr) -> aws_sdk_ssm::Client {
    client(addr, Duration::from_secs(2)).await
}

async fn client(addr: SocketAddr, budget: Duration) -> aws_sdk_ssm::Client {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests"));
    let connection = path_style(mailhook::aws::Trust::Platform);
    let shared = mailhook::aws::receiver_config(&connection.trust, budget, loader).await;
    mailhook::aws::token_client(&shared, &connection, budget)
}

/// What the README's `SetTokenCommand` does: `aws ssm put-parameter --type SecureString --overwrite`.
async fn put_tokens(client: &aws_sdk_ssm::Client, value: &str) {
    client
        .put_parameter()
        .name(PARAMETER)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

fn token(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-webhook-token", value.parse().unwrap());
    headers
}

fn rejection(checked: Result<(), TokenError>) -> Option<Rejection> {
    match checked {
        Ok(()) => None,
        Err(TokenError::Rejected(r)) => Some(r),
        Err(e) => panic!("expected a check, got {e}"),
    }
}

/// The first deploy as the README steps it, on one running function: deployed with only the
/// account ID, the panel confirms the URL and sends its first events, which get 503; the token
/// the panel then shows is put in the parameter (no redeploy), and each event's one resend, 15
/// minutes later, is stored. The resends follow after `REREAD_AFTER` rather than 15 minutes: for
/// mailhook any wait at least that long is the same (the key comes from the event's `tstamp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_with_the_token_parameter_loses_no_event() {
    let Some(moto) = moto().await else { return };
    let s3_root = tempfile::tempdir().unwrap();
    let s3 = s3_server(s3_root.path()).await;
    let samples =
        ["new.json", "create.json", "flags-set.json", "flags-set-deleted.json", "base64-no-content-type.json"];
    let (api, events, mut outcomes) = runtime_api().await;
    let mut invoke = async |name: &str| -> serde_json::Value {
        events.send((format!("invocation-{name}"), event_text(name))).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await.unwrap().unwrap().1 {
            Outcome::Response(r) => r,
            Outcome::Error(e) => panic!("an invocation error: {e}"),
        }
    };

    // The template's environment with the default TokenStore: the parameter's name, and
    // WEBHOOK_TOKENS declared empty.
    let mut vars = crate::binary::lambda_env(api, s3);
    vars.retain(|(k, _)| *k != "WEBHOOK_TOKENS");
    vars.extend([
        ("WEBHOOK_TOKENS", String::new()),
        ("WEBHOOK_TOKENS_PARAMETER", PARAMETER.into()),
        ("AWS_ENDPOINT_URL_SSM", format!("http://{}", moto.addr)),
    ]);
    let function = Running::start(&vars);

    let confirm = invoke("confirm.json").await;
    assert_eq!((confirm["statusCode"].as_u64(), confirm["body"].as_str()), (Some(200), Some(ACCOUNT_ID)));
    for name in samples {
        let r = invoke(name).await;
        assert_eq!(r["statusCode"], 503, "{name}: not 200, so the sender resends it: {r}\n{}", function.output());
        assert!(r["body"].as_str().unwrap().contains("No webhook token is configured yet"), "{name}: {r}");
    }
    let client = s3_client(&s3_config(&[]), s3).await;
    assert_eq!(bucket_objects(&client).await.len(), 0);

    // The panel's token, put where the stack's SetTokenCommand output says.
    put_tokens(&ssm(moto.addr).await, TOKEN).await;
    tokio::time::sleep(mailhook::tokens::REREAD_AFTER).await;
    for name in samples {
        let r = invoke(name).await;
        assert_eq!(r["statusCode"], 200, "{name}'s resend: {r}\n{}", function.output());
    }
    let mut stored: Vec<String> = bucket_objects(&client).await.into_iter().map(|(key, _, _)| key).collect();
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), samples.len(), "each event stored once: {stored:#?}");

    let output = function.output();
    let refused = emf_lines(&output).iter().map(|l| l["SenderRefused"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(refused, samples.len() as u64, "the refused first sends fire SenderRefusedAlarm:\n{output}");
    assert!(output.contains("the token parameter does not exist yet"), "said when first read:\n{output}");
    assert!(!output.contains(TOKEN), "the token reached the logs:\n{output}");
}

/// A token set, rotated and removed, seen through the spacing of the reads: an unknown token
/// causes a read only once the last is `reread_after` old, and a token removed from the
/// parameter is refused once the tokens read are `max_age` old.
#[tokio::test]
async fn tokens_set_rotated_and_removed_without_a_redeploy() {
    let Some(moto) = moto().await else { return };
    let client = ssm(moto.addr).await;
    let reread = Duration::from_secs(2);
    let max_age = Duration::from_secs(5);
    let tokens =
        TokenSource::Parameter(ParameterTokens::with_timing(client.clone(), PARAMETER.into(), max_age, reread));

    // Before the panel issued one: 503, for the right token and a wrong one alike.
    assert_eq!(rejection(tokens.check(&token("first")).await), Some(Rejection::NoTokenYet));
    assert_eq!(rejection(tokens.check(&token("wrong")).await), Some(Rejection::NoTokenYet));
    put_tokens(&client, "first").await;
    // Just read: a sender of unknown tokens cannot make mailhook read again at once.
    assert_eq!(rejection(tokens.check(&token("first")).await), Some(Rejection::NoTokenYet));
    tokio::time::sleep(reread).await;
    assert_eq!(rejection(tokens.check(&token("first")).await), None, "set without a redeploy");
    assert_eq!(rejection(tokens.check(&token("wrong")).await), Some(Rejection::BadToken));

    // Rotation: old and new side by side; the new one works once `reread` has passed.
    put_tokens(&client, "first, second").await;
    tokio::time::sleep(reread).await;
    assert_eq!(rejection(tokens.check(&token("second")).await), None, "an unknown token makes it read again");
    assert_eq!(rejection(tokens.check(&token("first")).await), None);

    // The old one removed: still accepted until what was read is `max_age` old, then refused.
    put_tokens(&client, "second").await;
    assert_eq!(rejection(tokens.check(&token("first")).await), None, "within max_age");
    tokio::time::sleep(max_age).await;
    assert_eq!(rejection(tokens.check(&token("first")).await), Some(Rejection::BadToken), "removed");
    assert_eq!(rejection(tokens.check(&token("second")).await), None);

    // A blank value, then the parameter deleted: nothing is accepted, 503 as before a first token.
    put_tokens(&client, " , ").await;
    tokio::time::sleep(max_age).await;
    assert_eq!(rejection(tokens.check(&token("second")).await), Some(Rejection::NoTokenYet), "blank");
    client.delete_parameter().name(PARAMETER).send().await.unwrap();
    tokio::time::sleep(reread).await;
    assert_eq!(rejection(tokens.check(&token("second")).await), Some(Rejection::NoTokenYet), "deleted");
    put_tokens(&client, "second").await;
    tokio::time::sleep(reread).await;
    assert_eq!(rejection(tokens.check(&token("second")).await), None, "put back");

    // SSM out of reach: the tokens read before stay in use; a token they refuse may be in the
    // parameter by now, so it is our failure, not the sender's.
    drop(moto);
    tokio::time::sleep(max_age).await;
    assert_eq!(rejection(tokens.check(&token("second")).await), None, "the last tokens read, while SSM is down");
    let refused = tokens.check(&token("third")).await;
    assert!(matches!(refused, Err(TokenError::Unreadable { .. })), "unchecked while SSM is down: {refused:?}");
}

/// No read has ever succeeded: nothing to check against, so the request is not the sender's
/// fault: 503 (its resend may find SSM back), counted as a failure of ours (StoreFailedAlarm).
#[tokio::test]
async fn an_unreadable_parameter_is_answered_503_and_counted_as_our_failure() {
    let dir = tempfile::tempdir().unwrap();
    let state = std::sync::Arc::new(mailhook::http::AppState {
        tokens: TokenSource::Parameter(ParameterTokens::new(ssm(closed_port()).await, PARAMETER.into())),
        account_id: Some(ACCOUNT_ID.into()),
        max_body_bytes: 1024 * 1024,
        store_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_millis(500),
        prefix: mailhook::layout::Prefix::default(),
        archive: mailhook::archive::DirArchive::open(dir.path()).unwrap(),
        metrics: mailhook::telemetry::metrics::Metrics::Prometheus(Default::default()),
    });
    let app = mailhook::http::router(state.clone());
    let reply = call(&app, event("new.json")).await;
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 503, "{body}");
    assert!(body.contains("Could not read the webhook tokens"), "{body}");
    let mailhook::telemetry::metrics::Metrics::Prometheus(counts) = &state.metrics else { unreachable!() };
    let counts = counts.text(false);
    assert!(counts.contains("mailhook_requests_total{outcome=\"failed\"} 1"), "{counts}");
    assert!(stored(dir.path()).is_empty());
}

/// An SSM that takes the connection and never answers: the read gives up within its budget, so a
/// read and then a store both fit in the function's timeout (template.yaml), and the sender gets
/// an answer (503, resent) rather than a cut connection.
#[tokio::test]
async fn a_stalled_ssm_is_given_up_on_within_the_read_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            open.push(listener.accept().await.unwrap().0);
        }
    });
    let store_budget = Duration::from_secs(5);
    let tokens = TokenSource::Parameter(ParameterTokens::new(client(addr, store_budget).await, PARAMETER.into()));
    let started = Instant::now();
    let checked = tokens.check(&token(TOKEN)).await;
    let took = started.elapsed();
    assert!(matches!(checked, Err(TokenError::Unreadable { .. })), "{checked:?}");
    assert!(took < mailhook::aws::TOKEN_READ_BUDGET + Duration::from_millis(500), "gave up after {took:?}");
    held.abort();
}
