//! Snapshots in the snapshot store, and restoring them on a replica.
//!
//! Two methods: physical (the data files, by the backup tool: at the speed of the disk) and
//! logical (SQL, by the dump tool: slower, independent of the file format). A request picks
//! one or lets the agent choose (physical when the backup tool is installed).
//!
//! A snapshot is two objects in the store (see [`crate::store`]): the data stream and its
//! record ([`SnapshotInfo`]: format, size, SHA-256 and GTID position), written last. A
//! snapshot without a record is unfinished and never restored. The record's checksum is
//! checked against every byte read back before a restored copy is used.
//!
//! The work runs on blocking threads, so the agent keeps answering Ping and Status and keeps
//! heartbeating (with progress) while a snapshot or restore runs.

mod logical;
mod metered;
mod physical;
mod tool;

use crate::error::{AgentError, Result};
use crate::instance::Instance;
use crate::store::{data_object, info_object};
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo, SnapshotMethod, SnapshotRequest};
use uuid::Uuid;

/// Takes the snapshot `request` asks for. Taking a snapshot that already exists answers
/// with the stored one.
pub async fn create(instance: &Instance, request: &SnapshotRequest) -> Result<SnapshotInfo> {
    instance.require_prepared()?;
    let snapshot_id = request.snapshot_id;
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
    let info = if physical {
        physical::create(instance, snapshot_id).await?
    } else {
        logical::create(instance, snapshot_id).await?
    };
    let record =
        serde_json::to_vec_pretty(&info).map_err(|err| AgentError::Internal(err.to_string()))?;
    let store = instance.store.clone();
    on_blocking_thread("snapshot record", move || {
        store.write_small(&info_object(snapshot_id), &record)
    })
    .await?;
    tracing::info!(%snapshot_id, format = ?info.format, size_bytes = info.size_bytes,
        gtid_pos = %info.gtid_pos, store = %instance.store.describe(), "snapshot taken");
    Ok(info)
}

/// Removes a snapshot, finished or not; a snapshot that does not exist is fine.
pub async fn delete(instance: &Instance, snapshot_id: Uuid) -> Result<()> {
    let store = instance.store.clone();
    on_blocking_thread("snapshot delete", move || {
        store.delete(&info_object(snapshot_id))?;
        store.delete(&data_object(snapshot_id))
    })
    .await?;
    tracing::info!(%snapshot_id, "snapshot deleted");
    Ok(())
}

/// Restores `info` into this (new, empty) instance. A logical snapshot is checked whole
/// first and loaded into the running server; a physical one replaces the data dir and is
/// checked while it is read. The server runs afterwards either way.
pub async fn restore(instance: &Instance, info: &SnapshotInfo) -> Result<()> {
    match info.format {
        SnapshotFormat::LogicalSqlZstd => {
            logical::verify(instance, info).await?;
            logical::restore(instance, info).await
        }
        SnapshotFormat::PhysicalXbstream | SnapshotFormat::PhysicalXbstreamZstd => {
            physical::restore(instance, info).await
        }
    }
}

async fn read_info(instance: &Instance, snapshot_id: Uuid) -> Result<Option<SnapshotInfo>> {
    let store = instance.store.clone();
    let bytes = on_blocking_thread("snapshot record", move || {
        store.read_small(&info_object(snapshot_id))
    })
    .await?;
    bytes
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|err| {
                AgentError::Internal(format!(
                    "the record of snapshot {snapshot_id} is not a snapshot record: {err}"
                ))
            })
        })
        .transpose()
}

/// Runs file and process work off the async runtime, so that Ping, Status and heartbeats
/// go on meanwhile.
async fn on_blocking_thread<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| AgentError::Internal(format!("the {what} thread failed: {err}")))?
}
