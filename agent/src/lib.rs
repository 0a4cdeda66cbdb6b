//! Ferrotrove's guest agent: one per database host, owning one MariaDB server.
//!
//! The agent starts and stops its server as a child process ("process mode"), sets it up,
//! takes snapshots, attaches and detaches replication and reports status, all on command
//! from its bus queue `guestagent.<instance id>`, and casts heartbeats to the conductor.
//!
//! It must not touch the control DB (it holds no credentials for it and does not link
//! `ferrotrove-store`): everything it knows leaves as bus messages. It must not log
//! secrets: passwords travel as [`ferrotrove_proto::Secret`], statements carrying them are
//! marked ([`flavor::Sql::secret`]) and their errors withhold the server's text.
//!
//! # Layout
//! - [`config`]: `AgentConfig`, from TOML plus `FTROVE_AGENT__*` environment overrides.
//! - [`paths`]: where the instance's files live under its base directory.
//! - [`flavor`]: the SQL and tool usage of a server flavor (MariaDB); pure and unit-tested.
//! - [`names`]: validation and quoting of names, hosts, passwords and GTID positions.
//! - [`db`]: admin sessions over the socket; error mapping that keeps secrets out.
//! - [`credentials`]: the generated admin password and `client.cnf`.
//! - [`fsutil`]: atomic writes, directory sync, ownership for the server's system user.
//! - [`server`]: start (or adopt), wait-ready and stop the server process; `my.cnf`.
//! - [`instance`]: the context every command receives.
//! - [`prepare`], [`snapshot`], [`replication`], [`status`]: the commands.
//! - [`store`]: where snapshots live (a directory, S3) and how they are read back,
//!   finished or while their source still writes them ([`store::SnapshotReader`]).
//! - [`progress`]: the running snapshot or restore, for heartbeats.
//! - [`operations`]: finished operations on disk, so a redelivered command acts once.
//! - [`heartbeat`]: host sampling and the heartbeat loop.
//! - [`service`]: `AgentService`, the bus handler dispatching commands.
//! - [`error`]: `AgentError` and its mapping to wire error kinds.

pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod flavor;
pub mod fsutil;
pub mod heartbeat;
pub mod instance;
pub mod names;
pub mod operations;
pub mod paths;
pub mod prepare;
pub mod progress;
pub mod replication;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod store;

pub use config::AgentConfig;
pub use error::AgentError;
pub use instance::Instance;
pub use service::AgentService;
