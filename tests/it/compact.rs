//! `mailhook compact` against moto_server (its conditional PUT is atomic, and it paginates
//! ListObjectsV2 and implements DeleteObjects), run as the real binary behind the fault proxy:
//! lines byte for byte and each event once; recent partitions and young objects untouched;
//! idempotence and late arrivals; a fault at each step; SIGKILL at several points, then a rerun.
//!
//! moto_server comes from `.venv` (tests/all.sh installs it and puts it on PATH). Without it these
//! tests say SKIPPED and pass, unless `MAILHOOK_REQUIRE_MOTO` is set, as tests/all.sh sets it.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;
use mailhook::record::{Meta, Record};
use support::Running;
use support::fault_proxy::{Fault, FaultProxy};
use time::macros::datetime;
use time::{Date, OffsetDateTime};

use support::BUCKET;
pub(crate) const PREFIX: &str = "mail/";

use support::moto::Moto;

/// moto_server on a free loopback port, with the bucket made; `None` (SKIPPED) if it is not
/// installed and not required.
pub(crate) async fn moto() -> Option<(Moto, aws_sdk_s3::Client)> {
    let moto = support::moto::start("compaction").await?;
    let addr = moto.addr;
    let client = client(addr).await;
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    Some((moto, client))
}

async fn client(addr: SocketAddr) -> aws_sdk_s3::Client {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests"));
    let timeouts = aws_config::timeout::TimeoutConfig::disabled();
    mailhook::aws::build(
        loader,
        &support::path_style(mailhook::aws::Trust::Platform),
        timeouts,
        aws_config::retry::RetryConfig::standard(),
    )
    .await
}

/// The stored line of event number `uid` on `day`, as the receiver builds it, received that day.
pub(crate) fn record(day: Date, uid: u32) -> Record {
    let at = day.with_hms(10, 0, 0).unwrap().assume_utc();
    let body = format!(
        r#"{{"mailbox":"info@example.com","uid":{uid},"tstamp":{},"event":"new","folder":"INBOX","flags":["\\Recent"],"subject":"Invoice {uid}","snippet":"{}"}}"#,
        at.unix_timestamp(),
        "x".repeat((uid % 7) as usize * 40)
    );
    let event = mailhook::webhook::parse_body(body.as_bytes(), 1 << 20).unwrap();
    let meta = Meta { request_id: format!("req-{uid}"), ..Meta::default() };
    Record::new(&event, &meta, at + Duration::from_secs(u64::from(uid)), PREFIX)
}

/// Puts each record as the receiver would, 32 at a time.
pub(crate) async fn seed(client: &aws_sdk_s3::Client, records: &[Record]) {
    futures_util::stream::iter(records)
        .map(|r| {
            client
                .put_object()
                .bucket(BUCKET)
                .key(r.key.format())
                .if_none_match("*")
                .body(ByteStream::from(r.line.clone()))
                .send()
        })
        .buffer_unordered(32)
        .for_each(|put| async move {
            put.unwrap();
        })
        .await;
}

/// Every key of the archive in the bucket with its ETag; not the compaction lease, which every
/// run rewrites.
pub(crate) async fn listing(client: &aws_sdk_s3::Client) -> BTreeMap<String, String> {
    let mut pages = client.list_objects_v2().bucket(BUCKET).into_paginator().send();
    let mut out = BTreeMap::new();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            let key = o.key().unwrap();
            if !key.ends_with("_compaction.lease") {
                out.insert(key.to_owned(), o.e_tag().unwrap_or_default().to_owned());
            }
        }
    }
    out
}

/// What a reader of `dt=*/*.jsonl*` sees: every line of every object, gunzipped where the name
/// says so, with the key it came from.
pub(crate) async fn read_all(client: &aws_sdk_s3::Client) -> Vec<(String, Vec<u8>)> {
    let mut lines = Vec::new();
    for key in listing(client).await.into_keys() {
        if !key.contains("/dt=") || !(key.ends_with(".jsonl") || key.ends_with(".jsonl.gz")) {
            continue; // the compaction lease, say: no reader's glob matches it
        }
        let body = client.get_object().bucket(BUCKET).key(&key).send().await.unwrap().body.collect().await.unwrap();
        let mut bytes = body.into_bytes().to_vec();
        if key.ends_with(".gz") {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut text).unwrap();
            bytes = text;
        }
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            lines.push((key.clone(), line.to_vec()));
        }
    }
    lines
}

/// Asserts that every record is readable (at least once, or exactly once), byte for byte, and
/// that nothing else is, apart from `others`.
pub(crate) async fn assert_readable(
    client: &aws_sdk_s3::Client,
    records: &[Record],
    exactly_once: bool,
    context: &str,
) {
    let lines = read_all(client).await;
    let mut seen: BTreeMap<&[u8], usize> = BTreeMap::new();
    for (_, line) in &lines {
        *seen.entry(&line[..]).or_default() += 1;
    }
    for r in records {
        let n = seen.get(&r.line[..]).copied().unwrap_or(0);
        assert!(n >= 1, "{context}: {} is lost", r.key);
        if exactly_once {
            assert_eq!(n, 1, "{context}: {} is there {n} times", r.key);
        }
    }
    let expected: BTreeSet<&[u8]> = records.iter().map(|r| &r.line[..]).collect();
    let unexpected: Vec<_> = seen.keys().filter(|l| !expected.contains(*l)).collect();
    assert!(unexpected.is_empty(), "{context}: lines nobody stored: {unexpected:?}");
}

fn env(endpoint: SocketAddr) -> Vec<(&'static str, String)> {
    support::s3_archive_env(format!("http://{endpoint}"))
}

/// Runs `mailhook compact` to its end; returns its exit code and output.
async fn compact(endpoint: SocketAddr, args: &[&str]) -> (i32, String) {
    let mut args = args.to_vec();
    args.insert(0, "compact");
    let mut run = Running::start_args(&args, &env(endpoint));
    let started = Instant::now();
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), run.output());
        }
        assert!(started.elapsed() < Duration::from_secs(120), "compact did not finish:\n{}", run.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) const D1: Date = time::macros::date!(2026 - 01 - 30);
pub(crate) const D2: Date = time::macros::date!(2026 - 01 - 31);
/// After `--through D2`: must stay as it is.
const D3: Date = time::macros::date!(2026 - 02 - 01);

pub(crate) fn day(date: Date, n: u32) -> Vec<Record> {
    (0..n).map(|uid| record(date, uid)).collect()
}

fn keys_under(listing: &BTreeMap<String, String>, date: Date) -> Vec<&str> {
    let dir = format!("{PREFIX}dt={date}/");
    listing.keys().filter(|k| k.starts_with(&dir)).map(|k| &k[dir.len()..]).collect()
}

/// The template turns versioning on as a safety net under compaction. Create-only writes hold as
/// without it (a second create is refused, a create after a delete marker succeeds), compaction
/// runs as before, and what it deleted can be restored from its noncurrent version, after which
/// the next run finds the restored copy already merged and deletes it again: once, still.
#[tokio::test]
async fn on_a_versioned_bucket_writes_stay_create_only_and_a_deleted_object_can_be_restored() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    use mailhook::archive::{Archive, S3Archive, Stored};
    let Some((moto, s3)) = moto().await else { return };
    s3.put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .unwrap();
    let records = day(D1, 20);
    let receiver = S3Archive::new(client(moto.addr).await, BUCKET);
    for r in &records {
        assert_eq!(receiver.put_new(&r.key, r.line.clone()).await.unwrap(), Stored::Created);
    }
    assert_eq!(receiver.put_new(&records[0].key, records[0].line.clone()).await.unwrap(), Stored::AlreadyPresent);
    let (code, out) = compact(moto.addr, &SMALL).await;
    assert_eq!(code, 0, "{out}");
    assert_readable(&s3, &records, true, "compacted on a versioned bucket").await;
    assert!(keys_under(&listing(&s3).await, D1).iter().all(|k| k.starts_with("merged-")));

    // After compaction's delete marker, a create of the same key succeeds again.
    let key = records[3].key.format();
    let versions = s3.list_object_versions().bucket(BUCKET).prefix(&key).send().await.unwrap();
    assert_eq!(versions.delete_markers().len(), 1, "compaction's delete left a marker");
    let old =
        versions.versions().iter().find(|v| !v.is_latest().unwrap_or(false)).expect("the deleted version is kept");
    // Restoring it (README, "Restoring a deleted object"): copy the old version back over its key.
    s3.copy_object()
        .bucket(BUCKET)
        .key(&key)
        .copy_source(format!("{BUCKET}/{key}?versionId={}", old.version_id().unwrap()))
        .send()
        .await
        .unwrap();
    let restored = s3.get_object().bucket(BUCKET).key(&key).send().await.unwrap().body.collect().await.unwrap();
    assert_eq!(restored.into_bytes(), records[3].line, "restored byte for byte");
    assert_eq!(receiver.put_new(&records[3].key, records[3].line.clone()).await.unwrap(), Stored::AlreadyPresent);
    let other = record(D1, 77);
    s3.delete_object().bucket(BUCKET).key(other.key.format()).send().await.unwrap();
    assert_eq!(
        receiver.put_new(&other.key, other.line.clone()).await.unwrap(),
        Stored::Created,
        "after a delete marker"
    );

    let (code, out) = compact(moto.addr, &SMALL).await;
    assert_eq!(code, 0, "{out}");
    let all: Vec<Record> = records.iter().cloned().chain([other]).collect();
    assert_readable(&s3, &all, true, "the restored copy merged away again").await;
}

#[tokio::test]
async fn merges_byte_for_byte_once_and_leaves_what_is_recent() {
    let Some((moto, s3)) = moto().await else { return };
    // Over 1,000 in one partition: the LIST pages, and the deletes take more than one call.
    let records: Vec<Record> = day(D1, 1100).into_iter().chain(day(D2, 3)).chain(day(D3, 5)).collect();
    seed(&s3, &records).await;
    // Not one line with its id: a line from before ids, and an object no receiver wrote.
    let legacy_key = format!("{PREFIX}dt={D1}/{}", "0123456789abcdef0123456789abcdef.jsonl");
    s3.put_object()
        .bucket(BUCKET)
        .key(&legacy_key)
        .body(ByteStream::from_static(b"{\"ts\":\"2026-01-30\"}\n"))
        .send()
        .await
        .unwrap();

    // Every object is younger than the default hour: nothing moves.
    let before = listing(&s3).await;
    let (code, out) = compact(moto.addr, &["--through", "2026-01-31"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(listing(&s3).await, before, "objects younger than --min-age are left alone");

    let (code, out) =
        compact(moto.addr, &["--through", "2026-01-31", "--min-age", "0", "--max-object-bytes", "20000"]).await;
    assert_eq!(code, 0, "{out}");
    let after = listing(&s3).await;
    let d1_names = keys_under(&after, D1);
    let merged: Vec<_> = d1_names.iter().filter(|n| n.starts_with("merged-") && n.ends_with(".jsonl.gz")).collect();
    assert!(merged.len() >= 3, "capped objects: {d1_names:?}");
    assert_eq!(d1_names.len(), merged.len() + 1, "only the merged objects and the unmergeable one: {d1_names:?}");
    assert!(after.contains_key(&legacy_key), "an object that is not a verified line is left in place");
    assert_eq!(keys_under(&after, D2).len(), 1, "{:?}", keys_under(&after, D2));
    let d3_before: Vec<_> = keys_under(&before, D3);
    assert_eq!(keys_under(&after, D3), d3_before, "a partition after --through is untouched");
    assert!(out.contains("1103 events merged"), "{out}");
    assert!(out.contains("1 object skipped"), "{out}");
    // Each object holds at most the cap of lines.
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for (key, line) in read_all(&s3).await {
        *sizes.entry(key).or_default() += line.len();
    }
    assert!(sizes.iter().filter(|(k, _)| k.ends_with(".gz")).all(|(_, &n)| n <= 20000), "{sizes:?}");
    s3.delete_object().bucket(BUCKET).key(&legacy_key).send().await.unwrap();
    assert_readable(&s3, &records, true, "after compacting").await;

    // Again: nothing changes.
    let (code, out) = compact(moto.addr, &["--through", "2026-01-31", "--min-age", "0"]).await;
    assert_eq!(code, 0, "{out}");
    let again = listing(&s3).await;
    assert_eq!(again, after.into_iter().filter(|(k, _)| *k != legacy_key).collect(), "a second run changes nothing");

    // Late arrivals: a new event, and a resend of a merged one (same id, new receive fields).
    let late = record(D1, 5000);
    let mut resend = record(D1, 7);
    resend.line = bytes::Bytes::from(String::from_utf8(resend.line.to_vec()).unwrap().replace("req-7", "req-7-again"));
    seed(&s3, &[Record { key: late.key.clone(), line: late.line.clone(), event: None }]).await;
    seed(&s3, &[Record { key: resend.key.clone(), line: resend.line.clone(), event: None }]).await;
    let (code, out) = compact(moto.addr, &["--through", "2026-01-31", "--min-age", "0"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 event merged") && out.contains("1 copy of merged events deleted"), "{out}");
    let mut all = records;
    all.push(late);
    assert_readable(&s3, &all, true, "after the late arrivals").await;
    let lease = s3.get_object().bucket(BUCKET).key(format!("{PREFIX}_compaction.lease")).send().await.unwrap();
    let lease: serde_json::Value = serde_json::from_slice(&lease.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(lease["expires_unix_ms"], 0, "a run that ends releases its lease: {lease}");
}

/// Seeds two partitions and returns the records; small objects so a partition makes several.
async fn seeded(s3: &aws_sdk_s3::Client) -> Vec<Record> {
    let records: Vec<Record> = day(D1, 300).into_iter().chain(day(D2, 40)).collect();
    seed(s3, &records).await;
    records
}

/// A lease of 4 s: a killed run holds the archive up that long.
const SMALL: [&str; 8] = ["--through", "2026-01-31", "--min-age", "0", "--max-object-bytes", "8000", "--lease", "4"];
/// How long a killed run's lease keeps the next run out.
const LEASE: Duration = Duration::from_millis(4100);

/// Tells one step's requests from the proxy's request lines, `METHOD path?query`.
type Step = fn(&str) -> bool;

fn is_list(line: &str) -> bool {
    line.starts_with("GET ") && line.contains("list-type=2")
}
fn is_get(line: &str) -> bool {
    line.starts_with("GET ") && line.contains(".jsonl") && !line.contains(".jsonl.gz") && !is_list(line)
}
fn is_get_merged(line: &str) -> bool {
    line.starts_with("GET ") && line.contains(".jsonl.gz")
}
fn is_put(line: &str) -> bool {
    line.starts_with("PUT ") && line.contains(".jsonl.gz")
}
fn is_delete(line: &str) -> bool {
    line.starts_with("POST ") && line.contains("delete")
}

#[tokio::test]
async fn a_refused_request_at_each_step_fails_the_run_naming_the_partition_and_a_rerun_finishes() {
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let mut records = seeded(&s3).await;
    // A first run merges D1, so the later runs also read merged objects.
    let (code, out) =
        compact(proxy.addr, &["--through", "2026-01-30", "--min-age", "0", "--max-object-bytes", "8000"]).await;
    assert_eq!(code, 0, "{out}");

    let steps: [(&str, Step); 5] = [
        ("list", is_list),
        ("get a merged object", is_get_merged),
        ("get", is_get),
        ("put", is_put),
        ("delete", is_delete),
    ];
    for (n, (step, matches)) in steps.into_iter().enumerate() {
        // Late arrivals in the merged partition each time, so every step has work to meet.
        let batch: Vec<Record> = (0..30).map(|i| record(D1, 900 + 30 * n as u32 + i)).collect();
        seed(&s3, &batch).await;
        records.extend(batch);
        // AccessDenied is not retried: the run meets it at once, as after a bucket policy edit.
        proxy.when(matches, Fault::Error(403, "AccessDenied"));
        let (code, out) = compact(proxy.addr, &SMALL).await;
        assert_eq!(code, 1, "{step}: {out}");
        let last = out.lines().rev().find(|l| l.contains("ERROR")).unwrap_or_default();
        if step == "list" {
            assert!(last.contains("listing s3://mail-archive/mail/ failed"), "{step}: {last}");
        } else {
            assert!(last.contains("compacting partition dt=2026-01-30 failed"), "{step}: {last}");
        }
        proxy.clear_rules();
        assert_readable(&s3, &records, false, step).await;
        let (code, out) = compact(proxy.addr, &SMALL).await;
        assert_eq!(code, 0, "{step}, rerun: {out}");
        assert_readable(&s3, &records, true, &format!("{step}, after the rerun")).await;
    }
}

#[tokio::test]
async fn sigkill_at_each_point_then_a_rerun_finishes_with_each_event_once() {
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let mut records = seeded(&s3).await;
    // Where to stop: the request that stalls, and how many of its kind pass before it.
    // The last two go together: the first leaves copies, and the second is killed deleting them.
    let points: [(&str, Step, usize, bool); 5] = [
        ("listing", is_list, 1, true),
        ("fetching events", is_get, 40, true),
        ("writing the second merged object", is_put, 1, true),
        ("deleting what the second merged object holds", is_delete, 1, false),
        ("deleting the copies a killed run left", is_delete, 0, true),
    ];
    let mut uid = 1000;
    for (point, matches, pass, rerun) in points {
        let seen = proxy.request_lines().into_iter().filter(|l| matches(l)).count();
        let passed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = passed.clone();
        proxy.when(
            move |l| matches(l) && counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= pass,
            Fault::Stall,
        );
        let mut args = vec!["compact"];
        args.extend(SMALL);
        let mut run = Running::start_args(&args, &env(proxy.addr));
        let started = Instant::now();
        while proxy.request_lines().into_iter().filter(|l| matches(l)).count() < seen + pass + 1 {
            if let Some(status) = run.child.try_wait().unwrap() {
                panic!("{point}: the run ended ({status}) before it got there:\n{}", run.output());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{point}: never got there:\n{}", run.output());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        run.child.kill().unwrap(); // SIGKILL
        run.child.wait().unwrap();
        proxy.clear_rules();
        let (code, out) = compact(proxy.addr, &SMALL).await;
        assert_eq!(code, 3, "{point}: the killed run's lease still holds: {out}");
        assert!(out.contains("another compaction holds s3://mail-archive/mail/_compaction.lease"), "{out}");
        tokio::time::sleep(LEASE).await;
        assert_readable(&s3, &records, false, &format!("killed while {point}")).await;
        if point.starts_with("deleting what") {
            // Killed between the two steps: the events of the written object are readable twice.
            let lines = read_all(&s3).await;
            let distinct: BTreeSet<_> = lines.iter().map(|(_, l)| l).collect();
            assert!(distinct.len() < lines.len(), "{point}: expected the window with copies");
        }
        if rerun {
            let (code, out) = compact(proxy.addr, &SMALL).await;
            assert_eq!(code, 0, "{point}, rerun: {out}");
            assert_readable(&s3, &records, true, &format!("killed while {point}, then rerun")).await;
        }
        // Fresh events for the next point.
        let batch: Vec<Record> = (uid..uid + 60).map(|n| record(D1, n)).collect();
        uid += 60;
        seed(&s3, &batch).await;
        records.extend(batch);
    }
    let (code, out) = compact(proxy.addr, &SMALL).await;
    assert_eq!(code, 0, "the last rerun: {out}");
    assert_readable(&s3, &records, true, "in the end").await;
}

#[test]
fn the_sample_dates_are_in_the_past() {
    // The partitions above are compacted with --through; none may be today's.
    assert!(OffsetDateTime::now_utc() > datetime!(2026-02-02 0:00 UTC));
}

/// A local directory is written as segments, a few a day: `mailhook compact` has nothing to do
/// there, and refuses to start, naming the variable, rather than seem to have compacted it.
#[test]
fn compacting_a_local_directory_is_refused_as_a_configuration_error() {
    let root = tempfile::tempdir().unwrap();
    let mut run = Running::start_args(&["compact"], &[("ARCHIVE_URI", root.path().display().to_string())]);
    let status = run.child.wait().unwrap();
    let output = run.output();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("configuration error: ARCHIVE_URI must be s3://"), "{output}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing written: {output}");
}

/// The compaction function: the same binary under the Lambda Runtime API with
/// `_HANDLER=compact`, one run per invocation, one EMF line each, and an invocation error when a
/// partition is left unfinished, with the metric the template's alarm watches; a run that finds
/// the lease held succeeds, having done nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compaction_function_runs_per_invocation_and_emits_what_its_alarm_watches() {
    use support::lambda::{Outcome, alarmed_metrics, runtime_api};
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let mut records = day(D1, 30);
    seed(&s3, &records).await;
    let (api, events, mut outcomes) = runtime_api().await;
    let mut vars = env(proxy.addr);
    vars.extend([
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("_HANDLER", "compact".to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", "mailhook-compact".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
    ]);
    let function = Running::start(&vars);

    let mut invoke = async |id: &str, event: &str| {
        events.send((id.to_owned(), event.to_owned())).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await.unwrap().unwrap().1
    };
    // What the schedule sends ({}), with the defaults: the events are too young.
    match invoke("nightly", "{}").await {
        Outcome::Response(r) => assert_eq!(r["merged"], 0, "{r}"),
        Outcome::Error(e) => panic!("{e}\n{}", function.output()),
    }
    match invoke("by-hand", r#"{"through":"2026-01-31","min_age_seconds":0}"#).await {
        Outcome::Response(r) => assert_eq!(r["merged"], 30, "{r}"),
        Outcome::Error(e) => panic!("{e}\n{}", function.output()),
    }
    assert_readable(&s3, &records, true, "after the function's run").await;
    let late: Vec<Record> = (100..110).map(|uid| record(D1, uid)).collect();
    seed(&s3, &late).await;
    records.extend(late);
    proxy.when(is_put, Fault::Error(403, "AccessDenied"));
    match invoke("refused", r#"{"through":"2026-01-31","min_age_seconds":0}"#).await {
        Outcome::Error(e) => assert!(e.contains("compacting partition dt=2026-01-30 failed"), "{e}"),
        Outcome::Response(r) => panic!("a refused write must fail the invocation: {r}"),
    }
    assert_readable(&s3, &records, false, "after the refused run").await;
    proxy.clear_rules();

    // A run by hand holds the lease: the scheduled run does nothing, and that is no failure.
    let held = format!(r#"{{"holder":"a run by hand","expires_unix_ms":{}}}"#, 4_102_444_800_000u64);
    let lease = format!("{PREFIX}_compaction.lease");
    s3.put_object().bucket(BUCKET).key(&lease).body(ByteStream::from(held.into_bytes())).send().await.unwrap();
    match invoke("held", r#"{"through":"2026-01-31","min_age_seconds":0}"#).await {
        Outcome::Response(r) => assert_eq!(r["lease_held"], true, "{r}"),
        Outcome::Error(e) => panic!("a held lease is no failure of the run: {e}"),
    }
    s3.delete_object().bucket(BUCKET).key(&lease).send().await.unwrap();

    let output = function.output();
    let lines = support::emf_lines(&output);
    assert_eq!(lines.len(), 4, "one EMF line per run:\n{output}");
    assert_eq!(lines.iter().map(|l| l["CompactionFailed"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 0, 1, 0]);
    let held: Vec<_> = lines.iter().map(|l| l["CompactionLeaseHeld"].as_u64().unwrap()).collect();
    assert_eq!(held, [0, 0, 0, 1], "only the held run counts for CompactionBlockedAlarm");
    assert!(output.contains("another compaction holds"), "the held run says why it did nothing:\n{output}");
    assert_eq!(lines[1]["CompactedEvents"], 30);
    let alarms: Vec<_> = alarmed_metrics()
        .into_iter()
        .filter(|(_, ns, metric, _)| ns == "mailhook" && metric.starts_with("Compaction"))
        .collect();
    assert!(!alarms.is_empty(), "template.yaml alarms on compaction failures");
    for (alarm, namespace, metric, dimensions) in alarms {
        let directive = &lines[2]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], namespace.as_str(), "{alarm}");
        assert!(
            directive["Metrics"].as_array().unwrap().iter().any(|m| m["Name"] == metric.as_str()),
            "{alarm}: {metric}"
        );
        let emitted: Vec<&str> =
            directive["Dimensions"][0].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
        assert_eq!(emitted, dimensions, "{alarm}");
        for dimension in &dimensions {
            assert_eq!(lines[2][dimension.as_str()], "mailhook-compact", "{alarm}");
        }
    }
    assert!(output.contains("compacting a partition failed"), "the failure is logged:\n{output}");
    // The line the alarm's description tells the operator to look for, in the function's log.
    assert!(output.contains("compacting partition dt=2026-01-30 failed"), "the failure is logged:\n{output}");
}

/// A run by hand says how far it has got: while a partition is worked on, a structured
/// `progress` line every `--progress` seconds (a terminal gets one status line redrawn instead),
/// with the partition, the partitions done of the run's, and the events and objects so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_shows_its_progress() {
    let Some((moto, s3)) = moto().await else { return };
    seed(&s3, &[day(D1, 30), day(D2, 30)].concat()).await;
    // Each LIST of a partition takes 1.5 s, as a slow page would: a run of about 3 s.
    let proxy = crate::support::fault_proxy::FaultProxy::start(moto.addr).await;
    proxy.when(
        |l| l.contains("list-type=2") && l.contains("dt%3D") && !l.contains("merged-"),
        crate::support::fault_proxy::Fault::Delay(Duration::from_millis(1500)),
    );
    let (code, out) = compact(proxy.addr, &["--through", "2026-01-31", "--min-age", "0", "--progress", "1"]).await;
    assert_eq!(code, 0, "{out}");
    let progress: Vec<&str> = out.lines().filter(|l| l.contains(" progress ")).collect();
    assert!(progress.len() >= 2, "a line a second while the partitions are listed:\n{out}");
    assert!(progress.iter().all(|l| l.contains("partitions=2")), "{progress:?}");
    assert!(
        progress.iter().any(|l| l.contains("partition=2026-01-30") && l.contains("partitions_done=0")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|l| l.contains("partition=2026-01-31") && l.contains("partitions_done=1")),
        "{progress:?}"
    );
    assert!(out.contains("60 events merged"), "{out}");
}
