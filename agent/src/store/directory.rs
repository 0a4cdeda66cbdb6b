//! Snapshots as files in a directory: `<name>.partial` while written, renamed into place
//! once finished. A reader may follow `<name>.partial` while it grows: the rename keeps
//! the file (its inode), so an open reader reads on into the finished object.
//!
//! Finishing does not fsync the data: the record (written after it, durably) holds its
//! BLAKE3, which every reader checks before the data is used, so data torn by a power
//! loss is refused, never used; and a seeding snapshot lives only while its replicas
//! restore it. Its name is synced into the directory.

use super::{ObjectWriter, SnapshotStore};
use crate::error::{AgentError, Result};
use crate::fsutil;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of the directory and its files: snapshots hold password hashes.
const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;

pub struct DirectoryStore {
    dir: PathBuf,
}

impl DirectoryStore {
    pub fn new(dir: &Path) -> DirectoryStore {
        DirectoryStore {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn partial(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.partial"))
    }
}

struct FileWriter {
    file: BufWriter<fs::File>,
    partial: PathBuf,
    target: PathBuf,
    finished: bool,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl ObjectWriter for FileWriter {
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.file
            .flush()
            .map_err(|err| AgentError::io("write", &self.partial, err))?;
        fs::rename(&self.partial, &self.target)
            .map_err(|err| AgentError::io("rename into place", &self.target, err))?;
        fsutil::sync_parent_dir(&self.target)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.finished
            && let Err(err) = fsutil::remove_if_exists(&self.partial)
        {
            tracing::warn!(error = %err, "cannot remove an unfinished snapshot file");
        }
    }
}

impl SnapshotStore for DirectoryStore {
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        fsutil::create_dir_with_mode(&self.dir, DIR_MODE)?;
        let partial = self.partial(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&partial)
            .map_err(|err| AgentError::io("create", &partial, err))?;
        Ok(Box::new(FileWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            partial,
            target: self.path(name),
            finished: false,
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let path = self.path(name);
        match fs::File::open(&path) {
            Ok(file) => Ok(Box::new(file)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(AgentError::NotFound(
                format!("snapshot object {} is not in the store", path.display()),
            )),
            Err(err) => Err(AgentError::io("open", &path, err)),
        }
    }

    fn open_unfinished(&self, name: &str) -> Result<Option<Box<dyn Read + Send>>> {
        // The finished object first: a writer renames its partial file into place.
        for path in [self.path(name), self.partial(name)] {
            match fs::File::open(&path) {
                Ok(file) => return Ok(Some(Box::new(file))),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(AgentError::io("open", &path, err)),
            }
        }
        Ok(None)
    }

    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(AgentError::io("read", &path, err)),
        }
    }

    fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        fsutil::create_dir_with_mode(&self.dir, DIR_MODE)?;
        fsutil::write_atomic(&self.path(name), bytes, FILE_MODE)
    }

    fn replace_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        fsutil::create_dir_with_mode(&self.dir, DIR_MODE)?;
        fsutil::replace_atomic(&self.path(name), bytes, FILE_MODE)
    }

    fn delete(&self, name: &str) -> Result<()> {
        fsutil::remove_if_exists(&self.path(name))?;
        fsutil::remove_if_exists(&self.partial(name))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_appears_only_when_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(&tmp.path().join("snaps"));
        let mut writer = store.create("a.data").unwrap();
        writer.write_all(b"hello").unwrap();
        assert!(store.read_small("a.data").unwrap().is_none());
        writer.finish().unwrap();
        let mut back = String::new();
        store
            .open("a.data")
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "hello");

        // A writer that dies leaves nothing behind.
        let mut dying = store.create("b.data").unwrap();
        dying.write_all(b"half").unwrap();
        drop(dying);
        assert!(matches!(store.open("b.data"), Err(AgentError::NotFound(_))));
        let left: Vec<_> = fs::read_dir(tmp.path().join("snaps"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");

        store.delete("a.data").unwrap();
        store.delete("a.data").unwrap();
        assert!(store.read_small("a.data").unwrap().is_none());
    }

    #[test]
    fn an_unfinished_object_is_read_as_it_grows_and_on_into_the_finished_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(&tmp.path().join("snaps"));
        assert!(store.open_unfinished("c.data").unwrap().is_none());
        let mut writer = store.create("c.data").unwrap();
        writer.write_all(b"first ").unwrap();
        writer.flush().unwrap();
        let mut reader = store
            .open_unfinished("c.data")
            .unwrap()
            .expect("the partial file");
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first ");
        writer.write_all(b"second").unwrap();
        writer.finish().unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first second");
    }
}
