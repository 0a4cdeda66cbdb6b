//! Physical snapshots: the backup tool's stream of the data files, taken from the running
//! server (it keeps serving writes), and restoring one into a replica's data directory.
//!
//! Taking one: `mariabackup --backup --stream=xbstream` writes to a pipe that goes straight
//! into the store (through zstd when configured), hashed on the way; nothing is staged on
//! local disk, and memory stays flat whatever the data size. The GTID position of the copy
//! is in the tool's report ("GTID of the last change").
//!
//! Restoring one: the replica's server stops, its data dir is set aside, the stored stream
//! is read back (as it is written, when following a snapshot still being taken; hashed,
//! and checked against the record before anything uses the result) and extracted by the
//! agent itself, the data pages with O_DIRECT ([`xbstream`]), then `mariabackup --prepare`
//! makes the files consistent. The copied system tables are the source's, so the server
//! starts with an init file that gives the admin account this instance's own password. On any failure the set-aside data dir is
//! put back and the server started as it was.

use super::metered::{CountingReader, HashingWriter, copy_large, dir_size};
use super::on_blocking_thread;
use super::tool::ToolProcess;
use super::xbstream;
use crate::config::Compression;
use crate::credentials::read_client_cnf;
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::instance::Instance;
use crate::store::{SnapshotReader, data_object};
use ferrotrove_proto::agent::{SnapshotFormat, SnapshotInfo};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use uuid::Uuid;

/// zstd level and threads for compressed physical snapshots: fast enough not to be the
/// bottleneck on a slow link, which is the only place compression pays.
const ZSTD_LEVEL: i32 = 1;
const ZSTD_THREADS: u32 = 2;
/// Memory `mariabackup --prepare` may use for its buffer pool.
const PREPARE_MEMORY: &str = "--use-memory=256M";
/// The options every physical snapshot runs the backup tool with, besides where the data
/// is (`--datadir`) and where it may work (`--target-dir`).
///
/// `--innodb-flush-method=fsync` makes it read the data files through the page cache, with
/// the kernel's readahead, as mariabackup did before 10.6 made O_DIRECT its default: on the
/// test machine 2.4 GB took 2.0 s this way and 5.0 s with O_DIRECT, whether the files were
/// cached or not. Pages changed while they are read are put right by the redo log at
/// prepare, as with any read; only the backup reads this way, never the server.
pub const BACKUP_OPTIONS: &[&str] = &[
    "--backup",
    "--stream=xbstream",
    "--parallel=2",
    "--innodb-flush-method=fsync",
];
/// Where the backup tool writes the position of the copy, inside the restored data dir.
const BINLOG_INFO: &str = "xtrabackup_binlog_info";

/// Whether the backup tool can be run on this host.
pub fn available(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Copies the running server's data files into the store as `snapshot_id`.
pub async fn create(instance: &Instance, snapshot_id: Uuid) -> Result<SnapshotInfo> {
    let compression = instance.config.snapshots.compression;
    tracing::info!(%snapshot_id, ?compression, "taking a physical snapshot");
    let operation = instance.progress.start(
        "snapshot",
        "copying",
        Some(dir_size(&instance.paths.data_dir)),
    );
    let store = instance.store.clone();
    let program = instance.config.server.backup.clone();
    let client_cnf = instance.paths.client_cnf.clone();
    let work_dir = instance.paths.tmp_dir.join(format!("backup-{snapshot_id}"));
    let mut args: Vec<String> = BACKUP_OPTIONS.iter().map(|o| (*o).to_owned()).collect();
    args.push(format!("--datadir={}", instance.paths.data_dir.display()));
    args.push(format!("--target-dir={}", work_dir.display()));
    let copied = operation.bytes();
    let (size_bytes, blake3, report) = on_blocking_thread("snapshot", move || {
        let result = stream_backup(&program, &client_cnf, &args, &store, snapshot_id, compression, copied);
        if let Err(err) = std::fs::remove_dir_all(&work_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, dir = %work_dir.display(), "cannot remove the backup's work dir");
        }
        result
    })
    .await?;
    let gtid_pos = gtid_in_report(&report).ok_or_else(|| AgentError::Command {
        program: instance.config.server.backup.clone(),
        message: "its report names no GTID position; is the binary log enabled?".to_owned(),
    })?;
    Ok(SnapshotInfo {
        snapshot_id,
        format: match compression {
            Compression::None => SnapshotFormat::PhysicalXbstream,
            Compression::Zstd => SnapshotFormat::PhysicalXbstreamZstd,
        },
        gtid_pos,
        size_bytes,
        blake3,
    })
}

/// Runs the backup tool into the store; answers with the stored size, its BLAKE3 and the
/// tool's report (stderr).
fn stream_backup(
    program: &str,
    client_cnf: &Path,
    args: &[String],
    store: &Arc<dyn crate::store::SnapshotStore>,
    snapshot_id: Uuid,
    compression: Compression,
    copied: Arc<AtomicU64>,
) -> Result<(u64, String, String)> {
    let writer = store.create(&data_object(snapshot_id))?;
    let mut hashing = HashingWriter::new(writer, None);
    let mut tool = ToolProcess::spawn(program, client_cnf, args, Stdio::null(), Stdio::piped())?;
    let Some(stdout) = tool.child.stdout.take() else {
        return Err(AgentError::Internal(
            "the backup's stdout was not captured".to_owned(),
        ));
    };
    crate::fsutil::widen_pipe(&stdout);
    // Counted for progress; the stored bytes are hashed once, by `hashing`.
    let mut source = CountingReader {
        inner: stdout,
        progress: copied,
    };
    let copy = match compression {
        Compression::None => copy_large(&mut source, &mut hashing).map(|_| ()),
        Compression::Zstd => zstd_copy(&mut source, &mut hashing),
    };
    if let Err(err) = copy {
        // The writer is dropped unfinished: nothing appears in the store.
        return Err(tool.abort(format!("cannot store its stream: {err}")));
    }
    let report = tool.finish_with_stderr()?;
    let (size, blake3) = hashing.digest();
    hashing.inner.finish()?;
    Ok((size, blake3, report))
}

fn zstd_copy(source: &mut impl std::io::Read, out: &mut impl Write) -> std::io::Result<()> {
    let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
    encoder.multithread(ZSTD_THREADS)?;
    copy_large(source, &mut encoder)?;
    encoder.finish()?.flush()
}

/// The GTID position in mariabackup's report: `GTID of the last change '0-1-154'`.
fn gtid_in_report(report: &str) -> Option<String> {
    report.lines().rev().find_map(|line| {
        let rest = line.split("GTID of the last change '").nth(1)?;
        Some(rest.split('\'').next()?.to_owned())
    })
}

/// The GTID position in the restored data dir's binlog info (`file\tposition\tgtid`).
fn gtid_in_binlog_info(text: &str) -> String {
    text.split('\t').nth(2).unwrap_or("").trim().to_owned()
}

/// Replaces the instance's data with the snapshot `reader` reads (stored as `format`) and
/// starts the server on it; answers with the snapshot's record. The server must hold no
/// data of its own (a new replica).
pub async fn restore(
    instance: &Instance,
    reader: SnapshotReader,
    format: SnapshotFormat,
) -> Result<SnapshotInfo> {
    let paths = &instance.paths;
    let set_aside = sibling(&paths.data_dir, "before-restore");
    let snapshot_id = reader.snapshot_id();
    let operation = instance
        .progress
        .start("restore", "copying", reader.expected_size());
    tracing::info!(%snapshot_id, "restoring a physical snapshot");
    instance.server.stop().await?;
    if set_aside.exists() {
        std::fs::remove_dir_all(&set_aside)
            .map_err(|err| AgentError::io("remove", &set_aside, err))?;
    }
    std::fs::rename(&paths.data_dir, &set_aside)
        .map_err(|err| AgentError::io("set aside", &paths.data_dir, err))?;
    let restored = replace_data(instance, reader, format, &operation)
        .await
        .map_err(|err| name_a_full_disk(err, &paths.data_dir, snapshot_id));
    let info = match restored {
        Ok(info) => info,
        Err(err) => {
            tracing::warn!(error = %err, "restore failed; putting the previous data dir back");
            put_back(&paths.data_dir, &set_aside);
            if let Err(start) = instance.server.start().await {
                tracing::error!(error = %start, "cannot start the server on its previous data");
            }
            return Err(err);
        }
    };
    operation.stage("starting");
    let admin = read_client_cnf(&paths.client_cnf)?.ok_or_else(|| {
        AgentError::Internal(format!("{} is missing", paths.client_cnf.display()))
    })?;
    let own_password = instance.flavor.set_admin_password(&admin.password);
    if let Err(err) = instance.server.start_with_init_sql(&own_password).await {
        put_back(&paths.data_dir, &set_aside);
        if let Err(start) = instance.server.start().await {
            tracing::error!(error = %start, "cannot start the server on its previous data");
        }
        return Err(err);
    }
    if let Err(err) = std::fs::remove_dir_all(&set_aside) {
        tracing::warn!(error = %err, dir = %set_aside.display(), "cannot remove the previous data dir");
    }
    tracing::info!("physical snapshot restored");
    Ok(info)
}

/// Fills a new data dir from the store, checks it, prepares it and hands it to the
/// server's user; answers with the snapshot's record.
async fn replace_data(
    instance: &Instance,
    reader: SnapshotReader,
    format: SnapshotFormat,
    operation: &crate::progress::Operation,
) -> Result<SnapshotInfo> {
    let data_dir = instance.paths.data_dir.clone();
    fsutil::create_dir_with_mode(&data_dir, 0o750)?;
    let reader = reader.with_progress(operation.bytes());
    let target = data_dir.clone();
    let info =
        on_blocking_thread("restore", move || extract_stream(reader, format, &target)).await?;
    operation.stage("preparing");
    let backup = instance.config.server.backup.clone();
    let target = data_dir.clone();
    on_blocking_thread("prepare", move || {
        let args = vec![
            "--prepare".to_owned(),
            format!("--target-dir={}", target.display()),
            PREPARE_MEMORY.to_owned(),
        ];
        // --no-defaults: the host's /etc/mysql must not point the tool elsewhere.
        let mut all = vec!["--no-defaults".to_owned()];
        all.extend(args);
        ToolProcess::spawn_plain(&backup, &all, Stdio::null(), Stdio::null())?.finish()
    })
    .await?;
    let binlog_info = data_dir.join(BINLOG_INFO);
    let text = std::fs::read_to_string(&binlog_info)
        .map_err(|err| AgentError::io("read", &binlog_info, err))?;
    let position = gtid_in_binlog_info(&text);
    if position != info.gtid_pos {
        return Err(AgentError::SnapshotMismatch(format!(
            "snapshot {} restored at GTID position '{position}', but its record says '{}'",
            info.snapshot_id, info.gtid_pos
        )));
    }
    if let Some(user) = instance.server.run_as()? {
        chown_tree(&data_dir, user)?;
    }
    Ok(info)
}

/// Extracts the snapshot into `target` ([`xbstream::extract`]), then compares what was
/// read with the record; answers with the record.
fn extract_stream(
    mut stored: SnapshotReader,
    format: SnapshotFormat,
    target: &Path,
) -> Result<SnapshotInfo> {
    let extracted = match format {
        SnapshotFormat::PhysicalXbstreamZstd => {
            zstd::Decoder::with_buffer(BufReader::with_capacity(1 << 20, &mut stored))
                .map_err(|err| AgentError::io("decompress", Path::new("the snapshot stream"), err))
                .and_then(|mut decoder| xbstream::extract(&mut decoder, target))
        }
        _ => xbstream::extract(&mut stored, target),
    };
    if let Err(err) = extracted {
        // The snapshot's own failure (abandoned, not found) says more than the reading's.
        return Err(stored.take_failure().unwrap_or(err));
    }
    stored.verify()
}

/// A restore that failed because the disk filled up says so, naming the disk, whichever
/// tool noticed first.
fn name_a_full_disk(err: AgentError, data_dir: &Path, snapshot_id: Uuid) -> AgentError {
    let Some((free, total)) = fsutil::space(data_dir) else {
        return err;
    };
    let text = err.to_string();
    let full = text.contains("No space left") || text.contains("Errcode: 28") || free < (1 << 20);
    if !full {
        return err;
    }
    AgentError::DiskFull(format!(
        "the disk holding {} is full ({} MiB free of {} MiB) while restoring snapshot {snapshot_id}: {text}",
        data_dir.display(),
        free >> 20,
        total >> 20,
    ))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// Puts the set-aside data dir back in place of a failed restore.
fn put_back(data_dir: &Path, set_aside: &Path) {
    if let Err(err) = std::fs::remove_dir_all(data_dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(error = %err, dir = %data_dir.display(), "cannot remove a failed restore");
    }
    if let Err(err) = std::fs::rename(set_aside, data_dir) {
        tracing::error!(error = %err, dir = %set_aside.display(), "cannot put the previous data dir back");
    }
}

fn chown_tree(dir: &Path, user: fsutil::SystemUser) -> Result<()> {
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        fsutil::chown(&dir, user)?;
        for entry in std::fs::read_dir(&dir).map_err(|err| AgentError::io("list", &dir, err))? {
            let entry = entry.map_err(|err| AgentError::io("list", &dir, err))?;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else {
                fsutil::chown(&path, user)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_the_report_and_the_binlog_info() {
        let report = "[00] 2026-11-25 16:09:19 Backup created in directory '/x'\n\
            MySQL binlog position: filename 'mysql-bin.000001', position '1091', GTID of the last change '0-5-5'\n\
            [00] 2026-11-25 16:09:19 completed OK!\n";
        assert_eq!(gtid_in_report(report).as_deref(), Some("0-5-5"));
        assert_eq!(gtid_in_report("completed OK!"), None);
        assert_eq!(
            gtid_in_binlog_info("mysql-bin.000001\t1091\t0-5-5\n"),
            "0-5-5"
        );
        assert_eq!(gtid_in_binlog_info("mysql-bin.000001\t1091\n"), "");
        assert_eq!(
            sibling(Path::new("/srv/i1/data"), "before-restore"),
            Path::new("/srv/i1/data.before-restore")
        );
    }
}
