//! Test-only: the segment archive at its edges (a restart, a torn tail, a failed sync, a full
//! segment), the simulated disk (`sim.rs`) and the crash states it enumerates (`crash_states.rs`).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use time::OffsetDateTime;

use super::writer::reachable;
use super::*;
use crate::record::{Meta, Record};
use crate::webhook::parse_body;

mod crash_states;
mod sim;

const DAY: &str = "dt=2026-11-26";

/// A real stored line and its key, for uid `uid`.
fn event(uid: u32) -> (Key, Bytes) {
    let body = format!(r#"{{"mailbox":"a@example.com","uid":{uid},"tstamp":1795711572,"event":"create"}}"#);
    let event = parse_body(body.as_bytes(), 1 << 20).unwrap();
    let received = time::macros::datetime!(2026-11-26 12:00 UTC);
    let record = Record::new(&event, &Meta { request_id: "r".into(), ..Meta::default() }, received, "");
    assert_eq!(record.key.partition(), DAY);
    (record.key, record.line)
}

/// Every file in the partition, by name.
fn names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(root.join(DAY)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// What a reader of `dt=*/*.jsonl` sees: every line of the visible files.
fn visible_lines(root: &Path) -> Vec<Bytes> {
    let mut lines = Vec::new();
    for name in names(root).iter().filter(|n| n.ends_with(".jsonl") && !n.starts_with('.')) {
        let text = fs::read(root.join(DAY).join(name)).unwrap();
        assert!(text.ends_with(b"\n"), "{name} ends in a whole line");
        lines.extend(text.split_inclusive(|&b| b == b'\n').map(Bytes::copy_from_slice));
    }
    lines.sort();
    lines
}

fn tuned(sync: SyncFn) -> Tuning {
    Tuning { sync, ..Tuning::default() }
}

#[tokio::test]
async fn a_resend_is_stored_once_even_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let (key, line) = event(1);
    let archive = DirArchive::open(root.path()).unwrap();
    assert_eq!(archive.put_new(&key, line.clone()).await.unwrap(), Stored::Created);
    assert_eq!(archive.put_new(&key, line.clone()).await.unwrap(), Stored::AlreadyPresent);
    archive.close().await;
    assert_eq!(visible_lines(root.path()), std::slice::from_ref(&line), "closing seals the segment");

    let archive = DirArchive::open(root.path()).unwrap();
    assert_eq!(archive.put_new(&key, line.clone()).await.unwrap(), Stored::AlreadyPresent);
    let (key2, line2) = event(2);
    assert_eq!(archive.put_new(&key2, line2.clone()).await.unwrap(), Stored::Created);
    archive.close().await;
    let mut both = vec![line, line2];
    both.sort();
    assert_eq!(visible_lines(root.path()), both);
    assert_eq!(names(root.path()).len(), 2, "each start writes its own segment: {:?}", names(root.path()));
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let root = tempfile::tempdir().unwrap();
    let archive = DirArchive::open(root.path()).unwrap();
    let err = DirArchive::open(root.path()).unwrap_err();
    assert!(err.to_string().contains("only one mailhook"), "{err}");
    archive.close().await;
    DirArchive::open(root.path()).unwrap().close().await;
}

#[tokio::test]
async fn concurrent_copies_leave_one_line() {
    let root = tempfile::tempdir().unwrap();
    let archive = Arc::new(DirArchive::open(root.path()).unwrap());
    let (key, line) = event(7);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (archive, key, line) = (archive.clone(), key.clone(), line.clone());
            tokio::spawn(async move { archive.put_new(&key, line).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap() == Stored::Created);
    }
    assert_eq!(created, 1);
    archive.close().await;
    assert_eq!(visible_lines(root.path()), [line]);
}

#[tokio::test]
async fn an_unwritable_partition_is_an_error_and_stores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let archive = DirArchive::open(root.path()).unwrap();
    // A file where the partition directory should be makes every write fail, even as root.
    fs::write(root.path().join(DAY), b"").unwrap();
    let (key, line) = event(1);
    let err = archive.put_new(&key, line).await.unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    archive.close().await;
    assert_eq!(fs::read(root.path().join(DAY)).unwrap(), b"");
}

static SYNCS: AtomicU64 = AtomicU64::new(0);

fn counted_sync(file: &dyn disk::DiskFile) -> io::Result<()> {
    SYNCS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    file.sync_data()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_serves_many_writes() {
    let root = tempfile::tempdir().unwrap();
    let archive = Arc::new(DirArchive::open_with(root.path(), tuned(counted_sync)).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|uid| {
            let archive = archive.clone();
            tokio::spawn(async move {
                let (key, line) = event(uid);
                archive.put_new(&key, line).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Stored::Created);
    }
    let syncs = SYNCS.load(Ordering::SeqCst);
    assert!((1..64).contains(&syncs), "64 writes took {syncs} syncs");
    archive.close().await;
    assert_eq!(visible_lines(root.path()).len(), 64);
    assert_eq!(names(root.path()).len(), 1, "one segment: {:?}", names(root.path()));
}

static SYNC_FAILS: AtomicBool = AtomicBool::new(false);

fn failing_sync(file: &dyn disk::DiskFile) -> io::Result<()> {
    if SYNC_FAILS.load(Ordering::SeqCst) { Err(io::Error::other("EIO")) } else { file.sync_data() }
}

/// After a failed fdatasync neither the batch nor a resend of it gets a 200 while syncs fail;
/// its lines are cut from the segment and kept out of the index, so once the disk is back the
/// resend is written again and stored exactly once.
#[tokio::test]
async fn a_failed_sync_fails_the_batch_and_its_resends() {
    let root = tempfile::tempdir().unwrap();
    let archive = DirArchive::open_with(root.path(), tuned(failing_sync)).unwrap();
    let (key1, line1) = event(1);
    let (key2, line2) = event(2);
    assert_eq!(archive.put_new(&key1, line1.clone()).await.unwrap(), Stored::Created);

    SYNC_FAILS.store(true, Ordering::SeqCst);
    let err = archive.put_new(&key2, line2.clone()).await.unwrap_err();
    assert!(err.to_string().contains("EIO"), "{err}");
    assert!(archive.put_new(&key2, line2.clone()).await.is_err(), "a resend while syncs fail is not acknowledged");
    // An event made durable before the failure stays acknowledged.
    assert_eq!(archive.put_new(&key1, line1.clone()).await.unwrap(), Stored::AlreadyPresent);

    SYNC_FAILS.store(false, Ordering::SeqCst);
    assert_eq!(archive.put_new(&key2, line2.clone()).await.unwrap(), Stored::Created);
    archive.close().await;
    let mut both = vec![line1, line2];
    both.sort();
    assert_eq!(visible_lines(root.path()), both, "each event once, none of the failed batch's bytes");
}

/// A segment left open by a crash, with its last line cut short (power lost mid-append), or
/// followed by zeros (the size grew but the data never reached the disk): the next start keeps
/// its whole lines, cuts the rest, seals it, and knows its ids.
#[tokio::test]
async fn a_torn_tail_is_cut_back_at_start() {
    for tail in [&b"{\"ts\":\"2026-11-26T12:00:00.000Z\",\"ip\":nu"[..], &[0u8; 4096][..]] {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join(DAY)).unwrap();
        let (key1, line1) = event(1);
        let (key2, line2) = event(2);
        let (key3, line3) = event(3);
        // Whatever follows the first line that does not verify was never acknowledged.
        let mut torn = [&line1[..], &line2[..], tail, b"\n", &line3[..]].concat();
        torn.extend_from_slice(&line3[..10]);
        let live = root.path().join(DAY).join(".20261126T120000.000Z-0001.live");
        fs::write(&live, &torn).unwrap();
        // The snapshot published before the crash, and a half-copied newer one.
        fs::write(root.path().join(DAY).join("20261126T120000.000Z-0001.jsonl"), &line1).unwrap();
        fs::write(root.path().join(DAY).join(".20261126T120000.000Z-0001.snap"), &line1[..5]).unwrap();

        let archive = DirArchive::open(root.path()).unwrap();
        assert_eq!(names(root.path()), ["20261126T120000.000Z-0001.jsonl"]);
        assert_eq!(
            fs::read(root.path().join(DAY).join("20261126T120000.000Z-0001.jsonl")).unwrap(),
            [&line1[..], &line2[..]].concat()
        );
        assert_eq!(archive.put_new(&key1, line1.clone()).await.unwrap(), Stored::AlreadyPresent);
        assert_eq!(archive.put_new(&key2, line2.clone()).await.unwrap(), Stored::AlreadyPresent);
        assert_eq!(archive.put_new(&key3, line3.clone()).await.unwrap(), Stored::Created);
        archive.close().await;
    }
}

#[tokio::test]
async fn a_live_segment_with_no_whole_line_is_removed() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join(DAY)).unwrap();
    // Named as the first segment version named live segments: a start after an upgrade seals those too.
    fs::write(root.path().join(DAY).join(".x-0001.jsonl.live"), b"{\"ts\":").unwrap();
    DirArchive::open(root.path()).unwrap().close().await;
    assert!(names(root.path()).is_empty(), "{:?}", names(root.path()));
}

#[tokio::test]
async fn per_event_files_from_before_segments_count_as_stored() {
    let root = tempfile::tempdir().unwrap();
    let (key, line) = event(5);
    fs::create_dir(root.path().join(DAY)).unwrap();
    fs::write(root.path().join(key.format()), b"{\"ts\":\"an old line\"}\n").unwrap();
    let archive = DirArchive::open(root.path()).unwrap();
    assert_eq!(archive.put_new(&key, line).await.unwrap(), Stored::AlreadyPresent);
    archive.close().await;
    assert_eq!(names(root.path()), [format!("{}.jsonl", key.id)]);
}

/// Readers see acknowledged lines within the publish delay, while the segment is still open,
/// and never a partial line.
#[tokio::test]
async fn the_live_segment_is_published_within_the_delay() {
    let root = tempfile::tempdir().unwrap();
    let tuning = Tuning { publish_after: Duration::from_millis(200), ..Tuning::default() };
    let archive = DirArchive::open_with(root.path(), tuning).unwrap();
    let (key, line) = event(1);
    archive.put_new(&key, line.clone()).await.unwrap();
    assert!(visible_lines(root.path()).is_empty(), "not published at once");
    let deadline = Instant::now() + Duration::from_secs(5);
    while visible_lines(root.path()).is_empty() {
        assert!(Instant::now() < deadline, "published within the tick");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(visible_lines(root.path()), [line]);
    archive.close().await;
}

#[tokio::test]
async fn a_full_segment_is_sealed_and_a_new_one_begun() {
    let root = tempfile::tempdir().unwrap();
    let tuning = Tuning { segment_bytes: 2000, ..Tuning::default() };
    let archive = DirArchive::open_with(root.path(), tuning).unwrap();
    let mut lines = Vec::new();
    for uid in 0..20 {
        let (key, line) = event(uid);
        archive.put_new(&key, line.clone()).await.unwrap();
        lines.push(line);
    }
    let sealed = names(root.path()).iter().filter(|n| !n.starts_with('.')).count();
    assert!(sealed >= 3, "sealed while open: {:?}", names(root.path()));
    archive.close().await;
    lines.sort();
    assert_eq!(visible_lines(root.path()), lines);
    for name in names(root.path()) {
        assert!(fs::metadata(root.path().join(DAY).join(&name)).unwrap().len() <= 2000, "{name}");
    }
}

/// Lines for both sides of UTC midnight, arriving together, each land in their own partition and
/// are found there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_across_midnight_goes_to_both_partitions() {
    let root = tempfile::tempdir().unwrap();
    let archive = Arc::new(DirArchive::open(root.path()).unwrap());
    let (key, line) = event(1);
    let (other_key, other_line) = event(2);
    let next_day = Key { date: time::macros::date!(2026 - 11 - 27), ..other_key };
    let tasks = [(key.clone(), line.clone()), (next_day.clone(), other_line.clone())].map(|(key, line)| {
        let archive = archive.clone();
        tokio::spawn(async move { archive.put_new(&key, line).await.unwrap() })
    });
    for task in tasks {
        assert_eq!(task.await.unwrap(), Stored::Created);
    }
    archive.close().await;
    assert_eq!(visible_lines(root.path()), std::slice::from_ref(&line));
    let next: Vec<_> = fs::read_dir(root.path().join("dt=2026-11-27")).unwrap().collect();
    assert_eq!(next.len(), 1);
    assert_eq!(fs::read(next[0].as_ref().unwrap().path()).unwrap(), other_line);

    let archive = DirArchive::open(root.path()).unwrap();
    assert_eq!(archive.put_new(&next_day, other_line).await.unwrap(), Stored::AlreadyPresent);
    assert_eq!(archive.put_new(&key, line).await.unwrap(), Stored::AlreadyPresent);
    archive.close().await;
}

/// A real stored line and its key for uid `uid`, dated (and received) on `date`.
fn event_on(date: time::Date, uid: u32) -> (Key, Bytes) {
    let at = date.with_hms(12, 0, 0).unwrap().assume_utc();
    let body =
        format!(r#"{{"mailbox":"a@example.com","uid":{uid},"tstamp":{},"event":"create"}}"#, at.unix_timestamp());
    let event = parse_body(body.as_bytes(), 1 << 20).unwrap();
    let record = Record::new(&event, &Meta { request_id: "r".into(), ..Meta::default() }, at, "");
    assert_eq!(record.key.date, date);
    (record.key, record.line)
}

fn files_in(root: &Path, date: time::Date) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join(format!("dt={date}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn partitions_are_let_go_of_only_past_the_index_window() {
    let today = time::macros::date!(2026 - 11 - 28);
    assert!(reachable(time::macros::date!(2026 - 11 - 28), today));
    assert!(reachable(time::macros::date!(2026 - 10 - 27), today), "32 days back: still kept");
    assert!(!reachable(time::macros::date!(2026 - 10 - 26), today), "33 days back: let go of");
    assert!(reachable(time::Date::MIN, time::Date::MIN), "no underflow at the calendar's start");
}

/// An old partition is sealed and dropped from memory while the archive runs, one at the edge of
/// the window is kept, and a resend to the dropped one is still found (its index is read again
/// from its files): exactly once holds across the eviction.
#[tokio::test]
async fn an_evicted_partition_is_sealed_and_a_resend_to_it_is_still_found() {
    let root = tempfile::tempdir().unwrap();
    let tuning = Tuning { evict_every: Duration::ZERO, ..Tuning::default() };
    let archive = DirArchive::open_with(root.path(), tuning).unwrap();
    let today = OffsetDateTime::now_utc().date();
    let (edge, old) = (today - time::Duration::days(32), today - time::Duration::days(33));

    let (old_key, old_line) = event_on(old, 1);
    let (edge_key, edge_line) = event_on(edge, 2);
    assert_eq!(archive.put_new(&old_key, old_line.clone()).await.unwrap(), Stored::Created);
    assert_eq!(archive.put_new(&edge_key, edge_line).await.unwrap(), Stored::Created);
    // Each batch is followed by an eviction pass; the next write makes sure one has run.
    let (today_key, today_line) = event_on(today, 3);
    assert_eq!(archive.put_new(&today_key, today_line).await.unwrap(), Stored::Created);

    assert!(
        files_in(root.path(), old).iter().all(|n| !n.ends_with(".live")),
        "sealed: {:?}",
        files_in(root.path(), old)
    );
    assert!(
        files_in(root.path(), edge).iter().any(|n| n.ends_with(".live")),
        "kept: {:?}",
        files_in(root.path(), edge)
    );
    assert_eq!(
        fs::read(
            root.path()
                .join(format!("dt={old}"))
                .join(files_in(root.path(), old).into_iter().find(|n| n.ends_with(".jsonl")).unwrap())
        )
        .unwrap(),
        old_line
    );

    assert_eq!(archive.put_new(&old_key, old_line.clone()).await.unwrap(), Stored::AlreadyPresent);
    let (other_key, other_line) = event_on(old, 4);
    assert_eq!(
        archive.put_new(&other_key, other_line).await.unwrap(),
        Stored::Created,
        "an old partition still takes new lines"
    );
    archive.close().await;
}

static HANG: AtomicBool = AtomicBool::new(false);

fn hanging_sync(file: &dyn disk::DiskFile) -> io::Result<()> {
    while HANG.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    file.sync_data()
}

/// While a sync hangs, requests time out with 500 and their lines wait; once the queue holds
/// `queue_limit` of them, the next request is refused at once with 503 and counted, instead of
/// growing memory until the process is killed. When the disk comes back, everything works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sync_fills_the_queue_and_then_requests_get_503_at_once() {
    use crate::http::{AppState, router};
    use crate::telemetry::metrics::{Metrics, Prometheus};
    use tower::ServiceExt;

    let root = tempfile::tempdir().unwrap();
    HANG.store(true, Ordering::SeqCst);
    let tuning = Tuning { sync: hanging_sync, queue_limit: 4, ..Tuning::default() };
    let archive = DirArchive::open_with(root.path(), tuning).unwrap();
    let state = Arc::new(AppState {
        tokens: crate::webhook::Tokens::parse("t").unwrap().into(),
        account_id: None,
        max_body_bytes: 1 << 20,
        store_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_secs(1),
        prefix: crate::layout::Prefix::default(),
        archive: archive.clone(),
        metrics: Metrics::Prometheus(Prometheus::default()),
    });
    let app = router(state.clone());
    let send = |uid: u32| {
        let request = axum::http::Request::post("/")
            .header("x-webhook-token", "t")
            .body(axum::body::Body::from(format!(r#"{{"mailbox":"a@b.c","uid":{uid},"event":"new"}}"#)))
            .unwrap();
        let app = app.clone();
        async move {
            let started = Instant::now();
            let response = app.oneshot(request).await.unwrap();
            (response.status().as_u16(), started.elapsed())
        }
    };
    // The first is taken by the writer, which hangs in its sync; four more wait in the queue.
    for uid in 0..5 {
        assert_eq!(send(uid).await.0, 500, "request {uid} times out while the sync hangs");
    }
    let (status, took) = send(5).await;
    assert_eq!(status, 503, "the queue is full");
    assert!(took < Duration::from_millis(150), "refused at once, not after the store budget: {took:?}");
    let Metrics::Prometheus(p) = &state.metrics else { unreachable!() };
    assert!(p.text(true).contains("mailhook_requests_total{outcome=\"busy\"} 1"), "{}", p.text(true));

    HANG.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match send(6).await.0 {
            200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("the archive did not come back: {other}"),
        }
    }
    archive.close().await;
    // The lines whose requests timed out were stored all the same.
    let mut stored = 0;
    for partition in fs::read_dir(root.path()).unwrap() {
        let partition = partition.unwrap().path();
        if partition.is_dir() {
            for file in fs::read_dir(partition).unwrap() {
                stored +=
                    fs::read(file.unwrap().path()).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            }
        }
    }
    assert_eq!(stored, 6);
}

/// An archive below a directory this user may pass through but not read (mode 0311, as some
/// shared parents are) starts: that directory's entries cannot be synced by this user, and were
/// made durable by whoever made them. But a directory this start would make inside it, whose
/// entry it cannot make durable, stops the start. Meaningful as a non-root user (tests/all.sh
/// runs the test binaries as nobody): root reads every directory.
#[tokio::test]
async fn an_archive_below_a_directory_this_user_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir_all(shared.join("mailhook")).unwrap();
    fs::create_dir_all(shared.join("archive")).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o311)).unwrap();
    let root = rustix::process::geteuid().is_root();

    // Two levels below it: the new directory's parent is readable, the one above is not.
    let archive = DirArchive::open(shared.join("mailhook").join("archive")).unwrap();
    let (key, line) = event(1);
    assert!(matches!(archive.put_new(&key, line).await, Ok(Stored::Created)));
    archive.close().await;
    // Right below it, already there and started in before: its parent cannot be synced, which is
    // only warned about.
    fs::write(shared.join("archive").join(".mailhook.lock"), b"").unwrap();
    drop(DirArchive::open(shared.join("archive")).unwrap());
    // Right below it, made by this start: refused, unless root can sync it after all. And
    // refused again by the next start, which finds it there but never synced.
    for start in ["the start that makes it", "the next start"] {
        let made = DirArchive::open(shared.join("new"));
        assert_eq!(made.is_ok(), root, "{start}: {made:?}");
        if let Err(e) = made {
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{start}");
        }
    }
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
}

/// On the real disk: a byte changed in a sealed segment's second line (a media error). The next
/// load moves that line, as it was, to a hidden quarantine file no `*.jsonl*` glob matches, and
/// keeps the lines before and after it; their resends are duplicates, and the damaged one is
/// stored again. A user's own `notes.jsonl` beside it is left as it is.
#[tokio::test]
async fn a_damaged_line_in_a_sealed_segment_is_moved_aside_and_the_rest_kept() {
    let root = tempfile::tempdir().unwrap();
    let events: Vec<(Key, Bytes)> = (1..=3).map(event).collect();
    let archive = DirArchive::open(root.path()).unwrap();
    for (key, line) in &events {
        assert_eq!(archive.put_new(key, line.clone()).await.unwrap(), Stored::Created);
    }
    archive.close().await;
    let [segment] = &names(root.path())[..] else { panic!("one segment: {:?}", names(root.path())) };
    let path = root.path().join(DAY).join(segment);
    let mut bytes = fs::read(&path).unwrap();
    let at = events[0].1.len() + memchr::memmem::find(&events[1].1, b"\"uid\":2").unwrap() + 6;
    bytes[at] = b'7';
    fs::write(&path, &bytes).unwrap();
    let notes = b"my own notes, not JSON\n";
    fs::write(root.path().join(DAY).join("notes.jsonl"), notes).unwrap();

    let archive = DirArchive::open(root.path()).unwrap();
    let answers = [Stored::AlreadyPresent, Stored::Created, Stored::AlreadyPresent];
    for ((key, line), answer) in events.iter().zip(answers) {
        assert_eq!(archive.put_new(key, line.clone()).await.unwrap(), answer);
    }
    assert_eq!(archive.quarantined_runs(), 1);
    archive.close().await;
    let quarantine: Vec<String> = names(root.path()).into_iter().filter(|n| n.ends_with(".quarantined")).collect();
    let [quarantine] = &quarantine[..] else { panic!("one quarantine file: {:?}", names(root.path())) };
    assert!(quarantine.starts_with('.') && !quarantine.contains(".jsonl"), "{quarantine}");
    let damaged = &bytes[events[0].1.len()..events[0].1.len() + events[1].1.len()];
    assert_eq!(fs::read(root.path().join(DAY).join(quarantine)).unwrap(), damaged);
    assert_eq!(fs::read(root.path().join(DAY).join("notes.jsonl")).unwrap(), notes);
    fs::remove_file(root.path().join(DAY).join("notes.jsonl")).unwrap();
    let mut all: Vec<Bytes> = events.into_iter().map(|(_, line)| line).collect();
    all.sort();
    assert_eq!(visible_lines(root.path()), all);
}

#[test]
fn segment_names_are_the_ones_mailhook_makes() {
    assert!(crate::layout::segment::is_segment("20261126T120000.000Z-0001"));
    assert!(crate::layout::segment::is_segment("20261126T120000.000Z-12345"));
    for foreign in ["notes", "x-0001", "20261126-backup", "20261126T120000.000Z", "20261126T1200.000Z-0001", ""] {
        assert!(!crate::layout::segment::is_segment(foreign), "{foreign}");
    }
}
