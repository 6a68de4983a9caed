//! The seam under the local archive: every step that touches the disk (create, write, truncate,
//! `fdatasync`, rename, remove, directory fsync) goes through `Disk`. Production uses the real
//! file system; the crash-state tests put a simulated one here that keeps what is durable apart
//! from what is not (`tests/sim.rs`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// An existing file, to read and write.
    Existing,
    /// A new file; `AlreadyExists` if the name is taken.
    CreateNew,
    /// A new or emptied file.
    Truncate,
}

/// The file system operations the archive uses, and nothing more.
pub(crate) trait Disk: Send + Sync + fmt::Debug {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn is_dir(&self, path: &Path) -> bool;
    fn exists(&self, path: &Path) -> bool;
    /// The UTF-8 names in a directory, each with whether it is a directory itself.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>>;
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn DiskFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable: a new file or a rename is durable only after this.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock held until the returned guard is dropped. Another holder is
    /// `WouldBlock`.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send>>;
}

/// An open file.
pub(crate) trait DiskFile: Send + fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data, and its size, are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: the data and all of the file's metadata are durable.
    fn sync_all(&self) -> io::Result<()>;
}

/// A file read from `pos` on, through `read_at`.
pub(crate) struct Reader<'a> {
    pub file: &'a dyn DiskFile,
    pub pos: u64,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct RealDisk;

impl RealDisk {
    pub(crate) fn shared() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push((name, entry.file_type()?.is_dir()));
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn DiskFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match how {
            Open::Existing => {}
            Open::CreateNew => {
                options.create_new(true);
            }
            Open::Truncate => {
                options.create(true).truncate(true);
            }
        }
        Ok(Box::new(RealFile(options.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send>> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        file.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
            fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(file))
    }
}

#[derive(Debug)]
struct RealFile(File);

impl DiskFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}
