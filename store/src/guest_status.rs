//! The newest heartbeat of each instance's agent.
//!
//! Heartbeats can arrive late, twice, or out of order (redelivery, several conductors), so
//! "newest" is decided by the agent's own `(boot_id, seq)`, not by arrival: `boot_id` is a
//! UUID v7 drawn at agent start (its text sorts by time) and `seq` counts up within a boot.
//! One conditional upsert applies a heartbeat only when its pair is greater than the
//! stored one, so concurrent writers (batches of one conductor, several conductors) never
//! need a lock of their own: the guard is in the statement. The conductor writes heartbeats
//! in batches, one multi-row statement per batch.
//!
//! Liveness is stored here too: the conductor's periodic check marks the row `stale` when
//! no heartbeat has been applied for longer than its expiry ([`Store::mark_stale`]), and
//! the next newer heartbeat clears the mark; `stale_changed_at` says when either happened.
//! An instance without a row has never reported.

use crate::rows::{parse_uuid, take, take_time, take_uuid, truncate};
use crate::{ID_TABLE, Store, StoreError, id_list, placeholders};
use ferrotrove_proto::agent::Progress;
use ferrotrove_proto::conductor::Heartbeat;
use ferrotrove_proto::status::Role;
use mysql_async::prelude::Queryable;
use mysql_async::{Deserialized, Row, Serialized, TxOpts, Value, from_value_opt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
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
    /// Marked by the conductor's liveness check: no heartbeat was applied for longer than
    /// its expiry. Cleared by the next newer heartbeat.
    pub stale: bool,
    /// When `stale` last changed (or the first heartbeat arrived), by the database's clock.
    pub stale_changed_at: OffsetDateTime,
}

/// What the API shows of an instance's last heartbeat: whether it is fresh, whether the
/// server was up, and the progress of long work. A list of 1,000 instances reads these six
/// columns instead of all of [`GuestStatus`]'s 27 (half the API's time went on them).
#[derive(Clone, Debug, PartialEq)]
pub struct GuestLiveness {
    pub instance_id: Uuid,
    /// When the control DB applied it, by the database server's clock.
    pub received_at: OffsetDateTime,
    /// Milliseconds from `received_at` to the read, by the same clock.
    pub age_ms: u64,
    pub server_up: bool,
    pub progress: Option<Progress>,
    /// Marked by the conductor's liveness check; see [`GuestStatus::stale`].
    pub stale: bool,
}

/// Columns a heartbeat writes, in the order [`heartbeat_params`] gives them (after
/// `instance_id`; `received_at`, `stale_changed_at` and `stale` are set by the statement).
/// `seq` and `boot_id` come last: MariaDB applies `ON DUPLICATE KEY UPDATE` assignments
/// left to right, and every other column's condition must still see the old pair. `seq`
/// before `boot_id`: with a newer boot and a lower seq, the boot's condition
/// `(new_boot, new_seq) > (old_boot, new_seq)` still holds once `seq` is written.
/// `stale_changed_at` before `stale`, whose old value it reads.
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
    "stale_changed_at",
    "stale",
    "seq",
    "boot_id",
];

/// What the statement itself writes for these columns of a new heartbeat.
fn statement_value(column: &str) -> Option<&'static str> {
    match column {
        "received_at" | "stale_changed_at" => Some("UTC_TIMESTAMP(3)"),
        "stale" => Some("FALSE"),
        _ => None,
    }
}

/// Longest human-readable error text kept from a guest.
const MAX_ERROR_CHARS: usize = 4000;
/// Longest server version string (the column is `VARCHAR(255)`).
const MAX_VERSION_CHARS: usize = 255;
/// Longest GTID position kept: a `TEXT` column holds 65,535 bytes, 16,383 characters of
/// utf8mb4. Real positions are a few dozen characters; a longer one is garbage, and cutting
/// it keeps a batch from failing over one message.
const MAX_GTID_CHARS: usize = 16_000;
/// Longest `operation` or `stage` word kept from a guest's progress, so the stored JSON
/// always fits its `TEXT` column.
const MAX_PROGRESS_WORD_CHARS: usize = 64;
/// The most heartbeats in one statement (about 600 bytes of SQL each, far below the
/// server's 16 MiB `max_allowed_packet`). Larger batches take several statements, in one
/// transaction.
const MAX_ROWS_PER_STATEMENT: usize = 1_000;

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

/// The heartbeat's values, `instance_id` first, then [`HEARTBEAT_COLUMNS`] but those the
/// statement sets. Every value is cut to fit its column, so the database never refuses one
/// heartbeat, and with it the whole batch.
fn heartbeat_params(hb: &Heartbeat) -> Vec<Value> {
    let server = &hb.server;
    let repl = server.replication.as_ref();
    let text = |s: Option<&String>, max: usize| -> Value { s.map(|s| truncate(s, max)).into() };
    // FLOAT holds neither NaN nor infinity.
    let cpu = if hb.host.cpu_percent.is_finite() {
        hb.host.cpu_percent
    } else {
        0.0
    };
    vec![
        hb.instance_id.to_string().into(),
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
        text(server.gtid_binlog_pos.as_ref(), MAX_GTID_CHARS),
        text(server.gtid_slave_pos.as_ref(), MAX_GTID_CHARS),
        text(server.gtid_current_pos.as_ref(), MAX_GTID_CHARS),
        text(server.error.as_ref(), MAX_ERROR_CHARS),
        text(repl.and_then(|r| r.last_error.as_ref()), MAX_ERROR_CHARS),
        cpu.into(),
        hb.host.mem_used_bytes.into(),
        hb.host.mem_total_bytes.into(),
        hb.host.disk_used_bytes.into(),
        hb.host.disk_total_bytes.into(),
        progress_param(hb.progress.as_ref()),
        hb.seq.into(),
        hb.boot_id.to_string().into(),
    ]
}

/// `sql` with each `?` replaced by the next of `values` as a literal.
///
/// Batches are sent as text, not as prepared statements: a prepared multi-row upsert with
/// thousands of parameters runs about 1.5 times slower on MariaDB 10.11, and each batch
/// size would be a statement of its own. The literals are valid whatever the server's
/// `sql_mode`: text without backslashes or control characters is quoted, with quotes
/// doubled (read the same with and without `NO_BACKSLASH_ESCAPES`); any other text is
/// written in hex (`X'...'`), which the column converts from its bytes.
fn with_literals(sql: &str, values: impl IntoIterator<Item = Value>) -> String {
    use std::fmt::Write;
    let mut values = values.into_iter();
    let mut out = String::with_capacity(sql.len() * 4);
    let mut parts = sql.split('?').peekable();
    while let Some(part) = parts.next() {
        out.push_str(part);
        if parts.peek().is_none() {
            break;
        }
        // Writing to a String cannot fail.
        let _ = match values.next().unwrap_or(Value::NULL) {
            Value::NULL => write!(out, "NULL"),
            Value::Int(i) => write!(out, "{i}"),
            Value::UInt(u) => write!(out, "{u}"),
            Value::Float(f) if f.is_finite() => write!(out, "{f}"),
            Value::Double(d) if d.is_finite() => write!(out, "{d}"),
            Value::Float(_) | Value::Double(_) => write!(out, "NULL"),
            Value::Bytes(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) if !text.chars().any(|c| c == '\\' || c.is_control()) => {
                    write!(out, "'{}'", text.replace('\'', "''"))
                }
                _ => write!(out, "X'{}'", hex::encode(&bytes)),
            },
            other => write!(out, "{}", other.as_sql(true)),
        };
    }
    out
}

/// The newest heartbeat of each instance in `batch`, by `(boot_id, seq)`, in the order of
/// their instance ids (the primary key's order, so concurrent batches lock rows in one
/// order and do not deadlock each other).
fn newest_per_instance(batch: &[Heartbeat]) -> Vec<&Heartbeat> {
    let mut newest: BTreeMap<Uuid, &Heartbeat> = BTreeMap::new();
    for hb in batch {
        newest
            .entry(hb.instance_id)
            .and_modify(|kept| {
                if (hb.boot_id, hb.seq) > (kept.boot_id, kept.seq) {
                    *kept = hb;
                }
            })
            .or_insert(hb);
    }
    newest.into_values().collect()
}

/// The upsert of `rows` heartbeats in one multi-row statement, with a `?` for each value:
/// each column is updated only for a newer `(boot_id, seq)` pair, so the guard holds
/// whatever order batches and conductors write in. A newer heartbeat also clears the
/// liveness check's mark (`stale`), noting when.
fn heartbeat_sql(rows: usize) -> String {
    let columns = HEARTBEAT_COLUMNS.join(", ");
    let values: Vec<&str> = HEARTBEAT_COLUMNS
        .iter()
        .map(|c| statement_value(c).unwrap_or("?"))
        .collect();
    let row = format!("(?, {})", values.join(", "));
    let newer = "(VALUES(boot_id), VALUES(seq)) > (guest_status.boot_id, guest_status.seq)";
    let updates: Vec<String> = HEARTBEAT_COLUMNS
        .iter()
        .map(|c| match *c {
            "stale_changed_at" => format!(
                "guest_status.{c} = IF({newer} AND guest_status.stale, VALUES({c}), guest_status.{c})"
            ),
            _ => format!("guest_status.{c} = IF({newer}, VALUES({c}), guest_status.{c})"),
        })
        .collect();
    format!(
        "INSERT INTO guest_status (instance_id, {columns}) VALUES {rows} \
         ON DUPLICATE KEY UPDATE {updates}",
        rows = vec![row.as_str(); rows].join(", "),
        updates = updates.join(", "),
    )
}

/// `age_ms`: how long ago the row's heartbeat was applied, by the database's clock.
const AGE_MS: &str =
    "GREATEST(TIMESTAMPDIFF(MICROSECOND, received_at, UTC_TIMESTAMP(3)), 0) DIV 1000 AS age_ms";

const LIVENESS_COLUMNS: &str = "instance_id, received_at, server_up, progress, stale";

impl GuestLiveness {
    fn from_row(mut row: Row) -> Result<GuestLiveness, StoreError> {
        let age: i64 = take(&mut row, "age_ms")?;
        Ok(GuestLiveness {
            progress: take_progress(&mut row)?,
            instance_id: take_uuid(&mut row, "instance_id")?,
            received_at: take_time(&mut row, "received_at")?,
            age_ms: u64::try_from(age).unwrap_or(0),
            server_up: take(&mut row, "server_up")?,
            stale: take(&mut row, "stale")?,
        })
    }
}

const COLUMNS: &str = "instance_id, boot_id, seq, received_at, \
     server_up, version, read_only, role, source_host, source_port, io_running, sql_running, lag_seconds, \
     gtid_binlog_pos, gtid_slave_pos, gtid_current_pos, server_error, last_error, \
     cpu_percent, mem_used, mem_total, disk_used, disk_total, progress, stale, stale_changed_at";

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
            stale: take(&mut row, "stale")?,
            stale_changed_at: take_time(&mut row, "stale_changed_at")?,
        })
    }
}

/// The most rows one liveness update locks at a time.
const MARK_CHUNK: usize = 500;

impl Store {
    /// Applies a heartbeat if it is newer, by `(boot_id, seq)`, than the stored one.
    /// Returns whether it was applied: `false` for an older or repeated heartbeat, and for
    /// one whose instance is unknown or deleted.
    pub async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<bool, StoreError> {
        // 1: inserted, 2: updated, 0: kept (the connection never sets CLIENT_FOUND_ROWS).
        Ok(self.upsert_heartbeats(&[hb]).await? > 0)
    }

    /// Applies a batch of heartbeats in one statement (one transaction): each is applied
    /// only if it is newer than the stored one, as [`Store::record_heartbeat`] does, and of
    /// several for one instance only the newest counts. All or none: on error nothing was
    /// written.
    pub async fn record_heartbeats(&self, batch: &[Heartbeat]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.upsert_heartbeats(&newest_per_instance(batch)).await?;
        Ok(())
    }

    /// Runs the upsert in one transaction: reads which of the instances are live and writes
    /// the heartbeats of those only (heartbeats of unknown or deleted instances write
    /// nothing). The read takes no locks, so heartbeats never hold up the API's guarded
    /// transitions; a heartbeat racing its instance's deletion may leave a row behind,
    /// which nothing reads. Returns MariaDB's affected-row count.
    async fn upsert_heartbeats(&self, batch: &[&Heartbeat]) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
            let result = async {
                let ids: Vec<Uuid> = batch.iter().map(|hb| hb.instance_id).collect();
                let live: HashSet<String> = tx
                    .exec(
                        format!(
                            "SELECT i.id FROM {ID_TABLE} \
                             JOIN instances AS i ON i.id = ids.id AND i.deleted_at IS NULL"
                        ),
                        (id_list(&ids),),
                    )
                    .await?
                    .into_iter()
                    .collect();
                let live: Vec<&Heartbeat> = batch
                    .iter()
                    .copied()
                    .filter(|hb| live.contains(&hb.instance_id.to_string()))
                    .collect();
                let mut affected = 0;
                for chunk in live.chunks(MAX_ROWS_PER_STATEMENT) {
                    let params = chunk.iter().flat_map(|hb| heartbeat_params(hb));
                    tx.query_drop(with_literals(&heartbeat_sql(chunk.len()), params))
                        .await?;
                    affected += tx.affected_rows();
                }
                Ok::<_, StoreError>(affected)
            }
            .await;
            match result {
                Ok(affected) => {
                    tx.commit().await?;
                    Ok(affected)
                }
                Err(error) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::debug!(error = %rollback, "rolling back a heartbeat batch");
                    }
                    Err(error)
                }
            }
        })
        .await
    }

    /// The liveness check: marks `stale` every live instance's heartbeat row whose last
    /// heartbeat was applied longer than `expiry` ago and is not marked yet, and returns
    /// those instances. Instance rows are never touched (their task-level status stays
    /// what it is).
    ///
    /// Safe to run from several conductors at once: candidates are found by a plain read
    /// (no locks over the table), then each is locked by its primary key and checked again
    /// before it is marked, so a heartbeat applied in between wins and no instance is
    /// marked twice.
    pub async fn mark_stale(&self, expiry: Duration) -> Result<Vec<Uuid>, StoreError> {
        self.bounded(async {
            let expiry_us = u64::try_from(expiry.as_micros()).unwrap_or(u64::MAX);
            let mut conn = self.pool.get_conn().await?;
            let candidates: Vec<String> = conn
                .exec(
                    "SELECT g.instance_id FROM guest_status AS g \
                     JOIN instances AS i ON i.id = g.instance_id AND i.deleted_at IS NULL \
                     WHERE NOT g.stale AND g.received_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND \
                     ORDER BY g.instance_id",
                    (expiry_us,),
                )
                .await?;
            drop(conn);
            let mut marked = Vec::new();
            for chunk in candidates.chunks(MARK_CHUNK) {
                let mut tx = self.pool.start_transaction(TxOpts::default()).await?;
                let result = async {
                    let mut params: Vec<Value> = chunk.iter().map(|id| id.as_str().into()).collect();
                    params.push(expiry_us.into());
                    let locked: Vec<String> = tx
                        .exec(
                            format!(
                                "SELECT instance_id FROM guest_status WHERE instance_id IN ({}) \
                                 AND NOT stale AND received_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND \
                                 ORDER BY instance_id FOR UPDATE",
                                placeholders(chunk.len())
                            ),
                            params,
                        )
                        .await?;
                    if !locked.is_empty() {
                        let params: Vec<Value> = locked.iter().map(|id| id.as_str().into()).collect();
                        tx.exec_drop(
                            format!(
                                "UPDATE guest_status SET stale = TRUE, stale_changed_at = UTC_TIMESTAMP(3) \
                                 WHERE instance_id IN ({})",
                                placeholders(locked.len())
                            ),
                            params,
                        )
                        .await?;
                    }
                    Ok::<_, StoreError>(locked)
                }
                .await;
                match result {
                    Ok(locked) => {
                        tx.commit().await?;
                        for id in locked {
                            marked.push(parse_uuid("instance_id", &id)?);
                        }
                    }
                    Err(error) => {
                        if let Err(rollback) = tx.rollback().await {
                            tracing::debug!(error = %rollback, "rolling back the liveness check");
                        }
                        return Err(error);
                    }
                }
            }
            Ok(marked)
        })
        .await
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
        let rows = self.guest_rows(COLUMNS, ids).await?;
        rows.into_iter()
            .map(|row| GuestStatus::from_row(row).map(|s| (s.instance_id, s)))
            .collect()
    }

    /// [`GuestLiveness`] of several instances, in one query; instances that never
    /// reported are absent.
    pub async fn guest_liveness(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, GuestLiveness>, StoreError> {
        let rows = self.guest_rows(LIVENESS_COLUMNS, ids).await?;
        rows.into_iter()
            .map(|row| GuestLiveness::from_row(row).map(|g| (g.instance_id, g)))
            .collect()
    }

    /// `columns` (and `age_ms`) of the heartbeat rows of `ids`.
    async fn guest_rows(&self, columns: &str, ids: &[Uuid]) -> Result<Vec<Row>, StoreError> {
        self.bounded(async {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.pool.get_conn().await?;
            Ok(conn
                .exec(
                    format!(
                        "SELECT {columns}, {AGE_MS} FROM {ID_TABLE} \
                         JOIN guest_status ON guest_status.instance_id = ids.id"
                    ),
                    (id_list(ids),),
                )
                .await?)
        })
        .await
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
    fn pair_is_assigned_last_seq_before_boot_after_the_stale_mark() {
        let sql = heartbeat_sql(1);
        let seq = sql.rfind("guest_status.seq = IF").unwrap();
        let boot = sql.rfind("guest_status.boot_id = IF").unwrap();
        let stale = sql.rfind("guest_status.stale = IF").unwrap();
        let stale_at = sql.rfind("guest_status.stale_changed_at = IF").unwrap();
        let others = sql.rfind("guest_status.progress = IF").unwrap();
        assert!(others < stale_at && stale_at < stale && stale < seq && seq < boot);
        assert!(sql.trim_end().ends_with("guest_status.boot_id)"));
    }

    fn heartbeat(instance_id: Uuid, boot_id: Uuid, seq: u64) -> Heartbeat {
        Heartbeat {
            instance_id,
            boot_id,
            seq,
            server: Default::default(),
            host: Default::default(),
            progress: None,
        }
    }

    #[test]
    fn params_match_placeholders() {
        let hb = heartbeat(Uuid::nil(), Uuid::now_v7(), 1);
        for rows in [1, 3, MAX_ROWS_PER_STATEMENT] {
            let placeholders = heartbeat_sql(rows).matches('?').count();
            assert_eq!(heartbeat_params(&hb).len() * rows, placeholders);
        }
        // No `?` in the statement but placeholders: the literals go exactly where they go.
        assert!(!heartbeat_sql(1).replace("?", "").contains('?'));
    }

    #[test]
    fn a_batch_keeps_the_newest_of_each_instance_in_key_order() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let (old, new) = (Uuid::from_u128(10), Uuid::from_u128(20));
        let batch = [
            heartbeat(a, old, 7),
            heartbeat(b, old, 1),
            heartbeat(a, new, 1),
            heartbeat(a, old, 9),
            heartbeat(b, old, 3),
            heartbeat(b, old, 2),
        ];
        let kept: Vec<_> = newest_per_instance(&batch)
            .iter()
            .map(|hb| (hb.instance_id, hb.boot_id, hb.seq))
            .collect();
        assert_eq!(kept, [(b, old, 3), (a, new, 1)]);
    }

    #[test]
    fn literals_are_safe_in_every_sql_mode() {
        let sql = with_literals(
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                Value::NULL,
                Value::Int(-3),
                Value::UInt(u64::MAX),
                Value::Float(3.5),
                Value::Float(f32::NAN),
                "it's".into(),
                "back\\slash".into(),
                "line\nbreak".into(),
                "é😀".into(),
            ],
        );
        assert_eq!(
            sql,
            format!(
                "(NULL, -3, {}, 3.5, NULL, 'it''s', X'{}', X'{}', 'é😀')",
                u64::MAX,
                hex::encode("back\\slash"),
                hex::encode("line\nbreak")
            )
        );
    }

    #[test]
    fn values_are_cut_to_fit_their_columns() {
        let mut hb = heartbeat(Uuid::nil(), Uuid::nil(), u64::MAX);
        hb.host.cpu_percent = f32::NAN;
        hb.server.gtid_binlog_pos = Some("0-1-2,".repeat(10_000));
        hb.server.version = Some("v".repeat(1_000));
        let params = heartbeat_params(&hb);
        let text_len = |v: &Value| match v {
            Value::Bytes(b) => b.len(),
            other => panic!("text expected, got {other:?}"),
        };
        assert_eq!(text_len(&params[2]), MAX_VERSION_CHARS);
        assert_eq!(text_len(&params[10]), MAX_GTID_CHARS);
        assert_eq!(params[15], Value::Float(0.0));
        assert_eq!(params[21], Value::UInt(u64::MAX));
    }
}
