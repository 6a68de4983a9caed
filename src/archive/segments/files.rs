//! The file-level steps of the local archive: its lock, the names of hidden files, recovery
//! after a crash, and reading whole lines. Every step goes through the `Disk` seam.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::disk::{Disk, DiskFile, Open, Reader};
use crate::key::{Id, LINES_SUFFIX, parse_partition};
use crate::record::verify_line;

/// Held while a process writes the directory, so two cannot append to the same segments.
const LOCK_FILE: &str = ".mailhook.lock";
const LIVE_SUFFIX: &str = ".live";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// A segment `mailhook compact` is writing; renamed to `<name>.jsonl` once synced.
const MERGE_SUFFIX: &str = ".merge";
/// What the first segment version called them; a start after an upgrade seals and removes these too.
const OLD_LIVE_SUFFIX: &str = ".jsonl.live";
const OLD_SNAPSHOT_SUFFIX: &str = ".jsonl.snap";

/// The visible name of segment `name`: `<name>.jsonl`, the only files readers glob.
pub(crate) fn sealed(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{LINES_SUFFIX}"))
}

/// The live segment being appended to. Its name has no `.jsonl` in it, so a reader's glob
/// (`*.jsonl*`, which matches hidden files too in DuckDB) never picks up its zeros ahead.
pub(crate) fn live(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}{LIVE_SUFFIX}"))
}

/// The copy of a live segment's durable lines, renamed over `<name>.jsonl` to publish them.
pub(crate) fn snapshot(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}{SNAPSHOT_SUFFIX}"))
}

/// A segment the local compaction is writing.
pub(crate) fn merge(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}{MERGE_SUFFIX}"))
}

/// Whether a start has taken the directory's lock before, and so got past its directory syncs:
/// the lock file is made right after them.
pub(crate) fn started_before(disk: &dyn Disk, root: &Path) -> bool {
    disk.exists(&root.join(LOCK_FILE))
}

/// Takes the directory's lock, held as long as the guard lives. Another process holding it is
/// `ResourceBusy`, so the caller can say so rather than blame permissions.
pub(crate) fn lock(disk: &dyn Disk, root: &Path) -> io::Result<Box<dyn Send>> {
    let path = root.join(LOCK_FILE);
    disk.lock(&path).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("another process holds {}: only one mailhook may write a directory", path.display()),
        ),
        _ => e,
    })
}

/// Segment names: this start's UTC time and a counter, so names sort by age and a new start
/// never appends to an old segment.
pub(crate) struct Names {
    run: String,
    next: u32,
}

impl Names {
    pub(crate) fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        let run = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        Names { run, next: 1 }
    }

    /// A name no segment in `dir` has, and a new hidden file `path(dir, name)` created for it.
    pub(crate) fn create(
        &mut self,
        disk: &dyn Disk,
        dir: &Path,
        path: fn(&Path, &str) -> PathBuf,
    ) -> io::Result<(String, Box<dyn DiskFile>)> {
        loop {
            self.next += 1;
            let name = format!("{}-{:04}", self.run, self.next - 1);
            if disk.exists(&sealed(dir, &name)) {
                continue;
            }
            match disk.open(&path(dir, &name), Open::CreateNew) {
                Ok(file) => return Ok((name, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The partition directories under `root`, by date. Nothing else under the root is the
/// archive's: a `lost+found`, a dotfile or another tool's folder is left alone, readable or not.
pub(crate) fn partitions(disk: &dyn Disk, root: &Path) -> io::Result<Vec<(time::Date, PathBuf)>> {
    let mut found = Vec::new();
    for (name, is_dir) in disk.read_dir(root)? {
        if let Some(date) = parse_partition(&name)
            && is_dir
        {
            found.push((date, root.join(name)));
        }
    }
    found.sort();
    Ok(found)
}

/// Seals every live segment an earlier run left in the partitions under `root`, each cut back
/// to its last line that verifies, and removes leftover snapshots and unfinished merges.
pub(crate) fn recover(disk: &dyn Disk, root: &Path) -> io::Result<()> {
    for (_, dir) in partitions(disk, root)? {
        let mut changed = false;
        let mut names = disk.read_dir(&dir)?;
        // In name order, so a crash during recovery is met again in the same order.
        names.sort();
        for (file_name, _) in names {
            let path = dir.join(&file_name);
            let hidden = file_name.strip_prefix('.');
            // Snapshots are copies, and a merge a compaction did not finish still has its per-event files.
            if hidden
                .is_some_and(|n| [SNAPSHOT_SUFFIX, OLD_SNAPSHOT_SUFFIX, MERGE_SUFFIX].iter().any(|s| n.ends_with(s)))
            {
                disk.remove_file(&path)?;
                changed = true;
            } else if let Some(name) =
                hidden.and_then(|n| n.strip_suffix(OLD_LIVE_SUFFIX).or_else(|| n.strip_suffix(LIVE_SUFFIX)))
            {
                recover_segment(disk, &path, &sealed(&dir, name))?;
                changed = true;
            }
        }
        if changed {
            disk.sync_dir(&dir)?;
        }
    }
    Ok(())
}

/// Cuts a live segment back to its whole lines and seals it as `sealed`.
fn recover_segment(disk: &dyn Disk, live: &Path, sealed: &Path) -> io::Result<()> {
    let file = disk.open(live, Open::Existing)?;
    let len = file.len()?;
    let whole = whole_lines(&*file, |_| {})?;
    if whole < len {
        // Zeros written ahead, and after a power loss possibly a line cut short or garbled.
        tracing::warn!(segment = %live.display(), kept = whole, cut = len - whole, "cut back to its last whole line");
        file.set_len(whole)?;
    }
    if whole > 0 {
        // Synced whether or not anything was cut: a run that was killed may have left its lines,
        // or its last cut, in the page cache only, and these lines are about to be indexed as
        // stored, so that a resend of one is answered without a copy. (After an `fdatasync` that
        // failed, Linux may have marked the pages clean: this sync cannot write those again.)
        file.sync_all()?;
    }
    if whole == 0 {
        // Its snapshot, if any, could only hold lines of this segment: none were durable.
        let _ = disk.remove_file(sealed);
        disk.remove_file(live)
    } else {
        disk.rename(live, sealed)
    }
}

/// Passes the id of each line of a segment to `f`, up to the first line that does not verify
/// (or has no newline), and returns the length of the lines before it. Whatever follows such a
/// line was never acknowledged: an acknowledged line was synced after every line before it.
/// Reads through a buffer, so memory stays small.
pub(crate) fn whole_lines(file: &dyn DiskFile, mut f: impl FnMut(Id)) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, Reader { file, pos: 0 });
    let mut line = Vec::new();
    let mut whole = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        let Some(id) = line.strip_suffix(b"\n").and_then(verify_line) else { return Ok(whole) };
        f(id);
        whole += read as u64;
    }
}

/// Writes zeros over `from..to` of `file`.
pub(crate) fn write_zeros(file: &dyn DiskFile, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}
