//! Compaction of a local directory archive: per-event files left by versions before segments
//! (`dt=D/<id>.jsonl`) are merged into segments, so both archives end with a few files a day.
//!
//! It takes the directory's lock, so it runs while no server writes the directory. A merge is
//! written as `.<name>.merge`, synced, renamed to `<name>.jsonl`, and the directory synced; only
//! then are its per-event files removed. A run stopped before the rename leaves a `.merge` file
//! that the next start (of the server or of compact) removes; one stopped after it leaves copies
//! that the next compact removes, since their ids are in a segment.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Done, Options, Report, mergeable, out_of_time, partition_date, per_event_id};
use crate::archive::segments::{self, MERGE_SUFFIX, Names, SEGMENT_BYTES, sync_dir, whole_lines};

pub(super) fn run(root: &Path, options: &Options) -> Result<Report, String> {
    if !root.is_dir() {
        return Err(format!("ARCHIVE_URI directory {} does not exist", root.display()));
    }
    let _lock = segments::lock(root).map_err(|e| format!("{e}: stop the server before compacting its directory"))?;
    segments::recover(root)
        .map_err(|e| format!("sealing what a stopped server left in {} failed: {e}", root.display()))?;
    let mut partitions = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| format!("reading {} failed: {e}", root.display()))? {
        let path = entry.map_err(|e| format!("reading {} failed: {e}", root.display()))?.path();
        if let Some(date) = path.file_name().and_then(|n| n.to_str()).and_then(partition_date)
            && date <= options.through
            && path.is_dir()
        {
            partitions.push((date, path));
        }
    }
    partitions.sort();
    let mut names = Names::new();
    let mut report = Report::default();
    for (date, dir) in partitions {
        report.partitions += 1;
        let mut done = Done::default();
        let result = match out_of_time(options) {
            Some(why) => Err(why),
            None => partition(&dir, options, &mut names, &mut done).map_err(|e| e.to_string()),
        };
        report.add(&done);
        if let Err(why) = result {
            tracing::error!(partition = %date, error = %why, "compacting a partition failed");
            report.failed.push((date, why));
        } else {
            tracing::info!(partition = %date, merged = done.merged, written = done.written, "partition compacted");
        }
    }
    Ok(report)
}

fn partition(dir: &Path, options: &Options, names: &mut Names, done: &mut Done) -> io::Result<()> {
    let cutoff = SystemTime::now() - options.min_age;
    let mut candidates = Vec::new();
    let mut known = HashSet::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = per_event_id(name) {
            if entry.metadata()?.modified()? <= cutoff {
                candidates.push((entry.path(), id));
            }
        } else if name.ends_with(".jsonl") && !name.starts_with('.') {
            whole_lines(&File::open(entry.path())?, |id| {
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
        fs::remove_file(path)?;
        done.already_merged += 1;
    }
    if !stale.is_empty() {
        sync_dir(dir)?;
    }
    let cap = (options.max_object_bytes as u64).min(SEGMENT_BYTES);
    let mut merge: Option<Merge> = None;
    for (path, id) in fresh {
        let line = fs::read(&path)?;
        if !mergeable(&line, &id) {
            tracing::warn!(file = %path.display(), "left in place: not one stored line ending with the id its name names");
            done.skipped += 1;
            continue;
        }
        if merge.as_ref().is_some_and(|m| m.len + line.len() as u64 > cap) {
            merge.take().expect("checked").finish(dir, done)?;
        }
        let m = match &mut merge {
            Some(m) => m,
            None => merge.insert(Merge::create(dir, names)?),
        };
        m.file.write_all(&line)?;
        m.len += line.len() as u64;
        m.merged.push(path);
    }
    if let Some(m) = merge {
        m.finish(dir, done)?;
    }
    Ok(())
}

/// A segment being written from per-event files.
struct Merge {
    file: File,
    name: String,
    len: u64,
    merged: Vec<PathBuf>,
}

impl Merge {
    fn create(dir: &Path, names: &mut Names) -> io::Result<Merge> {
        loop {
            let name = names.next();
            if dir.join(format!("{name}.jsonl")).exists() {
                continue;
            }
            match OpenOptions::new().write(true).create_new(true).open(dir.join(format!(".{name}{MERGE_SUFFIX}"))) {
                Ok(file) => return Ok(Merge { file, name, len: 0, merged: Vec::new() }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes the segment durable under its visible name, then removes the files merged into it.
    fn finish(self, dir: &Path, done: &mut Done) -> io::Result<()> {
        self.file.sync_data()?;
        fs::rename(dir.join(format!(".{}{MERGE_SUFFIX}", self.name)), dir.join(format!("{}.jsonl", self.name)))?;
        sync_dir(dir)?;
        for path in &self.merged {
            fs::remove_file(path)?;
        }
        sync_dir(dir)?;
        done.written += 1;
        done.merged += self.merged.len() as u64;
        Ok(())
    }
}
