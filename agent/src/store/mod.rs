//! Where snapshots are kept: one trait, a directory (one host, or a mount every host
//! shares) and S3-compatible object storage (hosts that share no disk).
//!
//! A snapshot is three objects: `<id>.started` (its [`SnapshotManifest`]: the format,
//! written before any byte of data and rewritten every second while the snapshot is being
//! taken), `<id>.data` (the stream the snapshot tool wrote) and `<id>.json` (its
//! [`ferrotrove_proto::agent::SnapshotInfo`], written last). An object is written through
//! an [`ObjectWriter`] and becomes visible under its name only when
//! [`ObjectWriter::finish`] succeeds; a writer dropped unfinished (its writer died, the
//! disk filled) leaves nothing a reader could take for a snapshot. Objects are streamed in
//! both directions, never held whole in memory.
//!
//! A [`SnapshotReader`] reads a snapshot's data, either once it is finished or while it is
//! still being written ([`SnapshotReader::follow`], see [`follow`]).
//!
//! The interface is blocking (`std::io`): snapshot and restore run on blocking threads,
//! between child processes' pipes.

mod directory;
pub mod follow;
mod s3;

pub use directory::DirectoryStore;
pub use follow::{FollowSettings, SnapshotReader};
pub use s3::{S3Settings, S3Store};

use crate::error::Result;
use std::io::{Read, Write};

/// A place to put snapshot objects.
pub trait SnapshotStore: Send + Sync {
    /// Starts writing object `name`.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Reads object `name` as a stream; `NotFound` when it does not exist.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>>;
    /// Reads object `name` while it may still be written: a reader that returns what has
    /// been written so far and more on later reads (end of file only means "nothing more
    /// yet"). `None` when nothing of it is visible: not started, or a store whose objects
    /// appear only once finished (S3), whose readers wait for the record instead.
    fn open_unfinished(&self, _name: &str) -> Result<Option<Box<dyn Read + Send>>> {
        Ok(None)
    }
    /// Reads a small object whole; `None` when it does not exist.
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a small object whole, replacing it, durably.
    fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Replaces a small object whole, not necessarily durably (a snapshot manifest's
    /// beats: frequent, and worthless after a crash).
    fn replace_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_small(name, bytes)
    }
    /// Removes object `name`, and what an unfinished writer of it left; absent is fine.
    fn delete(&self, name: &str) -> Result<()>;
    /// Where the store is, for logs and errors (never with credentials).
    fn describe(&self) -> String;
}

/// A stream being written into the store.
pub trait ObjectWriter: Write + Send {
    /// Makes the object visible under its name, durably.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// The names of one snapshot's objects.
pub fn data_object(snapshot_id: uuid::Uuid) -> String {
    format!("{snapshot_id}.data")
}

pub fn info_object(snapshot_id: uuid::Uuid) -> String {
    format!("{snapshot_id}.json")
}

pub fn manifest_object(snapshot_id: uuid::Uuid) -> String {
    format!("{snapshot_id}.started")
}

/// Reads snapshot `snapshot_id`'s record; `None` until it exists (the snapshot is finished).
pub fn read_record(
    store: &dyn SnapshotStore,
    snapshot_id: uuid::Uuid,
) -> Result<Option<ferrotrove_proto::agent::SnapshotInfo>> {
    read_json(store, &info_object(snapshot_id), "record")
}

/// Reads snapshot `snapshot_id`'s manifest; `None` when there is none (not started, or
/// abandoned, or deleted).
pub fn read_manifest(
    store: &dyn SnapshotStore,
    snapshot_id: uuid::Uuid,
) -> Result<Option<SnapshotManifest>> {
    read_json(store, &manifest_object(snapshot_id), "manifest")
}

fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn SnapshotStore,
    name: &str,
    what: &str,
) -> Result<Option<T>> {
    store
        .read_small(name)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|err| {
                crate::error::AgentError::Internal(format!(
                    "{name} in {} is not a snapshot {what}: {err}",
                    store.describe()
                ))
            })
        })
        .transpose()
}

/// What a snapshot's writer says before its first byte, and again every
/// [`MANIFEST_BEAT`] while it writes: the format (so that a reader can start before the
/// record exists) and a beat count (so that a reader can tell a live writer from a dead
/// one without comparing clocks across hosts). Kept until the snapshot is deleted; removed
/// with the data when the writer fails.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotManifest {
    pub snapshot_id: uuid::Uuid,
    pub format: ferrotrove_proto::agent::SnapshotFormat,
    /// Rises with every rewrite.
    pub beat: u64,
}

/// How often a snapshot's writer rewrites its manifest.
pub const MANIFEST_BEAT: std::time::Duration = std::time::Duration::from_secs(1);
