//! `mailhook compact` for a local directory: per-event files left by versions before segments
//! (`dt=D/<id>.jsonl`) are merged into segments, so both archives end with a few files a day.
//!
//! It takes the directory's lock, so it runs while no server writes the directory. A merge is
//! written as `.<name>.merge`, synced, renamed to `<name>.jsonl`, and the directory synced; only
//! then are its per-event files removed. A run stopped before the rename leaves a `.merge` file
//! that the next start (of the server or of compact) removes; one stopped after it leaves copies
//! that the next compact removes, since their ids are in a segment.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::Date;

use super::SEGMENT_BYTES;
use super::disk::{Disk, DiskFile, Open, Reader, RealDisk};
use super::files::{self, Names, lock, partitions, recover, sealed_lines};
use crate::compact::{Compactor, Done, Options, Report, cutoff, drive, mergeable};
use crate::key::{LINES_SUFFIX, event_file_id, partition_name};

/// Runs the compaction over `root`, holding its lock. Blocking: call it off the async threads.
pub(crate) fn run(root: &Path, options: &Options) -> Result<Report, String> {
    run_on(RealDisk::shared(), root, options)
}

fn run_on(disk: Arc<dyn Disk>, root: &Path, options: &Options) -> Result<Report, String> {
    if !disk.is_dir(root) {
        return Err(format!("ARCHIVE_URI directory {} does not exist", root.display()));
    }
    let _lock = lock(&*disk, root).map_err(|e| format!("{e}: stop the server before compacting its directory"))?;
    recover(&*disk, root)
        .map_err(|e| format!("sealing what a stopped server left in {} failed: {e}", root.display()))?;
    let mut compactor = DirCompactor { disk, root: root.to_owned(), names: Names::new() };
    // The partitions are plain file work; the shared driver is async only for S3's sake.
    tokio::runtime::Handle::current().block_on(drive(&mut compactor, options, None))
}

struct DirCompactor {
    disk: Arc<dyn Disk>,
    root: PathBuf,
    names: Names,
}

impl Compactor for DirCompactor {
    async fn dates(&mut self) -> Result<Vec<Date>, String> {
        let found =
            partitions(&*self.disk, &self.root).map_err(|e| format!("reading {} failed: {e}", self.root.display()))?;
        Ok(found.into_iter().map(|(date, _)| date).collect())
    }

    async fn partition(&mut self, date: Date, options: &Options, done: &Done) -> Result<(), String> {
        let dir = self.root.join(partition_name(date));
        partition(&*self.disk, &dir, options, &mut self.names, done).map_err(|e| e.to_string())
    }
}

fn partition(disk: &dyn Disk, dir: &Path, options: &Options, names: &mut Names, done: &Done) -> io::Result<()> {
    let cutoff = cutoff(options);
    let mut candidates = Vec::new();
    let mut known = HashSet::new();
    for (name, _) in disk.read_dir(dir)? {
        let path = dir.join(&name);
        if let Some(id) = event_file_id(&name) {
            if disk.modified(&path)? <= cutoff {
                candidates.push((path, id));
            }
        } else if name.strip_suffix(LINES_SUFFIX).is_some_and(files::is_segment) {
            // Every line that verifies, also past one that does not; a user's own file does not count.
            sealed_lines(&*disk.open(&path, Open::Existing)?, |id| {
                known.insert(id);
            })?;
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    candidates.sort();
    let (stale, fresh): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(_, id)| known.contains(id));
    for (path, _) in &stale {
        disk.remove_file(path)?;
        Done::count(&done.already_merged, 1);
    }
    if !stale.is_empty() {
        disk.sync_dir(dir)?;
    }
    let cap = (options.max_object_bytes as u64).min(SEGMENT_BYTES);
    let mut merge: Option<Merge> = None;
    for (path, id) in fresh {
        let mut line = Vec::new();
        Reader { file: &*disk.open(&path, Open::Existing)?, pos: 0 }.read_to_end(&mut line)?;
        Done::count(&done.read, 1);
        if !mergeable(&line, &id) {
            tracing::warn!(file = %path.display(), "left in place: not one stored line ending with the id its name names");
            Done::count(&done.skipped, 1);
            continue;
        }
        if merge.as_ref().is_some_and(|m| m.len + line.len() as u64 > cap) {
            merge.take().expect("checked").finish(disk, dir, done)?;
        }
        let m = match &mut merge {
            Some(m) => m,
            None => merge.insert(Merge::create(disk, dir, names)?),
        };
        m.file.write_all_at(&line, m.len)?;
        m.len += line.len() as u64;
        m.merged.push(path);
    }
    if let Some(m) = merge {
        m.finish(disk, dir, done)?;
    }
    Ok(())
}

/// A segment being written from per-event files.
struct Merge {
    file: Box<dyn DiskFile>,
    name: String,
    len: u64,
    merged: Vec<PathBuf>,
}

impl Merge {
    fn create(disk: &dyn Disk, dir: &Path, names: &mut Names) -> io::Result<Merge> {
        let (name, file) = names.create(disk, dir, files::merge)?;
        Ok(Merge { file, name, len: 0, merged: Vec::new() })
    }

    /// Makes the segment durable under its visible name, then removes the files merged into it.
    fn finish(self, disk: &dyn Disk, dir: &Path, done: &Done) -> io::Result<()> {
        self.file.sync_data()?;
        disk.rename(&files::merge(dir, &self.name), &files::sealed(dir, &self.name))?;
        disk.sync_dir(dir)?;
        for path in &self.merged {
            disk.remove_file(path)?;
        }
        disk.sync_dir(dir)?;
        Done::count(&done.written, 1);
        Done::count(&done.merged, self.merged.len() as u64);
        Ok(())
    }
}
