//! The control DB schema, as an ordered list of migrations applied once each at start.
//!
//! Every daemon that links the store runs [`run`] when it connects, so several may race:
//! a named server lock (`GET_LOCK('<db>.migrate')`) lets one apply the missing migrations
//! while the others wait, then find nothing left to do. DDL commits implicitly in MySQL, so
//! a migration cannot be rolled back; each statement is written to be harmless when run
//! again (`IF NOT EXISTS`, `INSERT IGNORE`), so a daemon that died half-way through one
//! simply redoes it on the next start.
//!
//! Never edit a migration that has shipped: append a new one.

use crate::StoreError;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::collections::HashSet;

/// One step of the schema's history.
pub(crate) struct Migration {
    pub version: i32,
    pub statements: &'static [&'static str],
}

/// The id of the one datastore this build serves.
pub const MARIADB_DATASTORE_ID: &str = "9a3c5b1e-7d40-4f2a-8c61-2e5f0b9d7a01";
/// The id of its default (and only) version, 10.11.
pub const MARIADB_10_11_VERSION_ID: &str = "4e8d2c7a-1b93-4a5f-9e06-7c3b1f2d8a11";

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        statements: &[
            "CREATE TABLE IF NOT EXISTS flavors (
                id VARCHAR(36) NOT NULL PRIMARY KEY,
                name VARCHAR(255) NOT NULL,
                ram_mb INT NOT NULL,
                vcpus INT NOT NULL,
                disk_gb INT NOT NULL,
                UNIQUE KEY flavors_name (name)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE IF NOT EXISTS datastores (
                id CHAR(36) NOT NULL PRIMARY KEY,
                name VARCHAR(64) NOT NULL,
                default_version_id CHAR(36) NULL,
                UNIQUE KEY datastores_name (name)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // Other names a datastore answers to (Trove clients say `mysql`).
            "CREATE TABLE IF NOT EXISTS datastore_aliases (
                alias VARCHAR(64) NOT NULL PRIMARY KEY,
                datastore_id CHAR(36) NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE IF NOT EXISTS datastore_versions (
                id CHAR(36) NOT NULL PRIMARY KEY,
                datastore_id CHAR(36) NOT NULL,
                name VARCHAR(64) NOT NULL,
                version VARCHAR(64) NOT NULL,
                active BOOL NOT NULL DEFAULT TRUE,
                UNIQUE KEY datastore_versions_name (datastore_id, name)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // Other names a version answers to within its datastore (Trove clients say `5.7`).
            "CREATE TABLE IF NOT EXISTS datastore_version_aliases (
                datastore_id CHAR(36) NOT NULL,
                alias VARCHAR(64) NOT NULL,
                version_id CHAR(36) NOT NULL,
                PRIMARY KEY (datastore_id, alias)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // `status` is the task-level status word (proto InstanceStatus); liveness from
            // heartbeats is in guest_status. Rows are never removed, only marked deleted,
            // so `server_id` stays unique forever.
            "CREATE TABLE IF NOT EXISTS instances (
                id CHAR(36) NOT NULL PRIMARY KEY,
                tenant_id VARCHAR(64) NOT NULL,
                name VARCHAR(255) NOT NULL,
                flavor_id VARCHAR(36) NOT NULL,
                volume_size INT NOT NULL,
                datastore VARCHAR(64) NOT NULL,
                datastore_version VARCHAR(64) NOT NULL,
                status VARCHAR(16) NOT NULL,
                fault TEXT NULL,
                fault_at DATETIME(3) NULL,
                replica_of CHAR(36) NULL,
                server_id INT UNSIGNED NOT NULL AUTO_INCREMENT,
                host VARCHAR(255) NULL,
                port INT NULL,
                created DATETIME(3) NOT NULL,
                updated DATETIME(3) NOT NULL,
                deleted_at DATETIME(3) NULL,
                UNIQUE KEY instances_server_id (server_id),
                KEY instances_tenant (tenant_id, deleted_at),
                KEY instances_tenant_name (tenant_id, name),
                KEY instances_replica_of (replica_of)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // The newest heartbeat of each instance, newest by the agent's (boot_id, seq).
            "CREATE TABLE IF NOT EXISTS guest_status (
                instance_id CHAR(36) NOT NULL PRIMARY KEY,
                boot_id CHAR(36) NOT NULL,
                seq BIGINT UNSIGNED NOT NULL,
                received_at DATETIME(3) NOT NULL,
                server_up BOOL NOT NULL,
                version VARCHAR(255) NULL,
                read_only BOOL NULL,
                role VARCHAR(16) NULL,
                source_host VARCHAR(255) NULL,
                source_port INT NULL,
                io_running BOOL NULL,
                sql_running BOOL NULL,
                lag_seconds BIGINT NULL,
                gtid_binlog_pos TEXT NULL,
                gtid_slave_pos TEXT NULL,
                gtid_current_pos TEXT NULL,
                server_error TEXT NULL,
                last_error TEXT NULL,
                cpu_percent FLOAT NOT NULL,
                mem_used BIGINT UNSIGNED NOT NULL,
                mem_total BIGINT UNSIGNED NOT NULL,
                disk_used BIGINT UNSIGNED NOT NULL,
                disk_total BIGINT UNSIGNED NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            // Names only: the password lives on the source server and nowhere else.
            "CREATE TABLE IF NOT EXISTS replication_users (
                replica_id CHAR(36) NOT NULL PRIMARY KEY,
                source_id CHAR(36) NOT NULL,
                user_name VARCHAR(80) NOT NULL,
                user_host VARCHAR(255) NOT NULL,
                created DATETIME(3) NOT NULL,
                KEY replication_users_source (source_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ],
    },
    Migration {
        version: 2,
        statements: &[
            // Trove's usual flavors; ids are strings because Trove's may be UUIDs too.
            "INSERT IGNORE INTO flavors (id, name, ram_mb, vcpus, disk_gb) VALUES
                ('1', 'm1.tiny', 512, 1, 1),
                ('2', 'm1.small', 2048, 1, 2),
                ('3', 'm1.medium', 4096, 2, 5),
                ('4', 'm1.large', 8192, 2, 10),
                ('5', 'm1.xlarge', 16384, 4, 20),
                ('6', 'ds512M', 512, 1, 5),
                ('7', 'ds1G', 1024, 1, 5),
                ('8', 'ds2G', 2048, 2, 10)",
            "INSERT IGNORE INTO datastores (id, name, default_version_id) VALUES
                ('9a3c5b1e-7d40-4f2a-8c61-2e5f0b9d7a01', 'mariadb', '4e8d2c7a-1b93-4a5f-9e06-7c3b1f2d8a11')",
            "INSERT IGNORE INTO datastore_versions (id, datastore_id, name, version, active) VALUES
                ('4e8d2c7a-1b93-4a5f-9e06-7c3b1f2d8a11', '9a3c5b1e-7d40-4f2a-8c61-2e5f0b9d7a01', '10.11', '10.11', TRUE)",
            // What Trove's own documentation and clients type: `mysql` / `5.7`. MariaDB
            // 10.11 serves MySQL 5.7 clients, so these name it.
            "INSERT IGNORE INTO datastore_aliases (alias, datastore_id) VALUES
                ('mysql', '9a3c5b1e-7d40-4f2a-8c61-2e5f0b9d7a01')",
            "INSERT IGNORE INTO datastore_version_aliases (datastore_id, alias, version_id) VALUES
                ('9a3c5b1e-7d40-4f2a-8c61-2e5f0b9d7a01', '5.7', '4e8d2c7a-1b93-4a5f-9e06-7c3b1f2d8a11')",
        ],
    },
    Migration {
        version: 3,
        statements: &[
            // Each instance's message-signing secret (hex of 32 random bytes). Never shown
            // by the API; handed to the instance's agent in its 0600 config.
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS secret CHAR(64) NULL",
        ],
    },
    Migration {
        version: 4,
        statements: &[
            // The snapshot or restore the agent reported running in that heartbeat, as the
            // proto `Progress` in JSON; NULL when none was running.
            "ALTER TABLE guest_status ADD COLUMN IF NOT EXISTS progress TEXT NULL",
        ],
    },
    Migration {
        version: 5,
        statements: &[
            // Stored liveness: the conductor's periodic check sets `stale` when no heartbeat
            // was applied within its expiry; the next newer heartbeat clears it. When that
            // last changed (rows from before: their last heartbeat's time).
            "ALTER TABLE guest_status \
                ADD COLUMN IF NOT EXISTS stale BOOL NOT NULL DEFAULT FALSE, \
                ADD COLUMN IF NOT EXISTS stale_changed_at DATETIME(3) NULL",
            "UPDATE guest_status SET stale_changed_at = received_at WHERE stale_changed_at IS NULL",
            "ALTER TABLE guest_status MODIFY COLUMN stale_changed_at DATETIME(3) NOT NULL",
        ],
    },
    Migration {
        version: 6,
        statements: &[
            // Orchestrations, one row per task message (see `tasks.rs`).
            "CREATE TABLE IF NOT EXISTS tasks (
                id CHAR(36) NOT NULL PRIMARY KEY,
                kind VARCHAR(32) NOT NULL,
                instance_id CHAR(36) NOT NULL,
                state VARCHAR(16) NOT NULL,
                step VARCHAR(64) NOT NULL DEFAULT '',
                owner VARCHAR(255) NULL,
                lease_until DATETIME(3) NULL,
                attempts INT UNSIGNED NOT NULL DEFAULT 0,
                error TEXT NULL,
                created DATETIME(3) NOT NULL DEFAULT UTC_TIMESTAMP(3),
                KEY tasks_instance (instance_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ],
    },
    Migration {
        version: 7,
        statements: &[
            // API tokens an operator added (`ftrove-api tokens add`): the SHA-256 digest of
            // each (hex), never the token; a revoked one keeps its row, with the time.
            "CREATE TABLE IF NOT EXISTS api_tokens (
                id CHAR(36) NOT NULL PRIMARY KEY,
                digest CHAR(64) CHARACTER SET ascii NOT NULL,
                tenant_id VARCHAR(64) NOT NULL,
                description VARCHAR(255) NOT NULL DEFAULT '',
                created DATETIME(3) NOT NULL,
                revoked_at DATETIME(3) NULL,
                UNIQUE KEY api_tokens_digest (digest),
                KEY api_tokens_tenant (tenant_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ],
    },
    Migration {
        version: 8,
        statements: &[
            // The instances each task builds or changes, as a JSON array of ids (a replica
            // request: its replicas; any other task: its own instance), written by the same
            // statement that records the task. NULL for tasks recorded before this
            // migration: they are attributed by `instance_id` alone, as they were then, until
            // a taskmanager claims them again and fills it in (see `tasks.rs`).
            "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS instances TEXT NULL",
        ],
    },
    Migration {
        version: 9,
        statements: &[
            // The id of the task deleting an instance, chosen when it became DELETING (in the
            // same statement's transaction): every request to delete it sends the task under
            // this id, so a repeated request resends a lost task and never starts a second
            // one. NULL until a delete starts (and for rows made DELETING before this
            // migration: the next request to delete one chooses it).
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS delete_task CHAR(36) NULL",
        ],
    },
    Migration {
        version: 10,
        statements: &[
            // The id of the task detaching a replica, chosen when it became DETACH, as
            // `delete_task` is for deleting: a repeated detach resends a lost task. NULL
            // until a detach starts (and for rows made DETACH before this migration: the
            // next request to detach one chooses it).
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS detach_task CHAR(36) NULL",
        ],
    },
    Migration {
        version: 11,
        statements: &[
            // The id of the task that builds an instance (shared by the replicas of one
            // request), written with the row, and when the broker confirmed the API's send
            // of it. A row in BUILD whose task was never confirmed sent, and that no
            // taskmanager has taken up, is a request the API lost on the way: the
            // taskmanager resends a lost replica request and fails a lost create (see
            // `unsent_creates.rs`). NULL for rows made before this migration.
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS create_task CHAR(36) NULL",
            "ALTER TABLE instances ADD COLUMN IF NOT EXISTS create_sent_at DATETIME(3) NULL",
            "CREATE INDEX IF NOT EXISTS instances_create_task ON instances (create_task)",
        ],
    },
];

/// The server-wide lock name for migrating `database` (lock names are at most 64
/// characters; a shared prefix only makes two databases migrate one after the other).
fn lock_name(database: &str) -> String {
    let prefix: String = database.chars().take(56).collect();
    format!("{prefix}.migrate")
}

/// Applies every migration not yet recorded in `schema_migrations`, in order, under the
/// database's migration lock. `conn` must already be using the control database.
pub(crate) async fn run(conn: &mut Conn, database: &str) -> Result<(), StoreError> {
    let lock = lock_name(database);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 30)", (lock.as_str(),))
        .await?;
    if got.flatten() != Some(1) {
        return Err(StoreError::Conflict(format!(
            "another process has been migrating database {database} for 30 s; try again"
        )));
    }
    let result = apply_missing(conn).await;
    // Released on every path; the server also releases it if this connection dies.
    let released: Result<Option<Option<i64>>, _> = conn
        .exec_first("SELECT RELEASE_LOCK(?)", (lock.as_str(),))
        .await;
    result?;
    released?;
    Ok(())
}

async fn apply_missing(conn: &mut Conn) -> Result<(), StoreError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT NOT NULL PRIMARY KEY,
            applied_at DATETIME(3) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )
    .await?;
    let applied: HashSet<i32> = conn
        .exec::<i32, _, _>("SELECT version FROM schema_migrations", ())
        .await?
        .into_iter()
        .collect();
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > newest_known).max() {
        tracing::warn!(
            schema_version = newer,
            known = newest_known,
            "the control DB was migrated by a newer build; running with its schema"
        );
    }
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(version = migration.version, "applying control DB migration");
        for statement in migration.statements {
            conn.query_drop(*statement).await?;
        }
        conn.exec_drop(
            "INSERT IGNORE INTO schema_migrations (version, applied_at) VALUES (?, UTC_TIMESTAMP(3))",
            (migration.version,),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.first(), Some(&1));
    }

    #[test]
    fn seeds_use_the_published_ids() {
        let seeds = MIGRATIONS[1].statements.join("\n");
        assert!(seeds.contains(MARIADB_DATASTORE_ID));
        assert!(seeds.contains(MARIADB_10_11_VERSION_ID));
    }

    #[test]
    fn lock_names_fit() {
        assert!(lock_name(&"x".repeat(64)).len() <= 64);
        assert_eq!(lock_name("ferrotrove"), "ferrotrove.migrate");
    }
}
