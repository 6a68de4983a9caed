//! One compaction at a time on an S3 archive: a lease object in the bucket, taken with
//! `If-None-Match: *`, renewed and handed on with `If-Match: <ETag>` (compare-and-swap), and
//! released by writing it expired, again with `If-Match` (a conditional PUT, which every store
//! that can hold a lease supports, where a conditional DELETE is newer). A run renews it right
//! before every step that cannot be undone (writing a merged object, deleting per-event objects),
//! and between partitions; every request is bounded by the client's operation timeout, a quarter
//! of the lease's time, so a renewal and its step end within half of it, and the other half
//! allows for clock skew between two machines: a step ends before any other run can see the lease
//! expire and take it over. A run whose renewal fails has lost the lease, and stops without
//! another write.
//!
//! The lease also carries where a run cut off by its deadline stopped, so the next run starts
//! after that partition: a large partition never holds back the newer ones for more than a run;
//! and, for each partition a run was cut off in, the last key it dealt with, so that partition's
//! next listing starts after it: a partition too large for one run is done across runs.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::aws::status;
use crate::layout::{Prefix, parse_date};

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Body {
    /// Who holds it: a new id for every run.
    holder: String,
    /// Until when, in Unix milliseconds by the holder's clock.
    expires_unix_ms: u64,
    /// The partition where the next run starts, if the last was stopped by its deadline. Named
    /// `resume_after` in the object, as leases already written name it.
    #[serde(rename = "resume_after", default, skip_serializing_if = "Option::is_none")]
    resume_from: Option<String>,
    /// Per partition (`YYYY-MM-DD`) a run was cut off in: the key its next listing starts after.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    start_after: BTreeMap<String, String>,
}

/// Why a run could not take, or keep, the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another compaction holds s3://{bucket}/{key} (holder {holder}) for {left_s} s more; this run did nothing")]
    Held { bucket: String, key: String, holder: String, left_s: u64 },
    #[error("this run lost s3://{bucket}/{key} to another compaction and stopped before its next write")]
    Lost { bucket: String, key: String },
    #[error("the lease s3://{bucket}/{key} could not be read or written: {detail}")]
    Failed { bucket: String, key: String, detail: String },
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    holder: String,
    etag: String,
    ttl: Duration,
    /// When the lease was last written, plus its time, by this run's clock.
    expires: SystemTime,
    /// Where the previous run asked this one to go on; every write of the lease carries it, as
    /// this run updates it, so a run killed before its release still hands on its progress.
    pub resume: Resume,
}

/// Where the next run goes on: the partition it starts at, and the keys to list after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// The partition the next run starts at (`Report::resume_from`).
    pub resume_from: Option<Date>,
    pub start_after: BTreeMap<Date, String>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Lease {
    /// Takes the lease, or takes over one that has expired. `ttl` must be more than the client's
    /// operation timeout.
    pub async fn acquire(
        client: &aws_sdk_s3::Client,
        bucket: &str,
        prefix: &Prefix,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let key = prefix.lease();
        let mut lease = Lease {
            client: client.clone(),
            bucket: bucket.to_owned(),
            key,
            holder: uuid::Uuid::new_v4().to_string(),
            etag: String::new(),
            ttl,
            expires: UNIX_EPOCH,
            resume: Resume::default(),
        };
        match lease.put(None).await {
            Ok(()) => return Ok(lease),
            Err(PutError::Precondition) => {}
            Err(PutError::Other(detail)) => return Err(lease.failed(detail)),
        }
        // Someone has it, or had it: take it over only if it has expired.
        let got = client.get_object().bucket(bucket).key(&lease.key).send().await;
        let (etag, body): (String, Option<Body>) = match got {
            Ok(got) => {
                let etag = got.e_tag().unwrap_or_default().to_owned();
                let bytes = got.body.collect().await.map_err(|e| lease.failed(DisplayErrorContext(&e).to_string()))?;
                (etag, serde_json::from_slice::<Body>(&bytes.into_bytes()).ok())
            }
            // Released between the two requests: try once more from the start.
            Err(e) if status(&e) == Some(404) => return Box::pin(Self::acquire(client, bucket, prefix, ttl)).await,
            Err(e) => return Err(lease.failed(DisplayErrorContext(&e).to_string())),
        };
        let now = unix_ms(SystemTime::now());
        if let Some(body) = &body
            && body.holder == lease.holder
        {
            // Our own create, retried by the SDK after it had landed.
            lease.etag = etag;
            lease.expires = SystemTime::now() + ttl;
            return Ok(lease);
        }
        if let Some(body) = &body
            && body.expires_unix_ms > now
        {
            return Err(LeaseError::Held {
                bucket: lease.bucket,
                key: lease.key,
                holder: body.holder.clone(),
                left_s: (body.expires_unix_ms - now).div_ceil(1000),
            });
        }
        // Handed on in the takeover itself, so it survives this run being killed.
        lease.resume = body.map(|b| b.resume()).unwrap_or_default();
        match lease.put(Some(&etag)).await {
            Ok(()) => Ok(lease),
            // However long finding that out took: no step follows before the first `fence`.
            Err(PutError::Precondition) if lease.is_ours(&etag).await != Ours::No => Ok(lease),
            // Another run took it over first.
            Err(PutError::Precondition) => Err(LeaseError::Held {
                bucket: lease.bucket,
                key: lease.key,
                holder: "another run".into(),
                left_s: ttl.as_secs(),
            }),
            Err(PutError::Other(detail)) => Err(lease.failed(detail)),
        }
    }

    /// Renews the lease right before a step that cannot be undone; `Lost` if another run has
    /// taken it, in which case the step must not be taken.
    pub async fn fence(&mut self) -> Result<(), LeaseError> {
        let etag = self.etag.clone();
        let lost = |lease: &Lease| LeaseError::Lost { bucket: lease.bucket.clone(), key: lease.key.clone() };
        match self.put(Some(&etag)).await {
            Ok(()) => Ok(()),
            Err(PutError::Precondition) => match self.is_ours(&etag).await {
                Ours::InTime => Ok(()),
                // Ours, but too long ago for the step to end in time: renewed once more, over the
                // lease just found, and that write's own answer decides.
                Ours::Late => {
                    let found = self.etag.clone();
                    match self.put(Some(&found)).await {
                        Ok(()) => Ok(()),
                        Err(PutError::Precondition) => Err(lost(self)),
                        Err(PutError::Other(detail)) => Err(self.failed(detail)),
                    }
                }
                Ours::No => Err(lost(self)),
            },
            Err(PutError::Other(detail)) => Err(self.failed(detail)),
        }
    }

    /// Renews the lease if half its time has gone, so a long run of reads keeps it.
    pub async fn keep(&mut self) -> Result<(), LeaseError> {
        let half = self.expires.checked_sub(self.ttl / 2).unwrap_or(UNIX_EPOCH);
        if SystemTime::now() >= half { self.fence().await } else { Ok(()) }
    }

    /// Lets go: writes the lease already expired, naming where the next run goes on. Only if it
    /// is still this run's (`If-Match`): a run that lost it must not end another's. A failure is
    /// only logged: the lease expires by itself, and the next run starts further back.
    pub async fn release(mut self, resume: Resume) {
        let etag = self.etag.clone();
        self.resume = resume;
        match self.write(Some(&etag), true).await {
            Ok(()) => {}
            Err(PutError::Precondition) => tracing::warn!("the compaction lease was taken over before its release"),
            Err(PutError::Other(detail)) => {
                tracing::warn!(error = %detail, "releasing the compaction lease failed; it expires by itself")
            }
        }
    }

    /// Writes the lease, for `ttl` from now: created if absent (`etag` `None`), else only over
    /// `etag`.
    async fn put(&mut self, etag: Option<&str>) -> Result<(), PutError> {
        self.write(etag, false).await
    }

    async fn write(&mut self, etag: Option<&str>, expired: bool) -> Result<(), PutError> {
        let resume = &self.resume;
        let now = SystemTime::now();
        let expires = if expired { UNIX_EPOCH } else { now + self.ttl };
        let body = Body {
            holder: self.holder.clone(),
            expires_unix_ms: unix_ms(expires),
            resume_from: resume.resume_from.map(|d| d.to_string()),
            start_after: resume.start_after.iter().map(|(d, k)| (d.to_string(), k.clone())).collect(),
        };
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(serde_json::to_vec(&body).expect("plain fields serialise")));
        let request = match etag {
            None => request.if_none_match("*"),
            Some(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(out) => {
                self.etag = out.e_tag().unwrap_or_default().to_owned();
                self.expires = now + self.ttl;
                Ok(())
            }
            // 412: the condition failed; 404: an If-Match on a lease deleted since; 409: a
            // concurrent conditional write, which the other writer wins.
            Err(e) if matches!(status(&e), Some(404 | 409 | 412)) => Err(PutError::Precondition),
            Err(e) => Err(PutError::Other(DisplayErrorContext(&e).to_string())),
        }
    }

    /// After a refused write made with `If-Match: sent`: whether the lease is this run's all the
    /// same, because the SDK retried a write of ours that had landed. Only a lease that is ours
    /// *and no longer the one we sent the condition on* proves that: seeing our old lease still
    /// there (a 409 while another run's takeover is in flight, a 412 whose write lost) means
    /// nothing of ours landed, and the other run may be about to. If it is ours, its ETag is
    /// taken up.
    ///
    /// A step after a renewal must end within half the lease of the write that landed, as after
    /// a renewal answered at once. So the lease is ours `InTime` only if this check ended within
    /// a quarter of the lease of that write's stamp (sent once, before any retry of it), and
    /// `Late` after that.
    async fn is_ours(&mut self, sent: &str) -> Ours {
        let Ok(got) = self.client.get_object().bucket(&self.bucket).key(&self.key).send().await else {
            return Ours::No;
        };
        let etag = got.e_tag().unwrap_or_default().to_owned();
        let Ok(bytes) = got.body.collect().await else { return Ours::No };
        let ttl_ms = self.ttl.as_millis() as u64;
        match serde_json::from_slice::<Body>(&bytes.into_bytes()) {
            Ok(body) if body.holder == self.holder && body.expires_unix_ms > 0 && etag != sent => {
                self.etag = etag;
                self.expires = UNIX_EPOCH + Duration::from_millis(body.expires_unix_ms);
                let stamped = body.expires_unix_ms.saturating_sub(ttl_ms);
                if unix_ms(SystemTime::now()) >= stamped + ttl_ms / 4 { Ours::Late } else { Ours::InTime }
            }
            _ => Ours::No,
        }
    }

    fn failed(&self, detail: String) -> LeaseError {
        LeaseError::Failed { bucket: self.bucket.clone(), key: self.key.clone(), detail }
    }
}

impl Body {
    /// Where it asks the next run to go on; what does not parse is left out.
    fn resume(self) -> Resume {
        Resume {
            resume_from: self.resume_from.as_deref().and_then(parse_date),
            start_after: self.start_after.into_iter().filter_map(|(d, k)| Some((parse_date(&d)?, k))).collect(),
        }
    }
}

/// What reading the lease back after a refused write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ours {
    /// Not this run's, or still the lease the refused write was conditioned on.
    No,
    /// This run's, from a write that landed within a quarter of the lease.
    InTime,
    /// This run's, from a write that landed longer ago than that.
    Late,
}

enum PutError {
    Precondition,
    Other(String),
}
