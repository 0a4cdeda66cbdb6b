//! What a guest agent answers on `guestagent.<instance id>`.

use crate::envelope::Method;
use crate::secret::Secret;
use crate::status::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A command to a guest agent. Every command is a call (the caller waits for the reply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentRequest {
    /// Is the agent listening? Answers at once.
    Ping,
    /// Initialise, configure, start and secure the server; create databases and users.
    /// Idempotent: a prepared server answers with its current state.
    Prepare(PrepareRequest),
    /// Take a consistent snapshot into the snapshot store.
    CreateSnapshot(SnapshotRequest),
    /// On a source: create the user one replica replicates with (not binlogged).
    CreateReplicationUser(ReplicationUser),
    /// On a source: drop a replica's replication user (not binlogged). Absent is fine.
    DropReplicationUser(ReplicationUserName),
    /// On a new replica: restore the snapshot, point at the source, start replicating.
    Attach(AttachRequest),
    /// On a new replica: restore a snapshot while its source may still be writing it
    /// (following it in the snapshot store), then attach as `Attach` does. Sent before the
    /// snapshot is finished; an agent older than this method answers `UnknownMethod`, and
    /// the caller then waits for the snapshot and sends `Attach`.
    AttachFollowing(AttachFollowingRequest),
    /// On a replica: stop and forget replication, become writable.
    Detach,
    /// Delete a snapshot from the snapshot store. Absent is fine.
    DeleteSnapshot(SnapshotRequest),
    /// The server's current state, as in a heartbeat.
    Status,
    /// Stop the database server and then the agent itself.
    Shutdown,
}

impl Method for AgentRequest {
    fn name(&self) -> &'static str {
        match self {
            Self::Ping => "Ping",
            Self::Prepare(_) => "Prepare",
            Self::CreateSnapshot(_) => "CreateSnapshot",
            Self::CreateReplicationUser(_) => "CreateReplicationUser",
            Self::DropReplicationUser(_) => "DropReplicationUser",
            Self::Attach(_) => "Attach",
            Self::AttachFollowing(_) => "AttachFollowing",
            Self::Detach => "Detach",
            Self::DeleteSnapshot(_) => "DeleteSnapshot",
            Self::Status => "Status",
            Self::Shutdown => "Shutdown",
        }
    }
}

/// The agent's answer; each request has its own variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentResponse {
    Pong(AgentInfo),
    Prepared(ServerStatus),
    Snapshot(SnapshotInfo),
    ReplicationUserCreated,
    ReplicationUserDropped,
    Attached(ServerStatus),
    Detached(ServerStatus),
    SnapshotDeleted,
    Status(ServerStatus),
    ShuttingDown,
}

impl Method for AgentResponse {
    fn name(&self) -> &'static str {
        match self {
            Self::Pong(_) => "Pong",
            Self::Prepared(_) => "Prepared",
            Self::Snapshot(_) => "Snapshot",
            Self::ReplicationUserCreated => "ReplicationUserCreated",
            Self::ReplicationUserDropped => "ReplicationUserDropped",
            Self::Attached(_) => "Attached",
            Self::Detached(_) => "Detached",
            Self::SnapshotDeleted => "SnapshotDeleted",
            Self::Status(_) => "Status",
            Self::ShuttingDown => "ShuttingDown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's own version.
    pub version: String,
    /// Whether its database server answers.
    pub server_up: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// Unique among all servers that may ever replicate with each other.
    pub server_id: u32,
    /// The flavor's memory; the agent sizes the buffer pool from it.
    pub memory_mb: u64,
    /// Databases to create.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Users to create, each with all privileges on its databases.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Start read-only (a replica to be).
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub name: String,
    pub password: Secret,
    /// The host part of the account, `%` when not given.
    #[serde(default = "any_host")]
    pub host: String,
    #[serde(default)]
    pub databases: Vec<String>,
}

fn any_host() -> String {
    "%".to_owned()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub snapshot_id: Uuid,
    /// How to take it. Default: physical when the agent's host has the backup tool.
    #[serde(default)]
    pub method: SnapshotMethod,
}

/// What a snapshot request asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethod {
    /// Physical when the backup tool is installed, logical otherwise.
    #[default]
    Auto,
    /// A copy of the data files (mariabackup), at the speed of the disk.
    Physical,
    /// SQL statements (mariadb-dump): slower, but independent of the server's file format.
    Logical,
}

/// How a snapshot was taken and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotFormat {
    /// `mariadb-dump --single-transaction --gtid` output, zstd-compressed.
    LogicalSqlZstd,
    /// `mariabackup --backup --stream=xbstream` output, stored as it came.
    PhysicalXbstream,
    /// The same, zstd-compressed (for stores behind a slow network).
    PhysicalXbstreamZstd,
}

/// Long work in progress on an agent (a snapshot, a restore), as heartbeats report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What runs: `snapshot` or `restore`.
    pub operation: String,
    /// The step within it, e.g. `copying`, `preparing`, `starting`.
    pub stage: String,
    pub bytes_done: u64,
    /// The expected total, when known (the data size of the source).
    #[serde(default)]
    pub bytes_total: Option<u64>,
    /// When the operation started, ms since the Unix epoch (for a rate).
    pub started_at_ms: i64,
}

/// A finished snapshot in the snapshot store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: Uuid,
    pub format: SnapshotFormat,
    /// The GTID position the snapshot is consistent with (empty: before any transaction).
    pub gtid_pos: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// BLAKE3 of the stored bytes, lowercase hex; checked before restore.
    pub blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationUserName {
    pub name: String,
    /// The host part of the account: where the replica connects from.
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationUser {
    pub name: String,
    pub host: String,
    pub password: Secret,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub snapshot: SnapshotInfo,
    /// Where the source listens.
    pub source_host: String,
    pub source_port: u16,
    /// The replication user created for this replica on the source.
    pub user: String,
    pub password: Secret,
}

/// What `AttachFollowing` needs: the snapshot by id alone (its format, size, checksum and
/// GTID position are read from the store: the format from the manifest its source writes
/// before any byte, the rest from its record, written last), and the source to replicate
/// from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachFollowingRequest {
    pub snapshot_id: Uuid,
    /// Where the source listens.
    pub source_host: String,
    pub source_port: u16,
    /// The replication user created for this replica on the source.
    pub user: String,
    pub password: Secret,
}

/// A database server's state, as the agent sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Whether the server answers queries.
    pub up: bool,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub gtid_binlog_pos: Option<String>,
    #[serde(default)]
    pub gtid_slave_pos: Option<String>,
    #[serde(default)]
    pub gtid_current_pos: Option<String>,
    /// Present when the server is configured as a replica.
    #[serde(default)]
    pub replication: Option<ReplicationStatus>,
    /// Why the server is down or unhealthy, when known.
    #[serde(default)]
    pub error: Option<String>,
}

/// The replica side of replication (`SHOW SLAVE STATUS`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub source_host: String,
    pub source_port: u16,
    /// `Slave_IO_Running` is `Yes`.
    pub io_running: bool,
    /// `Slave_SQL_Running` is `Yes`.
    pub sql_running: bool,
    /// `Seconds_Behind_Master`, when known.
    #[serde(default)]
    pub lag_seconds: Option<u64>,
    #[serde(default)]
    pub gtid_io_pos: Option<String>,
    /// The last IO or SQL error, when there is one.
    #[serde(default)]
    pub last_error: Option<String>,
}
