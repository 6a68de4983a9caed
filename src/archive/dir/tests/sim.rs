//! A simulated disk for the crash-state tests. It applies every operation at once, as the page
//! cache does, and logs it; a crash state is then rebuilt from the log by applying only what the
//! disk may have kept: every write or truncate followed by an `fdatasync` of its file, every
//! create, rename or remove followed by an fsync of its directory, and any prefix of the rest, in
//! order, with the last write possibly torn at a sector (512 B) or page (4 KiB) boundary, or
//! with one of its sectors or pages lost while the rest of it is kept.
//! Like FoundationDB's `AsyncFileNonDurable` or RocksDB's `FaultInjectionTestFS`, but as a log,
//! so every state can be counted.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::archive::dir::disk::{Disk, DiskFile, Open};
use crate::layout::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Node {
    File(usize),
    Dir,
}

/// A whole file system: file contents by inode, and each directory's entries.
#[derive(Debug, Clone, Default, Hash)]
pub(super) struct Image {
    files: Vec<Vec<u8>>,
    dirs: BTreeMap<PathBuf, BTreeMap<String, Node>>,
}

impl Image {
    /// An empty file system holding the directory `root` (and its parents).
    pub fn with_dir(root: &Path) -> Image {
        let mut image = Image::default();
        for dir in root.ancestors() {
            image.dirs.entry(dir.to_owned()).or_default();
            if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
                image.dirs.entry(parent.to_owned()).or_default().insert(name.to_string_lossy().into(), Node::Dir);
            }
        }
        image
    }

    fn node(&self, path: &Path) -> Option<Node> {
        if self.dirs.contains_key(path) {
            return Some(Node::Dir);
        }
        let (dir, name) = split(path)?;
        self.dirs.get(dir)?.get(name).copied()
    }

    /// The names in `dir`, if it exists.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        self.dirs.get(dir).map(|d| d.keys().cloned().collect()).unwrap_or_default()
    }

    /// The bytes of the file at `path`, if there is one.
    pub fn read(&self, path: &Path) -> Option<&[u8]> {
        match self.node(path)? {
            Node::File(ino) => Some(&self.files[ino]),
            Node::Dir => None,
        }
    }

    /// Flips the bits of `mask` in the byte at `at` of the file at `path`: a media error.
    pub fn flip(&mut self, path: &Path, at: usize, mask: u8) {
        let Some(Node::File(ino)) = self.node(path) else { panic!("{} is no file", path.display()) };
        self.files[ino][at] ^= mask;
    }

    /// Makes a file at `path` holding `bytes`, as a user might.
    pub fn put(&mut self, path: &Path, bytes: &[u8]) {
        let (dir, name) = split(path).expect("a file in a directory");
        self.files.push(bytes.to_vec());
        self.dirs.get_mut(dir).expect("its directory exists").insert(name.to_owned(), Node::File(self.files.len() - 1));
    }

    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        // Unreachable inodes do not matter: hash what a path can reach.
        for (dir, entries) in &self.dirs {
            dir.hash(&mut h);
            for (name, node) in entries {
                name.hash(&mut h);
                match node {
                    Node::File(ino) => self.files[*ino].hash(&mut h),
                    Node::Dir => 0u8.hash(&mut h),
                }
            }
        }
        h.finish()
    }

    fn file(&mut self, ino: usize) -> &mut Vec<u8> {
        // A file's data can be durable while the entry naming it is not: it exists, unreachable.
        while self.files.len() <= ino {
            self.files.push(Vec::new());
        }
        &mut self.files[ino]
    }

    fn apply(&mut self, op: &Op, torn: Option<usize>) {
        match op {
            Op::Write { ino, at, data } => {
                let data = &data[..torn.unwrap_or(data.len())];
                let file = self.file(*ino);
                let end = *at as usize + data.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[*at as usize..end].copy_from_slice(data);
            }
            Op::SetLen { ino, len } => self.file(*ino).resize(*len as usize, 0),
            Op::Link { dir, name, node } => {
                if let Node::File(ino) = node {
                    self.file(*ino);
                }
                // An entry in a directory that does not exist in this state is lost with it.
                if let Some(entries) = self.dirs.get_mut(dir) {
                    entries.insert(name.clone(), *node);
                    if *node == Node::Dir {
                        self.dirs.entry(dir.join(name)).or_default();
                    }
                }
            }
            Op::Unlink { dir, name } => {
                if let Some(entries) = self.dirs.get_mut(dir) {
                    entries.remove(name);
                }
            }
            Op::Rename { dir, from, to } => {
                if let Some(entries) = self.dirs.get_mut(dir)
                    && let Some(node) = entries.remove(from)
                {
                    entries.insert(to.clone(), node);
                }
            }
            Op::Sync { .. } | Op::SyncDir { .. } | Op::Acked(_) => {}
        }
    }
}

fn split(path: &Path) -> Option<(&Path, &str)> {
    Some((path.parent()?, path.file_name()?.to_str()?))
}

/// One logged step. `Acked` is no disk step: it marks where the archive answered an event.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Write { ino: usize, at: u64, data: Vec<u8> },
    SetLen { ino: usize, len: u64 },
    Sync { ino: usize },
    Link { dir: PathBuf, name: String, node: Node },
    Unlink { dir: PathBuf, name: String },
    Rename { dir: PathBuf, from: String, to: String },
    SyncDir { dir: PathBuf },
    Acked(Id),
}

/// A broken disk, to show that the crash-state check catches what it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Mutation {
    #[default]
    None,
    /// `fdatasync` returns at once and keeps nothing: as if a line were answered before its sync.
    SkipDataSync,
    /// A directory fsync keeps nothing: new and renamed files are not durable.
    SkipDirSync,
    /// A file's `fsync` keeps nothing: as if recovery and sealing made nothing durable.
    SkipFullSync,
}

#[derive(Debug)]
struct State {
    base: Image,
    now: Image,
    log: Vec<Op>,
    locked: HashSet<PathBuf>,
    mutation: Mutation,
    /// Every rename fails while this is set: a seal or a publish that cannot finish.
    renames_fail: bool,
    /// Every `fdatasync` fails while this is set (and keeps nothing).
    data_syncs_fail: bool,
    /// Every `fsync` fails while this is set (and keeps nothing).
    full_syncs_fail: bool,
    /// Writes of zeros only fail with `StorageFull` while this is set: a disk with room for the
    /// lines but not for the zeros written ahead of them.
    zeros_fail: bool,
    /// The process is killed at the next step of this kind (the step is not taken).
    kill: Option<Kill>,
}

/// A step at which the simulated process is killed, by a panic that unwinds the writer. What
/// it wrote stays in the page cache, where the next start finds it; the crash states decide
/// what of it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kill {
    BeforeDataSync,
    BeforeDirSync,
}

/// The panic payload of a simulated kill.
#[derive(Debug)]
pub(super) struct Killed;

/// The simulated disk. Clones share it.
#[derive(Debug, Clone)]
pub(super) struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    pub fn new(image: Image, mutation: Mutation) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(State {
            base: image.clone(),
            now: image,
            log: Vec::new(),
            locked: HashSet::new(),
            mutation,
            renames_fail: false,
            data_syncs_fail: false,
            full_syncs_fail: false,
            zeros_fail: false,
            kill: None,
        })))
    }

    /// Makes `fdatasync` and `fsync` fail, or work again.
    pub fn fail_syncs(&self, data: bool, full: bool) {
        let mut state = self.0.lock().unwrap();
        state.data_syncs_fail = data;
        state.full_syncs_fail = full;
    }

    /// Makes writes of nothing but zeros fail with `StorageFull`, or work again.
    pub fn fail_zeros(&self, fail: bool) {
        self.0.lock().unwrap().zeros_fail = fail;
    }

    /// Kills the process at the next step of this kind.
    pub fn kill_at(&self, kill: Kill) {
        self.0.lock().unwrap().kill = Some(kill);
    }

    /// Takes back a kill that did not happen.
    pub fn disarm(&self) {
        self.0.lock().unwrap().kill = None;
    }

    /// Panics with `Killed` if the process is to be killed at this step.
    fn killed_at(&self, step: Kill) {
        let kill = {
            let mut state = self.0.lock().unwrap();
            if state.kill == Some(step) { state.kill.take() } else { None }
        };
        if kill.is_some() {
            std::panic::panic_any(Killed);
        }
    }

    pub fn fail_renames(&self, fail: bool) {
        self.0.lock().unwrap().renames_fail = fail;
    }

    pub fn shared(&self) -> Arc<dyn Disk> {
        Arc::new(self.clone())
    }

    /// Marks that the archive has answered `id` with success.
    pub fn acked(&self, id: Id) {
        self.0.lock().unwrap().log.push(Op::Acked(id));
    }

    /// Every id answered with success so far.
    pub fn acked_ids(&self) -> HashSet<Id> {
        let state = self.0.lock().unwrap();
        state.log.iter().filter_map(|op| if let Op::Acked(id) = op { Some(*id) } else { None }).collect()
    }

    pub fn now(&self) -> Image {
        self.0.lock().unwrap().now.clone()
    }

    /// The image it started from and every step since.
    pub fn trace(&self) -> (Image, Vec<Op>) {
        let state = self.0.lock().unwrap();
        (state.base.clone(), state.log.clone())
    }

    fn log(&self, op: Op) {
        let mut state = self.0.lock().unwrap();
        state.now.apply(&op, None);
        let skip = matches!((&op, state.mutation), (Op::SyncDir { .. }, Mutation::SkipDirSync));
        if !skip {
            state.log.push(op);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Image) -> T) -> T {
        f(&self.0.lock().unwrap().now)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        for dir in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match self.with(|i| i.node(dir)) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(io::Error::other(format!("{} is a file", dir.display()))),
                None => {
                    let (parent, name) = split(dir).ok_or_else(|| not_found(dir))?;
                    self.log(Op::Link { dir: parent.to_owned(), name: name.to_owned(), node: Node::Dir });
                }
            }
        }
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.with(|i| i.node(path) == Some(Node::Dir))
    }

    fn exists(&self, path: &Path) -> bool {
        self.with(|i| i.node(path).is_some())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        self.with(|i| {
            let entries = i.dirs.get(path).ok_or_else(|| not_found(path))?;
            Ok(entries.iter().map(|(name, node)| (name.clone(), *node == Node::Dir)).collect())
        })
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn DiskFile>> {
        let (dir, name) = split(path).ok_or_else(|| not_found(path))?;
        let found = self.with(|i| (i.dirs.contains_key(dir), i.node(path)));
        let ino = match (found, how) {
            ((false, _), _) => return Err(not_found(dir)),
            ((_, Some(Node::Dir)), _) => return Err(io::Error::other(format!("{} is a directory", path.display()))),
            ((_, Some(Node::File(_))), Open::CreateNew) => return Err(io::ErrorKind::AlreadyExists.into()),
            ((_, Some(Node::File(ino))), Open::Existing) => ino,
            ((_, Some(Node::File(ino))), Open::Truncate) => {
                self.log(Op::SetLen { ino, len: 0 });
                ino
            }
            ((_, None), Open::Existing) => return Err(not_found(path)),
            ((_, None), Open::CreateNew | Open::Truncate) => {
                let ino = self.with(|i| i.files.len());
                self.log(Op::Link { dir: dir.to_owned(), name: name.to_owned(), node: Node::File(ino) });
                ino
            }
        };
        Ok(Box::new(SimFile { disk: self.clone(), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (dir, from_name) = split(from).ok_or_else(|| not_found(from))?;
        let (to_dir, to_name) = split(to).ok_or_else(|| not_found(to))?;
        assert_eq!(dir, to_dir, "the archive renames within a directory");
        if self.0.lock().unwrap().renames_fail {
            return Err(io::Error::other("EIO (injected)"));
        }
        if !self.exists(from) {
            return Err(not_found(from));
        }
        self.log(Op::Rename { dir: dir.to_owned(), from: from_name.to_owned(), to: to_name.to_owned() });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path).ok_or_else(|| not_found(path))?;
        match self.with(|i| i.node(path)) {
            Some(Node::File(_)) => {
                self.log(Op::Unlink { dir: dir.to_owned(), name: name.to_owned() });
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if !self.is_dir(path) {
            return Err(not_found(path));
        }
        self.killed_at(Kill::BeforeDirSync);
        self.log(Op::SyncDir { dir: path.to_owned() });
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send>> {
        if !self.0.lock().unwrap().locked.insert(path.to_owned()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(Unlock { disk: self.clone(), path: path.to_owned() }))
    }
}

struct Unlock {
    disk: SimDisk,
    path: PathBuf,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        self.disk.0.lock().unwrap().locked.remove(&self.path);
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: usize,
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.with(|i| i.files[self.ino].len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(self.disk.with(|i| {
            let file = &i.files[self.ino];
            let start = (offset as usize).min(file.len());
            let n = buf.len().min(file.len() - start);
            buf[..n].copy_from_slice(&file[start..start + n]);
            n
        }))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.disk.0.lock().unwrap().zeros_fail && buf.iter().all(|&b| b == 0) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "ENOSPC (injected)"));
        }
        self.disk.log(Op::Write { ino: self.ino, at: offset, data: buf.to_vec() });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.log(Op::SetLen { ino: self.ino, len });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.disk.0.lock().unwrap().data_syncs_fail {
            return Err(io::Error::other("EIO (injected)"));
        }
        self.disk.killed_at(Kill::BeforeDataSync);
        if self.disk.0.lock().unwrap().mutation != Mutation::SkipDataSync {
            self.disk.log(Op::Sync { ino: self.ino });
        }
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        let (fail, skip) = {
            let state = self.disk.0.lock().unwrap();
            (state.full_syncs_fail, state.mutation == Mutation::SkipFullSync)
        };
        if fail {
            return Err(io::Error::other("EIO (injected)"));
        }
        if !skip {
            self.disk.log(Op::Sync { ino: self.ino });
        }
        Ok(())
    }
}

/// The crash states the disk allows after the first `end` steps of `log`, from `base`:
/// - only what is durable;
/// - that and each prefix of the steps that are not, in order;
/// - for each such prefix that ends with a write, that write torn at its first and last
///   512-byte and 4 KiB boundaries, and that write with any one of its sectors or pages lost
///   (holding what it held before) while the rest of it is kept;
/// - every unsynced write and truncate, and no unsynced directory entry.
pub(super) fn crash_states(base: &Image, log: &[Op], end: usize) -> Vec<Image> {
    states(base, log, end, Family::All)
}

/// The states of `crash_states` without a hole.
pub(super) fn whole_block_states(base: &Image, log: &[Op], end: usize) -> Vec<Image> {
    states(base, log, end, Family::WholeBlocks)
}

/// The states of `crash_states` with a hole.
pub(super) fn hole_states(base: &Image, log: &[Op], end: usize) -> Vec<Image> {
    states(base, log, end, Family::Holes)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    All,
    WholeBlocks,
    Holes,
}

fn states(base: &Image, log: &[Op], end: usize, family: Family) -> Vec<Image> {
    let ops = &log[..end];
    let mut durable = vec![false; ops.len()];
    let mut synced_files = HashSet::new();
    let mut synced_dirs = HashSet::new();
    for (k, op) in ops.iter().enumerate().rev() {
        durable[k] = match op {
            Op::Sync { ino } => {
                synced_files.insert(*ino);
                true
            }
            Op::SyncDir { dir } => {
                synced_dirs.insert(dir.clone());
                true
            }
            Op::Acked(_) => true,
            Op::Write { ino, .. } | Op::SetLen { ino, .. } => synced_files.contains(ino),
            Op::Link { dir, .. } | Op::Unlink { dir, .. } | Op::Rename { dir, .. } => synced_dirs.contains(dir),
        };
    }
    let pending: Vec<usize> = (0..ops.len()).filter(|&k| !durable[k]).collect();
    let build = |kept: &dyn Fn(usize) -> bool, torn: Option<(usize, usize)>| {
        let mut image = base.clone();
        for (k, op) in ops.iter().enumerate() {
            if durable[k] || kept(k) {
                image.apply(op, torn.filter(|(at, _)| *at == k).map(|(_, n)| n));
            }
        }
        image
    };
    let whole = family != Family::Holes;
    let mut states = Vec::new();
    if whole {
        states.push(build(&|_| false, None));
    }
    for n in 1..=pending.len() {
        let last = pending[n - 1];
        let kept = |k: usize| k <= last;
        let Op::Write { ino, at, data } = &ops[last] else {
            if whole {
                states.push(build(&kept, None));
            }
            continue;
        };
        if whole {
            states.push(build(&kept, None));
            for cut in tears(*at, data.len()) {
                states.push(build(&kept, Some((last, cut))));
            }
        }
        if family != Family::WholeBlocks {
            // The write kept whole, with a block of it put back as the state before it held it
            // (zeros past the file's old end). No later step in the state touches this file's
            // data: a later durable one would have needed a sync that made this write durable.
            let (whole, before) = (build(&kept, None), build(&|k| k < last, None));
            let old = before.files.get(*ino).map_or(&[][..], Vec::as_slice);
            let at = *at as usize;
            for hole in holes(at as u64, data.len()) {
                let was: Vec<u8> = (at + hole.start..at + hole.end).map(|i| old.get(i).copied().unwrap_or(0)).collect();
                if was != data[hole.clone()] {
                    let mut image = whole.clone();
                    image.files[*ino][at + hole.start..at + hole.end].copy_from_slice(&was);
                    states.push(image);
                }
            }
        }
    }
    let data_only = |k: usize| matches!(ops[k], Op::Write { .. } | Op::SetLen { .. });
    if whole && pending.iter().any(|&k| !data_only(k)) {
        states.push(build(&data_only, None));
    }
    states
}

/// The blocks of a write of `len` bytes at `at` that the disk may lose while keeping the rest:
/// each 512-byte sector and each 4 KiB page it touches, as byte ranges of the write.
fn holes(at: u64, len: usize) -> Vec<std::ops::Range<usize>> {
    let end = at + len as u64;
    let mut holes = Vec::new();
    for block in [512u64, 4096] {
        let mut start = at / block * block;
        while start < end {
            let from = start.max(at) - at;
            let to = (start + block).min(end) - at;
            holes.push(from as usize..to as usize);
            start += block;
        }
    }
    holes.sort_by_key(|h| (h.start, h.end));
    holes.dedup();
    holes
}

/// Where a write of `len` bytes at `at` can be torn: its first and last 512 B and 4 KiB
/// boundaries inside it, as byte counts kept.
fn tears(at: u64, len: usize) -> Vec<usize> {
    let end = at + len as u64;
    let mut cuts = Vec::new();
    for block in [512u64, 4096] {
        let first = (at / block + 1) * block;
        let last = (end - 1) / block * block;
        for boundary in [first, last] {
            if boundary > at && boundary < end {
                cuts.push((boundary - at) as usize);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tears_fall_on_sector_and_page_boundaries() {
        assert_eq!(tears(0, 100), Vec::<usize>::new());
        assert_eq!(tears(0, 1000), [512]);
        assert_eq!(tears(100, 5000), [412, 3996, 4508]);
    }

    #[test]
    fn holes_are_every_sector_and_every_page() {
        assert_eq!((holes(0, 100).len(), holes(0, 100)[0].clone()), (1, 0..100));
        assert_eq!(holes(100, 1000), [0..412, 0..1000, 412..924, 924..1000]);
        assert_eq!(holes(0, 5000).len(), 10 + 2);
    }

    #[test]
    fn a_hole_keeps_what_was_there_and_the_blocks_after_it() {
        let root = PathBuf::from("/a");
        let disk = SimDisk::new(Image::with_dir(&root), Mutation::None);
        disk.sync_dir(&root).unwrap();
        let file = disk.open(&root.join("f"), Open::CreateNew).unwrap();
        disk.sync_dir(&root).unwrap();
        file.write_all_at(&[b'a'; 600], 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(&[b'b'; 1200], 400).unwrap();
        let (base, log) = disk.trace();
        let states = crash_states(&base, &log, log.len());
        let mut expected = [b'a'; 600].to_vec();
        expected.extend_from_slice(&[0; 1000]);
        expected[400..512].fill(b'b');
        expected[1024..1600].fill(b'b');
        assert!(states.iter().any(|s| s.read(&root.join("f")) == Some(&expected[..])), "sector 512..1024 lost");
    }

    #[test]
    fn only_synced_steps_survive_in_the_durable_state() {
        let root = PathBuf::from("/a");
        let disk = SimDisk::new(Image::with_dir(&root), Mutation::None);
        let file = disk.open(&root.join("f"), Open::CreateNew).unwrap();
        file.write_all_at(b"one", 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(b"two", 3).unwrap();
        let (base, log) = disk.trace();
        let states = crash_states(&base, &log, log.len());
        // The entry was never made durable: the durable state has no file at all.
        assert_eq!(states[0].read(&root.join("f")), None);
        disk.sync_dir(&root).unwrap();
        let (base, log) = disk.trace();
        let states = crash_states(&base, &log, log.len());
        assert_eq!(states[0].read(&root.join("f")), Some(&b"one"[..]));
        assert!(states.iter().any(|s| s.read(&root.join("f")) == Some(&b"onetwo"[..])));
    }
}
