//! Where snapshots are kept: one trait, a directory (one host, or a mount every host
//! shares) and S3-compatible object storage (hosts that share no disk).
//!
//! A snapshot is two objects: `<id>.data` (the stream the snapshot tool wrote) and
//! `<id>.json` (its [`ferrotrove_proto::agent::SnapshotInfo`], written last). An object is
//! written through an [`ObjectWriter`] and becomes visible under its name only when
//! [`ObjectWriter::finish`] succeeds; a writer dropped unfinished (its writer died, the
//! disk filled) leaves nothing a reader could take for a snapshot. Objects are streamed in
//! both directions, never held whole in memory.
//!
//! The interface is blocking (`std::io`): snapshot and restore run on blocking threads,
//! between child processes' pipes.

mod directory;
mod s3;

pub use directory::DirectoryStore;
pub use s3::{S3Settings, S3Store};

use crate::error::Result;
use std::io::{Read, Write};

/// A place to put snapshot objects.
pub trait SnapshotStore: Send + Sync {
    /// Starts writing object `name`.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Reads object `name` as a stream; `NotFound` when it does not exist.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>>;
    /// Reads a small object whole; `None` when it does not exist.
    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a small object whole, replacing it.
    fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()>;
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
