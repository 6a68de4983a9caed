//! An S3 bucket, one object per event, written with `PutObject` and `If-None-Match: *`.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{Archive, ArchiveError, CONTENT_TYPE, Stored};
use crate::aws::status;
use crate::layout::Key;

/// How many times a write is tried while S3 reports a concurrent conditional write (409).
const CONFLICT_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone)]
pub struct S3Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Archive {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Archive { client, bucket: bucket.into() }
    }
}

impl Archive for S3Archive {
    async fn put_new(&self, key: &Key, line: Bytes) -> Result<Stored, ArchiveError> {
        let key = key.format();
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type(CONTENT_TYPE)
                .if_none_match("*")
                .body(ByteStream::from(line.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Stored::Created),
                Err(err) => err,
            };
            match status(&err) {
                // If-None-Match failed: the object is there already.
                Some(412) => return Ok(Stored::AlreadyPresent),
                // ConditionalRequestConflict: another write to the key is in flight; its outcome decides.
                Some(409) if attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                    attempt += 1;
                }
                _ => {
                    return Err(ArchiveError::S3 {
                        bucket: self.bucket.clone(),
                        key,
                        detail: DisplayErrorContext(&err).to_string(),
                    });
                }
            }
        }
    }
}
