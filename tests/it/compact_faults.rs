//! Every fault point of a compaction run, enumerated: a run over a fixed archive is counted,
//! request by request, and then for each request k it is failed (an S3 error), and separately
//! the run is killed there; the archive is checked, and a rerun must finish with each event
//! exactly once. Then two runs overlap, the second started at every offset into the first.
//! In-process against moto_server behind the fault proxy: dropping the run's future at a
//! request is what a SIGKILL does to its S3 state, with no process start for each point.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use mailhook::compact::lease::{Lease, LeaseError};
use mailhook::compact::{CompactError, Options, Report};
use mailhook::layout::LEASE_NAME;
use mailhook::record::Record;

use crate::compact::{D1, D2, PREFIX, assert_readable, day, listing, moto, seed};
use crate::support::BUCKET;
use crate::support::fault_proxy::{Fault, FaultProxy};

/// A lease of 4 s, so every request must end within 1 s.
const LEASE: Duration = Duration::from_secs(4);

fn options() -> Options {
    let mut o = Options::defaults(time::OffsetDateTime::now_utc());
    o.through = D2;
    o.min_age = Duration::ZERO;
    o.max_object_bytes = 3000;
    o.lease = LEASE;
    o
}

/// The SDK's loader for moto through `proxy`, with the test keys.
fn loader(proxy: &FaultProxy) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{}", proxy.addr))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests"))
}

/// mailhook's compaction client (timeouts, retries, path style) through `proxy`.
async fn client(proxy: &FaultProxy) -> aws_sdk_s3::Client {
    mailhook::aws::compaction_client_from(
        loader(proxy),
        &crate::support::path_style(mailhook::aws::Trust::Platform),
        LEASE / 4,
    )
    .await
}

async fn compact(proxy: &FaultProxy) -> Result<Report, CompactError> {
    mailhook::compact::compact_s3(client(proxy).await, BUCKET, &PREFIX.into(), &options()).await
}

/// Empties the bucket and puts the fixed archive back: two partitions, small merged objects.
async fn reset(s3: &aws_sdk_s3::Client) -> Vec<Record> {
    let mut keys: Vec<String> = listing(s3).await.into_keys().collect();
    keys.push(format!("{PREFIX}{LEASE_NAME}"));
    for key in keys {
        s3.delete_object().bucket(BUCKET).key(key).send().await.unwrap();
    }
    let records: Vec<Record> = day(D1, 14).into_iter().chain(day(D2, 5)).collect();
    seed(s3, &records).await;
    records
}

/// Makes a killed run's lease expire now, as the clock would in `LEASE`: its holder and ETag
/// change, so the next run takes it over through the expired-lease path, with where the killed
/// run's last renewal said to go on.
async fn expire_lease(s3: &aws_sdk_s3::Client) {
    let key = format!("{PREFIX}{LEASE_NAME}");
    if let Ok(got) = s3.get_object().bucket(BUCKET).key(&key).send().await {
        let mut body: serde_json::Value =
            serde_json::from_slice(&got.body.collect().await.unwrap().into_bytes()).unwrap_or_default();
        body["holder"] = "a killed run".into();
        body["expires_unix_ms"] = 0.into();
        let body = ByteStream::from(serde_json::to_vec(&body).unwrap());
        s3.put_object().bucket(BUCKET).key(&key).body(body).send().await.unwrap();
    }
}

/// Whether no run holds the lease: it is absent, or was written expired (a release).
async fn lease_released(s3: &aws_sdk_s3::Client) -> bool {
    let key = format!("{PREFIX}{LEASE_NAME}");
    match s3.get_object().bucket(BUCKET).key(&key).send().await {
        Ok(got) => {
            let body: serde_json::Value =
                serde_json::from_slice(&got.body.collect().await.unwrap().into_bytes()).unwrap();
            body["expires_unix_ms"] == 0
        }
        Err(_) => true,
    }
}

/// Reruns to the end, with a late event arrived meanwhile (so the rerun's objects are not the
/// killed run's over again), and checks each event is there exactly once, the lease is gone,
/// and the rerun left nothing unmerged but what it was told it could start after.
async fn rerun_and_check(proxy: &FaultProxy, s3: &aws_sdk_s3::Client, records: &[Record], context: &str) {
    let late = crate::compact::record(D1, 500);
    seed(s3, std::slice::from_ref(&late)).await;
    let records = [records, std::slice::from_ref(&late)].concat();
    let records = &records[..];
    expire_lease(s3).await;
    let report = compact(proxy).await.unwrap_or_else(|e| panic!("{context}, rerun: {e}"));
    assert_eq!(report.failure(), None, "{context}, rerun");
    assert_readable(s3, records, true, &format!("{context}, then rerun")).await;
    assert!(lease_released(s3).await, "{context}: the rerun released its lease");
    // Where the stopped run said to go on hid nothing: every key the rerun's pass started after
    // was dealt with, but the late one, which the next pass (from the start) merges.
    let per_event =
        async || -> Vec<String> { listing(s3).await.into_keys().filter(|k| k.ends_with(".jsonl")).collect() };
    let left = per_event().await;
    assert!(left.iter().all(|k| *k == late.key.format()), "{context}: left behind the rerun's start: {left:?}");
    if !left.is_empty() {
        let report = compact(proxy).await.unwrap_or_else(|e| panic!("{context}, second rerun: {e}"));
        assert_eq!(report.failure(), None, "{context}, second rerun");
        assert_eq!(per_event().await, Vec::<String>::new(), "{context}: after a pass from the start");
    }
}

/// The request lines of a clean run over the fixed archive.
async fn clean_run(proxy: &FaultProxy, s3: &aws_sdk_s3::Client) -> Vec<String> {
    let records = reset(s3).await;
    let before = proxy.requests();
    compact(proxy).await.unwrap();
    assert_readable(s3, &records, true, "a clean run").await;
    proxy.request_lines()[before..].to_vec()
}

/// A rule that matches only the `k`-th request from now.
fn kth(k: usize) -> impl Fn(&str) -> bool + Send + Sync + 'static {
    let seen = Arc::new(AtomicUsize::new(0));
    move |_| seen.fetch_add(1, Ordering::SeqCst) == k
}

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test]
async fn every_request_of_a_run_failed_or_killed_then_a_rerun_leaves_each_event_once() {
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let requests = clean_run(&proxy, &s3).await;
    assert!(requests.len() > 20, "the fixed run is large enough to mean something: {requests:?}");
    let started = Instant::now();

    for (k, line) in requests.iter().enumerate() {
        // Failed: AccessDenied, which the SDK does not retry, so the fault lands on request k.
        let records = reset(&s3).await;
        proxy.when(kth(k), Fault::Error(403, "AccessDenied"));
        let outcome = compact(&proxy).await;
        proxy.clear_rules();
        let context = format!("request {k} ({line}) refused");
        assert!(
            outcome.as_ref().map_or(true, |r| r.failure().is_some() || line.contains(LEASE_NAME)),
            "{context}: a refused request is reported: {outcome:?}"
        );
        assert_readable(&s3, &records, false, &context).await;
        rerun_and_check(&proxy, &s3, &records, &context).await;

        // Killed: the request never comes back, and the run is dropped where it waits.
        let records = reset(&s3).await;
        let before = proxy.requests();
        proxy.when(kth(k), Fault::Stall);
        let run = tokio::spawn({
            let client = client(&proxy).await;
            async move { mailhook::compact::compact_s3(client, BUCKET, &PREFIX.into(), &options()).await }
        });
        let waiting = Instant::now();
        while proxy.requests() <= before + k && !run.is_finished() {
            assert!(waiting.elapsed() < Duration::from_secs(30), "request {k} never came");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        run.abort();
        let _ = run.await;
        proxy.clear_rules();
        let context = format!("killed at request {k} ({line})");
        assert_readable(&s3, &records, false, &context).await;
        rerun_and_check(&proxy, &s3, &records, &context).await;
    }
    say(&format!(
        "compaction fault points checked: {} requests x (refused, killed) = {} runs and their reruns, in {:.1} s",
        requests.len(),
        2 * requests.len(),
        started.elapsed().as_secs_f64()
    ));
}

#[tokio::test]
async fn a_second_run_started_at_any_point_of_the_first_leaves_each_event_once() {
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let requests = clean_run(&proxy, &s3).await;
    let (mut held, mut after) = (0, 0);
    for offset in 0..=requests.len() {
        let records = reset(&s3).await;
        let before = proxy.requests();
        let first = tokio::spawn({
            let client = client(&proxy).await;
            async move { mailhook::compact::compact_s3(client, BUCKET, &PREFIX.into(), &options()).await }
        });
        while proxy.requests() < before + offset && !first.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let second = compact(&proxy).await;
        let first = first.await.unwrap();
        let context = format!("the second run started after {offset} requests of the first");
        match (&first, &second) {
            (Ok(a), Err(CompactError::Lease(LeaseError::Held { .. }))) if a.failure().is_none() => held += 1,
            (Err(CompactError::Lease(LeaseError::Held { .. })), Ok(b)) if b.failure().is_none() => held += 1,
            // The first had finished, or not yet begun: one after the other.
            (Ok(a), Ok(b)) if a.failure().is_none() && b.failure().is_none() => after += 1,
            _ => panic!("{context}: {first:?} / {second:?}"),
        }
        assert_readable(&s3, &records, true, &context).await;
        assert!(lease_released(&s3).await, "{context}: both let go of the lease");
    }
    say(&format!(
        "overlapping compaction runs checked: {} start offsets ({held} refused, {after} in turn)",
        requests.len() + 1
    ));
    assert!(held > 0, "some second runs met the first's lease");
}

fn is_event_get(line: &str) -> bool {
    line.starts_with("GET ") && line.contains(".jsonl") && !line.contains(".jsonl.gz") && !line.contains("list-type")
}

/// A run whose deadline comes in the middle of a partition writes what it has fetched, and the
/// next run starts at the partition after it, then comes back: every run makes progress, and a
/// large partition never holds the newer ones back for more than a run.
#[tokio::test]
async fn a_run_cut_off_by_its_deadline_writes_what_it_fetched_and_the_next_starts_after_it() {
    let Some((moto, s3)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let keys: Vec<String> = listing(&s3).await.into_keys().collect();
    for key in keys {
        s3.delete_object().bucket(BUCKET).key(key).send().await.unwrap();
    }
    let records: Vec<Record> = day(D1, 40).into_iter().chain(day(D2, 5)).collect();
    seed(&s3, &records).await;

    // The first 10 objects come at once, the rest slowly (within the 1 s a request may take); the
    // deadline falls between, with room for the three LISTs (partitions, the partition, its
    // merged objects) before the first GET.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    proxy.when(
        move |l| is_event_get(l) && counter.fetch_add(1, Ordering::SeqCst) >= 10,
        Fault::Delay(Duration::from_millis(850)),
    );
    let mut cut = options();
    cut.deadline = Some(Instant::now() + Duration::from_millis(550));
    let report = mailhook::compact::compact_s3(client(&proxy).await, BUCKET, &PREFIX.into(), &cut).await.unwrap();
    proxy.clear_rules();
    assert_eq!(report.failure(), None, "a deadline is no failure: {report:?}");
    assert_eq!(report.cut_off, [D1, D2], "{report:?}");
    assert!(report.written >= 1 && report.merged >= 10, "what was fetched is written: {report:?}");
    assert_eq!(report.resume_from, Some(D2), "{report:?}");
    assert!(report.to_string().contains("2 partitions left for the next run by the deadline"), "{report}");
    assert_readable(&s3, &records, true, "after the cut-off run").await;

    let before = proxy.requests();
    let report = compact(&proxy).await.unwrap();
    assert_eq!(report.failure(), None, "{report:?}");
    assert!(report.cut_off.is_empty(), "{report:?}");
    let lists: Vec<String> = proxy.request_lines()[before..]
        .iter()
        .filter(|l| l.contains("list-type=2") && l.contains("dt%3D"))
        .cloned()
        .collect();
    assert!(
        lists.first().is_some_and(|l| l.contains(&format!("dt%3D{D2}")))
            && lists.iter().any(|l| l.contains(&format!("dt%3D{D1}"))),
        "the next run starts at the partition after the one cut off, then comes back: {lists:?}"
    );
    assert_readable(&s3, &records, true, "after the next run").await;
    assert!(
        listing(&s3).await.keys().filter(|k| k.contains("/dt=")).all(|k| k.contains("/merged-")),
        "everything is merged"
    );
}

/// A renewal refused (412, or the 409 of a takeover in flight) while the lease in the bucket is
/// still the one the renewal was conditioned on is lost, though that lease names this run: none
/// of its writes landed, and another run's takeover may be about to. Taking it as ours would let
/// two runs write merged objects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_over_our_unchanged_lease_is_lost() {
    let Some((moto, direct)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let s3 = client(&proxy).await;
    reset(&direct).await;
    let lease_path = format!("/{BUCKET}/{PREFIX}{LEASE_NAME}");
    for status in [412, 409] {
        proxy.clear_rules();
        let mut lease = Lease::acquire(&s3, BUCKET, &PREFIX.into(), LEASE).await.unwrap();
        let path = lease_path.clone();
        proxy.when(
            move |line| line.starts_with("PUT ") && line.contains(&path),
            Fault::Error(status, "PreconditionFailed"),
        );
        assert!(matches!(lease.fence().await, Err(LeaseError::Lost { .. })), "{status}: not ours to go on with");
        proxy.clear_rules();
        expire_lease(&direct).await;
    }
}

/// mailhook's compaction client through `proxy`, with a first backoff of 10 ms instead of the
/// SDK's (up to 1 s), and 3 s for each request instead of a quarter of the lease, so that a
/// retried or delayed request ends, on a loaded machine too: the lease's own check of the time
/// does not depend on the client's timeout.
async fn quickly_retrying_client(proxy: &FaultProxy) -> aws_sdk_s3::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(3)).build();
    let retries =
        aws_config::retry::RetryConfig::standard().with_max_attempts(5).with_initial_backoff(Duration::from_millis(10));
    mailhook::aws::build(loader(proxy), &crate::support::path_style(mailhook::aws::Trust::Platform), timeouts, retries)
        .await
}

/// A takeover whose write landed but whose answer was lost (the SDK's retry then gets 412) is
/// this run's, and keeps where the run before asked the next one to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_whose_answer_was_lost_is_ours_and_keeps_where_to_resume() {
    let Some((moto, direct)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let s3 = quickly_retrying_client(&proxy).await;
    reset(&direct).await;
    let key = format!("{PREFIX}{LEASE_NAME}");
    let body = br#"{"holder":"a run cut off by its deadline","expires_unix_ms":0,"resume_after":"2026-11-20"}"#;
    direct.put_object().bucket(BUCKET).key(&key).body(ByteStream::from_static(body)).send().await.unwrap();
    // The create (412: a lease is there), the read, then the takeover: stored, its answer lost.
    proxy.script([Fault::Pass, Fault::Pass, Fault::ResetAfterForward]);
    let mut lease = Lease::acquire(&s3, BUCKET, &PREFIX.into(), LEASE).await.expect("taken over");
    assert_eq!(lease.resume.resume_from, Some(time::macros::date!(2026 - 11 - 20)));
    assert!(proxy.request_lines().iter().filter(|l| l.starts_with("PUT ")).count() >= 3, "the takeover was retried");
    lease.fence().await.expect("the lease in the bucket is this run's");
}

/// A renewal whose write landed but whose answer was lost counts as this run's at once only while
/// the step after it can still end within half the lease of that write. Here the retry and the
/// read that finds it take more than a quarter of the lease, so the lease is renewed once more
/// before the step, over the lease just found: when `fence` returns, the lease in the bucket
/// has at least three quarters of its time ahead, as after a renewal answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_found_to_be_ours_too_late_is_renewed_again() {
    let Some((moto, direct)) = moto().await else { return };
    let proxy = FaultProxy::start(moto.addr).await;
    let s3 = quickly_retrying_client(&proxy).await;
    reset(&direct).await;
    let key = format!("{PREFIX}{LEASE_NAME}");
    for slow in [Duration::ZERO, LEASE / 4 * 3 / 5] {
        expire_lease(&direct).await;
        let mut lease = Lease::acquire(&s3, BUCKET, &PREFIX.into(), LEASE).await.unwrap();
        // The renewal is stored and its answer lost; then its retry (412) and the read.
        proxy.script([Fault::ResetAfterForward, Fault::Delay(slow), Fault::Delay(slow)]);
        lease.fence().await.unwrap_or_else(|e| panic!("delayed {slow:?}: {e}"));
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let stored = direct.get_object().bucket(BUCKET).key(&key).send().await.unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&stored.body.collect().await.unwrap().into_bytes()).unwrap();
        let left_ms = body["expires_unix_ms"].as_u64().unwrap().saturating_sub(now_ms);
        assert!(
            left_ms >= LEASE.as_millis() as u64 * 3 / 4,
            "delayed {slow:?}: the step after the renewal has {left_ms} ms of the lease left"
        );
    }
}

fn is_partition_list(line: &str) -> bool {
    line.contains("list-type=2") && line.contains(&format!("dt%3D{D1}")) && !line.contains("merged-")
}

/// The lease's record of where each partition's listing goes on.
async fn start_after(s3: &aws_sdk_s3::Client) -> serde_json::Value {
    let got = s3.get_object().bucket(BUCKET).key(format!("{PREFIX}{LEASE_NAME}")).send().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&got.body.collect().await.unwrap().into_bytes()).unwrap();
    body["start_after"].clone()
}

/// A partition whose listing alone takes longer than a run, compacted by runs with a deadline:
/// each run streams the listing (it fetches before it has listed the whole partition), stops on
/// time with what it fetched written and the last key it dealt with in the lease, and the next
/// goes on after that key; in the end each event is there once and no key is left to resume at.
/// Against s3s-fs (in-process, so it always runs and GETs are quick), behind the fault proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_shorter_than_a_partitions_listing_stop_on_time_and_go_on_where_they_stopped() {
    use crate::support::{ACCESS_KEY, SECRET_KEY};
    const EVENTS: u32 = 2100;
    const PAGE: Duration = Duration::from_millis(200);
    const RUN: Duration = Duration::from_millis(2500);
    // A lease long enough that a slow LIST page is no timeout.
    const LONG_LEASE: Duration = Duration::from_secs(40);
    let root = tempfile::tempdir().unwrap();
    let store = crate::support::s3_server(root.path()).await;
    let proxy = FaultProxy::start(store).await;
    let keys = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests");
    let compactor = mailhook::aws::compaction_client_from(
        loader(&proxy).credentials_provider(keys.clone()),
        &crate::support::path_style(mailhook::aws::Trust::Platform),
        LONG_LEASE / 4,
    )
    .await;
    // The test's own reads go around the proxy.
    let direct = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{store}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(keys);
    let s3 = mailhook::aws::compaction_client_from(
        direct,
        &crate::support::path_style(mailhook::aws::Trust::Platform),
        LONG_LEASE,
    )
    .await;
    let records: Vec<Record> = day(D1, EVENTS).into_iter().chain(day(D2, 5)).collect();
    seed(&s3, &records).await;
    // Every LIST of a partition waits, as a slow page of S3 would: listing D1 takes 3 x PAGE.
    proxy.when(|l| l.contains("list-type=2") && l.contains("dt%3D"), Fault::Delay(PAGE));
    let d1 = format!("{PREFIX}dt={D1}/");
    let events_left =
        async || listing(&s3).await.keys().filter(|k| k.starts_with(&d1) && k.ends_with(".jsonl")).count();
    let (mut runs, mut left, mut resumed_at) = (0, events_left().await, String::new());
    loop {
        runs += 1;
        assert!(runs <= 30, "no end after {runs} runs; {left} events left");
        let mut cut = options();
        cut.max_object_bytes = 100_000;
        cut.lease = LONG_LEASE;
        let started = Instant::now();
        cut.deadline = Some(started + RUN);
        let before = proxy.requests();
        let report = mailhook::compact::compact_s3(compactor.clone(), BUCKET, &PREFIX.into(), &cut).await.unwrap();
        let took = started.elapsed();
        let context = format!("run {runs} ({took:?}): {report:?}");
        assert_eq!(report.failure(), None, "{context}");
        // After the deadline: no page more, only writing what was fetched.
        assert!(took < RUN + Duration::from_millis(1000), "{context}: not stopped on time");
        if runs == 1 {
            let lines = &proxy.request_lines()[before..];
            let lists: Vec<usize> = (0..lines.len()).filter(|&i| is_partition_list(&lines[i])).collect();
            let first_get = lines.iter().position(|l| is_event_get(l));
            assert!(
                lists.len() < 3 || first_get.is_some_and(|g| g < lists[2]),
                "{context}: events are fetched while the partition is still listed, a page ahead at most: {lines:?}"
            );
        }
        let now_left = events_left().await;
        say(&format!("{context} left {now_left}"));
        let resume = start_after(&s3).await;
        if report.cut_off.is_empty() {
            assert_eq!(now_left, 0, "{context}");
            assert!(resume.is_null(), "{context}: a finished pass leaves no key to resume at: {resume}");
            break;
        }
        assert!(now_left < left, "{context}: made no progress in {D1} ({now_left} events left)");
        let at = resume[D1.to_string()].as_str().unwrap_or_else(|| panic!("{context}: progress recorded: {resume}"));
        assert!(*at > *resumed_at, "{context}: the next run goes on after {at}, not after {resumed_at}");
        (left, resumed_at) = (now_left, at.to_owned());
    }
    proxy.clear_rules();
    assert!(runs >= 3, "the partition took {runs} runs: the test means several");
    assert_readable(&s3, &records, true, &format!("after {runs} runs")).await;
    say(&format!("a partition of {EVENTS} objects compacted by {runs} runs of {RUN:?}, {PAGE:?} a LIST page"));
}
