//! Streams that count what passes (for progress) and hash it (for integrity), and the
//! copy loop the snapshot and restore pipes use. Reading a stored snapshot back is hashed
//! by [`crate::store::SnapshotReader`].

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hashes and counts the bytes written through it, and adds them to a progress counter.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W, progress: Option<Arc<AtomicU64>>) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            progress,
        }
    }

    /// Bytes written and their BLAKE3 (lowercase hex).
    pub(crate) fn digest(&self) -> (u64, String) {
        (self.bytes, self.hasher.finalize().to_hex().to_string())
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

/// Counts the bytes written through it into a progress counter (no hashing).
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) progress: Option<Arc<AtomicU64>>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(progress) = &self.progress {
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What one read or write of a copy moves at most: large, so that a pipe to a tool or a
/// store object moves in few system calls (`std::io::copy` moves 8 KiB at a time).
const COPY_BUFFER: usize = 1 << 20;

/// Copies `from` into `to` until `from` ends, [`COPY_BUFFER`] bytes at a time; answers
/// with the bytes copied. The buffer is allocated once per copy.
pub(crate) fn copy_large(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
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
    fn writes_are_hashed_counted_and_copied_whole() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut writer = HashingWriter::new(Vec::new(), Some(counter.clone()));
        let input: Vec<u8> = (0..3 * COPY_BUFFER + 5).map(|i| i as u8).collect();
        let copied = copy_large(&mut &input[..], &mut writer).unwrap();
        assert_eq!(copied, input.len() as u64);
        assert_eq!(writer.inner, input);
        let expected = blake3::hash(&input).to_hex().to_string();
        assert_eq!(writer.digest(), (input.len() as u64, expected));
        assert_eq!(counter.load(Ordering::Relaxed), input.len() as u64);
    }
}
