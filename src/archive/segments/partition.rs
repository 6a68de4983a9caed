//! One partition directory of the local archive: the ids of its durable lines, and the life of
//! its live segment (created, appended to and synced, published, sealed).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::Date;

use super::Tuning;
use super::files::{self, Names, sync_dir, whole_lines, write_zeros};
use crate::key::{Id, event_file_id, partition_name};

/// The live segment is written with zeros this far ahead of its lines, so that an `fdatasync`
/// after a batch writes data only: appending past the file's end would also write its inode each
/// time (BENCHMARKS.md). Zeros are no line, so the recovery cuts them like a torn tail.
const ZEROS_AHEAD: u64 = 1 << 20;

pub(super) struct Partition {
    pub dir: PathBuf,
    /// The ids of every durable line in the partition.
    pub ids: HashSet<Id>,
    live: Option<Segment>,
}

struct Segment {
    file: File,
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
}

impl Partition {
    /// Opens a partition, creating its directory, and indexes the ids of every line in it: the
    /// segments' lines that verify, and the per-event files written before segments, by name.
    pub fn load(root: &Path, date: Date) -> io::Result<Partition> {
        let dir = root.join(partition_name(date));
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            sync_dir(root)?;
        }
        let mut ids = HashSet::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if let Some(id) = event_file_id(name) {
                ids.insert(id);
            } else if name.ends_with(crate::key::LINES_SUFFIX) && !name.starts_with('.') {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let whole = whole_lines(&file, |id| {
                    ids.insert(id);
                })?;
                if whole < file.metadata()?.len() {
                    // Only a failed sync followed by a crash leaves this: a cut that never reached the disk.
                    tracing::warn!(segment = %path.display(), kept = whole, "cut a sealed segment back to its whole lines");
                    file.set_len(whole)?;
                    file.sync_all()?;
                }
            }
        }
        Ok(Partition { dir, ids, live: None })
    }

    /// Appends `lines` to the live segment (a new one if there is none or it is full) and syncs.
    /// On failure nothing of `lines` counts: the segment is rolled back to its durable length.
    pub fn append(&mut self, lines: &[u8], names: &mut Names, tuning: &Tuning) -> io::Result<()> {
        let sync = tuning.sync;
        if self.live.as_ref().is_some_and(|s| s.len > 0 && s.len + lines.len() as u64 > tuning.segment_bytes) {
            self.seal();
        }
        if self.live.is_none() {
            self.live = Some(Segment::create(&self.dir, names)?);
        }
        let segment = self.live.as_mut().expect("just made");
        let end = segment.len + lines.len() as u64;
        if end > segment.zeroed_to {
            // Best effort: on a full disk the lines may still fit without the zeros.
            let ahead = end + ZEROS_AHEAD.min(tuning.segment_bytes.saturating_sub(end));
            match write_zeros(&segment.file, segment.zeroed_to, ahead) {
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
        if let Err(e) = sync(&segment.file) {
            // After a failed sync the page cache cannot be trusted: those lines may or may not be
            // on disk. Cut the file back to what was durable, try to make that cut durable, and
            // seal it; the next batch starts a new segment. Should the cut not reach the disk, the
            // partition's next load cuts whatever fails to verify.
            match segment.file.set_len(segment.len) {
                Ok(()) => {
                    segment.zeroed_to = segment.len;
                    let _ = sync(&segment.file);
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
        let Some(segment) = self.live.as_mut() else { return Ok(()) };
        let due = segment.unpublished_since.is_some_and(|since| since.elapsed() >= after);
        if !due || segment.published == segment.len {
            return Ok(());
        }
        let snapshot = files::snapshot(&self.dir, &segment.name);
        let mut out = File::create(&snapshot)?;
        let mut source = &segment.file;
        source.seek(SeekFrom::Start(0))?;
        io::copy(&mut io::Read::take(source, segment.len), &mut out)?;
        fs::rename(&snapshot, files::sealed(&self.dir, &segment.name))?;
        segment.published = segment.len;
        segment.unpublished_since = None;
        Ok(())
    }

    /// Renames the live segment to its visible name (over its snapshot), or removes it if it
    /// holds nothing. Logged, not returned: the lines are durable either way, and a segment
    /// left hidden is sealed by the next start.
    pub fn seal(&mut self) {
        let Some(segment) = self.live.take() else { return };
        let live = files::live(&self.dir, &segment.name);
        let result = if segment.len == 0 {
            fs::remove_file(&live)
        } else {
            // The zeros ahead go first, durably, so a reader never meets them under the visible name.
            let cut = if segment.zeroed_to > segment.len {
                segment.file.set_len(segment.len).and_then(|()| segment.file.sync_all())
            } else {
                Ok(())
            };
            cut.and_then(|()| fs::rename(&live, files::sealed(&self.dir, &segment.name)))
                .and_then(|()| sync_dir(&self.dir))
        };
        if let Err(e) = result {
            tracing::error!(segment = %live.display(), error = %e, "sealing a segment failed; the next start seals it");
        }
    }

    /// Stops using a live segment that could not be cut back: readers must not see its tail, so
    /// it stays hidden for the next start to cut back and seal. An empty one is removed.
    fn abandon(&mut self) {
        if let Some(segment) = self.live.take()
            && segment.len == 0
        {
            let _ = fs::remove_file(files::live(&self.dir, &segment.name));
        }
    }
}

impl Segment {
    /// A new, empty live segment whose name is durable before any line in it is acknowledged.
    fn create(dir: &Path, names: &mut Names) -> io::Result<Segment> {
        let (name, file) = names.create(dir, files::live)?;
        sync_dir(dir)?;
        Ok(Segment { file, name, len: 0, zeroed_to: 0, published: 0, unpublished_since: None })
    }
}
