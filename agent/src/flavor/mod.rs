//! Flavors of the MySQL family: what SQL each step sends, which server options to write,
//! and how the dump tools are driven.
//!
//! One trait, one implementation per flavor ([`mariadb::MariaDb`] today; MySQL 8 would be
//! a second file). Nothing outside this module asks which flavor it talks to. Every method
//! that builds SQL is pure, so the exact statements are unit-tested.

pub mod mariadb;

use crate::names::{Account, DatabaseName, GtidPosition};
use crate::paths::InstancePaths;
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::ReplicationStatus;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One SQL statement, with a label for errors and a flag saying whether it carries a
/// secret. A statement that carries a secret never reaches a log or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Sql {
    text: String,
    what: &'static str,
    carries_secret: bool,
}

impl Sql {
    /// A statement without secrets; `what` names the step in errors ("create database").
    pub fn new(what: &'static str, text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            what,
            carries_secret: false,
        }
    }

    /// A statement with a password or key in it.
    pub fn secret(what: &'static str, text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            what,
            carries_secret: true,
        }
    }

    /// The statement itself, to send to the server (and nowhere else when secret).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn what(&self) -> &'static str {
        self.what
    }

    pub fn carries_secret(&self) -> bool {
        self.carries_secret
    }
}

impl fmt::Debug for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.carries_secret {
            write!(f, "Sql({}: ***)", self.what)
        } else {
            write!(f, "Sql({}: {})", self.what, self.text)
        }
    }
}

/// The server's settings that survive restarts: written to `server.json`, rendered into
/// `my.cnf`. Changing roles at runtime (read_only) updates them too, so a restart keeps
/// the role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSettings {
    pub server_id: u32,
    pub buffer_pool_mb: u64,
    pub read_only: bool,
}

/// The smallest buffer pool the agent configures, whatever the flavor's memory.
pub const MIN_BUFFER_POOL_MB: u64 = 32;

impl ServerSettings {
    /// Half the flavor's memory for the buffer pool, within `[MIN_BUFFER_POOL_MB, max_mb]`
    /// (the floor wins when an operator sets the cap below it).
    pub fn buffer_pool_mb(memory_mb: u64, max_mb: u64) -> u64 {
        (memory_mb / 2).min(max_mb).max(MIN_BUFFER_POOL_MB)
    }
}

/// What a server's options are rendered from.
#[derive(Clone, Debug)]
pub struct ServerOptionsInput<'a> {
    pub paths: &'a InstancePaths,
    pub port: u16,
    pub bind_address: &'a str,
    /// The system user to run as; `None` when the agent does not run as root.
    pub run_as: Option<&'a str>,
    pub settings: &'a ServerSettings,
}

/// One `name = value` line (or a bare `name` flag) of a server option file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOption {
    pub name: &'static str,
    pub value: Option<String>,
}

/// Where a replica replicates from.
#[derive(Clone, Debug)]
pub struct SourceSpec<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a Secret,
}

/// The SQL dialect and tool usage of one flavor.
pub trait Flavor: Send + Sync + 'static {
    /// The flavor's name, for logs.
    fn name(&self) -> &'static str;

    // --- Server options -------------------------------------------------------------

    /// The `[mysqld]` options of the server's config file: identity, paths, binary log and
    /// GTID from the first boot, so adding a replica never needs a restart.
    fn server_options(&self, input: &ServerOptionsInput<'_>) -> Vec<ServerOption>;

    // --- Set-up ---------------------------------------------------------------------

    /// Keeps this session's statements out of the binary log (local set-up must not reach
    /// replicas or conflict with a seeded GTID position).
    fn disable_session_binlog(&self) -> Sql;
    /// Sets the admin account's password.
    fn set_admin_password(&self, password: &Secret) -> Sql;
    /// Lists (user, host) of accounts a secured server must not have: anonymous users and
    /// admin accounts other than the agent's own.
    fn list_unwanted_accounts(&self) -> Sql;
    fn drop_user(&self, account: &Account) -> Sql;
    fn create_database(&self, database: &DatabaseName) -> Sql;
    /// Creates the account if it is missing; an existing one keeps its password.
    fn create_user(&self, account: &Account, password: &Secret) -> Sql;
    fn set_password(&self, account: &Account, password: &Secret) -> Sql;
    fn grant_all_on_database(&self, database: &DatabaseName, account: &Account) -> Sql;
    fn grant_replication(&self, account: &Account) -> Sql;
    fn flush_privileges(&self) -> Sql;
    fn set_read_only(&self, read_only: bool) -> Sql;
    /// Lists every schema; [`crate::names::SYSTEM_DATABASES`] filters out the server's own.
    fn list_databases(&self) -> Sql;

    // --- Replication ----------------------------------------------------------------

    /// Forgets this server's own binary log, so a GTID position can be set after a restore.
    fn reset_binlog(&self) -> Sql;
    fn set_replica_position(&self, position: &GtidPosition) -> Sql;
    fn change_source(&self, source: &SourceSpec<'_>) -> Sql;
    fn start_replica(&self) -> Sql;
    fn stop_replica(&self) -> Sql;
    /// Forgets the source entirely.
    fn reset_replica_all(&self) -> Sql;

    // --- Status ---------------------------------------------------------------------

    /// One row: version, read_only, binlog position, replica position, current position.
    fn server_variables(&self) -> Sql;
    /// One row per source when the server is a replica, none otherwise.
    fn replica_status(&self) -> Sql;
    /// Reads a replica-status row, given a lookup of its columns by name.
    fn parse_replica_status(&self, column: &dyn Fn(&str) -> Option<String>) -> ReplicationStatus;

    // --- Dump and restore -----------------------------------------------------------

    /// Arguments (after the defaults-file argument) that dump `databases` consistently,
    /// with the GTID position as a comment.
    fn dump_data_args(&self, databases: &[DatabaseName]) -> Vec<String>;
    /// Arguments that dump the accounts and grants. `with_position` adds the GTID
    /// position, for snapshots that hold no user database.
    fn dump_users_args(&self, with_position: bool) -> Vec<String>;
    /// The GTID position, if `line` of a dump is the line that records it.
    fn position_in_dump_line(&self, line: &[u8]) -> Option<String>;
    /// Whether a line of the users dump may be restored: lines about the admin account
    /// are dropped, so that a restore never overwrites the replica's own admin password.
    fn keep_dumped_user_line(&self, line: &[u8]) -> bool;
    /// Arguments (after the defaults-file argument) for the client that restores a dump.
    fn restore_args(&self) -> Vec<String>;
}

/// The flavor this build drives.
pub fn mariadb() -> &'static dyn Flavor {
    &mariadb::MariaDb
}
