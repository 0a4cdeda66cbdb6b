//! Logical snapshots (SQL from the dump tool, zstd level 3), and restoring them.
//!
//! The dump is streamed line by line (never held in memory) from the dump tool through zstd
//! into the store, hashing the stored bytes and picking the GTID position out of its comment
//! line on the way.
//!
//! What is dumped, and why in two runs of the dump tool:
//! - the user databases, listed explicitly (the server's own schemas are not: restoring
//!   `mysql.*` tables would overwrite the replica's), in one consistent transaction that
//!   also records the GTID position;
//! - then the accounts and grants (`--system=users`), as `CREATE USER IF NOT EXISTS` and
//!   `GRANT`, so that the app users and the replication users exist on a replica. The
//!   admin account's lines are filtered out of this part: they would set the replica's
//!   admin password to the source's and lock the replica's agent out. This part holds only
//!   account statements, so the filter cannot hit data or routine bodies.

use super::metered::{CountingReader, CountingWriter, HashingWriter, copy_large, dir_size};
use super::on_blocking_thread;
use super::tool::ToolProcess;
use crate::error::{AgentError, Result};
use crate::flavor::Flavor;
use crate::instance::Instance;
use crate::names::{DatabaseName, SYSTEM_DATABASES};
use crate::store::{ObjectWriter, SnapshotReader, data_object};
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use uuid::Uuid;

/// zstd level: a good ratio at a speed well above the dump's.
const ZSTD_LEVEL: i32 = 3;

/// One run of the dump tool.
#[derive(Clone, Debug)]
struct DumpRun {
    args: Vec<String>,
    /// Keep only lines the flavor allows in a users dump.
    filter_users: bool,
}

/// Dumps the instance's user databases and accounts into the store as `snapshot_id`.
pub async fn create(instance: &Instance, snapshot_id: Uuid) -> Result<SnapshotInfo> {
    let databases = user_databases(instance).await?;
    let runs = dump_runs(instance.flavor, &databases);
    tracing::info!(%snapshot_id, databases = databases.len(), "taking a logical snapshot");
    let operation = instance.progress.start(
        "snapshot",
        "dumping",
        Some(dir_size(&instance.paths.data_dir)),
    );
    let program = instance.config.server.dump.clone();
    let client_cnf = instance.paths.client_cnf.clone();
    let flavor = instance.flavor;
    let store = instance.store.clone();
    let dumped = operation.bytes();
    let written = on_blocking_thread("snapshot", move || {
        let writer = store.create(&data_object(snapshot_id))?;
        write_dump(&program, &client_cnf, &runs, flavor, writer, Some(dumped))
    })
    .await?;
    Ok(SnapshotInfo {
        snapshot_id,
        format: SnapshotFormat::LogicalSqlZstd,
        gtid_pos: written.gtid_pos,
        size_bytes: written.size_bytes,
        blake3: written.blake3,
    })
}

/// Reads the dump `reader` reads whole, checking it against its record (as it is
/// written, when following a snapshot still being taken: a dump loaded into the running
/// server cannot be taken back, so it is checked before any of it is loaded); then streams
/// it, decompressed, into the client, logged in as admin, with binary logging off for the
/// restore session. Each byte is hashed once, in the check. Answers with the record.
pub async fn restore(instance: &Instance, reader: SnapshotReader) -> Result<SnapshotInfo> {
    let snapshot_id = reader.snapshot_id();
    tracing::info!(%snapshot_id, "restoring a logical snapshot");
    let checking = instance
        .progress
        .start("restore", "verifying", reader.expected_size());
    let mut reader = reader.with_progress(checking.bytes());
    let info = on_blocking_thread("verify", move || {
        if let Err(err) = copy_large(&mut reader, &mut std::io::sink()) {
            return Err(reader.take_failure().unwrap_or_else(|| {
                AgentError::Internal(format!("cannot read snapshot {snapshot_id}: {err}"))
            }));
        }
        reader.verify()
    })
    .await?;
    drop(checking);
    let program = instance.config.server.client.clone();
    let client_cnf = instance.paths.client_cnf.clone();
    let args = instance.flavor.restore_args();
    let store = instance.store.clone();
    let operation = instance
        .progress
        .start("restore", "loading", Some(info.size_bytes));
    let read = operation.bytes();
    on_blocking_thread("restore", move || {
        let reader = CountingReader {
            inner: store.open(&data_object(snapshot_id))?,
            progress: read,
        };
        restore_stream(&program, &client_cnf, &args, reader, snapshot_id)
    })
    .await?;
    tracing::info!("snapshot restored");
    Ok(info)
}

/// The user databases of the server: every schema but the server's own.
async fn user_databases(instance: &Instance) -> Result<Vec<DatabaseName>> {
    let mut session = instance.admin.connect().await?;
    let rows = session.rows(&instance.flavor.list_databases()).await?;
    let names: Vec<String> = rows
        .iter()
        .filter_map(|row| crate::db::text_at(row, 0))
        .collect();
    Ok(select_user_databases(&names))
}

/// Drops the server's own schemas; keeps any other name as it is (a database created by
/// users through SQL need not follow our naming rules, and the dump tool quotes names).
fn select_user_databases(names: &[String]) -> Vec<DatabaseName> {
    names
        .iter()
        .filter(|name| {
            !SYSTEM_DATABASES
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
        })
        .map(|name| DatabaseName::existing(name))
        .collect()
}

/// The runs of the dump tool for a snapshot; see the module doc.
fn dump_runs(flavor: &dyn Flavor, databases: &[DatabaseName]) -> Vec<DumpRun> {
    if databases.is_empty() {
        return vec![DumpRun {
            args: flavor.dump_users_args(true),
            filter_users: true,
        }];
    }
    vec![
        DumpRun {
            args: flavor.dump_data_args(databases),
            filter_users: false,
        },
        DumpRun {
            args: flavor.dump_users_args(false),
            filter_users: true,
        },
    ]
}

/// What a finished dump looks like in the store.
#[derive(Debug)]
struct WrittenDump {
    size_bytes: u64,
    blake3: String,
    gtid_pos: String,
}

/// Runs the dump tool once per run, streaming everything through zstd into `writer`,
/// which is finished (made visible) only when every run succeeded.
fn write_dump(
    program: &str,
    client_cnf: &Path,
    runs: &[DumpRun],
    flavor: &dyn Flavor,
    writer: Box<dyn ObjectWriter>,
    dumped: Option<Arc<AtomicU64>>,
) -> Result<WrittenDump> {
    let store_error =
        |err: std::io::Error| AgentError::Internal(format!("cannot write the snapshot: {err}"));
    let hashing = HashingWriter::new(writer, None);
    let mut encoder = zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(store_error)?;
    let mut gtid_pos = None;
    for run in runs {
        let mut out = CountingWriter {
            inner: &mut encoder,
            progress: dumped.clone(),
        };
        let position = dump_once(program, client_cnf, run, flavor, &mut out)?;
        gtid_pos = gtid_pos.or(position);
    }
    let hashing = encoder.finish().map_err(store_error)?;
    let gtid_pos = gtid_pos.ok_or_else(|| AgentError::Command {
        program: program.to_owned(),
        message: "the dump carries no GTID position; is the binary log enabled?".to_owned(),
    })?;
    let (size_bytes, blake3) = hashing.digest();
    hashing.inner.finish()?;
    Ok(WrittenDump {
        size_bytes,
        blake3,
        gtid_pos,
    })
}

/// One run of the dump tool: copies its output line by line into `out`, answers with the
/// GTID position if the output recorded one.
fn dump_once(
    program: &str,
    client_cnf: &Path,
    run: &DumpRun,
    flavor: &dyn Flavor,
    out: &mut impl Write,
) -> Result<Option<String>> {
    let mut tool = ToolProcess::spawn(
        program,
        client_cnf,
        &run.args,
        Stdio::null(),
        Stdio::piped(),
    )?;
    let Some(stdout) = tool.child.stdout.take() else {
        return Err(AgentError::Internal(
            "the dump's stdout was not captured".to_owned(),
        ));
    };
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::with_capacity(1 << 16);
    let mut position = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|err| tool.abort(format!("cannot read its output: {err}")))?;
        if n == 0 {
            break;
        }
        if run.filter_users && !flavor.keep_dumped_user_line(&line) {
            continue;
        }
        if let Some(found) = flavor.position_in_dump_line(&line) {
            position = Some(found);
        }
        if let Err(err) = out.write_all(&line) {
            return Err(tool.abort(format!("cannot store its output: {err}")));
        }
    }
    tool.finish()?;
    Ok(position)
}

/// Decompresses `stored` into the client's stdin.
fn restore_stream(
    program: &str,
    client_cnf: &Path,
    args: &[String],
    stored: impl Read,
    snapshot_id: Uuid,
) -> Result<()> {
    let stored = std::io::BufReader::with_capacity(1 << 20, stored);
    let mut decoder = zstd::Decoder::with_buffer(stored).map_err(|err| {
        AgentError::Internal(format!("cannot decompress snapshot {snapshot_id}: {err}"))
    })?;
    let mut tool = ToolProcess::spawn(program, client_cnf, args, Stdio::piped(), Stdio::null())?;
    let Some(mut stdin) = tool.child.stdin.take() else {
        return Err(AgentError::Internal(
            "the client's stdin was not captured".to_owned(),
        ));
    };
    let copied = copy_large(&mut decoder, &mut stdin);
    // Closing stdin tells the client the dump is complete.
    drop(stdin);
    match copied {
        Ok(_) => tool.finish(),
        // The client stopped reading: its own error (on stderr) says why.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => tool.finish(),
        Err(err) => Err(tool.abort(format!("cannot feed it snapshot {snapshot_id}: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor;
    use crate::store::{DirectoryStore, SnapshotStore};
    use std::fs;

    #[test]
    fn system_schemas_are_not_dumped() {
        let names: Vec<String> = [
            "information_schema",
            "mysql",
            "performance_schema",
            "sys",
            "shop",
            "odd name",
        ]
        .map(String::from)
        .into();
        let selected = select_user_databases(&names);
        let selected: Vec<&str> = selected.iter().map(DatabaseName::as_str).collect();
        assert_eq!(selected, ["shop", "odd name"]);
    }

    #[test]
    fn users_are_dumped_after_data_and_carry_the_position_when_alone() {
        let f = flavor::mariadb();
        let runs = dump_runs(f, &[DatabaseName::existing("shop")]);
        assert_eq!(runs.len(), 2);
        assert!(runs[0].args.contains(&"--master-data=2".to_owned()) && !runs[0].filter_users);
        assert!(!runs[1].args.contains(&"--master-data=2".to_owned()) && runs[1].filter_users);
        let alone = dump_runs(f, &[]);
        assert_eq!(alone.len(), 1);
        assert!(alone[0].args.contains(&"--master-data=2".to_owned()) && alone[0].filter_users);
    }

    #[test]
    fn a_tampered_snapshot_is_refused() {
        let good = SnapshotInfo {
            snapshot_id: Uuid::nil(),
            format: SnapshotFormat::LogicalSqlZstd,
            gtid_pos: String::new(),
            size_bytes: 5,
            blake3: blake3::hash(b"hello").to_hex().to_string(),
        };
        let check = |bytes: &[u8]| {
            crate::store::follow::check_digest(
                &good,
                bytes.len() as u64,
                blake3::hash(bytes).to_hex().as_str(),
            )
        };
        check(b"hello").unwrap();
        assert!(matches!(
            check(b"hellp"),
            Err(AgentError::SnapshotMismatch(_))
        ));
        assert!(matches!(
            check(b"hello!"),
            Err(AgentError::SnapshotMismatch(_))
        ));
    }

    #[test]
    fn dumps_stream_through_filters_and_fail_on_a_bad_exit() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in dump tool: prints its input file, ignoring the defaults-file argument.
        let script = dir.path().join("fake-dump");
        fs::write(&script, "#!/bin/sh\ncat \"$2\"\nexit \"$3\"\n").unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let data = dir.path().join("data.sql");
        fs::write(
            &data,
            "CREATE TABLE t (id int);\n-- SET GLOBAL gtid_slave_pos='0-1-9';\n",
        )
        .unwrap();
        let users = dir.path().join("users.sql");
        fs::write(
            &users,
            "CREATE USER IF NOT EXISTS `root`@`localhost`;\nCREATE USER IF NOT EXISTS `app`@`%`;\n",
        )
        .unwrap();
        let runs = [
            DumpRun {
                args: vec![data.display().to_string(), "0".into()],
                filter_users: false,
            },
            DumpRun {
                args: vec![users.display().to_string(), "0".into()],
                filter_users: true,
            },
        ];
        let store = DirectoryStore::new(&dir.path().join("store"));
        let program = script.display().to_string();
        let cnf = dir.path().join("client.cnf");
        let writer = store.create("x.data").unwrap();
        let written = write_dump(&program, &cnf, &runs, flavor::mariadb(), writer, None).unwrap();
        assert_eq!(written.gtid_pos, "0-1-9");
        let stored = store.read_small("x.data").unwrap().unwrap();
        assert_eq!(written.size_bytes, stored.len() as u64);
        assert_eq!(written.blake3, blake3::hash(&stored).to_hex().to_string());
        let text = String::from_utf8(zstd::decode_all(&stored[..]).unwrap()).unwrap();
        assert!(text.contains("CREATE TABLE t") && text.contains("`app`@`%`"));
        assert!(!text.contains("`root`@`localhost`"), "{text}");

        let failing = [DumpRun {
            args: vec![data.display().to_string(), "2".into()],
            filter_users: false,
        }];
        let writer = store.create("y.data").unwrap();
        let err =
            write_dump(&program, &cnf, &failing, flavor::mariadb(), writer, None).unwrap_err();
        assert!(matches!(err, AgentError::Command { .. }), "{err}");
        assert_eq!(
            store.read_small("y.data").unwrap(),
            None,
            "a failed dump left an object"
        );
    }
}
