//! `ftrove-bench-seed`: how fast the agent seeds replicas, against the raw copy of the data.
//!
//! Builds real MariaDB servers in temporary directories on free ports with the agent's own
//! modules (as `agent/tests/support` does), fills a source with `--size-gb` GB of InnoDB
//! data, and measures in one run:
//! 1. the raw copy of the source's data dir: `tar c -C data . | tar x -C scratch`, then `sync`;
//!    then three such copies at once: what the disk allows three replicas on one disk;
//! 2. physical seeding of one replica as the taskmanager drives it: `snapshot::create`
//!    (mariabackup streamed into the directory store) and, at the same time,
//!    `replication::attach_following` (the replica follows the snapshot as it is written:
//!    stop, extract, then once the record is there check, prepare, start, replication
//!    running), timed from the start of both until replication runs, with the stages of
//!    each read from the agents' progress reports;
//! 3. physical seeding of three replicas at once from one snapshot, all following it;
//! 4. the logical path for one replica, following too (`--skip-logical` leaves it out).
//!
//! Also the peak RSS of this process (which runs the agent's snapshot and restore code)
//! during the physical work, and the bytes written to the disk in each step. It prints a
//! table, the two targets (physical seeding at >= 80% of raw-copy speed; three replicas in
//! < 2x the time of one) and one JSON line. It asserts nothing about time.
//!
//! Needs root (the servers run as the `mysql` user) and MariaDB with mariadb-backup
//! (`deploy/dev/services.sh` installs them). Every server is stopped and every temp dir
//! removed on the way out, also on error and on Ctrl-C. `deploy/bench/seed.sh` runs it.

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ferrotrove_agent::{AgentConfig, Instance, replication, snapshot};
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::{
    AttachFollowingRequest, PrepareRequest, ReplicationUser, ServerStatus, SnapshotInfo,
    SnapshotMethod, SnapshotRequest,
};
use futures::future::{join_all, try_join_all};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

#[derive(Parser, Clone, Debug)]
#[command(about = "Benchmark replica seeding (physical and logical) against a raw copy")]
struct Args {
    /// InnoDB data to put into the source, in GB (10^9 bytes); at least this much.
    #[arg(long, default_value_t = 2.0)]
    size_gb: f64,
    /// Leave out the logical path (quick runs).
    #[arg(long)]
    skip_logical: bool,
    /// Where the servers, the snapshot store and the scratch copy go (default: $TMPDIR).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Memory of each instance as given to Prepare (the buffer pool is half, capped by
    /// the agent's default max_buffer_pool_mb of 256).
    #[arg(long, default_value_t = 1024)]
    memory_mb: u64,
    /// Drop the page cache before the raw copy and before each seeding (cold reads).
    #[arg(long)]
    cold: bool,
}

const DATABASE: &str = "shop";
const TABLE: &str = "seed";
const REPL_USER: &str = "repl_bench";
const REPL_PASSWORD: &str = "repl-bench-pw-1";
/// Rows per INSERT ... SELECT while generating (about 55 MB each).
const BATCH_ROWS: u64 = 50_000;
/// How often stages and RSS are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------
// Servers (copied from agent/tests/support, which is not a library)

/// A temporary directory the server's user can traverse (tempfile makes them 0700).
fn shared_tempdir(work_dir: &Path, prefix: &str) -> anyhow::Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(work_dir)
        .with_context(|| format!("create a temp dir in {}", work_dir.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One agent-managed server. Dropping it stops the server, then removes its directory.
struct Server {
    name: String,
    instance: Arc<Instance>,
    port: u16,
    // Dropped last: the directory goes after the server has stopped.
    _dir: TempDir,
}

impl Server {
    fn new(name: &str, work_dir: &Path, store: &Path) -> anyhow::Result<Server> {
        let dir = shared_tempdir(work_dir, &format!("ftrove-seed-{name}-"))?;
        let port = free_port()?;
        let toml = format!(
            r#"
            instance_id = "{id}"
            [bus]
            url = "amqp://guest:guest@127.0.0.1:5672/%2f"
            [server]
            base_dir = "{base}"
            port = {port}
            start_timeout_secs = 300
            stop_timeout_secs = 300
            [snapshots]
            dir = "{store}"
            "#,
            id = Uuid::now_v7(),
            base = dir.path().join("instance").display(),
            store = store.display(),
        );
        let config = AgentConfig::from_toml(&toml).context("the bench's agent config")?;
        Ok(Server {
            name: name.to_owned(),
            instance: Arc::new(Instance::new(config)?),
            port,
            _dir: dir,
        })
    }

    /// A prepared server: a writable source with database `shop`, or a read-only, empty
    /// replica to be.
    async fn prepared(
        name: &str,
        work_dir: &Path,
        store: &Path,
        server_id: u32,
        memory_mb: u64,
        source: bool,
    ) -> anyhow::Result<Server> {
        let server = Server::new(name, work_dir, store)?;
        let request = PrepareRequest {
            server_id,
            memory_mb,
            databases: if source {
                vec![DATABASE.into()]
            } else {
                vec![]
            },
            users: vec![],
            read_only: !source,
        };
        ferrotrove_agent::prepare::prepare(&server.instance, &request)
            .await
            .with_context(|| format!("prepare {name}"))?;
        Ok(server)
    }

    /// An admin session over the socket, with the agent's own login (client.cnf).
    async fn admin(&self) -> anyhow::Result<Conn> {
        let credentials =
            ferrotrove_agent::credentials::read_client_cnf(&self.instance.paths.client_cnf)?
                .context("client.cnf is missing")?;
        let opts = OptsBuilder::default()
            .socket(Some(self.instance.paths.socket.display().to_string()))
            .user(Some(credentials.user))
            .pass(Some(credentials.password.expose().to_owned()))
            .db_name(Some(DATABASE));
        Conn::new(opts)
            .await
            .with_context(|| format!("admin login on {}", self.name))
    }

    fn data_dir(&self) -> &Path {
        &self.instance.paths.data_dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_blocking(&self.instance.paths.pid_file);
    }
}

/// Stops the server named in `pid_file` and waits for it, without a runtime (Drop).
fn stop_blocking(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: plain kill(2); the pid is the bench server's own.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while ferrotrove_agent::server::process_alive(pid)
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if ferrotrove_agent::server::process_alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

// ---------------------------------------------------------------------------------------
// Measuring

/// VmRSS or VmHWM of this process, in KiB (0 when unreadable).
fn self_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM (the peak RSS) to the current RSS.
fn reset_peak_rss() {
    // "5" resets the peak RSS (Linux 4.0+); if it fails, VmHWM is the process's lifetime
    // peak, which only overstates.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes written to the block device holding `path` so far (None if not found).
fn disk_written(path: &Path) -> Option<u64> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[0].parse::<u64>().ok()? == major && f[1].parse::<u64>().ok()? == minor)
            .then(|| f[9].parse::<u64>().ok().map(|sectors| sectors * 512))
            .flatten()
    })
}

/// Bytes under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("run {program}"))?;
    ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(())
}

async fn sync() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| run("sync", &[])).await?
}

async fn drop_caches() -> anyhow::Result<()> {
    sync().await?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("drop the page cache")
}

/// One step's time and the bytes written to the disk meanwhile.
#[derive(Clone, Copy, Debug, Default)]
struct Step {
    secs: f64,
    written: Option<u64>,
}

impl Step {
    fn plus(self, other: Step) -> Step {
        Step {
            secs: self.secs + other.secs,
            written: self.written.zip(other.written).map(|(a, b)| a + b),
        }
    }
}

/// What `watched` saw: the stages of each server's operation (name, seconds), in order,
/// and the peak RSS of this process.
struct Watched<T> {
    output: T,
    step: Step,
    stages: Vec<Vec<(String, f64)>>,
    peak_rss_kib: u64,
}

/// The stage a server's agent reports now ("-" for none). The restore's "copying" stage
/// starts with stopping the server; that part is told apart by the live pid.
fn stage_label(server: &Server) -> String {
    match server.instance.progress.snapshot() {
        None => "-".to_owned(),
        Some(p)
            if p.operation == "restore"
                && p.stage == "copying"
                && server.instance.server.running_pid().is_some() =>
        {
            "restore/stopping".to_owned()
        }
        Some(p) => format!("{}/{}", p.operation, p.stage),
    }
}

/// Runs `work` while sampling the progress of `servers` and this process's RSS.
async fn watched<T>(servers: &[&Server], disk: &Path, work: impl Future<Output = T>) -> Watched<T> {
    reset_peak_rss();
    let written_before = disk_written(disk);
    let started = Instant::now();
    let mut seen: Vec<Vec<(String, Instant)>> = vec![Vec::new(); servers.len()];
    let mut peak = self_status_kib("VmRSS:");
    let sample = |seen: &mut Vec<Vec<(String, Instant)>>, peak: &mut u64| {
        let now = Instant::now();
        for (server, stages) in servers.iter().zip(seen.iter_mut()) {
            let label = stage_label(server);
            if stages.last().is_none_or(|(last, _)| *last != label) {
                stages.push((label, now));
            }
        }
        *peak = (*peak).max(self_status_kib("VmRSS:"));
    };
    sample(&mut seen, &mut peak);
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            _ = tick.tick() => sample(&mut seen, &mut peak),
        }
    };
    let ended = Instant::now();
    let stages = seen
        .into_iter()
        .map(|stages| {
            let mut out = Vec::new();
            for (i, (label, at)) in stages.iter().enumerate() {
                let until = stages.get(i + 1).map_or(ended, |(_, next)| *next);
                out.push((label.clone(), (until - *at).as_secs_f64()));
            }
            out
        })
        .collect();
    let written = written_before
        .zip(disk_written(disk))
        .map(|(a, b)| b.saturating_sub(a));
    Watched {
        output,
        step: Step {
            secs: started.elapsed().as_secs_f64(),
            written,
        },
        stages,
        peak_rss_kib: peak.max(self_status_kib("VmHWM:")),
    }
}

/// Times a step that needs no stages.
async fn timed<T>(disk: &Path, work: impl Future<Output = T>) -> (T, Step) {
    let before = disk_written(disk);
    let started = Instant::now();
    let output = work.await;
    let secs = started.elapsed().as_secs_f64();
    let written = before
        .zip(disk_written(disk))
        .map(|(a, b)| b.saturating_sub(a));
    (output, Step { secs, written })
}

/// `copies` raw copies of the source's data dir at once (`tar c | tar x` each, into
/// scratch dirs of their own), then `sync`: the time of the copies, and of the sync.
async fn raw_copies(
    source: &Server,
    work_dir: &Path,
    disk: &Path,
    copies: usize,
) -> anyhow::Result<(Step, Step)> {
    let scratch = (0..copies)
        .map(|_| shared_tempdir(work_dir, "ftrove-seed-scratch-"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let data = source.data_dir().display().to_string();
    let (copied, tar) = timed(
        disk,
        try_join_all(scratch.iter().map(|into| {
            shell(
                "tar c -C \"$1\" . | tar x -C \"$2\"",
                vec![data.clone(), into.path().display().to_string()],
            )
        })),
    )
    .await;
    copied?;
    let (synced, synced_step) = timed(disk, sync()).await;
    synced?;
    drop(scratch);
    sync().await?;
    Ok((tar, synced_step))
}

/// The physical copy done by the tools alone, in shell pipelines (no agent, no hashing):
/// what the agent's path costs on top of the tools.
struct ToolsAlone {
    /// `mariabackup --backup --stream=xbstream --parallel=2 > file; sync`
    backup_to_file: Step,
    /// `mbstream -x -C dir < file`
    extract_from_file: Step,
    /// `mariabackup --backup ... | mbstream -x -C dir; sync`: no store in between.
    backup_to_dir: Step,
}

/// Runs `set -o pipefail; <script>` in bash with `args` as $1, $2...
async fn shell(script: &str, args: Vec<String>) -> anyhow::Result<()> {
    let script = format!("set -o pipefail; {script}");
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["-c", script.as_str(), "bench"];
        all.extend(args.iter().map(String::as_str));
        run("bash", &all)
    })
    .await?
}

async fn tools_alone(source: &Server, work_dir: &Path) -> anyhow::Result<ToolsAlone> {
    let disk = work_dir;
    let scratch = shared_tempdir(work_dir, "ftrove-seed-tools-")?;
    let path = |name: &str| scratch.path().join(name).display().to_string();
    let backup_args = vec![
        source.instance.paths.client_cnf.display().to_string(),
        source.data_dir().display().to_string(),
    ];
    // As the agent runs it: --defaults-file first, then the same options.
    let backup = format!(
        "mariabackup --defaults-file=\"$1\" {} --datadir=\"$2\" --target-dir=\"$3\"",
        snapshot::BACKUP_OPTIONS.join(" ")
    );
    let log = path("backup.log");
    let with_log = |done: anyhow::Result<()>| {
        done.map_err(|err| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            err.context(tail.join("\n"))
        })
    };
    let mut args = backup_args.clone();
    args.extend([path("work1"), log.clone(), path("stream.xb")]);
    let (done, backup_to_file) = timed(
        disk,
        shell(&format!("{backup} 2>\"$4\" > \"$5\" && sync"), args),
    )
    .await;
    with_log(done)?;
    std::fs::create_dir(path("extracted"))?;
    let (done, extract_from_file) = timed(
        disk,
        shell(
            "mbstream -x -C \"$2\" < \"$1\"",
            vec![path("stream.xb"), path("extracted")],
        ),
    )
    .await;
    done?;
    std::fs::remove_dir_all(path("extracted"))?;
    std::fs::remove_file(path("stream.xb"))?;
    sync().await?;
    std::fs::create_dir(path("direct"))?;
    let mut args = backup_args;
    args.extend([path("work2"), log.clone(), path("direct")]);
    let (done, backup_to_dir) = timed(
        disk,
        shell(
            &format!("{backup} 2>\"$4\" | mbstream -x -C \"$5\" && sync"),
            args,
        ),
    )
    .await;
    with_log(done)?;
    drop(scratch);
    sync().await?;
    Ok(ToolsAlone {
        backup_to_file,
        extract_from_file,
        backup_to_dir,
    })
}

/// Which operation a list of stages belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    PhysicalSnapshot,
    PhysicalAttach,
    LogicalSnapshot,
    LogicalAttach,
}

/// What each stage label means, for the table. "-" is the time outside the agent's
/// progress reports: before (`first`) and after the copying.
fn stage_name(label: &str, first: bool, kind: Kind) -> &'static str {
    use Kind::*;
    match (label, first, kind) {
        ("-", true, PhysicalSnapshot) => "checks (record, mariabackup --version, size walk)",
        ("-", true, LogicalSnapshot) => "checks (list databases, size walk)",
        ("-", true, PhysicalAttach) => "checks, SET read_only, wait for the manifest",
        ("-", true, LogicalAttach) => "checks, SET read_only, wait for the manifest",
        ("-", false, PhysicalSnapshot | LogicalSnapshot) => {
            "write the record; then the replicas finish (below)"
        }
        ("-", false, _) => "FLUSH, RESET MASTER, CHANGE MASTER, START SLAVE, wait running",
        ("snapshot/copying", ..) => "mariabackup --backup | blake3 -> store",
        ("snapshot/dumping", ..) => "mariadb-dump | zstd -3 | blake3 -> store",
        ("restore/stopping", ..) => "stop the replica's server",
        ("restore/copying", ..) => "store, following | blake3 -> extract (O_DIRECT); check",
        ("restore/verifying", ..) => "store, following | blake3 (checked whole first)",
        ("restore/preparing", ..) => "mariabackup --prepare, chown",
        ("restore/starting", ..) => "start the server",
        ("restore/loading", ..) => "store | zstd -d | mariadb",
        _ => "other",
    }
}

/// Short stage names for the three-replica lines.
fn stage_short(label: &str, first: bool) -> &'static str {
    match (label, first) {
        ("-", true) => "checks",
        ("-", false) => "replication",
        ("restore/stopping", _) => "stop",
        ("restore/copying", _) => "extract",
        ("restore/preparing", _) => "prepare",
        ("restore/starting", _) => "start",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark

/// Times within an overlapped seeding are from its start: `*_snapshot` is when the
/// snapshot ended, `one_attach` when the replica's attach ended, `one` and `three_total`
/// the whole seeding (until the last replica replicates).
struct Figures {
    data_dir_bytes: u64,
    raw: Step,
    raw_tar: Step,
    raw_sync: Step,
    /// Three raw copies at once, and their sync.
    raw3: Step,
    raw3_sync: Step,
    one_snapshot: Step,
    one_attach: Step,
    one: Step,
    one_sync: Step,
    three_snapshot: Step,
    three_total: Step,
    three_attach_each: Vec<f64>,
    three_sync: Step,
    /// When the dump ended, and the whole seeding.
    logical: Option<(Step, Step)>,
    rss_before_kib: u64,
    rss_peak_one_kib: u64,
    rss_peak_three_kib: u64,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn rate(bytes: u64, secs: f64) -> f64 {
    mb(bytes) / secs.max(1e-9)
}

fn written(step: Step) -> String {
    step.written
        .map_or_else(|| "-".to_owned(), |w| format!("{:.0} MB", mb(w)))
}

fn following_request(source: &Server, snapshot_id: Uuid) -> AttachFollowingRequest {
    AttachFollowingRequest {
        snapshot_id,
        source_host: "127.0.0.1".into(),
        source_port: source.port,
        user: REPL_USER.into(),
        password: Secret::new(REPL_PASSWORD),
    }
}

/// What one overlapped seeding gave: the snapshot (and when it ended, from the start), and
/// each replica's attach (and when it ended).
struct Seeded {
    snapshot: anyhow::Result<SnapshotInfo>,
    snapshot_secs: f64,
    attaches: Vec<(anyhow::Result<ServerStatus>, f64)>,
}

/// Seeds `replicas` as the taskmanager does: the source takes the snapshot while every
/// replica restores it, following it in the store.
async fn seed_following(source: &Server, replicas: &[&Server], method: SnapshotMethod) -> Seeded {
    let request = snapshot_request(method);
    let started = Instant::now();
    let take = async {
        let taken = snapshot::create(&source.instance, &request)
            .await
            .context("snapshot");
        (taken, started.elapsed().as_secs_f64())
    };
    let attach = join_all(replicas.iter().map(|replica| {
        let request = following_request(source, request.snapshot_id);
        async move {
            let attached = replication::attach_following(&replica.instance, &request)
                .await
                .with_context(|| format!("attach {}", replica.name));
            (attached, started.elapsed().as_secs_f64())
        }
    }));
    let ((snapshot, snapshot_secs), attaches) = tokio::join!(take, attach);
    Seeded {
        snapshot,
        snapshot_secs,
        attaches,
    }
}

/// A time within a step (no disk figure of its own).
fn at(secs: f64) -> Step {
    Step {
        secs,
        written: None,
    }
}

fn snapshot_request(method: SnapshotMethod) -> SnapshotRequest {
    SnapshotRequest {
        snapshot_id: Uuid::now_v7(),
        method,
    }
}

async fn query_u64(conn: &mut Conn, sql: &str) -> anyhow::Result<u64> {
    conn.query_first::<u64, _>(sql)
        .await?
        .with_context(|| format!("no row from {sql}"))
}

async fn query_string(conn: &mut Conn, sql: &str) -> anyhow::Result<String> {
    conn.query_first::<String, _>(sql)
        .await?
        .with_context(|| format!("no row from {sql}"))
}

/// Fills `shop.seed` with rows of 1 KiB random bytes until its .ibd holds `target` bytes.
/// Not binlogged: replicas get these rows from the snapshot, and the data dir then holds
/// the table rather than a second copy of it in the binary log (mariabackup copies no
/// binary logs; the raw copy would).
async fn generate(source: &Server, target: u64) -> anyhow::Result<(u64, u64)> {
    let mut conn = source.admin().await?;
    // Logged: the replicas' GTID position starts after it, and the dump carries it.
    conn.query_drop(format!(
        "CREATE TABLE {DATABASE}.{TABLE} (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         pad VARBINARY(1024) NOT NULL) ENGINE=InnoDB"
    ))
    .await?;
    conn.query_drop("SET SESSION sql_log_bin=0").await?;
    let ibd = source
        .data_dir()
        .join(DATABASE)
        .join(format!("{TABLE}.ibd"));
    let size = || std::fs::metadata(&ibd).map(|m| m.len()).unwrap_or(0);
    let mut rows = 0;
    let mut next_report = target / 4;
    while size() < target {
        conn.query_drop(format!(
            "INSERT INTO {DATABASE}.{TABLE} (pad) SELECT RANDOM_BYTES(1024) FROM seq_1_to_{BATCH_ROWS}"
        ))
        .await?;
        rows += BATCH_ROWS;
        if size() >= next_report && size() < target {
            eprintln!("[seed] generated {:.0} of {:.0} MB", mb(size()), mb(target));
            next_report += target / 4;
        }
    }
    conn.query_drop("SET SESSION sql_log_bin=1").await?;
    // A logged row, so that the source's binary log is ahead of the table's creation.
    conn.query_drop(format!(
        "INSERT INTO {DATABASE}.{TABLE} (pad) VALUES ('after generating')"
    ))
    .await?;
    conn.disconnect().await?;
    Ok((rows + 1, size()))
}

/// Makes InnoDB write every dirty page, so that each measurement starts from files at
/// rest and the source's flushing does not compete with it.
async fn flush_dirty_pages(source: &Server) -> anyhow::Result<()> {
    let mut conn = source.admin().await?;
    let before: (String, u64, u64) = conn
        .query_first(
            "SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_io_capacity, \
             @@GLOBAL.innodb_io_capacity_max",
        )
        .await?
        .context("no row of InnoDB settings")?;
    // The page cleaner flushes at innodb_io_capacity pages a second (200 by default):
    // let it go at the disk's speed for this once.
    conn.query_drop(
        "SET GLOBAL innodb_io_capacity_max = 100000, innodb_io_capacity = 50000, \
         innodb_max_dirty_pages_pct = 0",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let dirty: Option<(String, u64)> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
            .await?;
        if dirty.is_none_or(|(_, n)| n == 0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the source still has dirty pages after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (pct, capacity, capacity_max) = before;
    conn.query_drop(format!(
        "SET GLOBAL innodb_max_dirty_pages_pct = {pct}, innodb_io_capacity = {capacity}, \
         innodb_io_capacity_max = {capacity_max}"
    ))
    .await?;
    conn.disconnect().await?;
    sync().await
}

/// Every replica follows the source and holds its rows.
async fn check_replicas(source: &Server, replicas: &[&Server]) -> anyhow::Result<u64> {
    let mut conn = source.admin().await?;
    conn.query_drop(format!(
        "INSERT INTO {DATABASE}.{TABLE} (pad) VALUES ('after seeding')"
    ))
    .await?;
    let position = query_string(&mut conn, "SELECT @@gtid_binlog_pos").await?;
    let rows = query_u64(
        &mut conn,
        &format!("SELECT COUNT(*) FROM {DATABASE}.{TABLE}"),
    )
    .await?;
    conn.disconnect().await?;
    for replica in replicas {
        let mut conn = replica.admin().await?;
        let waited: i64 = conn
            .query_first(format!("SELECT MASTER_GTID_WAIT('{position}', 120)"))
            .await?
            .context("MASTER_GTID_WAIT returned no row")?;
        ensure!(
            waited == 0,
            "{} did not reach the source's position {position}",
            replica.name
        );
        let have = query_u64(
            &mut conn,
            &format!("SELECT COUNT(*) FROM {DATABASE}.{TABLE}"),
        )
        .await?;
        ensure!(
            have == rows,
            "{} has {have} rows, the source {rows}",
            replica.name
        );
        conn.disconnect().await?;
    }
    Ok(rows)
}

fn print_stages(stages: &[(String, f64)], kind: Kind) {
    for (i, (label, secs)) in stages.iter().enumerate() {
        println!(
            "      {:<62} {:>8.2} s",
            stage_name(label, i == 0, kind),
            secs
        );
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    ensure!(args.size_gb > 0.0, "--size-gb must be positive");
    ensure!(
        ferrotrove_agent::fsutil::running_as_root(),
        "run me as root: the servers run as the mysql user"
    );
    for tool in ["mariadbd", "mariabackup", "mbstream", "mariadb-dump", "tar"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(std::process::Stdio::null())
                .status()?
                .success(),
            "{tool} is not installed; deploy/dev/services.sh installs MariaDB and mariadb-backup"
        );
    }
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let store_dir = shared_tempdir(&work_dir, "ftrove-seed-store-")?;
    let store = store_dir.path().join("snapshots");
    let disk = work_dir.as_path();
    let target = (args.size_gb * 1e9) as u64;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    eprintln!(
        "[seed] preparing the source and the replicas in {}",
        work_dir.display()
    );
    let mem = args.memory_mb;
    let (source, r1, r2, r3, r4, rl) = tokio::join!(
        Server::prepared("source", disk, &store, 1, mem, true),
        Server::prepared("r1", disk, &store, 2, mem, false),
        Server::prepared("r2", disk, &store, 3, mem, false),
        Server::prepared("r3", disk, &store, 4, mem, false),
        Server::prepared("r4", disk, &store, 5, mem, false),
        async {
            if args.skip_logical {
                Ok(None)
            } else {
                Server::prepared("logical", disk, &store, 6, mem, false)
                    .await
                    .map(Some)
            }
        },
    );
    let (source, r1, r2, r3, r4, rl) = (source?, r1?, r2?, r3?, r4?, rl?);
    replication::create_user(
        &source.instance,
        &ReplicationUser {
            name: REPL_USER.into(),
            host: "127.0.0.1".into(),
            password: Secret::new(REPL_PASSWORD),
        },
    )
    .await?;
    let version = {
        let mut conn = source.admin().await?;
        let v = query_string(&mut conn, "SELECT VERSION()").await?;
        conn.disconnect().await?;
        v
    };

    eprintln!("[seed] generating {:.2} GB of InnoDB data", args.size_gb);
    let started = Instant::now();
    let (rows, ibd_bytes) = generate(&source, target).await?;
    let generate_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    flush_dirty_pages(&source).await?;
    let flush_secs = started.elapsed().as_secs_f64();
    let data_dir_bytes = dir_size(source.data_dir());
    eprintln!(
        "[seed] {rows} rows, .ibd {:.0} MB, data dir {:.0} MB; generated in {generate_secs:.1} s, flushed in {flush_secs:.1} s",
        mb(ibd_bytes),
        mb(data_dir_bytes)
    );

    // 1. The raw copy, once and then three at once (the disk's own floor for the ratio
    //    of three replicas to one: on one disk, three replicas write three copies).
    eprintln!("[seed] raw copy: tar | tar; sync");
    if args.cold {
        drop_caches().await?;
    }
    let (raw_tar, raw_sync) = raw_copies(&source, &work_dir, disk, 1).await?;
    let raw = raw_tar.plus(raw_sync);
    eprintln!("[seed] three raw copies at once");
    if args.cold {
        drop_caches().await?;
    }
    let (raw3_tar, raw3_sync) = raw_copies(&source, &work_dir, disk, 3).await?;
    let raw3 = raw3_tar.plus(raw3_sync);

    // 2. Physical seeding of one replica: the snapshot and the replica's restore at once.
    eprintln!("[seed] physical seeding of one replica");
    if args.cold {
        drop_caches().await?;
    }
    let rss_before_kib = self_status_kib("VmRSS:");
    let seeded = watched(
        &[&source, &r1],
        disk,
        seed_following(&source, &[&r1], SnapshotMethod::Physical),
    )
    .await;
    let info = seeded.output.snapshot?;
    let mut one_attach = None;
    for (attached, secs) in seeded.output.attaches {
        attached?;
        one_attach = Some(at(secs));
    }
    let one_attach = one_attach.context("one attach")?;
    let one_snapshot = at(seeded.output.snapshot_secs);
    let one = seeded.step;
    let (synced, one_sync) = timed(disk, sync()).await;
    synced?;
    let rss_peak_one_kib = seeded.peak_rss_kib;
    snapshot::delete(&source.instance, info.snapshot_id).await?;
    let one_snapshot_stages = seeded.stages[0].clone();
    let one_attach_stages = seeded.stages[1].clone();
    let snapshot_bytes = info.size_bytes;

    // 2b. The same copy by the tools alone.
    eprintln!("[seed] the same copy by the tools alone");
    if args.cold {
        drop_caches().await?;
    }
    let tools = tools_alone(&source, &work_dir).await?;

    // 3. Physical seeding of three replicas from one snapshot, all following it.
    eprintln!("[seed] physical seeding of three replicas at once");
    if args.cold {
        drop_caches().await?;
    }
    let three = [&r2, &r3, &r4];
    let seeded = watched(
        &[&source, &r2, &r3, &r4],
        disk,
        seed_following(&source, &three, SnapshotMethod::Physical),
    )
    .await;
    let info = seeded.output.snapshot?;
    let mut three_attach_each = Vec::new();
    for (attached, secs) in seeded.output.attaches {
        attached?;
        three_attach_each.push(secs);
    }
    let three_total = seeded.step;
    let (synced, three_sync) = timed(disk, sync()).await;
    synced?;
    snapshot::delete(&source.instance, info.snapshot_id).await?;
    let rss_peak_three_kib = seeded.peak_rss_kib;
    let three_snapshot = at(seeded.output.snapshot_secs);
    let three_stages: Vec<_> = seeded.stages[1..].to_vec();

    // 4. The logical path.
    let mut logical = None;
    let mut logical_stages = None;
    if let Some(replica) = &rl {
        eprintln!("[seed] logical seeding of one replica");
        if args.cold {
            drop_caches().await?;
        }
        let seeded = watched(
            &[&source, replica],
            disk,
            seed_following(&source, &[replica], SnapshotMethod::Logical),
        )
        .await;
        let info = seeded.output.snapshot?;
        for (attached, _) in seeded.output.attaches {
            attached.context("attach the logical replica")?;
        }
        snapshot::delete(&source.instance, info.snapshot_id).await?;
        logical = Some((at(seeded.output.snapshot_secs), seeded.step));
        logical_stages = Some((
            seeded.stages[0].clone(),
            seeded.stages[1].clone(),
            info.size_bytes,
        ));
    }

    eprintln!("[seed] checking that every replica follows the source");
    let mut replicas = vec![&r1, &r2, &r3, &r4];
    if let Some(replica) = &rl {
        replicas.push(replica);
    }
    let final_rows = check_replicas(&source, &replicas).await?;

    // Stop every server at once (their guards would stop them one by one).
    let all = [
        Some(&source),
        Some(&r1),
        Some(&r2),
        Some(&r3),
        Some(&r4),
        rl.as_ref(),
    ];
    for result in join_all(all.iter().flatten().map(|s| s.instance.server.stop())).await {
        if let Err(err) = result {
            eprintln!("[seed] cannot stop a server: {err}");
        }
    }

    let f = Figures {
        data_dir_bytes,
        raw,
        raw_tar,
        raw_sync,
        raw3,
        raw3_sync,
        one_snapshot,
        one_attach,
        one,
        one_sync,
        three_snapshot,
        three_total,
        three_attach_each,
        three_sync,
        logical,
        rss_before_kib,
        rss_peak_one_kib,
        rss_peak_three_kib,
    };

    // The table.
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let size = f.data_dir_bytes;
    println!();
    println!(
        "Ferrotrove replica seeding, {date}, {cores} cores, MariaDB {version}, work dir {}{}",
        work_dir.display(),
        if args.cold {
            ", page cache dropped before each step"
        } else {
            ", page cache warm"
        }
    );
    println!(
        "source: {rows} rows of 1 KiB random bytes, .ibd {:.0} MB, data dir {:.0} MB; generated in {generate_secs:.1} s ({:.0} MB/s), dirty pages flushed in {flush_secs:.1} s",
        mb(ibd_bytes),
        mb(size),
        rate(ibd_bytes, generate_secs)
    );
    println!("MB/s are over the data dir size; disk writes from /proc/diskstats (the whole disk)");
    println!();
    println!(
        "  {:<68} {:>8} {:>10} {:>11}",
        "", "time", "MB/s", "disk writes"
    );
    let line = |label: &str, step: Step, show_rate: bool| {
        let r = if show_rate {
            format!("{:.0}", rate(size, step.secs))
        } else {
            String::new()
        };
        println!(
            "  {label:<68} {:>6.2} s {r:>10} {:>11}",
            step.secs,
            written(step)
        );
    };
    println!("  1. raw copy of the data dir");
    line("   tar c -C data . | tar x -C scratch", f.raw_tar, false);
    line("   sync", f.raw_sync, false);
    line("   total", f.raw, true);
    println!("  1b. three raw copies at once (what three replicas on this one disk must write)");
    line("   sync", f.raw3_sync, false);
    line("   total", f.raw3, false);
    println!(
        "  2. physical seeding, one replica (it restores the snapshot as the source takes it)"
    );
    line(
        "   snapshot (snapshot::create, physical) ended at",
        f.one_snapshot,
        false,
    );
    print_stages(&one_snapshot_stages, Kind::PhysicalSnapshot);
    line(
        "   attach (replication::attach_following) ended at",
        f.one_attach,
        false,
    );
    print_stages(&one_attach_stages, Kind::PhysicalAttach);
    let one = f.one;
    line("   total: until the replica replicates", one, true);
    line(
        "   sync after attach (restored files not yet on disk)",
        f.one_sync,
        false,
    );
    let one_durable = one.plus(f.one_sync);
    line(
        "   total with that sync (like the raw copy)",
        one_durable,
        true,
    );
    println!("  2b. the same copy by the tools alone (shell pipelines: no agent, no hashing)");
    line(
        "   mariabackup --backup --parallel=2 > file; sync",
        tools.backup_to_file,
        false,
    );
    line("   mbstream -x < file", tools.extract_from_file, false);
    line(
        "   total: store, then extract (what the agent does, less the agent)",
        tools.backup_to_file.plus(tools.extract_from_file),
        true,
    );
    line(
        "   mariabackup --backup | mbstream -x; sync (no store in between)",
        tools.backup_to_dir,
        true,
    );
    println!("  3. physical seeding, three replicas from one snapshot, all following it");
    line("   snapshot ended at", f.three_snapshot, false);
    for ((replica, secs), stages) in three.iter().zip(&f.three_attach_each).zip(&three_stages) {
        let parts: Vec<String> = stages
            .iter()
            .enumerate()
            .map(|(i, (label, s))| format!("{} {s:.2}", stage_short(label, i == 0)))
            .collect();
        println!(
            "      {:<8} {secs:>6.2} s: {}",
            replica.name,
            parts.join(", ")
        );
    }
    let three_total = f.three_total;
    line(
        "   total: until the last replica replicates",
        three_total,
        false,
    );
    line("   sync after the attaches", f.three_sync, false);
    let three_durable = three_total.plus(f.three_sync);
    line("   total with that sync", three_durable, false);
    if let (Some((snap, attach)), Some((snap_stages, attach_stages, dump_bytes))) =
        (f.logical, &logical_stages)
    {
        println!(
            "  4. logical seeding, one replica (dump of {:.0} MB stored)",
            mb(*dump_bytes)
        );
        line(
            "   snapshot (snapshot::create, logical) ended at",
            snap,
            false,
        );
        print_stages(snap_stages, Kind::LogicalSnapshot);
        print_stages(attach_stages, Kind::LogicalAttach);
        line("   total: until the replica replicates", attach, true);
    }
    println!();
    println!(
        "  physical snapshot stream: {:.0} MB stored for a {:.0} MB data dir",
        mb(snapshot_bytes),
        mb(size)
    );
    println!(
        "  RSS of this process (it runs the agent's snapshot and restore code): {:.1} MiB before, peak {:.1} MiB during the physical snapshot + attach, peak {:.1} MiB during the snapshot + 3 attaches",
        f.rss_before_kib as f64 / 1024.0,
        f.rss_peak_one_kib as f64 / 1024.0,
        f.rss_peak_three_kib as f64 / 1024.0
    );
    println!(
        "  checked: {} replicas reached the source's GTID position and hold its {final_rows} rows",
        replicas.len()
    );
    println!();
    let speed = f.raw.secs / one.secs;
    let speed_durable = f.raw.secs / one_durable.secs;
    let three_ratio = three_total.secs / one.secs;
    let three_ratio_durable = three_durable.secs / one_durable.secs;
    let raw_three_ratio = f.raw3.secs / f.raw.secs;
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "  target: one replica at >= 80% of raw-copy speed: {:.0}% ({}); {:.0}% counting the sync after attach ({})",
        speed * 100.0,
        verdict(speed >= 0.8),
        speed_durable * 100.0,
        verdict(speed_durable >= 0.8)
    );
    println!(
        "  target: three replicas in < 2x the time of one: {three_ratio:.2}x ({}); {three_ratio_durable:.2}x counting the syncs ({})",
        verdict(three_ratio < 2.0),
        verdict(three_ratio_durable < 2.0)
    );
    println!(
        "  the disk alone: three raw copies at once take {raw_three_ratio:.2}x the time of one"
    );
    let json = serde_json::json!({
        "cores": cores, "mariadb": version, "cold": args.cold,
        "rows": rows, "ibd_bytes": ibd_bytes, "data_dir_bytes": size,
        "generate_s": generate_secs, "flush_s": flush_secs,
        "raw_s": f.raw.secs, "raw_tar_s": f.raw_tar.secs, "raw_sync_s": f.raw_sync.secs,
        "raw_mb_per_s": rate(size, f.raw.secs),
        "raw3_s": f.raw3.secs, "raw3_sync_s": f.raw3_sync.secs, "raw3_vs_raw": raw_three_ratio,
        "one_snapshot_s": f.one_snapshot.secs, "one_attach_s": f.one_attach.secs,
        "one_total_s": one.secs, "one_sync_s": f.one_sync.secs,
        "one_mb_per_s": rate(size, one.secs),
        "one_speed_vs_raw": speed, "one_speed_vs_raw_with_sync": speed_durable,
        "tools_backup_to_file_s": tools.backup_to_file.secs,
        "tools_extract_from_file_s": tools.extract_from_file.secs,
        "tools_backup_to_dir_s": tools.backup_to_dir.secs,
        "three_snapshot_s": f.three_snapshot.secs,
        "three_attach_each_s": f.three_attach_each, "three_total_s": three_total.secs,
        "three_sync_s": f.three_sync.secs,
        "three_vs_one": three_ratio, "three_vs_one_with_sync": three_ratio_durable,
        "logical_snapshot_s": f.logical.map(|(s, _)| s.secs),
        "logical_total_s": f.logical.map(|(_, a)| a.secs),
        "rss_before_kib": f.rss_before_kib, "rss_peak_one_kib": f.rss_peak_one_kib,
        "rss_peak_three_kib": f.rss_peak_three_kib,
    });
    println!("{json}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The agent's runtime flavour: one thread; the copying runs on blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = bench(&args) => result,
            // Dropping the bench future runs every guard: servers stop, temp dirs go.
            _ = tokio::signal::ctrl_c() => bail!("interrupted; cleaned up"),
        }
    })
}
