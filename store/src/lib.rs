//! Ferrotrove's control DB: its schema, its migrations and every query the control plane
//! makes.
//!
//! The api, the taskmanager and the conductor link this crate and talk to MariaDB/MySQL
//! only through [`Store`]; no SQL lives anywhere else. The guest agent never links it: a
//! guest holds no control-DB credentials, and everything it knows reaches the control DB
//! through the conductor.
//!
//! Layout:
//! - [`config`]: [`StoreConfig`], the `[store]` section every daemon embeds;
//! - `migrations`: the schema as an ordered list of migrations, applied at connect;
//! - `flavors`, `datastores`: the read-only catalogue the API offers;
//! - `instances`: instance rows, their statuses and the API's guarded transitions;
//! - `activity`: what an instance is busy with (its status, replicas in BUILD, running
//!   task rows), for the API's refusals;
//! - `guest_status`: the newest heartbeat per instance, ordered by the agent's (boot, seq),
//!   written in batches, and whether it is stale (stored liveness);
//! - `unsent_creates`: creates whose task the API never got to the broker (it stopped in
//!   between), for the taskmanager to resend or fail;
//! - `replication_users`: which user each replica replicates with (names, never passwords);
//! - `tokens`: API tokens mapped to tenants (SHA-256 digests, never tokens);
//! - [`error`] holds [`StoreError`].
//!
//! Every timestamp is written as `UTC_TIMESTAMP(3)` by the database server, so the control
//! plane's hosts need not agree on the time, and is read back as a UTC `OffsetDateTime`.

mod activity;
pub mod config;
mod datastores;
pub mod error;
mod flavors;
mod guest_status;
mod instances;
mod migrations;
mod replication_users;
mod rows;
mod tasks;
mod tokens;
mod unsent_creates;

pub use activity::{Activity, BusyWith, RunningTask};
pub use config::{StoreConfig, validate_database_name};
pub use datastores::{Datastore, DatastoreVersion};
pub use error::StoreError;
pub use flavors::Flavor;
pub use guest_status::{GuestLiveness, GuestStatus};
pub use instances::{DeleteStart, DetachStart, Instance, NewInstance, ReplicaInsert};
pub use migrations::{MARIADB_10_11_VERSION_ID, MARIADB_DATASTORE_ID};
pub use replication_users::ReplicationUserRow;
pub use tasks::{TaskClaim, TaskRow};
pub use tokens::TokenRow;
pub use unsent_creates::UnsentCreate;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use std::time::Duration;

/// A handle on the control DB: a connection pool. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    database: String,
    /// How long one operation may wait for the server (`StoreConfig::timeout_secs`).
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, creates the database when missing and applies missing migrations.
    ///
    /// Safe to call from several processes at once (see `migrations`). A configuration
    /// error is [`StoreError::Config`]; an unreachable server is [`StoreError::Database`]
    /// or [`StoreError::Timeout`], of kind `Unavailable`, which callers may retry.
    /// Connecting is bounded by `timeout_secs`; applying migrations (which may wait for
    /// another process's) is not.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        cfg.validate()?;
        let base = Opts::from_url(&cfg.url)
            .map_err(|e| StoreError::Config(format!("store url does not parse: {e}")))?;
        let constraints = PoolConstraints::new(0, cfg.pool_max)
            .ok_or_else(|| StoreError::Config("store pool_max must be at least 1".to_owned()))?;
        // Affected-row counts must mean "changed", not "matched": record_heartbeat relies
        // on it, whatever the URL asks for.
        let common = OptsBuilder::from_opts(base)
            .client_found_rows(false)
            .init(vec!["SET SESSION time_zone = '+00:00'"]);

        let timeout = cfg.timeout();
        within(timeout, async {
            let mut server = Conn::new(common.clone().db_name(None::<String>)).await?;
            server
                .query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
                    cfg.database
                ))
                .await?;
            server.disconnect().await?;
            Ok(())
        })
        .await?;

        // Connections go back to the pool as they are, not reset: a reset costs a round trip
        // and drops the connection's prepared statements, so every query would be prepared
        // again. The store leaves no session state behind (transactions are always ended;
        // no session variables, temporary tables or locks outlive a call).
        let pool = Pool::new(
            common.db_name(Some(cfg.database.clone())).pool_opts(
                PoolOpts::new()
                    .with_constraints(constraints)
                    .with_reset_connection(false),
            ),
        );
        let mut conn = within(timeout, async { Ok(pool.get_conn().await?) }).await?;
        migrations::run(&mut conn, &cfg.database).await?;
        drop(conn);
        tracing::debug!(database = %cfg.database, "control DB ready");
        Ok(Store {
            pool,
            database: cfg.database.clone(),
            timeout,
        })
    }

    /// Runs one operation on the control DB, failing it with [`StoreError::Timeout`] when
    /// it has waited longer than `timeout_secs` in all (for a connection and for its
    /// statements' answers). An operation given up on is dropped where it was waiting: its
    /// connection is not reused before the pool has cleaned it up (or closed it), and a
    /// transaction it had open is rolled back, not committed.
    pub(crate) async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, operation).await
    }

    /// The control database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Drops the whole control database and closes the pool. For tests.
    pub async fn drop_database(self) -> Result<(), StoreError> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.database))
            .await?;
        drop(conn);
        self.pool.disconnect().await?;
        Ok(())
    }

    /// Closes the pool's connections. Queries after this fail.
    pub async fn close(self) -> Result<(), StoreError> {
        self.pool.disconnect().await?;
        Ok(())
    }
}

/// `operation`, or [`StoreError::Timeout`] once it has taken longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "the control DB did not answer in time"
            );
            Err(StoreError::Timeout(timeout))
        }
    }
}

/// A table `ids` of one column `id`, made by `JSON_TABLE` from one parameter, an
/// [`id_list`]: a constant statement (prepared once per connection) for any number of ids,
/// joined with one index lookup per id.
pub(crate) const ID_TABLE: &str =
    "JSON_TABLE(?, '$[*]' COLUMNS (id CHAR(36) CHARACTER SET utf8mb4 PATH '$')) AS ids";

/// The parameter of [`ID_TABLE`]: the ids as a JSON array of strings (UUIDs need no
/// escaping).
pub(crate) fn id_list(ids: &[uuid::Uuid]) -> String {
    let mut out = String::with_capacity(2 + ids.len() * 39);
    out.push('[');
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(&id.to_string());
        out.push('"');
    }
    out.push(']');
    out
}

/// `?, ?, ?` for an `IN (...)` list of `n` values (n ≥ 1).
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Whether a server error is a duplicate key (1062).
pub(crate) fn is_duplicate_key(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1062)
}
