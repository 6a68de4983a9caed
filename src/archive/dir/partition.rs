//! One partition directory of the local archive: the ids of its durable lines, and the life of
//! its live segment (created, appended to and synced, published, sealed).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::Date;

use super::Tuning;
use super::disk::{Disk, DiskFile, Open};
use super::files::{self, Names, sealed_lines, write_zeros};
use crate::layout::{Id, LINES_SUFFIX, event_file_id, partition_name};

/// The live segment is written with zeros this far ahead of its lines, so that an `fdatasync`
/// after a batch writes data only: appending past the file's end would also write its inode each
/// time (BENCHMARKS.md). Zeros are no line, so the recovery cuts them like a torn tail.
const ZEROS_AHEAD: u64 = 1 << 20;

pub(super) struct Partition {
    disk: Arc<dyn Disk>,
    pub dir: PathBuf,
    /// The ids of every durable line in the partition.
    pub ids: HashSet<Id>,
    live: Option<Segment>,
    /// Segments no longer appended to whose seal failed: they hold acknowledged lines that the
    /// visible files may not, so the partition stays in memory until they are sealed.
    stranded: Vec<Segment>,
    /// Runs of bytes the load moved out of sealed segments.
    pub quarantined: u64,
}

struct Segment {
    file: Box<dyn DiskFile>,
    /// The file name without `.jsonl`: sealed or published as `<name>.jsonl`.
    name: String,
    /// The durable length: every byte before it is a whole, synced line.
    len: u64,
    /// The file's length: zeros from `len` on.
    zeroed_to: u64,
    /// How much of it the visible snapshot holds.
    published: u64,
    /// Since when durable lines have waited to be published.
    unpublished_since: Option<Instant>,
    /// The file was cut back to `len` after a failed sync, and that cut is not yet known to be
    /// on the disk: lines past `len` may still be there, whole, and would be read as stored.
    cut_pending: bool,
}

impl Partition {
    /// Opens a partition, creating its directory, and indexes the ids of every line in it: the
    /// segments' lines that verify, and the per-event files written before segments, by name.
    /// What does not verify in a sealed segment is moved to a quarantine file beside it.
    pub fn load(disk: Arc<dyn Disk>, root: &Path, date: Date) -> io::Result<Partition> {
        let dir = root.join(partition_name(date));
        disk.create_dir_all(&dir)?;
        // Every load, not only when this one made the directory: an earlier load may have made
        // it and then failed to sync its entry, and lines are about to be answered in it.
        disk.sync_dir(root)?;
        let mut ids = HashSet::new();
        let mut quarantined = 0;
        for (name, _) in disk.read_dir(&dir)? {
            if let Some(id) = event_file_id(&name) {
                ids.insert(id);
            } else if let Some(stem) = name.strip_suffix(LINES_SUFFIX).filter(|_| !name.starts_with('.')) {
                let path = dir.join(&name);
                if !crate::layout::segment::is_segment(stem) {
                    // A user's own file, or another tool's: never changed, and its lines do not
                    // count as stored (a resend is stored in a segment of mailhook's own).
                    tracing::warn!(file = %path.display(), "not a segment mailhook made: left as it is, and not indexed");
                    continue;
                }
                let bad = sealed_lines(&*disk.open(&path, Open::Existing)?, |id| {
                    ids.insert(id);
                })?;
                if bad > 0 {
                    // A media error, or a hand edit: the lines acknowledged around it stay.
                    match files::quarantine(&*disk, &dir, stem) {
                        Ok((moved, to)) => {
                            quarantined += moved;
                            tracing::error!(segment = %path.display(), quarantined = moved, to = %to.display(), "moved what does not verify out of a sealed segment");
                        }
                        Err(e) => {
                            tracing::error!(segment = %path.display(), bad, error = %e, "a sealed segment holds what does not verify, and moving it out failed; tried again at the next load");
                        }
                    }
                }
            }
        }
        Ok(Partition { disk, dir, ids, live: None, stranded: Vec::new(), quarantined })
    }

    /// Appends `lines` to the live segment (a new one if there is none or it is full) and syncs.
    /// On failure nothing of `lines` counts: the segment is rolled back to its durable length.
    pub fn append(&mut self, lines: &[u8], names: &mut Names, tuning: &Tuning) -> io::Result<()> {
        let sync = tuning.sync;
        // A segment cut back after a failed sync whose cut is not yet durable may still hold those
        // lines, whole: a resend written anywhere now could be stored twice after a power loss.
        // Nothing more is answered in this partition until that cut is on the disk.
        if self.stranded.iter().any(|s| s.cut_pending) && !self.seal_stranded() {
            return Err(io::Error::other("an earlier failed sync is not resolved yet: its cut is not on the disk"));
        }
        if self.live.as_ref().is_some_and(|s| s.len > 0 && s.len + lines.len() as u64 > tuning.segment_bytes) {
            self.seal();
        }
        if self.live.is_none() {
            self.live = Some(Segment::create(&*self.disk, &self.dir, names)?);
        }
        let segment = self.live.as_mut().expect("just made");
        let end = segment.len + lines.len() as u64;
        if end > segment.zeroed_to {
            // Best effort: on a full disk the lines may still fit without the zeros.
            let ahead = end + ZEROS_AHEAD.min(tuning.segment_bytes.saturating_sub(end));
            match write_zeros(&*segment.file, segment.zeroed_to, ahead) {
                Ok(()) => segment.zeroed_to = ahead,
                Err(_) => {
                    let _ = segment.file.set_len(segment.len);
                    segment.zeroed_to = segment.len;
                }
            }
        }
        if let Err(e) = segment.file.write_all_at(lines, segment.len) {
            // Nothing was synced, so the cache still matches the disk up to `len`: cut back and go on.
            match segment.file.set_len(segment.len) {
                Ok(()) if segment.len > 0 => segment.zeroed_to = segment.len,
                _ => self.abandon(),
            }
            return Err(e);
        }
        if let Err(e) = sync(&*segment.file) {
            // After a failed sync the page cache cannot be trusted: those lines may or may not be
            // on disk. Cut the file back to what was durable and seal it, which makes the cut
            // durable first; the next batch starts a new segment. Until the cut is known to be on
            // the disk the segment stays hidden, and the seal is tried again: those lines are
            // whole, and a reader, or the next load, would count them as stored.
            match segment.file.set_len(segment.len) {
                Ok(()) => {
                    segment.zeroed_to = segment.len;
                    segment.cut_pending = true;
                    self.seal();
                }
                Err(_) => self.abandon(),
            }
            return Err(io::Error::new(e.kind(), format!("syncing the archive: {e}")));
        }
        segment.len += lines.len() as u64;
        segment.unpublished_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Shows readers the live segment's durable lines: copies them to a hidden file and renames
    /// it over `<name>.jsonl`. The copy needs no sync: the live segment holds the durable lines.
    pub fn publish(&mut self, after: Duration) -> io::Result<()> {
        if !self.stranded.is_empty() {
            self.seal_stranded();
        }
        let Some(segment) = self.live.as_mut() else { return Ok(()) };
        let due = segment.unpublished_since.is_some_and(|since| since.elapsed() >= after);
        if !due || segment.published == segment.len {
            return Ok(());
        }
        let snapshot = files::snapshot(&self.dir, &segment.name);
        let out = self.disk.open(&snapshot, Open::Truncate)?;
        let mut buf = vec![0; (1 << 16).min(segment.len as usize)];
        let mut at = 0;
        while at < segment.len {
            let want = buf.len().min((segment.len - at) as usize);
            let read = segment.file.read_at(&mut buf[..want], at)?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            out.write_all_at(&buf[..read], at)?;
            at += read as u64;
        }
        self.disk.rename(&snapshot, &files::sealed(&self.dir, &segment.name))?;
        segment.published = segment.len;
        segment.unpublished_since = None;
        Ok(())
    }

    /// Seals the live segment and any earlier one whose seal failed: renames each to its visible
    /// name (over its snapshot), or removes it if it holds nothing. A failure is logged and the
    /// segment kept for the next try (or the next start): its lines are durable either way.
    /// Returns whether everything is sealed; until it is, the visible files lack lines that only
    /// this partition's index in memory still knows.
    pub fn seal(&mut self) -> bool {
        self.stranded.extend(self.live.take());
        self.seal_stranded()
    }

    fn seal_stranded(&mut self) -> bool {
        let disk = &*self.disk;
        let dir = &self.dir;
        self.stranded.retain(|segment| match segment.seal(disk, dir) {
            Ok(()) => false,
            Err(e) => {
                let live = files::live(dir, &segment.name);
                tracing::error!(segment = %live.display(), error = %e, "sealing a segment failed; it is tried again");
                true
            }
        });
        self.stranded.is_empty()
    }

    /// Stops appending to a live segment that could not be cut back to its durable length: it
    /// stays hidden, and sealing it (now, later, or at the next start) cuts it back first.
    fn abandon(&mut self) {
        if let Some(mut segment) = self.live.take() {
            segment.cut_pending = true;
            self.stranded.push(segment);
        }
        self.seal();
    }
}

impl Segment {
    /// Cuts off the zeros ahead (durably, so a reader never meets them under the visible name),
    /// renames the segment to `<name>.jsonl` and syncs the directory; an empty one is removed.
    fn seal(&self, disk: &dyn Disk, dir: &Path) -> io::Result<()> {
        let live = files::live(dir, &self.name);
        if self.len == 0 {
            // Its removal becomes durable with the next directory sync, which comes before any
            // later line in this partition is answered (a new segment's name is synced first).
            return match disk.remove_file(&live) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if self.cut_pending || self.file.len()? != self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
        }
        let sealed = files::sealed(dir, &self.name);
        match disk.rename(&live, &sealed) {
            // Renamed by an earlier try whose directory sync failed.
            Err(e) if e.kind() == io::ErrorKind::NotFound && disk.exists(&sealed) => {}
            other => other?,
        }
        disk.sync_dir(dir)
    }

    /// A new, empty live segment whose name is durable before any line in it is acknowledged.
    fn create(disk: &dyn Disk, dir: &Path, names: &mut Names) -> io::Result<Segment> {
        let (name, file) = names.create(disk, dir, files::live)?;
        disk.sync_dir(dir)?;
        Ok(Segment { file, name, len: 0, zeroed_to: 0, published: 0, unpublished_since: None, cut_pending: false })
    }
}
