//! Reading a snapshot's data: once it is finished, or while its writer is still writing it.
//!
//! A [`SnapshotReader`] hashes (BLAKE3) and counts every byte it hands out, and
//! [`SnapshotReader::verify`] compares them with the record; nothing restored from it may
//! be used before that check passes.
//!
//! Following ([`SnapshotReader::follow`]) is one code path for every store: it reads the
//! data object as far as the store shows it ([`SnapshotStore::open_unfinished`]: a
//! directory shows the growing `.partial` file; S3 shows nothing until the upload is
//! complete) and ends when the record exists and everything up to the recorded size has
//! been read (a store that shows nothing early is then read whole). Polling is cheap: at
//! the end of what is there, one small read of the record and one of the manifest every
//! [`FollowSettings::poll`]. Memory stays flat: bytes pass through the caller's buffer.
//!
//! A snapshot that will never be finished is reported as
//! [`AgentError::SnapshotAbandoned`], never waited for forever:
//! - its manifest was seen and is gone, with no record: the writer failed and removed what
//!   it wrote, the writer's agent restarted and cleaned up, or the snapshot was deleted;
//! - no sign of life for [`FollowSettings::stall`]: no new bytes, no new manifest beat (the
//!   writer's agent rewrites it every second while it writes, whatever its tool does), no
//!   manifest at all since the follower started (the source never began).

use super::{SnapshotManifest, SnapshotStore, data_object, read_manifest, read_record};
use crate::error::{AgentError, Result};
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo};
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How a follower watches a snapshot being written.
#[derive(Clone, Copy, Debug)]
pub struct FollowSettings {
    /// How often to look again at the end of what has been written.
    pub poll: Duration,
    /// How long without any sign of life from the writer before giving up.
    pub stall: Duration,
}

/// A snapshot's data as a stream, hashed and counted on the way.
pub struct SnapshotReader {
    store: Arc<dyn SnapshotStore>,
    snapshot_id: Uuid,
    data: Option<Box<dyn Read + Send>>,
    /// The record: given for a finished snapshot, read from the store when following.
    record: Option<SnapshotInfo>,
    hasher: blake3::Hasher,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
    /// Set while following an unfinished snapshot.
    watch: Option<Watch>,
    /// Why reading failed, when the store or the watch said so (typed, for the caller).
    failure: Option<AgentError>,
}

struct Watch {
    settings: FollowSettings,
    /// The manifest as last seen.
    manifest: Option<SnapshotManifest>,
    last_sign: Instant,
}

impl SnapshotReader {
    /// Reads the finished snapshot `info` describes.
    pub fn finished(store: Arc<dyn SnapshotStore>, info: SnapshotInfo) -> Result<SnapshotReader> {
        let data = store.open(&data_object(info.snapshot_id))?;
        Ok(SnapshotReader {
            snapshot_id: info.snapshot_id,
            data: Some(data),
            record: Some(info),
            ..SnapshotReader::empty(store, Uuid::nil())
        })
    }

    /// Follows snapshot `snapshot_id`, finished or not. Blocks until its format is known
    /// (from its manifest, written before any data, or its record), and answers with it.
    pub fn follow(
        store: Arc<dyn SnapshotStore>,
        snapshot_id: Uuid,
        settings: FollowSettings,
    ) -> Result<(SnapshotReader, SnapshotFormat)> {
        let mut reader = SnapshotReader::empty(store, snapshot_id);
        reader.watch = Some(Watch {
            settings,
            manifest: None,
            last_sign: Instant::now(),
        });
        loop {
            reader.look()?;
            let format = match (&reader.record, &reader.watch) {
                (Some(record), _) => Some(record.format),
                (None, Some(watch)) => watch.manifest.as_ref().map(|m| m.format),
                (None, None) => None,
            };
            if let Some(format) = format {
                return Ok((reader, format));
            }
            std::thread::sleep(settings.poll);
        }
    }

    fn empty(store: Arc<dyn SnapshotStore>, snapshot_id: Uuid) -> SnapshotReader {
        SnapshotReader {
            store,
            snapshot_id,
            data: None,
            record: None,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            progress: None,
            watch: None,
            failure: None,
        }
    }

    pub fn snapshot_id(&self) -> Uuid {
        self.snapshot_id
    }

    /// The snapshot's size, once its record is known.
    pub fn expected_size(&self) -> Option<u64> {
        self.record.as_ref().map(|info| info.size_bytes)
    }

    /// Adds every byte read to `counter` (progress reports).
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> SnapshotReader {
        self.progress = Some(counter);
        self
    }

    /// Why the last read failed, when the snapshot (not the caller's side) was at fault.
    pub fn take_failure(&mut self) -> Option<AgentError> {
        self.failure.take()
    }

    /// Compares what was read with the record; answers with the record when they match.
    /// Read to the end first.
    pub fn verify(&self) -> Result<SnapshotInfo> {
        let Some(info) = &self.record else {
            return Err(AgentError::SnapshotMismatch(format!(
                "snapshot {} has no record yet: it is not finished; refusing to restore it",
                self.snapshot_id
            )));
        };
        let blake3 = self.hasher.finalize().to_hex().to_string();
        check_digest(info, self.bytes, &blake3)?;
        Ok(info.clone())
    }

    /// One look at the store: the record, the manifest, the data object, the stall limit.
    /// Answers whether anything new turned up.
    fn look(&mut self) -> Result<bool> {
        let Some(watch) = self.watch.as_mut() else {
            return Ok(false);
        };
        let store = self.store.as_ref();
        let id = self.snapshot_id;
        let mut record = read_record(store, id)?;
        if record.is_none() {
            match read_manifest(store, id)? {
                Some(manifest) if watch.manifest.as_ref() != Some(&manifest) => {
                    watch.manifest = Some(manifest);
                    watch.last_sign = Instant::now();
                }
                Some(_) => {}
                None if watch.manifest.is_some() => {
                    // Gone: unless the writer finished in between, it gave up.
                    record = read_record(store, id)?;
                    if record.is_none() {
                        return Err(AgentError::SnapshotAbandoned(format!(
                            "snapshot {id} was abandoned before it was finished: its writer \
                             failed, its agent restarted, or it was deleted"
                        )));
                    }
                }
                None => {}
            }
        }
        if let Some(record) = record {
            if record.snapshot_id != id {
                return Err(AgentError::SnapshotMismatch(format!(
                    "the record of snapshot {id} names snapshot {}",
                    record.snapshot_id
                )));
            }
            if self.data.is_none() {
                self.data = Some(store.open(&data_object(id))?);
            }
            self.record = Some(record);
            return Ok(true);
        }
        if self.data.is_none()
            && let Some(data) = store.open_unfinished(&data_object(id))?
        {
            self.data = Some(data);
            watch.last_sign = Instant::now();
            return Ok(true);
        }
        let quiet = watch.last_sign.elapsed();
        if quiet > watch.settings.stall {
            let what = if watch.manifest.is_some() {
                "its writer showed no sign of life (no new bytes, no manifest beat)"
            } else {
                "it did not start (no manifest)"
            };
            return Err(AgentError::SnapshotAbandoned(format!(
                "snapshot {id} was abandoned: {what} for {:.0?} ({} bytes read); is its source's agent running?",
                quiet, self.bytes
            )));
        }
        Ok(false)
    }

    fn count(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        if let Some(watch) = self.watch.as_mut() {
            watch.last_sign = Instant::now();
        }
        if let Some(progress) = &self.progress {
            progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(data) = self.data.as_mut() {
                let n = data.read(buf)?;
                if n > 0 {
                    self.count(&buf[..n]);
                    return Ok(n);
                }
                // With the record known, the end of the data is the end of the snapshot
                // (the record is written after the data is complete).
                if self.record.is_some() {
                    return Ok(0);
                }
            }
            let Some(poll) = self.watch.as_ref().map(|w| w.settings.poll) else {
                return Ok(0);
            };
            match self.look() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(poll),
                Err(err) => {
                    let message = err.to_string();
                    self.failure = Some(err);
                    return Err(io::Error::other(message));
                }
            }
        }
    }
}

/// Compares `size` bytes with BLAKE3 `blake3` with what `info` says.
pub(crate) fn check_digest(info: &SnapshotInfo, size: u64, blake3: &str) -> Result<()> {
    if size != info.size_bytes || !blake3.eq_ignore_ascii_case(&info.blake3) {
        return Err(AgentError::SnapshotMismatch(format!(
            "snapshot {} does not match its record: read {size} bytes with BLAKE3 {blake3}, expected {} bytes with BLAKE3 {}; refusing to restore it",
            info.snapshot_id, info.size_bytes, info.blake3
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DirectoryStore, ObjectWriter, info_object, manifest_object};
    use std::io::Write;

    const FAST: FollowSettings = FollowSettings {
        poll: Duration::from_millis(5),
        stall: Duration::from_millis(400),
    };

    fn manifest(id: Uuid, beat: u64) -> Vec<u8> {
        serde_json::to_vec(&SnapshotManifest {
            snapshot_id: id,
            format: SnapshotFormat::PhysicalXbstream,
            beat,
        })
        .unwrap()
    }

    fn record(id: Uuid, data: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&SnapshotInfo {
            snapshot_id: id,
            format: SnapshotFormat::PhysicalXbstream,
            gtid_pos: "0-1-1".into(),
            size_bytes: data.len() as u64,
            blake3: blake3::hash(data).to_hex().to_string(),
        })
        .unwrap()
    }

    /// A snapshot `id` being written: its manifest, and `first` bytes of data.
    fn started(store: &dyn SnapshotStore, id: Uuid, first: &[u8]) -> Box<dyn ObjectWriter> {
        store
            .write_small(&manifest_object(id), &manifest(id, 0))
            .unwrap();
        let mut writer = store.create(&data_object(id)).unwrap();
        writer.write_all(first).unwrap();
        writer.flush().unwrap();
        writer
    }

    fn store() -> (tempfile::TempDir, Arc<dyn SnapshotStore>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(DirectoryStore::new(&tmp.path().join("snaps")));
        (tmp, store)
    }

    #[test]
    fn a_follower_reads_while_the_writer_writes_and_ends_with_the_record() {
        let (_tmp, store) = store();
        let id = Uuid::now_v7();
        let mut writer = started(store.as_ref(), id, b"early bytes; ");
        let (mut reader, format) = SnapshotReader::follow(store.clone(), id, FAST).unwrap();
        assert_eq!(format, SnapshotFormat::PhysicalXbstream);
        let mut first = [0u8; 64];
        let n = reader.read(&mut first).unwrap();
        assert_eq!(
            &first[..n],
            b"early bytes; ",
            "read before the snapshot is finished"
        );
        let writing = {
            let store = store.clone();
            std::thread::spawn(move || {
                for beat in 1..4 {
                    std::thread::sleep(Duration::from_millis(100));
                    writer.write_all(b"more ").unwrap();
                    writer.flush().unwrap();
                    store
                        .write_small(&manifest_object(id), &manifest(id, beat))
                        .unwrap();
                }
                writer.finish().unwrap();
                let all = b"early bytes; more more more ";
                store
                    .write_small(&info_object(id), &record(id, all))
                    .unwrap();
            })
        };
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        writing.join().unwrap();
        assert_eq!(rest, b"more more more ");
        let info = reader.verify().unwrap();
        assert_eq!(info.size_bytes, 28);
    }

    #[test]
    fn a_finished_snapshot_is_followed_to_its_end_at_once() {
        let (_tmp, store) = store();
        let id = Uuid::now_v7();
        let mut writer = store.create(&data_object(id)).unwrap();
        writer.write_all(b"all of it").unwrap();
        writer.finish().unwrap();
        store
            .write_small(&info_object(id), &record(id, b"all of it"))
            .unwrap();
        let (mut reader, _) = SnapshotReader::follow(store.clone(), id, FAST).unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"all of it");
        reader.verify().unwrap();
    }

    #[test]
    fn a_snapshot_whose_writer_gives_up_fails_its_follower() {
        let (_tmp, store) = store();
        let id = Uuid::now_v7();
        let writer = started(store.as_ref(), id, b"half");
        let (mut reader, _) = SnapshotReader::follow(store.clone(), id, FAST).unwrap();
        // The writer fails: its data goes, then its manifest (as snapshot::create does).
        drop(writer);
        store.delete(&manifest_object(id)).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("abandoned"), "{err}");
        assert!(matches!(
            reader.take_failure(),
            Some(AgentError::SnapshotAbandoned(_))
        ));
        assert!(
            reader.verify().is_err(),
            "an unfinished snapshot never verifies"
        );
    }

    #[test]
    fn a_snapshot_that_stops_growing_or_never_starts_fails_its_follower() {
        let (_tmp, store) = store();
        let id = Uuid::now_v7();
        let writer = started(store.as_ref(), id, b"stuck");
        let (mut reader, _) = SnapshotReader::follow(store.clone(), id, FAST).unwrap();
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no sign of life"), "{err}");
        drop(writer);

        let never = Uuid::now_v7();
        let err = SnapshotReader::follow(store.clone(), never, FAST)
            .err()
            .unwrap();
        assert!(
            matches!(&err, AgentError::SnapshotAbandoned(m) if m.contains("did not start")),
            "{err}"
        );
    }

    #[test]
    fn a_follower_refuses_bytes_that_do_not_match_the_record() {
        let (_tmp, store) = store();
        let id = Uuid::now_v7();
        let mut writer = store.create(&data_object(id)).unwrap();
        writer.write_all(b"tampered").unwrap();
        writer.finish().unwrap();
        store
            .write_small(&info_object(id), &record(id, b"original"))
            .unwrap();
        let (mut reader, _) = SnapshotReader::follow(store, id, FAST).unwrap();
        reader.read_to_end(&mut Vec::new()).unwrap();
        assert!(matches!(
            reader.verify(),
            Err(AgentError::SnapshotMismatch(_))
        ));
    }
}
