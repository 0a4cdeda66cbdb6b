//! The newest heartbeat of each instance's agent.
//!
//! Heartbeats can arrive late, twice, or out of order (redelivery, several conductors), so
//! "newest" is decided by the agent's own `(boot_id, seq)`, not by arrival: `boot_id` is a
//! UUID v7 drawn at agent start (its text sorts by time) and `seq` counts up within a boot.
//! One conditional upsert applies a heartbeat only when its pair is greater than the
//! stored one, so concurrent writers never need a lock.

use crate::rows::{take, take_time, take_uuid, truncate};
use crate::{Store, StoreError, placeholders};
use ferrotrove_proto::agent::Progress;
use ferrotrove_proto::conductor::Heartbeat;
use ferrotrove_proto::status::Role;
use mysql_async::prelude::Queryable;
use mysql_async::{Deserialized, Row, Serialized, Value, from_value_opt};
use std::collections::HashMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// An instance's last applied heartbeat, flattened.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestStatus {
    pub instance_id: Uuid,
    pub boot_id: Uuid,
    pub seq: u64,
    /// When the control DB applied it, by the database server's clock.
    pub received_at: OffsetDateTime,
    /// Milliseconds from `received_at` to the read, by the same clock, so readers judge
    /// freshness without trusting their own clock.
    pub age_ms: u64,
    pub server_up: bool,
    pub version: Option<String>,
    pub read_only: Option<bool>,
    pub role: Option<Role>,
    /// Replication, when the server is configured as a replica.
    pub source_host: Option<String>,
    pub source_port: Option<u16>,
    pub io_running: Option<bool>,
    pub sql_running: Option<bool>,
    pub lag_seconds: Option<u64>,
    pub gtid_binlog_pos: Option<String>,
    pub gtid_slave_pos: Option<String>,
    pub gtid_current_pos: Option<String>,
    /// Why the server is down or unhealthy (the agent's `ServerStatus.error`).
    pub server_error: Option<String>,
    /// The last replication error (`ReplicationStatus.last_error`).
    pub last_error: Option<String>,
    pub cpu_percent: f32,
    pub mem_used: u64,
    pub mem_total: u64,
    pub disk_used: u64,
    pub disk_total: u64,
    /// The snapshot or restore running when this heartbeat was sent; `None` when none was
    /// (a heartbeat without progress clears the previous one's).
    pub progress: Option<Progress>,
}

/// Columns a heartbeat writes, in the order [`heartbeat_params`] gives them, after
/// `instance_id`. `seq` and `boot_id` come last: MariaDB applies `ON DUPLICATE KEY UPDATE`
/// assignments left to right, and every other column's condition must still see the old
/// pair. `seq` before `boot_id`: with a newer boot and a lower seq, the boot's condition
/// `(new_boot, new_seq) > (old_boot, new_seq)` still holds once `seq` is written.
const HEARTBEAT_COLUMNS: &[&str] = &[
    "received_at",
    "server_up",
    "version",
    "read_only",
    "role",
    "source_host",
    "source_port",
    "io_running",
    "sql_running",
    "lag_seconds",
    "gtid_binlog_pos",
    "gtid_slave_pos",
    "gtid_current_pos",
    "server_error",
    "last_error",
    "cpu_percent",
    "mem_used",
    "mem_total",
    "disk_used",
    "disk_total",
    "progress",
    "seq",
    "boot_id",
];

/// Longest human-readable error text kept from a guest.
const MAX_ERROR_CHARS: usize = 4000;
/// Longest server version string (the column is `VARCHAR(255)`).
const MAX_VERSION_CHARS: usize = 255;
/// Longest `operation` or `stage` word kept from a guest's progress, so the stored JSON
/// always fits its `TEXT` column.
const MAX_PROGRESS_WORD_CHARS: usize = 64;

/// The heartbeat's progress as stored: the proto `Progress` as JSON, its words cut to
/// [`MAX_PROGRESS_WORD_CHARS`]; NULL when the heartbeat has none.
fn progress_param(progress: Option<&Progress>) -> Value {
    progress
        .map(|p| {
            Serialized(Progress {
                operation: truncate(&p.operation, MAX_PROGRESS_WORD_CHARS).to_owned(),
                stage: truncate(&p.stage, MAX_PROGRESS_WORD_CHARS).to_owned(),
                ..p.clone()
            })
        })
        .into()
}

/// Reads the stored progress. JSON this build cannot read is logged and dropped instead of
/// failing the whole status: progress is only ever shown, never acted on.
fn take_progress(row: &mut Row) -> Result<Option<Progress>, StoreError> {
    let value: Value = take(row, "progress")?;
    if value == Value::NULL {
        return Ok(None);
    }
    match from_value_opt::<Deserialized<Progress>>(value) {
        Ok(Deserialized(progress)) => Ok(Some(progress)),
        Err(error) => {
            tracing::warn!(%error, "ignoring unreadable progress in guest_status");
            Ok(None)
        }
    }
}

fn heartbeat_params(hb: &Heartbeat) -> Vec<Value> {
    let server = &hb.server;
    let repl = server.replication.as_ref();
    let text = |s: Option<&String>, max: usize| -> Value { s.map(|s| truncate(s, max)).into() };
    vec![
        server.up.into(),
        text(server.version.as_ref(), MAX_VERSION_CHARS),
        server.read_only.into(),
        server.role.map(Role::as_str).into(),
        repl.map(|r| truncate(&r.source_host, 255)).into(),
        repl.map(|r| r.source_port).into(),
        repl.map(|r| r.io_running).into(),
        repl.map(|r| r.sql_running).into(),
        repl.and_then(|r| r.lag_seconds)
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
            .into(),
        server.gtid_binlog_pos.as_deref().into(),
        server.gtid_slave_pos.as_deref().into(),
        server.gtid_current_pos.as_deref().into(),
        text(server.error.as_ref(), MAX_ERROR_CHARS),
        text(repl.and_then(|r| r.last_error.as_ref()), MAX_ERROR_CHARS),
        hb.host.cpu_percent.into(),
        hb.host.mem_used_bytes.into(),
        hb.host.mem_total_bytes.into(),
        hb.host.disk_used_bytes.into(),
        hb.host.disk_total_bytes.into(),
        progress_param(hb.progress.as_ref()),
        hb.seq.into(),
        hb.boot_id.to_string().into(),
    ]
}

/// The upsert: `INSERT ... SELECT` from the live instance row (so heartbeats of unknown or
/// deleted instances insert nothing), each column updated only for a newer pair.
fn heartbeat_sql() -> String {
    let columns = HEARTBEAT_COLUMNS.join(", ");
    let values: Vec<&str> = HEARTBEAT_COLUMNS
        .iter()
        .map(|c| {
            if *c == "received_at" {
                "UTC_TIMESTAMP(3)"
            } else {
                "?"
            }
        })
        .collect();
    let newer = "(VALUES(boot_id), VALUES(seq)) > (guest_status.boot_id, guest_status.seq)";
    let updates: Vec<String> = HEARTBEAT_COLUMNS
        .iter()
        .map(|c| format!("guest_status.{c} = IF({newer}, VALUES({c}), guest_status.{c})"))
        .collect();
    format!(
        "INSERT INTO guest_status (instance_id, {columns}) \
         SELECT i.id, {values} FROM instances AS i WHERE i.id = ? AND i.deleted_at IS NULL \
         ON DUPLICATE KEY UPDATE {updates}",
        values = values.join(", "),
        updates = updates.join(", "),
    )
}

const COLUMNS: &str = "instance_id, boot_id, seq, received_at, \
     GREATEST(TIMESTAMPDIFF(MICROSECOND, received_at, UTC_TIMESTAMP(3)), 0) DIV 1000 AS age_ms, \
     server_up, version, read_only, role, source_host, source_port, io_running, sql_running, lag_seconds, \
     gtid_binlog_pos, gtid_slave_pos, gtid_current_pos, server_error, last_error, \
     cpu_percent, mem_used, mem_total, disk_used, disk_total, progress";

impl GuestStatus {
    fn from_row(mut row: Row) -> Result<GuestStatus, StoreError> {
        let role: Option<String> = take(&mut row, "role")?;
        let role = match role.as_deref() {
            None => None,
            Some("standalone") => Some(Role::Standalone),
            Some("replica") => Some(Role::Replica),
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "column role: unknown role {other:?}"
                )));
            }
        };
        let lag: Option<i64> = take(&mut row, "lag_seconds")?;
        let port: Option<i64> = take(&mut row, "source_port")?;
        let age: i64 = take(&mut row, "age_ms")?;
        let progress = take_progress(&mut row)?;
        Ok(GuestStatus {
            instance_id: take_uuid(&mut row, "instance_id")?,
            boot_id: take_uuid(&mut row, "boot_id")?,
            seq: take(&mut row, "seq")?,
            received_at: take_time(&mut row, "received_at")?,
            age_ms: u64::try_from(age).unwrap_or(0),
            server_up: take(&mut row, "server_up")?,
            version: take(&mut row, "version")?,
            read_only: take(&mut row, "read_only")?,
            role,
            source_host: take(&mut row, "source_host")?,
            source_port: port.and_then(|p| u16::try_from(p).ok()),
            io_running: take(&mut row, "io_running")?,
            sql_running: take(&mut row, "sql_running")?,
            lag_seconds: lag.and_then(|l| u64::try_from(l).ok()),
            gtid_binlog_pos: take(&mut row, "gtid_binlog_pos")?,
            gtid_slave_pos: take(&mut row, "gtid_slave_pos")?,
            gtid_current_pos: take(&mut row, "gtid_current_pos")?,
            server_error: take(&mut row, "server_error")?,
            last_error: take(&mut row, "last_error")?,
            cpu_percent: take(&mut row, "cpu_percent")?,
            mem_used: take(&mut row, "mem_used")?,
            mem_total: take(&mut row, "mem_total")?,
            disk_used: take(&mut row, "disk_used")?,
            disk_total: take(&mut row, "disk_total")?,
            progress,
        })
    }
}

impl Store {
    /// Applies a heartbeat if it is newer, by `(boot_id, seq)`, than the stored one.
    /// Returns whether it was applied: `false` for an older or repeated heartbeat, and for
    /// one whose instance is unknown or deleted.
    pub async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<bool, StoreError> {
        let mut params = heartbeat_params(hb);
        params.push(hb.instance_id.to_string().into());
        let mut conn = self.pool.get_conn().await?;
        conn.exec_drop(heartbeat_sql(), params).await?;
        // 1: inserted, 2: updated, 0: kept (the connection never sets CLIENT_FOUND_ROWS).
        Ok(conn.affected_rows() > 0)
    }

    /// The instance's last applied heartbeat, if any.
    pub async fn guest_status(&self, id: Uuid) -> Result<Option<GuestStatus>, StoreError> {
        Ok(self.guest_statuses(&[id]).await?.remove(&id))
    }

    /// The last applied heartbeats of several instances, in one query; instances that
    /// never reported are absent.
    pub async fn guest_statuses(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, GuestStatus>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut conn = self.pool.get_conn().await?;
        let params: Vec<Value> = ids.iter().map(|id| id.to_string().into()).collect();
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT {COLUMNS} FROM guest_status WHERE instance_id IN ({})",
                    placeholders(ids.len())
                ),
                params,
            )
            .await?;
        rows.into_iter()
            .map(|row| GuestStatus::from_row(row).map(|s| (s.instance_id, s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(operation: &str, stage: &str) -> Progress {
        Progress {
            operation: operation.to_owned(),
            stage: stage.to_owned(),
            bytes_done: 5,
            bytes_total: Some(10),
            started_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn progress_is_stored_as_json_with_its_words_cut() {
        assert_eq!(progress_param(None), Value::NULL);
        let Value::Bytes(json) = progress_param(Some(&progress("restore", "copying"))) else {
            panic!("progress is stored as text");
        };
        let json = String::from_utf8(json).unwrap();
        assert!(json.contains(r#""operation":"restore""#), "{json}");
        assert!(json.contains(r#""bytes_total":10"#), "{json}");
        let long = "é".repeat(5_000);
        let Value::Bytes(json) = progress_param(Some(&progress(&long, &long))) else {
            panic!("progress is stored as text");
        };
        assert!(json.len() < 1_000, "{} bytes", json.len());
        let Ok(Deserialized(back)) = from_value_opt::<Deserialized<Progress>>(Value::Bytes(json))
        else {
            panic!("stored progress reads back");
        };
        assert_eq!(back.operation.chars().count(), MAX_PROGRESS_WORD_CHARS);
        assert_eq!((back.bytes_done, back.bytes_total), (5, Some(10)));
    }

    #[test]
    fn pair_is_assigned_last_seq_before_boot() {
        let sql = heartbeat_sql();
        let seq = sql.rfind("guest_status.seq = IF").unwrap();
        let boot = sql.rfind("guest_status.boot_id = IF").unwrap();
        let others = sql.rfind("guest_status.progress = IF").unwrap();
        assert!(others < seq && seq < boot);
        assert!(sql.trim_end().ends_with("guest_status.boot_id)"));
    }

    #[test]
    fn params_match_placeholders() {
        let hb = Heartbeat {
            instance_id: Uuid::nil(),
            boot_id: Uuid::now_v7(),
            seq: 1,
            server: Default::default(),
            host: Default::default(),
            progress: None,
        };
        let placeholders = heartbeat_sql().matches('?').count();
        assert_eq!(heartbeat_params(&hb).len() + 1, placeholders);
    }
}
