//! Where the accepted webhook tokens come from: the environment (`WEBHOOK_TOKENS`, fixed for the
//! life of the process) or an SSM Parameter Store parameter (`WEBHOOK_TOKENS_PARAMETER`, a
//! SecureString), which can be set or changed without a redeploy.
//!
//! The parameter is read when a webhook request first needs it, not at Init: the confirmation
//! GET needs no token. It is read again when the last read is older than `MAX_AGE` (so a removed
//! token stops working within it), and when a request brings a token that the last read did not
//! have and that read is at least `REREAD_AFTER` old (so a token just set works before the
//! sender's resend, and a sender of wrong tokens causes at most one read per `REREAD_AFTER`).
//! A missing parameter is the first deploy before the panel issued a token: 503, as an empty
//! `WEBHOOK_TOKENS` is. While reads fail, the tokens read last stay in use, and a token they
//! refuse is our failure (503, counted as one), since the parameter may hold it by now.

use std::time::{Duration, Instant};

use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::ParameterType;
use axum::http::HeaderMap;

use crate::webhook::{self, Rejection, Tokens};

/// A token removed from the parameter stops being accepted at most this long after.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// An unknown token makes the parameter be read again if the last read is at least this old. The
/// sender resends a refused event 15 minutes later, so a token just set still works in time; and
/// a stranger's wrong tokens cost at most one read this often per execution environment, far
/// below SSM's shared per-account rate.
pub const REREAD_AFTER: Duration = Duration::from_secs(30);

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
    /// When the last read ended, successful or not.
    tried_at: Option<Instant>,
    /// Why the last read failed, if it did.
    failed: Option<String>,
}

impl Last {
    /// The request's token against what the last successful read found; nothing read is no token yet.
    fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        self.tokens.as_ref().map_or(Err(Rejection::NoTokenYet), |tokens| webhook::check_token(headers, tokens))
    }
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
        let checked = last.check(headers);
        if checked.is_err() && self.may_try(&last) {
            self.read(&mut last).await;
            return self.answer(&last, last.check(headers));
        }
        self.answer(&last, checked)
    }

    /// Reads are spaced `reread_after` apart, failed ones too.
    fn may_try(&self, last: &Last) -> bool {
        last.tried_at.is_none_or(|at| at.elapsed() >= self.reread_after)
    }

    /// A refusal stands while the parameter reads. If the last read failed, or none ever
    /// succeeded, the token could not be checked against what the parameter holds now: that is
    /// our failure (503, counted as one), not the sender's.
    fn answer(&self, last: &Last, checked: Result<(), Rejection>) -> Result<(), TokenError> {
        match (checked, &last.tokens, &last.failed) {
            (Ok(()), _, _) => Ok(()),
            (Err(_), _, Some(error)) => Err(TokenError::Unreadable { name: self.name.clone(), error: error.clone() }),
            (Err(_), None, None) => Err(TokenError::Unreadable {
                name: self.name.clone(),
                error: "not read yet: the last try was under the spacing between reads".into(),
            }),
            (Err(r), Some(_), None) => Err(r.into()),
        }
    }

    /// One GetParameter. On failure the earlier tokens stay in use, and the error is logged
    /// (never the value).
    async fn read(&self, last: &mut Last) {
        let started = Instant::now();
        let read = self.client.get_parameter().name(&self.name).with_decryption(true).send().await;
        last.tried_at = Some(Instant::now());
        let tokens = match read {
            Ok(output) => {
                let parameter = output.parameter();
                if parameter.and_then(|p| p.r#type()) != Some(&ParameterType::SecureString) {
                    tracing::warn!(parameter = %self.name, "the token parameter is not a SecureString: put it again with --type SecureString");
                }
                match parameter.and_then(|p| p.value()).and_then(Tokens::parse) {
                    Some(tokens) => tokens,
                    None => {
                        tracing::warn!(parameter = %self.name, "the token parameter holds no token: every webhook request gets 503 until it does");
                        Tokens::none_yet()
                    }
                }
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => {
                tracing::warn!(
                    parameter = %self.name,
                    "the token parameter does not exist yet: every webhook request gets 503 (and one resend 15 minutes \
                     later) until the panel's token is put there"
                );
                Tokens::none_yet()
            }
            Err(e) => {
                let error = DisplayErrorContext(&e).to_string();
                tracing::error!(parameter = %self.name, error = %error, "could not read the token parameter");
                last.failed = Some(error);
                return;
            }
        };
        tracing::info!(parameter = %self.name, tokens = tokens.count(), "read the token parameter");
        last.tokens = Some(tokens);
        last.read_at = Some(started);
        last.failed = None;
    }
}
