//! Logical snapshots in the snapshot store, and restoring them.
//!
//! A snapshot is two files in the store directory: `<id>.sql.zst` (the dump, zstd level 3)
//! and `<id>.json` (its [`SnapshotInfo`]: size, SHA-256 and GTID position). The dump is
//! streamed line by line (never held in memory) from the dump tool through zstd into
//! `<id>.sql.zst.partial`, hashing the stored bytes and picking the GTID position out of its
//! comment line on the way; only a complete, synced dump is renamed into place.
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
//!
//! The work runs on blocking threads, so the agent keeps answering Ping and Status and keeps
//! heartbeating while a snapshot or restore runs.

use crate::error::{AgentError, Result};
use crate::flavor::Flavor;
use crate::fsutil;
use crate::instance::Instance;
use crate::names::{DatabaseName, SYSTEM_DATABASES};
use crate::server::last_lines;
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use uuid::Uuid;

/// zstd level: a good ratio at a speed well above the dump's.
const ZSTD_LEVEL: i32 = 3;
/// Lines of a failing tool's stderr quoted in errors.
const STDERR_TAIL_LINES: usize = 10;
/// Mode of the store directory and its files: dumps hold password hashes.
const STORE_DIR_MODE: u32 = 0o750;
const STORE_FILE_MODE: u32 = 0o640;

/// The files of one snapshot in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFiles {
    pub data: PathBuf,
    pub partial: PathBuf,
    pub info: PathBuf,
}

impl SnapshotFiles {
    pub fn new(store_dir: &Path, snapshot_id: Uuid) -> SnapshotFiles {
        SnapshotFiles {
            data: store_dir.join(format!("{snapshot_id}.sql.zst")),
            partial: store_dir.join(format!("{snapshot_id}.sql.zst.partial")),
            info: store_dir.join(format!("{snapshot_id}.json")),
        }
    }
}

/// One run of the dump tool.
#[derive(Clone, Debug)]
struct DumpRun {
    args: Vec<String>,
    /// Keep only lines the flavor allows in a users dump.
    filter_users: bool,
}

/// Takes a snapshot of the instance's user databases and accounts. Taking a snapshot that
/// already exists answers with the stored one.
pub async fn create(instance: &Instance, snapshot_id: Uuid) -> Result<SnapshotInfo> {
    instance.require_prepared()?;
    let store_dir = &instance.config.snapshots.dir;
    let files = SnapshotFiles::new(store_dir, snapshot_id);
    if files.data.exists()
        && let Some(info) = read_info(&files.info)?
    {
        tracing::info!(%snapshot_id, "snapshot already taken");
        return Ok(info);
    }
    fsutil::create_dir_with_mode(store_dir, STORE_DIR_MODE)?;
    let databases = user_databases(instance).await?;
    let runs = dump_runs(instance.flavor, &databases);
    tracing::info!(%snapshot_id, databases = databases.len(), "taking snapshot");
    let program = instance.config.server.dump.clone();
    let client_cnf = instance.paths.client_cnf.clone();
    let flavor = instance.flavor;
    let partial = files.partial.clone();
    let written = on_blocking_thread("snapshot", move || {
        write_dump(&program, &client_cnf, &runs, flavor, &partial)
    })
    .await;
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            if let Err(cleanup) = fsutil::remove_if_exists(&files.partial) {
                tracing::warn!(error = %cleanup, "cannot remove a partial snapshot");
            }
            return Err(err);
        }
    };
    fs::rename(&files.partial, &files.data)
        .map_err(|err| AgentError::io("rename into place", &files.data, err))?;
    let info = SnapshotInfo {
        snapshot_id,
        format: SnapshotFormat::LogicalSqlZstd,
        gtid_pos: written.gtid_pos,
        size_bytes: written.size_bytes,
        sha256: written.sha256,
    };
    let json =
        serde_json::to_vec_pretty(&info).map_err(|err| AgentError::Internal(err.to_string()))?;
    fsutil::write_atomic(&files.info, &json, STORE_FILE_MODE)?;
    tracing::info!(%snapshot_id, size_bytes = info.size_bytes, gtid_pos = %info.gtid_pos, "snapshot taken");
    Ok(info)
}

/// Removes a snapshot's files; a snapshot that does not exist is fine.
pub async fn delete(instance: &Instance, snapshot_id: Uuid) -> Result<()> {
    let files = SnapshotFiles::new(&instance.config.snapshots.dir, snapshot_id);
    for path in [&files.data, &files.partial, &files.info] {
        fsutil::remove_if_exists(path)?;
    }
    tracing::info!(%snapshot_id, "snapshot deleted");
    Ok(())
}

/// Checks that the stored snapshot has the size and SHA-256 that `info` says; answers with
/// its path.
pub async fn verify(instance: &Instance, info: &SnapshotInfo) -> Result<PathBuf> {
    let files = SnapshotFiles::new(&instance.config.snapshots.dir, info.snapshot_id);
    let expected = info.clone();
    let path = files.data.clone();
    on_blocking_thread("verify", move || verify_file(&path, &expected)).await?;
    Ok(files.data)
}

/// Streams the decompressed dump at `path` into the client, logged in as admin, with
/// binary logging off for the restore session.
pub async fn restore(instance: &Instance, path: PathBuf) -> Result<()> {
    let program = instance.config.server.client.clone();
    let client_cnf = instance.paths.client_cnf.clone();
    let args = instance.flavor.restore_args();
    tracing::info!(path = %path.display(), "restoring snapshot");
    on_blocking_thread("restore", move || {
        restore_file(&program, &client_cnf, &args, &path)
    })
    .await?;
    tracing::info!("snapshot restored");
    Ok(())
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
    sha256: String,
    gtid_pos: String,
}

/// Counts and hashes the bytes written through it: the stored (compressed) bytes.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs the dump tool once per run, streaming everything into one compressed file.
fn write_dump(
    program: &str,
    client_cnf: &Path,
    runs: &[DumpRun],
    flavor: &dyn Flavor,
    partial: &Path,
) -> Result<WrittenDump> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(STORE_FILE_MODE)
        .open(partial)
        .map_err(|err| AgentError::io("create", partial, err))?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(hashing, ZSTD_LEVEL)
        .map_err(|err| AgentError::io("compress into", partial, err))?;
    let mut gtid_pos = None;
    for run in runs {
        let position = dump_once(program, client_cnf, run, flavor, &mut encoder, partial)?;
        gtid_pos = gtid_pos.or(position);
    }
    let hashing = encoder
        .finish()
        .map_err(|err| AgentError::io("compress into", partial, err))?;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|err| AgentError::io("write", partial, err.into_error()))?;
    file.sync_all()
        .map_err(|err| AgentError::io("sync", partial, err))?;
    let gtid_pos = gtid_pos.ok_or_else(|| AgentError::Command {
        program: program.to_owned(),
        message: "the dump carries no GTID position; is the binary log enabled?".to_owned(),
    })?;
    Ok(WrittenDump {
        size_bytes: hashing.bytes,
        sha256: hex::encode(hashing.hasher.finalize()),
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
    partial: &Path,
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
            tool.abort(String::new());
            return Err(AgentError::io("write", partial, err));
        }
    }
    tool.finish()?;
    Ok(position)
}

/// Hashes the file and compares with what `info` says.
fn verify_file(path: &Path, info: &SnapshotInfo) -> Result<()> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgentError::NotFound(format!(
                "snapshot {} is not in the store ({} does not exist)",
                info.snapshot_id,
                path.display()
            )));
        }
        Err(err) => return Err(AgentError::io("open", path, err)),
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|err| AgentError::io("read", path, err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    let sha256 = hex::encode(hasher.finalize());
    if size != info.size_bytes || !sha256.eq_ignore_ascii_case(&info.sha256) {
        return Err(AgentError::SnapshotMismatch(format!(
            "snapshot {} does not match its record: stored {size} bytes with sha256 {sha256}, expected {} bytes with sha256 {}; refusing to restore it",
            info.snapshot_id, info.size_bytes, info.sha256
        )));
    }
    Ok(())
}

/// Decompresses `path` into the client's stdin.
fn restore_file(program: &str, client_cnf: &Path, args: &[String], path: &Path) -> Result<()> {
    let file = fs::File::open(path).map_err(|err| AgentError::io("open", path, err))?;
    let mut decoder =
        zstd::Decoder::new(file).map_err(|err| AgentError::io("decompress", path, err))?;
    let mut tool = ToolProcess::spawn(program, client_cnf, args, Stdio::piped(), Stdio::null())?;
    let Some(mut stdin) = tool.child.stdin.take() else {
        return Err(AgentError::Internal(
            "the client's stdin was not captured".to_owned(),
        ));
    };
    let copied = std::io::copy(&mut decoder, &mut stdin);
    // Closing stdin tells the client the dump is complete.
    drop(stdin);
    match copied {
        Ok(_) => tool.finish(),
        // The client stopped reading: its own error (on stderr) says why.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => tool.finish(),
        Err(err) => Err(tool.abort(format!("cannot feed it {}: {err}", path.display()))),
    }
}

/// A client tool (dump or restore) logged in through `client.cnf`, with its stderr
/// collected on a thread so that neither pipe can block the other.
struct ToolProcess {
    program: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl ToolProcess {
    fn spawn(
        program: &str,
        client_cnf: &Path,
        args: &[String],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<ToolProcess> {
        // --defaults-file must come first; it also keeps /etc/mysql (which may point at
        // another server) out of the picture.
        let mut child = Command::new(program)
            .arg(format!("--defaults-file={}", client_cnf.display()))
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| AgentError::Command {
                program: program.to_owned(),
                message: format!("cannot run it: {err}"),
            })?;
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                // Whatever could be read is what we report.
                let _ = pipe.read_to_string(&mut text);
                text
            })
        });
        Ok(ToolProcess {
            program: program.to_owned(),
            child,
            stderr,
        })
    }

    fn stderr_tail(&mut self) -> String {
        let text = self
            .stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        last_lines(&text, STDERR_TAIL_LINES)
    }

    fn failure(&mut self, status: Option<ExitStatus>, reason: String) -> AgentError {
        let stderr = self.stderr_tail();
        let mut message = reason;
        if let Some(status) = status {
            message = if message.is_empty() {
                status.to_string()
            } else {
                format!("{message} ({status})")
            };
        }
        if !stderr.is_empty() {
            message = format!("{message}: {stderr}");
        }
        AgentError::Command {
            program: self.program.clone(),
            message,
        }
    }

    /// Waits for the tool; fails unless it exited with success.
    fn finish(mut self) -> Result<()> {
        let status = self.child.wait().map_err(|err| AgentError::Command {
            program: self.program.clone(),
            message: format!("cannot wait for it: {err}"),
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(Some(status), String::new()))
        }
    }

    /// Kills the tool after a failure on our side.
    fn abort(&mut self, reason: String) -> AgentError {
        // It may have exited already; either way we wait for it below.
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.failure(status, reason)
    }
}

/// Reads a snapshot's record; `None` if it is missing.
fn read_info(path: &Path) -> Result<Option<SnapshotInfo>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            AgentError::Internal(format!(
                "{} is not a snapshot record: {err}",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(AgentError::io("read", path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor;

    #[test]
    fn snapshot_files_are_named_by_id() {
        let id = Uuid::nil();
        let files = SnapshotFiles::new(Path::new("/store"), id);
        assert_eq!(
            files.data,
            Path::new("/store/00000000-0000-0000-0000-000000000000.sql.zst")
        );
        assert_eq!(
            files.partial,
            Path::new("/store/00000000-0000-0000-0000-000000000000.sql.zst.partial")
        );
        assert_eq!(
            files.info,
            Path::new("/store/00000000-0000-0000-0000-000000000000.json")
        );
    }

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
    fn a_tampered_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sql.zst");
        fs::write(&path, b"hello").unwrap();
        let good = SnapshotInfo {
            snapshot_id: Uuid::nil(),
            format: SnapshotFormat::LogicalSqlZstd,
            gtid_pos: String::new(),
            size_bytes: 5,
            sha256: hex::encode(Sha256::digest(b"hello")),
        };
        verify_file(&path, &good).unwrap();
        let wrong_hash = SnapshotInfo {
            sha256: hex::encode(Sha256::digest(b"other")),
            ..good.clone()
        };
        assert!(matches!(
            verify_file(&path, &wrong_hash),
            Err(AgentError::SnapshotMismatch(_))
        ));
        let wrong_size = SnapshotInfo {
            size_bytes: 6,
            ..good.clone()
        };
        assert!(matches!(
            verify_file(&path, &wrong_size),
            Err(AgentError::SnapshotMismatch(_))
        ));
        let missing = dir.path().join("nope");
        assert!(matches!(
            verify_file(&missing, &good),
            Err(AgentError::NotFound(_))
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
        let partial = dir.path().join("x.partial");
        let program = script.display().to_string();
        let cnf = dir.path().join("client.cnf");
        let written = write_dump(&program, &cnf, &runs, flavor::mariadb(), &partial).unwrap();
        assert_eq!(written.gtid_pos, "0-1-9");
        let stored = fs::read(&partial).unwrap();
        assert_eq!(written.size_bytes, stored.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&stored)));
        let text = String::from_utf8(zstd::decode_all(&stored[..]).unwrap()).unwrap();
        assert!(text.contains("CREATE TABLE t") && text.contains("`app`@`%`"));
        assert!(!text.contains("`root`@`localhost`"), "{text}");

        let failing = [DumpRun {
            args: vec![data.display().to_string(), "2".into()],
            filter_users: false,
        }];
        let err = write_dump(&program, &cnf, &failing, flavor::mariadb(), &partial).unwrap_err();
        assert!(matches!(err, AgentError::Command { .. }), "{err}");
    }
}
