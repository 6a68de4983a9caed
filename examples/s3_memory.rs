//! An S3 in memory for bench/run's compaction-at-scale stage: ListObjectsV2 (at most 1,000 keys
//! a page, each page answered after a set delay, as S3's come), GetObject, PutObject (with
//! `If-None-Match: *` and `If-Match: <ETag>`) and DeleteObjects, served through s3s, so that
//! `mailhook compact` talks to it with the same SDK client as to S3. s3s-fs reads a whole
//! directory for every LIST page, which at millions of objects would measure s3s-fs.
//!
//! It starts with one partition, `mail/dt=DAY/`, of EVENTS objects, each a line as the receiver
//! stores it (about 700 bytes, like events/new.json), then prints `ready`. At the end of its
//! stdin it checks the partition and prints one JSON line: the per-event objects left, the
//! merged objects, their lines, and how many distinct events those hold.
//!
//! `cargo run --release --example s3_memory -- PORT EVENTS DAY LIST_DELAY_MS`

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read};
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use mailhook::record::{Meta, Record, verify_line};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

const PREFIX: &str = "mail/";
const PAGE: usize = 1000;

struct Object {
    body: Bytes,
    etag: String,
    modified: SystemTime,
}

struct Memory {
    objects: RwLock<BTreeMap<String, Object>>,
    etags: AtomicU64,
    list_delay: Duration,
}

impl Memory {
    fn etag(&self) -> String {
        format!("{:032x}", self.etags.fetch_add(1, Ordering::Relaxed))
    }
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        tokio::time::sleep(self.list_delay).await;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone();
        let max = input.max_keys.map_or(PAGE, |n| (n.max(0) as usize).min(PAGE));
        // A token is the last key or common prefix a page gave; a common prefix is skipped whole.
        let after = input.continuation_token.clone().or(input.start_after.clone());
        let mut from = match after {
            Some(a) if a.ends_with('/') => Bound::Included(format!("{}0", &a[..a.len() - 1])),
            Some(a) => Bound::Excluded(a),
            None => Bound::Included(prefix.clone()),
        };
        let objects = self.objects.read().unwrap();
        let (mut contents, mut common, mut last) = (Vec::new(), Vec::new(), None);
        let mut truncated = false;
        while let Some((key, object)) = objects.range::<String, _>((from.clone(), Bound::Unbounded)).next() {
            if !key.starts_with(&prefix) {
                break;
            }
            if contents.len() + common.len() == max {
                truncated = true;
                break;
            }
            let rest = &key[prefix.len()..];
            match delimiter.as_deref().and_then(|d| rest.find(d).map(|i| i + d.len())) {
                Some(end) => {
                    let cp = format!("{prefix}{}", &rest[..end]);
                    from = Bound::Included(format!("{}0", &cp[..cp.len() - 1]));
                    common.push(CommonPrefix { prefix: Some(cp.clone()) });
                    last = Some(cp);
                }
                None => {
                    contents.push(s3s::dto::Object {
                        key: Some(key.clone()),
                        e_tag: Some(ETag::Strong(object.etag.clone())),
                        last_modified: Some(object.modified.into()),
                        size: Some(object.body.len() as i64),
                        ..Default::default()
                    });
                    from = Bound::Excluded(key.clone());
                    last = Some(key.clone());
                }
            }
        }
        let output = ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter,
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + common.len()) as i32),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: if truncated { last } else { None },
            contents: Some(contents),
            common_prefixes: Some(common),
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let (body, etag, modified) = {
            let objects = self.objects.read().unwrap();
            let object = objects.get(&req.input.key).ok_or_else(|| s3_error!(NoSuchKey))?;
            (object.body.clone(), object.etag.clone(), object.modified)
        };
        let output = GetObjectOutput {
            content_length: Some(body.len() as i64),
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(modified.into()),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let mut body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let mut bytes = BytesMut::new();
        while let Some(piece) = body.next().await {
            bytes.extend_from_slice(&piece.map_err(|_| s3_error!(IncompleteBody))?);
        }
        let mut objects = self.objects.write().unwrap();
        let existing = objects.get(&input.key).map(|o| o.etag.clone());
        if input.if_none_match.as_ref().is_some_and(|c| c.is_any()) && existing.is_some() {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(condition) = &input.if_match {
            let matches = match (condition, &existing) {
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(expected), Some(etag)) => expected.value() == etag,
                (_, None) => return Err(s3_error!(NoSuchKey)),
            };
            if !matches {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        let etag = self.etag();
        let object = Object { body: bytes.freeze(), etag: etag.clone(), modified: SystemTime::now() };
        objects.insert(input.key, object);
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let mut objects = self.objects.write().unwrap();
        let deleted = req
            .input
            .delete
            .objects
            .into_iter()
            .map(|o| {
                objects.remove(&o.key);
                DeletedObject { key: Some(o.key), ..Default::default() }
            })
            .collect();
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }
}

/// Event `uid` of `day`'s partition, as the receiver stores it.
fn record(day: time::Date, uid: u32) -> Record {
    let at = day.with_hms(12, 0, 0).unwrap().assume_utc();
    let body = format!(
        r#"{{"mailbox":"info@example.com","uid":{uid},"tstamp":{},"event":"new","folder":"INBOX","flags":[],"from":"Olena Kovalenko <olena@example.org>","to":"info@example.com","subject":"Рахунок № 2026-{uid}","snippet":"Добрий день! Надсилаю рахунок за листопад, оплата до 5 грудня.","message_id":"<20261126164612.{uid}@mail.example.org>"}}"#,
        at.unix_timestamp() + i64::from(uid % 40_000)
    );
    let event = mailhook::webhook::parse_body(body.as_bytes(), 1 << 20).expect("a valid event");
    let meta = Meta {
        request_id: format!("bench-{uid}"),
        ip: Some("198.51.100.7".into()),
        ua: Some("adm.tools mail webhook".into()),
        ..Meta::default()
    };
    Record::new(&event, &meta, at, PREFIX)
}

/// What the partition holds: per-event objects left, merged objects, their lines, distinct ids.
fn check(memory: &Memory, dir: &str) -> serde_json::Value {
    let objects = memory.objects.read().unwrap();
    let (mut per_event, mut merged, mut lines, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut ids = HashSet::new();
    for (key, object) in objects.range::<str, _>((Bound::Included(dir), Bound::Unbounded)) {
        if !key.starts_with(dir) {
            break;
        }
        if key.ends_with(".jsonl") {
            per_event += 1;
        } else if key.ends_with(".jsonl.gz") {
            merged += 1;
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&object.body[..]).read_to_end(&mut text).expect("gzip");
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                lines += 1;
                match verify_line(line) {
                    Some(id) => {
                        ids.insert(id);
                    }
                    None => bad += 1,
                }
            }
        }
    }
    serde_json::json!({
        "per_event_left": per_event, "merged_objects": merged, "merged_lines": lines,
        "distinct_events": ids.len(), "bad_lines": bad,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, events, day, delay] = &args[..] else {
        panic!("usage: s3_memory PORT EVENTS DAY LIST_DELAY_MS");
    };
    let events: u32 = events.parse().expect("EVENTS");
    let day = time::Date::parse(day, time::macros::format_description!("[year]-[month]-[day]")).expect("DAY");
    let memory = Memory {
        objects: RwLock::new(BTreeMap::new()),
        etags: AtomicU64::new(1),
        list_delay: Duration::from_millis(delay.parse().expect("LIST_DELAY_MS")),
    };
    {
        let mut objects = memory.objects.write().unwrap();
        for uid in 0..events {
            let r = record(day, uid);
            let object = Object { body: r.line, etag: memory.etag(), modified: SystemTime::now() };
            objects.insert(r.key.format(), object);
        }
    }
    let memory = std::sync::Arc::new(memory);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut service = s3s::service::S3ServiceBuilder::new(Store(memory.clone()));
    // bench/stages/compaction_scale.py's keys.
    service.set_auth(s3s::auth::SimpleAuth::from_single("bench", "bench"));
    let service = service.build();
    let listener = runtime.block_on(tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))).expect("binding");
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    println!("ready");
    for _ in std::io::stdin().lock().lines() {}
    println!("{}", check(&memory, &format!("{PREFIX}dt={day}/")));
}

/// The service owns its S3; this one shares the objects with `main`, which checks them at the end.
struct Store(std::sync::Arc<Memory>);

impl std::ops::Deref for Store {
    type Target = Memory;
    fn deref(&self) -> &Memory {
        &self.0
    }
}
