//! Snapshots in the snapshot store, and restoring them on a replica.
//!
//! Two methods: physical (the data files, by the backup tool: at the speed of the disk) and
//! logical (SQL, by the dump tool: slower, independent of the file format). A request picks
//! one or lets the agent choose (physical when the backup tool is installed).
//!
//! A snapshot is three objects in the store (see [`crate::store`]): a manifest (its
//! format, written before any data and rewritten every second while it is taken), the
//! data stream and its record ([`SnapshotInfo`]: format, size, BLAKE3 and GTID position),
//! written last. A snapshot is finished only once its record exists. A replica may start
//! restoring a snapshot that is still being taken ([`RestoreFrom::Following`]): it reads
//! the data as it is written and ends once the record is there; either way the record's
//! checksum is checked against every byte read back before a restored copy is used.
//!
//! The work runs on blocking threads, so the agent keeps answering Ping and Status and keeps
//! heartbeating (with progress) while a snapshot or restore runs.

mod logical;
mod metered;
mod physical;
mod tool;
mod xbstream;

pub use physical::BACKUP_OPTIONS;

use crate::config::Compression;
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::instance::Instance;
use crate::store::{
    FollowSettings, MANIFEST_BEAT, SnapshotManifest, SnapshotReader, SnapshotStore, data_object,
    info_object, manifest_object, read_record,
};
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo, SnapshotMethod, SnapshotRequest};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use uuid::Uuid;

/// Takes the snapshot `request` asks for. Taking a snapshot that already exists answers
/// with the stored one.
pub async fn create(instance: &Instance, request: &SnapshotRequest) -> Result<SnapshotInfo> {
    instance.require_prepared()?;
    let snapshot_id = request.snapshot_id;
    if deleted_marker(instance, snapshot_id).exists() {
        // A command delivered again after its caller gave up and deleted the snapshot
        // (the agent died while taking it): taking it now would leave an orphan.
        return Err(AgentError::Conflict(format!(
            "snapshot {snapshot_id} was deleted; ask for a new snapshot id"
        )));
    }
    if let Some(info) = read_info(instance, snapshot_id).await? {
        tracing::info!(%snapshot_id, "snapshot already taken");
        return Ok(info);
    }
    let backup = &instance.config.server.backup;
    let physical = match request.method {
        SnapshotMethod::Logical => false,
        SnapshotMethod::Auto => physical::available(backup),
        SnapshotMethod::Physical if physical::available(backup) => true,
        SnapshotMethod::Physical => {
            return Err(AgentError::Conflict(format!(
                "a physical snapshot needs {backup}, which cannot be run on this host; install mariadb-backup or ask for a logical snapshot"
            )));
        }
    };
    let format = match (physical, instance.config.snapshots.compression) {
        (false, _) => SnapshotFormat::LogicalSqlZstd,
        (true, Compression::None) => SnapshotFormat::PhysicalXbstream,
        (true, Compression::Zstd) => SnapshotFormat::PhysicalXbstreamZstd,
    };
    // Marks the snapshot as being written until its record is: if this agent dies
    // meanwhile, its next start removes what was written (see `clean_unfinished`).
    let marker = unfinished_marker(instance, snapshot_id);
    fsutil::create_dir_with_mode(&instance.paths.operations_dir, 0o700)?;
    fsutil::write_atomic(&marker, b"", 0o600)?;
    // The manifest goes first, so that replicas following the snapshot know its format
    // before its first byte, and beats while it is taken, so that they know it is alive.
    let manifest = SnapshotManifest {
        snapshot_id,
        format,
        beat: 0,
    };
    let store = instance.store.clone();
    let beat = on_blocking_thread("snapshot manifest", move || {
        ManifestBeat::start(store, manifest)
    })
    .await;
    let beat = match beat {
        Ok(beat) => beat,
        Err(err) => {
            fsutil::remove_if_exists(&marker)?;
            return Err(err);
        }
    };
    let taken = if physical {
        physical::create(instance, snapshot_id).await
    } else {
        logical::create(instance, snapshot_id).await
    };
    let recorded = match taken {
        Ok(info) => {
            let store = instance.store.clone();
            on_blocking_thread("snapshot record", move || {
                let record = serde_json::to_vec_pretty(&info)
                    .map_err(|err| AgentError::Internal(err.to_string()))?;
                store.write_small(&info_object(snapshot_id), &record)?;
                Ok(info)
            })
            .await
        }
        Err(err) => Err(err),
    };
    on_blocking_thread("snapshot manifest", move || {
        beat.stop();
        Ok(())
    })
    .await?;
    let info = match recorded {
        Ok(info) => info,
        Err(err) => {
            // The data object is gone already (its writer was dropped unfinished); the
            // manifest goes too, which tells replicas following the snapshot to give up.
            let store = instance.store.clone();
            if let Err(cleanup) = on_blocking_thread("snapshot cleanup", move || {
                store.delete(&data_object(snapshot_id))?;
                store.delete(&manifest_object(snapshot_id))
            })
            .await
            {
                tracing::warn!(error = %cleanup, %snapshot_id, "cannot remove a failed snapshot");
            }
            fsutil::remove_if_exists(&marker)?;
            return Err(err);
        }
    };
    fsutil::remove_if_exists(&marker)?;
    tracing::info!(%snapshot_id, format = ?info.format, size_bytes = info.size_bytes,
        gtid_pos = %info.gtid_pos, store = %instance.store.describe(), "snapshot taken");
    Ok(info)
}

/// Rewrites a snapshot's manifest every [`MANIFEST_BEAT`] on a thread of its own (the
/// copying threads may block on the tool for long), until stopped.
struct ManifestBeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ManifestBeat {
    /// Writes the manifest (beat 0), then starts beating. Blocking.
    fn start(
        store: Arc<dyn SnapshotStore>,
        mut manifest: SnapshotManifest,
    ) -> Result<ManifestBeat> {
        let name = manifest_object(manifest.snapshot_id);
        let encode = |manifest: &SnapshotManifest| {
            serde_json::to_vec(manifest).map_err(|err| AgentError::Internal(err.to_string()))
        };
        store.write_small(&name, &encode(&manifest)?)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("manifest-beat".to_owned())
            .spawn(move || {
                let _entered = span.enter();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(MANIFEST_BEAT)
                {
                    manifest.beat += 1;
                    let written =
                        encode(&manifest).and_then(|bytes| store.replace_small(&name, &bytes));
                    if let Err(err) = written {
                        tracing::warn!(error = %err, "cannot rewrite the snapshot's manifest");
                    }
                }
            })
            .map_err(|err| AgentError::Internal(format!("cannot start a thread: {err}")))?;
        Ok(ManifestBeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops beating; returns once the last rewrite is done. Blocking.
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the snapshot manifest's thread panicked");
        }
    }
}

impl Drop for ManifestBeat {
    fn drop(&mut self) {
        self.halt();
    }
}

fn unfinished_marker(instance: &Instance, snapshot_id: Uuid) -> PathBuf {
    instance
        .paths
        .operations_dir
        .join(format!("{UNFINISHED_PREFIX}{snapshot_id}"))
}

/// Marker files of snapshots being written: `<operations dir>/unfinished-snapshot-<id>`.
const UNFINISHED_PREFIX: &str = "unfinished-snapshot-";
/// Marker files of deleted snapshots, kept for [`DELETIONS_REMEMBERED`].
const DELETED_PREFIX: &str = "deleted-snapshot-";
/// Longer than any command waits in a queue (the longest deadline is an hour).
const DELETIONS_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

fn deleted_marker(instance: &Instance, snapshot_id: Uuid) -> PathBuf {
    instance
        .paths
        .operations_dir
        .join(format!("{DELETED_PREFIX}{snapshot_id}"))
}

fn forget_old_deletions(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > DELETIONS_REMEMBERED);
        if old
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(DELETED_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes from the store what this agent was writing when it last died (a snapshot whose
/// writer died is never used: it has no record, and here it goes). Called at start.
pub async fn clean_unfinished(instance: &Instance) -> Result<()> {
    let dir = &instance.paths.operations_dir;
    let unfinished: Vec<(Uuid, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix(UNFINISHED_PREFIX)?.parse().ok()?;
            Some((id, entry.path()))
        })
        .collect();
    for (snapshot_id, marker) in unfinished {
        tracing::warn!(%snapshot_id, "removing a snapshot left unfinished by an earlier run");
        remove(instance, snapshot_id).await?;
        fsutil::remove_if_exists(&marker)?;
    }
    Ok(())
}

/// Removes a snapshot, finished or not; a snapshot that does not exist is fine. The id is
/// remembered as deleted, so that the same snapshot is not taken again by a late delivery
/// of the command that asked for it.
pub async fn delete(instance: &Instance, snapshot_id: Uuid) -> Result<()> {
    fsutil::create_dir_with_mode(&instance.paths.operations_dir, 0o700)?;
    fsutil::write_atomic(&deleted_marker(instance, snapshot_id), b"", 0o600)?;
    forget_old_deletions(&instance.paths.operations_dir);
    remove(instance, snapshot_id).await
}

/// Removes a snapshot's objects from the store. The manifest goes first: replicas
/// following the snapshot then give up (unless they have its record already, and so can
/// finish what they read).
async fn remove(instance: &Instance, snapshot_id: Uuid) -> Result<()> {
    let store = instance.store.clone();
    on_blocking_thread("snapshot delete", move || {
        store.delete(&manifest_object(snapshot_id))?;
        store.delete(&info_object(snapshot_id))?;
        store.delete(&data_object(snapshot_id))
    })
    .await?;
    tracing::info!(%snapshot_id, "snapshot deleted");
    Ok(())
}

/// What to restore.
#[derive(Clone, Debug)]
pub enum RestoreFrom {
    /// A finished snapshot, as its record describes it.
    Finished(SnapshotInfo),
    /// A snapshot that may still be being taken: followed in the store as it is written.
    Following(Uuid),
}

/// Restores a snapshot into this (new, empty) instance; answers with its record. A logical
/// snapshot is read and checked whole first (while it is written, when following) and then
/// loaded into the running server; a physical one replaces the data dir as it is read, and
/// is checked before the copy is prepared and started. The server runs afterwards either
/// way.
pub async fn restore(instance: &Instance, from: RestoreFrom) -> Result<SnapshotInfo> {
    let store = instance.store.clone();
    let (reader, format) = match from {
        RestoreFrom::Finished(info) => {
            let format = info.format;
            let reader =
                on_blocking_thread("restore", move || SnapshotReader::finished(store, info))
                    .await?;
            (reader, format)
        }
        RestoreFrom::Following(snapshot_id) => {
            let settings = follow_settings(instance);
            tracing::info!(%snapshot_id, ?settings, "following a snapshot as it is taken");
            on_blocking_thread("restore", move || {
                SnapshotReader::follow(store, snapshot_id, settings)
            })
            .await?
        }
    };
    match format {
        SnapshotFormat::LogicalSqlZstd => logical::restore(instance, reader).await,
        SnapshotFormat::PhysicalXbstream | SnapshotFormat::PhysicalXbstreamZstd => {
            physical::restore(instance, reader, format).await
        }
    }
}

fn follow_settings(instance: &Instance) -> FollowSettings {
    let snapshots = &instance.config.snapshots;
    FollowSettings {
        poll: Duration::from_millis(snapshots.follow_poll_ms),
        stall: Duration::from_secs(snapshots.follow_stall_secs),
    }
}

async fn read_info(instance: &Instance, snapshot_id: Uuid) -> Result<Option<SnapshotInfo>> {
    let store = instance.store.clone();
    on_blocking_thread("snapshot record", move || {
        read_record(store.as_ref(), snapshot_id)
    })
    .await
}

/// Runs file and process work off the async runtime, so that Ping, Status and heartbeats
/// go on meanwhile; in the caller's tracing span (instance, operation).
async fn on_blocking_thread<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|err| AgentError::Internal(format!("the {what} thread failed: {err}")))?
}
