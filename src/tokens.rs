//! Where the accepted webhook tokens come from: the environment (`WEBHOOK_TOKENS`, fixed for the
//! life of the process) or an SSM Parameter Store parameter (`WEBHOOK_TOKENS_PARAMETER`, a
//! SecureString), which can be set or changed without a redeploy.
//!
//! The parameter is read when a webhook request first needs it, not at Init: the confirmation
//! GET needs no token. It is read again when the last read is older than `MAX_AGE` (so a removed
//! token stops working within it), and when a request brings a token that the last read did not
//! have and that read is at least `REREAD_AFTER` old (so a token just set works at once, and a
//! sender of wrong tokens causes at most one read per `REREAD_AFTER`). A missing parameter is the
//! first deploy before the panel issued a token: 503, as an empty `WEBHOOK_TOKENS` is.

use std::time::{Duration, Instant};

use aws_sdk_ssm::error::DisplayErrorContext;
use axum::http::HeaderMap;

use crate::webhook::{self, Rejection, Tokens};

/// A token removed from the parameter stops being accepted at most this long after.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// An unknown token makes the parameter be read again if the last read is at least this old.
pub const REREAD_AFTER: Duration = Duration::from_secs(5);

/// Why a request's token could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The parameter could not be read and no earlier read is at hand: nothing to check against.
    #[error("could not read the token parameter {name}: {error}")]
    Unreadable { name: String, error: String },
}

/// The tokens a request's `X-Webhook-Token` is checked against.
pub enum TokenSource {
    Fixed(Tokens),
    Parameter(ParameterTokens),
}

impl From<Tokens> for TokenSource {
    fn from(tokens: Tokens) -> Self {
        TokenSource::Fixed(tokens)
    }
}

impl TokenSource {
    /// Checks the request's token as `webhook::check_token` does, against the current tokens.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), TokenError> {
        match self {
            TokenSource::Fixed(tokens) => Ok(webhook::check_token(headers, tokens)?),
            TokenSource::Parameter(p) => p.check(headers).await,
        }
    }
}

/// Reads one SSM parameter: a comma-separated token list, as `WEBHOOK_TOKENS` holds.
pub struct ParameterTokens {
    client: aws_sdk_ssm::Client,
    name: String,
    max_age: Duration,
    reread_after: Duration,
    /// One read at a time: concurrent requests wait for the read in flight instead of each
    /// starting their own.
    last: tokio::sync::Mutex<Last>,
}

#[derive(Default)]
struct Last {
    /// What the last successful read found.
    tokens: Option<Tokens>,
    read_at: Option<Instant>,
    /// The last read tried, successful or not.
    tried_at: Option<Instant>,
}

impl ParameterTokens {
    pub fn new(client: aws_sdk_ssm::Client, name: String) -> Self {
        Self::with_timing(client, name, MAX_AGE, REREAD_AFTER)
    }

    /// As `new`, with other spacings than `MAX_AGE` and `REREAD_AFTER` (tests).
    pub fn with_timing(client: aws_sdk_ssm::Client, name: String, max_age: Duration, reread_after: Duration) -> Self {
        ParameterTokens { client, name, max_age, reread_after, last: Default::default() }
    }

    async fn check(&self, headers: &HeaderMap) -> Result<(), TokenError> {
        let mut last = self.last.lock().await;
        if last.read_at.is_none_or(|at| at.elapsed() >= self.max_age) && self.may_try(&last) {
            self.read(&mut last).await;
        }
        let checked = match &last.tokens {
            Some(tokens) => webhook::check_token(headers, tokens),
            None => Err(Rejection::NoTokenYet),
        };
        match checked {
            Err(Rejection::BadToken | Rejection::NoTokenYet) if self.may_try(&last) => {
                self.read(&mut last).await;
            }
            checked => return self.answer(&last, checked),
        }
        let checked = match &last.tokens {
            Some(tokens) => webhook::check_token(headers, tokens),
            None => Err(Rejection::NoTokenYet),
        };
        self.answer(&last, checked)
    }

    /// Reads are spaced `reread_after` apart, failed ones too.
    fn may_try(&self, last: &Last) -> bool {
        last.tried_at.is_none_or(|at| at.elapsed() >= self.reread_after)
    }

    /// A refusal stands; but with no successful read yet there is nothing to refuse with.
    fn answer(&self, last: &Last, checked: Result<(), Rejection>) -> Result<(), TokenError> {
        match (checked, &last.tokens) {
            (Ok(()), _) => Ok(()),
            (Err(_), None) => Err(TokenError::Unreadable {
                name: self.name.clone(),
                error: "no successful read yet (see the error logged when it was tried)".into(),
            }),
            (Err(r), Some(_)) => Err(r.into()),
        }
    }

    /// One GetParameter. On failure the earlier tokens stay in use, and the error is logged
    /// (never the value).
    async fn read(&self, last: &mut Last) {
        let now = Instant::now();
        last.tried_at = Some(now);
        let read = self.client.get_parameter().name(&self.name).with_decryption(true).send().await;
        let tokens = match read {
            Ok(output) => match output.parameter().and_then(|p| p.value()).and_then(Tokens::parse) {
                Some(tokens) => tokens,
                None => {
                    tracing::warn!(parameter = %self.name, "the token parameter holds no token: every webhook request gets 503 until it does");
                    Tokens::none_yet()
                }
            },
            Err(e) if e.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => {
                tracing::warn!(
                    parameter = %self.name,
                    "the token parameter does not exist yet: every webhook request gets 503 (and one resend 15 minutes \
                     later) until the panel's token is put there"
                );
                Tokens::none_yet()
            }
            Err(e) => {
                tracing::error!(parameter = %self.name, error = %DisplayErrorContext(&e), "could not read the token parameter");
                return;
            }
        };
        tracing::info!(parameter = %self.name, tokens = tokens.count(), "read the token parameter");
        last.tokens = Some(tokens);
        last.read_at = Some(now);
    }
}
