//! Streams that count what passes (for progress) and hash it (for integrity).

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hashes and counts the bytes written through it, and adds them to a progress counter.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    hasher: Sha256,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W, progress: Option<Arc<AtomicU64>>) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            progress,
        }
    }

    /// Bytes written and their SHA-256 (lowercase hex).
    pub(crate) fn digest(&self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.clone().finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(progress) = &self.progress {
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts the bytes read through it, and adds them to a progress counter.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<R> HashingReader<R> {
    pub(crate) fn new(inner: R, progress: Option<Arc<AtomicU64>>) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            progress,
        }
    }

    /// Bytes read and their SHA-256 (lowercase hex).
    pub(crate) fn digest(&self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(progress) = &self.progress {
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Counts the bytes read through it into a progress counter (no hashing: for streams that
/// are hashed further down the pipe).
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) progress: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The bytes under `dir`, an estimate of a snapshot's size for progress reports.
pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_agree() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut writer = HashingWriter::new(Vec::new(), Some(counter.clone()));
        writer.write_all(b"hello world").unwrap();
        let mut reader = HashingReader::new(&writer.inner[..], None);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert_eq!(writer.digest(), reader.digest());
        assert_eq!(writer.digest().0, 11);
        assert_eq!(counter.load(Ordering::Relaxed), 11);
    }
}
