//! The file-level steps of the local archive: its lock, the names of hidden files, recovery
//! after a crash, and reading whole lines. Every step goes through the `Disk` seam.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::disk::{Disk, DiskFile, Open, Reader};
use crate::layout::segment::{self, LOCK_FILE, Leftover};
use crate::layout::{Id, parse_partition};
use crate::record::verify_whole_line;

/// The visible file of segment `name` in `dir`.
pub(crate) fn sealed(dir: &Path, name: &str) -> PathBuf {
    dir.join(segment::sealed(name))
}

/// The live segment `name` in `dir`.
pub(crate) fn live(dir: &Path, name: &str) -> PathBuf {
    dir.join(segment::live(name))
}

/// The snapshot of live segment `name` in `dir`.
pub(crate) fn snapshot(dir: &Path, name: &str) -> PathBuf {
    dir.join(segment::snapshot(name))
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

/// The segment names of this start (`layout::segment`): its UTC time and a counter.
pub(crate) struct Names {
    run: String,
    next: u32,
}

impl Names {
    pub(crate) fn new() -> Self {
        Names { run: segment::stamp(OffsetDateTime::now_utc()), next: 1 }
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
            let name = segment::name(&self.run, self.next - 1);
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
/// to its last line that verifies, and removes leftover snapshots and clean copies.
pub(crate) fn recover(disk: &dyn Disk, root: &Path) -> io::Result<()> {
    for (_, dir) in partitions(disk, root)? {
        let mut changed = false;
        let mut names = disk.read_dir(&dir)?;
        // In name order, so a crash during recovery is met again in the same order.
        names.sort();
        for (file_name, _) in names {
            let path = dir.join(&file_name);
            match segment::leftover(&file_name) {
                // Snapshots are copies, and a clean copy not renamed yet left its segment as it was.
                Leftover::Copy => {
                    disk.remove_file(&path)?;
                    changed = true;
                }
                Leftover::Live(name) => {
                    recover_segment(disk, &path, &sealed(&dir, name))?;
                    changed = true;
                }
                Leftover::Other => {}
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
        let Some(id) = line.strip_suffix(b"\n").and_then(verify_whole_line) else { return Ok(whole) };
        f(id);
        whole += read as u64;
    }
}

/// Passes the id of every line of a sealed (visible) segment that verifies to `f`, and returns
/// how many runs of bytes between newlines did not verify as one line. Unlike a live segment's
/// tail, nothing follows such a run only because of it: the lines after it were acknowledged.
/// A run may hold whole lines (a newline changed into another byte joins two): those count too.
pub(crate) fn sealed_lines(file: &dyn DiskFile, mut f: impl FnMut(Id)) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, Reader { file, pos: 0 });
    let mut run = Vec::new();
    let mut bad = 0;
    loop {
        run.clear();
        if reader.read_until(b'\n', &mut run)? == 0 {
            return Ok(bad);
        }
        match run.strip_suffix(b"\n").and_then(verify_whole_line) {
            Some(id) => f(id),
            None => {
                bad += 1;
                salvage(run.strip_suffix(b"\n").unwrap_or(&run), |_, id| f(id));
            }
        }
    }
}

/// The whole lines inside a run of bytes that does not verify as one line: each piece ending in
/// `"}` that verifies, the byte after it taken for a newline that was changed.
fn salvage(run: &[u8], mut f: impl FnMut(&[u8], Id)) {
    let mut start = 0;
    for end in memchr::memmem::find_iter(run, b"\"}").map(|at| at + 2) {
        if end > start
            && let Some(id) = verify_whole_line(&run[start..end])
        {
            f(&run[start..end], id);
            start = end + 1;
        }
    }
}

/// Moves every run of bytes in the sealed segment `<stem>.jsonl` that does not verify as a line,
/// byte for byte, to `.<stem>.<hash>.quarantined` beside it, and keeps every line that verifies
/// (those salvaged from such a run too) in the segment, in order; a segment left with no line is
/// removed. The quarantine is durable before the segment is replaced, and the replacement is a
/// rename of a synced copy: a crash at any step leaves the segment whole or cleaned. Its name
/// comes from what it holds, so a crash and a second try write the same file again, and a later
/// fault in the same segment never overwrites an earlier quarantine. Returns how many runs moved.
pub(crate) fn quarantine(disk: &dyn Disk, dir: &Path, stem: &str) -> io::Result<(u64, PathBuf)> {
    let path = sealed(dir, stem);
    let mut bytes = Vec::new();
    Reader { file: &*disk.open(&path, Open::Existing)?, pos: 0 }.read_to_end(&mut bytes)?;
    let (mut kept, mut moved, mut runs) = (Vec::new(), Vec::new(), 0);
    for run in bytes.split_inclusive(|&b| b == b'\n') {
        if run.strip_suffix(b"\n").and_then(verify_whole_line).is_some() {
            kept.extend_from_slice(run);
        } else {
            runs += 1;
            moved.extend_from_slice(run);
            salvage(run.strip_suffix(b"\n").unwrap_or(run), |line, _| {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            });
        }
    }
    let out = dir.join(segment::quarantined(stem, Id::of(&moved)));
    if runs == 0 {
        return Ok((0, out));
    }
    let file = disk.open(&out, Open::Truncate)?;
    file.write_all_at(&moved, 0)?;
    file.sync_all()?;
    if kept.is_empty() {
        disk.sync_dir(dir)?;
        disk.remove_file(&path)?;
    } else {
        let clean = dir.join(segment::clean(stem));
        let file = disk.open(&clean, Open::Truncate)?;
        file.write_all_at(&kept, 0)?;
        file.sync_all()?;
        disk.sync_dir(dir)?;
        disk.rename(&clean, &path)?;
    }
    disk.sync_dir(dir)?;
    Ok((runs, out))
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
