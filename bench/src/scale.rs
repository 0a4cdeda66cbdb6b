//! `ftrove-bench-scale`: how many heartbeats one conductor stores per second, and how fast
//! the API lists and shows instances, with 10,000 instances in the control DB.
//!
//! It makes everything it uses and removes it at the end: a control database
//! `ft_bench_scale_<id>` and a RabbitMQ vhost `ft-bench-scale-<id>` (with `rabbitmqctl`).
//! It inserts the instances through the store (each gets its own signing secret, as a
//! created instance does), ACTIVE, 1,000 per tenant, and starts the real `ftrove-conductor`
//! and `ftrove-api` binaries (built next to this one) on them. Then:
//!
//! 1. warm-up: every instance sends heartbeat 1 (the conductor reads each secret once);
//! 2. live: `--publishers` AMQP connections, each with `--window` casts in flight, send
//!    `--rounds` more heartbeats per instance, signed with the instance's secret, as agents
//!    do (transient, publisher-confirmed casts to the conductor's queue). Stored means
//!    applied in MariaDB: the bench polls the sum of every instance's stored `seq`;
//! 3. backlog: the conductor is stopped, `--rounds` more per instance are queued, and the
//!    conductor is started again and drains them: the conductor alone, without publishers
//!    competing for the same cores;
//! 4. ceiling: the conductor stopped, `--rounds` more are queued and drained by a consumer
//!    in this process that checks each signature (as the conductor does, through the same
//!    bus code) and acks at once, storing nothing: what the broker and the bus allow here;
//! 5. store alone: as many heartbeats written straight through the store's batch upsert
//!    (`--batch-max` per batch, `--writers` at once), without the broker;
//! 6. the API (token auth, as deployed): `GET /instances` of a tenant holding 1,000 (no
//!    pagination unless asked; all 1,000 returned) and `GET /instances/{id}`, one request
//!    at a time, p50 and p99;
//! 7. the liveness check over 10,000 rows: with nothing to mark, and marking all of them
//!    (their heartbeats aged past the expiry); the API then lists them as SHUTDOWN.
//!
//! Prints a table with the targets and one JSON line. `deploy/bench/scale.sh` builds and
//! runs it.

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ferrotrove_bus::{Bus, BusConfig, Handler, KeyLookup, RequestContext, SigningKey, Verifier};
use ferrotrove_proto::agent::ServerStatus;
use ferrotrove_proto::conductor::{ConductorMessage, Heartbeat, HostStats};
use ferrotrove_proto::status::{InstanceStatus, Role};
use ferrotrove_proto::{ErrorKind, RemoteError, Secret, queues};
use ferrotrove_store::{NewInstance, Store, StoreConfig};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(
    about = "Heartbeats stored per second by one conductor, and API latency, with 10,000 instances"
)]
struct Args {
    /// Instances in the control DB.
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Instances per tenant (the list measured is one tenant's).
    #[arg(long, default_value_t = 1_000)]
    per_tenant: usize,
    /// Heartbeats per instance in each measured phase.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// Concurrent publishers, each an AMQP connection of its own.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Casts in flight per publisher (each awaits its own confirm).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// The broker, without a vhost (the bench makes its own).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672")]
    amqp: String,
    /// The broker user given permissions on the bench's vhost.
    #[arg(long, default_value = "guest")]
    amqp_user: String,
    /// The MariaDB server for the control DB (the bench's database is made and dropped).
    #[arg(long, default_value = "mysql://ferrotrove:ferrotrove@127.0.0.1:3306")]
    db_url: String,
    /// The conductor's `heartbeats.batch_max`.
    #[arg(long, default_value_t = 512)]
    batch_max: usize,
    /// The conductor's `heartbeats.batch_window_ms`.
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// The conductor's `heartbeats.writers`.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// The conductor's `bus.prefetch`.
    #[arg(long, default_value_t = 1024)]
    prefetch: u16,
    /// Requests per API figure (list); shows are `--show-requests`.
    #[arg(long, default_value_t = 300)]
    list_requests: usize,
    #[arg(long, default_value_t = 1_000)]
    show_requests: usize,
    /// Skip the backlog phase.
    #[arg(long)]
    skip_backlog: bool,
    /// Skip the ceiling phase (a consumer that stores nothing).
    #[arg(long)]
    skip_ceiling: bool,
    /// Leave the database, the vhost and the daemons' logs behind (printed at the end).
    #[arg(long)]
    keep: bool,
    /// A RabbitMQ policy definition (JSON) applied to the conductor's queue in the bench's
    /// vhost, e.g. `{"queue-version":2}`; none by default (the broker's defaults).
    #[arg(long)]
    queue_policy: Option<String>,
    /// `RUST_LOG` of the daemons (`debug` shows each batch the conductor stores).
    #[arg(long, default_value = "warn")]
    daemon_log: String,
}

const TARGET_STORED_PER_S: f64 = 20_000.0;
const TARGET_LIST_MS: f64 = 50.0;

/// What the run made, removed at the end.
struct Run {
    id: String,
    vhost: String,
    database: String,
    dir: tempfile::TempDir,
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .context("running rabbitmqctl (the bench makes a vhost of its own)")?;
    ensure!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Run {
    fn create(args: &Args) -> anyhow::Result<Run> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let run = Run {
            vhost: format!("ft-bench-scale-{id}"),
            database: format!("ft_bench_scale_{id}"),
            dir: tempfile::Builder::new()
                .prefix("ftrove-bench-scale-")
                .tempdir()?,
            id,
        };
        rabbitmqctl(&["add_vhost", &run.vhost])?;
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &run.vhost,
            &args.amqp_user,
            ".*",
            ".*",
            ".*",
        ])?;
        if let Some(policy) = &args.queue_policy {
            rabbitmqctl(&[
                "set_policy",
                "-p",
                &run.vhost,
                "ft-bench-scale",
                "^conductor$",
                policy,
                "--apply-to",
                "queues",
            ])?;
        }
        Ok(run)
    }

    fn bus_url(&self, args: &Args) -> String {
        format!("{}/{}", args.amqp.trim_end_matches('/'), self.vhost)
    }

    async fn remove(self, args: &Args) {
        if args.keep {
            let dir = self.dir.keep();
            eprintln!(
                "[bench] kept database {}, vhost {} and logs in {}",
                self.database,
                self.vhost,
                dir.display()
            );
            return;
        }
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.vhost]) {
            eprintln!("[bench] cleanup: {error}");
        }
        let dropped = async {
            let mut conn = mysql_async::Conn::from_url(&args.db_url).await?;
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.database))
                .await?;
            conn.disconnect().await
        };
        if let Err(error) = dropped.await {
            eprintln!("[bench] cleanup: dropping {}: {error}", self.database);
        }
    }
}

/// A daemon started from its binary, stopped with SIGTERM (killed if it does not stop).
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn start(
        name: &'static str,
        config: &Path,
        log: &Path,
        rust_log: &str,
    ) -> anyhow::Result<Daemon> {
        let binary = sibling(&format!("ftrove-{name}"))?;
        let log = std::fs::File::create(log)?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Daemon { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling a child we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not stop within 15 s of SIGTERM", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A workspace binary built next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    ensure!(
        path.exists(),
        "{} is not built (deploy/bench/scale.sh builds it)",
        path.display()
    );
    Ok(path)
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Machine-wide CPU use between two `machine_jiffies` readings, in percent of all cores.
fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 / total * 100.0
}

/// The first process whose command line `matches` (the broker's and the database
/// server's, which the bench did not start).
fn find_pid(matches: impl Fn(&str) -> bool) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| matches(&String::from_utf8_lossy(&c).replace('\0', " ")))
            .unwrap_or(false)
    })
}

/// Where the CPU went during a phase: each process's share of one core, and the whole
/// machine's busy share of all its cores.
struct CpuMeter {
    started: Instant,
    machine: (u64, u64),
    processes: Vec<(&'static str, u32, f64)>,
}

impl CpuMeter {
    /// `this` names what this process does meanwhile (publishing, consuming).
    fn start(conductor: Option<u32>, this: &'static str) -> CpuMeter {
        let broker = find_pid(|c| c.contains("beam.smp") && c.contains("rabbit"));
        // The control DB's server: the system one, not a benchmark's instance server.
        let database = find_pid(|c| c.contains("mariadbd") && !c.contains("--defaults-file"));
        let processes = [
            ("conductor", conductor),
            ("rabbitmq", broker),
            ("mariadb", database),
            (this, Some(std::process::id())),
        ]
        .into_iter()
        .filter_map(|(name, pid)| pid.map(|pid| (name, pid, cpu_secs(pid))))
        .collect();
        CpuMeter {
            started: Instant::now(),
            machine: machine_jiffies(),
            processes,
        }
    }

    fn finish(&self) -> serde_json::Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut out = serde_json::Map::new();
        for (name, pid, before) in &self.processes {
            out.insert(
                format!("{name}_cpu_percent"),
                ((cpu_secs(*pid) - before) / secs * 100.0).into(),
            );
        }
        out.insert(
            "machine_busy_percent".into(),
            busy_percent(self.machine, machine_jiffies()).into(),
        );
        out.into()
    }
}

/// The ceiling phase's consumer: checks, as the conductor does, that a heartbeat is signed
/// by the instance it is about, counts it and returns (so the bus acks it at once).
#[derive(Clone, Default)]
struct CountingConsumer {
    handled: Arc<AtomicU64>,
}

impl Handler for CountingConsumer {
    type Request = ConductorMessage;
    type Response = ();

    async fn handle(
        &self,
        message: ConductorMessage,
        ctx: RequestContext,
    ) -> Result<(), RemoteError> {
        let ConductorMessage::Heartbeat(hb) = message;
        if ctx.key_id != Some(hb.instance_id) {
            return Err(RemoteError::new(
                ErrorKind::BadRequest,
                "signed by another instance",
            ));
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The instances' secrets, for the ceiling consumer's signature checks.
struct Keys(HashMap<Uuid, Secret>);

impl KeyLookup for Keys {
    fn secret(
        &self,
        key_id: Uuid,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Secret>> + Send + '_>> {
        let secret = self.0.get(&key_id).cloned();
        Box::pin(async move { secret })
    }
}

/// One instance as a publisher sees it: its id and a bus handle signing with its secret.
struct Agent {
    id: Uuid,
    bus: Bus,
}

/// A heartbeat like an agent's: a running standalone server, its GTID, host figures.
fn heartbeat(id: Uuid, boot_id: Uuid, seq: u64) -> ConductorMessage {
    ConductorMessage::Heartbeat(Heartbeat {
        instance_id: id,
        boot_id,
        seq,
        server: ServerStatus {
            up: true,
            version: Some("10.11.6-MariaDB-0+deb12u1-log".to_owned()),
            read_only: Some(false),
            role: Some(Role::Standalone),
            gtid_binlog_pos: Some(format!("0-{}-{}", 1, seq * 17)),
            gtid_slave_pos: Some(String::new()),
            gtid_current_pos: Some(format!("0-{}-{}", 1, seq * 17)),
            replication: None,
            error: None,
        },
        host: HostStats {
            cpu_percent: 3.5,
            mem_used_bytes: 412 << 20,
            mem_total_bytes: 1 << 30,
            disk_used_bytes: 3 << 30,
            disk_total_bytes: 20 << 30,
        },
        progress: None,
    })
}

/// Sends heartbeats `seqs` of every agent: publisher `p` of `n` takes agents `p, p+n, ...`,
/// round after round, `window` casts in flight. Returns when the broker confirmed them all.
async fn publish(
    publishers: &[Vec<Agent>],
    boot_id: Uuid,
    seqs: std::ops::RangeInclusive<u64>,
    window: usize,
) -> anyhow::Result<()> {
    let tasks = publishers.iter().map(|agents| {
        let seqs = seqs.clone();
        async move {
            let casts = seqs.flat_map(|seq| agents.iter().map(move |agent| (agent, seq)));
            let mut inflight = futures::stream::iter(casts.map(|(agent, seq)| async move {
                agent
                    .bus
                    .cast_transient(queues::CONDUCTOR, &heartbeat(agent.id, boot_id, seq))
                    .await
            }))
            .buffer_unordered(window);
            while let Some(sent) = inflight.next().await {
                sent?;
            }
            anyhow::Ok(())
        }
    });
    for result in futures::future::join_all(tasks).await {
        result?;
    }
    Ok(())
}

/// `(rows, sum of seq)` of guest_status: how far the stored heartbeats got.
async fn stored(conn: &mut mysql_async::Conn) -> anyhow::Result<(u64, u64)> {
    let row: Option<(u64, u64)> = conn
        .query_first("SELECT COUNT(*), CAST(COALESCE(SUM(seq), 0) AS UNSIGNED) FROM guest_status")
        .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Polls until the sum of stored seqs reaches `target`; returns the samples
/// `(seconds since start, sum)`.
async fn wait_stored(
    conn: &mut mysql_async::Conn,
    target: u64,
    started: Instant,
    every: Duration,
    limit: Duration,
) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut samples = Vec::new();
    loop {
        let (_, sum) = stored(conn).await?;
        samples.push((started.elapsed().as_secs_f64(), sum));
        if sum >= target {
            return Ok(samples);
        }
        ensure!(
            started.elapsed() < limit,
            "only {sum} of {target} (sum of seq) stored after {limit:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// The rate between the samples where 10 % and 90 % of the phase's heartbeats were
/// stored (steady state, without the ramp at either end), and the time of the first
/// sample showing progress.
fn steady_rate(samples: &[(f64, u64)], from: u64, to: u64) -> (f64, f64) {
    let span = (to - from) as f64;
    let at = |fraction: f64| {
        samples
            .iter()
            .find(|(_, sum)| (*sum - from.min(*sum)) as f64 >= span * fraction)
            .copied()
    };
    let first = samples
        .iter()
        .find(|(_, sum)| *sum > from)
        .map_or(0.0, |(t, _)| *t);
    match (at(0.1), at(0.9)) {
        (Some((t1, s1)), Some((t2, s2))) if t2 > t1 => ((s2 - s1) as f64 / (t2 - t1), first),
        _ => (f64::NAN, first),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Runs `requests` GETs of `urls` (cycled), one at a time, after a few unmeasured ones;
/// returns sorted latencies.
async fn latencies(
    client: &reqwest::Client,
    token: &HashMap<String, String>,
    urls: &[(String, String)],
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let get = |tenant: &str, url: &str| {
        client
            .get(url)
            .header("X-Auth-Token", token[tenant].as_str())
            .send()
    };
    for (tenant, url) in urls.iter().cycle().take(10) {
        get(tenant, url).await?.error_for_status()?.bytes().await?;
    }
    let mut out = Vec::with_capacity(requests);
    for (tenant, url) in urls.iter().cycle().take(requests) {
        let t = Instant::now();
        let body = get(tenant, url).await?.error_for_status()?.bytes().await?;
        out.push(t.elapsed());
        ensure!(!body.is_empty(), "empty response from {url}");
    }
    out.sort();
    Ok(out)
}

fn conductor_config(args: &Args, run: &Run) -> String {
    format!(
        "[bus]\nurl = \"{}\"\nexchange = \"ferrotrove\"\nprefetch = {}\n\n\
         [store]\nurl = \"{}\"\ndatabase = \"{}\"\n\n\
         [heartbeats]\nbatch_max = {}\nbatch_window_ms = {}\nwriters = {}\nexpiry_secs = 30\ncheck_interval_secs = 5\n",
        run.bus_url(args),
        args.prefetch,
        args.db_url,
        run.database,
        args.batch_max,
        args.batch_window_ms,
        args.writers,
    )
}

async fn bench(args: &Args, run: &Run) -> anyhow::Result<serde_json::Value> {
    let n = args.instances;
    ensure!(
        n > 0 && args.per_tenant > 0 && args.rounds > 0,
        "nothing to measure"
    );
    let store = Store::connect(&StoreConfig {
        url: args.db_url.clone(),
        database: run.database.clone(),
        pool_max: 4,
        ..StoreConfig::default()
    })
    .await?;

    // The instances, through the store (each with its own secret), ACTIVE.
    eprintln!("[bench] inserting {n} instances");
    let started = Instant::now();
    let tenant_of = |i: usize| format!("bench-{:03}", i / args.per_tenant);
    let rows: Vec<NewInstance> = (0..n)
        .map(|i| NewInstance {
            id: Uuid::new_v4(),
            tenant_id: tenant_of(i),
            name: format!("db-{i:05}"),
            flavor_id: "7".to_owned(),
            volume_size: 5,
            datastore: "mariadb".to_owned(),
            datastore_version: "10.11".to_owned(),
            status: InstanceStatus::Active,
            replica_of: None,
            create_task: None,
        })
        .collect();
    {
        let inserts = rows.chunks(500).map(|chunk| store.insert_instances(chunk));
        let mut inserts = futures::stream::iter(inserts).buffer_unordered(2);
        while let Some(done) = inserts.next().await {
            done?;
        }
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let mut db = mysql_async::Conn::new(
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&args.db_url)?)
            .db_name(Some(run.database.clone())),
    )
    .await?;
    let secrets: HashMap<Uuid, String> = db
        .query::<(String, String), _>("SELECT id, secret FROM instances")
        .await?
        .into_iter()
        .map(|(id, secret)| Ok((Uuid::parse_str(&id)?, secret)))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        secrets.len() == n,
        "{} secrets for {n} instances",
        secrets.len()
    );

    // The daemons' configs: the conductor, and the API with a token per tenant.
    let dir = run.dir.path();
    std::fs::write(dir.join("conductor.toml"), conductor_config(args, run))?;
    let tenants: Vec<String> = (0..n.div_ceil(args.per_tenant))
        .map(|t| tenant_of(t * args.per_tenant))
        .collect();
    let tokens: HashMap<String, String> = tenants
        .iter()
        .map(|t| (t.clone(), Uuid::new_v4().simple().to_string()))
        .collect();
    let tokens_toml: String = tokens
        .iter()
        .map(|(tenant, token)| format!("\"{token}\" = \"{tenant}\"\n"))
        .collect();
    std::fs::write(dir.join("tokens.toml"), tokens_toml)?;
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        dir.join("api.toml"),
        format!(
            "listen = \"127.0.0.1:{api_port}\"\n\n[bus]\nurl = \"{}\"\nexchange = \"ferrotrove\"\n\n\
             [store]\nurl = \"{}\"\ndatabase = \"{}\"\npool_max = 10\n\n\
             [auth]\nmode = \"tokens\"\ntokens_file = \"{}\"\n",
            run.bus_url(args),
            args.db_url,
            run.database,
            dir.join("tokens.toml").display()
        ),
    )?;

    let conductor_log = dir.join("conductor.log");
    let mut conductor = Daemon::start(
        "conductor",
        &dir.join("conductor.toml"),
        &conductor_log,
        &args.daemon_log,
    )?;

    // The publishers: connections of their own, each instance's messages signed with its
    // secret.
    let bus_config = BusConfig {
        url: run.bus_url(args),
        exchange: "ferrotrove".to_owned(),
        ..BusConfig::default()
    };
    let mut publishers: Vec<Vec<Agent>> = Vec::new();
    for p in 0..args.publishers.max(1) {
        let bus = Bus::connect(&bus_config, format!("bench-agents-{p}")).await?;
        publishers.push(
            rows.iter()
                .skip(p)
                .step_by(args.publishers.max(1))
                .map(|row| Agent {
                    id: row.id,
                    bus: bus.signed_by(SigningKey {
                        key_id: row.id,
                        secret: Secret::new(secrets[&row.id].clone()),
                    }),
                })
                .collect(),
        );
    }
    let boot_id = Uuid::now_v7();
    let n64 = n as u64;
    let limit = Duration::from_secs(600);

    // 1. Warm-up: heartbeat 1 of every instance; the conductor reads each secret once.
    eprintln!("[bench] warm-up: heartbeat 1 of {n} instances");
    let started = Instant::now();
    publish(&publishers, boot_id, 1..=1, args.window).await?;
    wait_stored(&mut db, n64, started, Duration::from_millis(100), limit).await?;
    let warmup_secs = started.elapsed().as_secs_f64();
    let (rows_stored, _) = stored(&mut db).await?;
    ensure!(
        rows_stored == n64,
        "{rows_stored} heartbeat rows for {n} instances"
    );

    // 2. Live: publishers and the conductor at once.
    let rounds = args.rounds;
    let live_total = n64 * rounds;
    eprintln!(
        "[bench] live: {live_total} heartbeats from {} publishers",
        publishers.len()
    );
    let meter = CpuMeter::start(Some(conductor.pid()), "publishers");
    let started = Instant::now();
    let from = n64;
    let target = n64 * (1 + rounds);
    let (published, samples) = tokio::join!(
        async {
            publish(&publishers, boot_id, 2..=1 + rounds, args.window).await?;
            anyhow::Ok(started.elapsed().as_secs_f64())
        },
        wait_stored(&mut db, target, started, Duration::from_millis(200), limit),
    );
    let (publish_secs, samples) = (published?, samples?);
    let live_secs = samples.last().map_or(f64::NAN, |(t, _)| *t);
    let live_rate = live_total as f64 / live_secs;
    let (live_steady, _) = steady_rate(&samples, from, target);
    let live_cpu = meter.finish();

    // 3. Backlog: queued while the conductor is down, drained by it alone.
    let mut backlog = serde_json::Value::Null;
    if !args.skip_backlog {
        eprintln!("[bench] backlog: {live_total} heartbeats queued, then drained");
        conductor.stop()?;
        let started = Instant::now();
        publish(
            &publishers,
            boot_id,
            2 + rounds..=1 + 2 * rounds,
            args.window,
        )
        .await?;
        let queue_secs = started.elapsed().as_secs_f64();
        let from = target;
        let target = n64 * (1 + 2 * rounds);
        let (_, sum) = stored(&mut db).await?;
        ensure!(sum == from, "stored {sum} while the conductor was down");
        conductor = Daemon::start(
            "conductor",
            &dir.join("conductor.toml"),
            &conductor_log,
            &args.daemon_log,
        )?;
        let meter = CpuMeter::start(Some(conductor.pid()), "publishers");
        let started = Instant::now();
        let samples =
            wait_stored(&mut db, target, started, Duration::from_millis(50), limit).await?;
        let (steady, first) = steady_rate(&samples, from, target);
        let end = samples.last().map_or(f64::NAN, |(t, _)| *t);
        // From the first stored heartbeat (after the process started and connected).
        let backlog_rate = live_total as f64 / (end - first).max(1e-3);
        let cpu = meter.finish();
        backlog = serde_json::json!({
            "queued_in_s": queue_secs,
            "first_stored_after_start_s": first,
            "drained_in_s": end - first,
            "stored_per_s": backlog_rate,
            "stored_per_s_steady": steady,
            "cpu": cpu,
        });
    }

    // 4. The ceiling: the same drain by a consumer that checks each signature and acks but
    // stores nothing, through the same bus code: what the broker and the bus allow on this
    // machine, whatever the conductor does with the heartbeats.
    conductor.stop()?;
    let ceiling = if args.skip_ceiling {
        serde_json::Value::Null
    } else {
        eprintln!(
            "[bench] ceiling: {live_total} heartbeats drained by a consumer that stores nothing"
        );
        let first_seq = 2 + 2 * rounds;
        publish(
            &publishers,
            boot_id,
            first_seq..=first_seq + rounds - 1,
            args.window,
        )
        .await?;
        let counter = CountingConsumer::default();
        let keys: HashMap<Uuid, Secret> = secrets
            .iter()
            .map(|(id, secret)| (*id, Secret::new(secret.clone())))
            .collect();
        let consumer_bus = Bus::connect(
            &BusConfig {
                prefetch: args.prefetch,
                ..bus_config.clone()
            },
            "bench-ceiling",
        )
        .await?;
        let meter = CpuMeter::start(None, "consumer");
        let started = Instant::now();
        let server = consumer_bus
            .serve_verified(
                queues::CONDUCTOR,
                counter.clone(),
                Some(Verifier::Lookup(Arc::new(Keys(keys)))),
            )
            .await?;
        let deadline = started + limit;
        while counter.handled.load(Ordering::Relaxed) < live_total {
            ensure!(Instant::now() < deadline, "the ceiling consumer stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = meter.finish();
        server.stop().await;
        consumer_bus.close().await;
        serde_json::json!({
            "handled_per_s": live_total as f64 / secs,
            "cpu": cpu,
        })
    };

    // 5. The store alone: the same heartbeats written by the conductor's store code in
    // batches of `--batch-max`, `--writers` at once, without the broker: what MariaDB takes.
    eprintln!("[bench] store alone: {live_total} heartbeats written in batches");
    let first_seq = 2 + 2 * rounds;
    let batches: Vec<Vec<Heartbeat>> = (first_seq..first_seq + rounds)
        .flat_map(|seq| {
            rows.chunks(args.batch_max.max(1)).map(move |chunk| {
                chunk
                    .iter()
                    .map(|row| {
                        let ConductorMessage::Heartbeat(hb) = heartbeat(row.id, boot_id, seq);
                        hb
                    })
                    .collect()
            })
        })
        .collect();
    let meter = CpuMeter::start(None, "bench");
    let started = Instant::now();
    let mut writes = futures::stream::iter(batches.iter().map(|b| store.record_heartbeats(b)))
        .buffered(args.writers.max(1));
    while let Some(written) = writes.next().await {
        written?;
    }
    drop(writes);
    let store_secs = started.elapsed().as_secs_f64();
    let store_alone = serde_json::json!({
        "stored_per_s": live_total as f64 / store_secs,
        "cpu": meter.finish(),
    });
    let (_, sum) = stored(&mut db).await?;
    ensure!(
        sum == n64 * (first_seq + rounds - 1),
        "the store alone stored {sum}"
    );

    // 6. The API.
    eprintln!("[bench] API: list and show");
    let mut api = Daemon::start(
        "api",
        &dir.join("api.toml"),
        &dir.join("api.log"),
        &args.daemon_log,
    )?;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}/v1.0");
    let tenant = &tenants[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{base}/{tenant}/flavors"))
            .header("X-Auth-Token", tokens[tenant].as_str())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if let Ok(Some(status)) = api.child.try_wait() {
            bail!(
                "ftrove-api exited ({status}): {}",
                std::fs::read_to_string(dir.join("api.log")).unwrap_or_default()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "ftrove-api did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list_url = format!("{base}/{tenant}/instances");
    let statuses = |body: &serde_json::Value| -> HashMap<(String, String), usize> {
        let mut counts = HashMap::new();
        for i in body["instances"].as_array().into_iter().flatten() {
            let key = (
                i["status"].as_str().unwrap_or("?").to_owned(),
                i["operating_status"].as_str().unwrap_or("?").to_owned(),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    };
    let list_body = |client: &reqwest::Client| {
        let request = client
            .get(&list_url)
            .header("X-Auth-Token", tokens[tenant].as_str());
        async move {
            anyhow::Ok(
                request
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<serde_json::Value>()
                    .await?,
            )
        }
    };
    let listed = list_body(&client).await?;
    let listed_count = listed["instances"].as_array().map_or(0, Vec::len);
    ensure!(
        listed_count == args.per_tenant.min(n),
        "the list returned {listed_count} instances"
    );
    let before = statuses(&listed);
    ensure!(
        before.get(&("ACTIVE".to_owned(), "HEALTHY".to_owned())) == Some(&listed_count),
        "not all ACTIVE/HEALTHY: {before:?}"
    );
    let list_bytes = serde_json::to_vec(&listed)?.len();
    let list = latencies(
        &client,
        &tokens,
        &[(tenant.clone(), list_url.clone())],
        args.list_requests,
    )
    .await?;
    let show_urls: Vec<(String, String)> = rows
        .iter()
        .step_by((n / 1000).max(1))
        .map(|r| {
            (
                r.tenant_id.clone(),
                format!("{base}/{}/instances/{}", r.tenant_id, r.id),
            )
        })
        .collect();
    let show = latencies(&client, &tokens, &show_urls, args.show_requests).await?;

    // 7. The liveness check over every row: nothing to mark, then everything.
    eprintln!("[bench] liveness check");
    // An expiry of an hour: the phases before may take minutes on a busy machine.
    let expiry = Duration::from_secs(3600);
    let mut idle_checks = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let marked = store.mark_stale(expiry).await?;
        idle_checks.push(t.elapsed());
        ensure!(marked.is_empty(), "{} marked while fresh", marked.len());
    }
    idle_checks.sort();
    db.query_drop("UPDATE guest_status SET received_at = received_at - INTERVAL 2 HOUR")
        .await?;
    let t = Instant::now();
    let marked = store.mark_stale(expiry).await?;
    let mark_all_ms = t.elapsed().as_secs_f64() * 1e3;
    let stale_rows: Option<u64> = db
        .query_first("SELECT COUNT(*) FROM guest_status WHERE stale")
        .await?;
    ensure!(
        stale_rows == Some(n64),
        "{stale_rows:?} of {n} rows marked stale"
    );
    let after = statuses(&list_body(&client).await?);
    ensure!(
        after.get(&("SHUTDOWN".to_owned(), "SHUTDOWN".to_owned())) == Some(&listed_count),
        "the API does not show the marked instances as SHUTDOWN: {after:?}"
    );

    api.stop()?;
    for agents in &publishers {
        if let Some(agent) = agents.first() {
            agent.bus.close().await;
        }
    }
    store.close().await?;
    db.disconnect().await?;

    let ms = |d: &[Duration], p: f64| percentile(d, p);
    let result = serde_json::json!({
        "run_id": run.id,
        "instances": n,
        "per_tenant": args.per_tenant,
        "rounds": rounds,
        "publishers": publishers.len(),
        "window": args.window,
        "conductor": {"prefetch": args.prefetch, "batch_max": args.batch_max, "batch_window_ms": args.batch_window_ms, "writers": args.writers},
        "insert_instances_s": insert_secs,
        "warmup_s": warmup_secs,
        "live": {
            "heartbeats": live_total,
            "published_in_s": publish_secs,
            "published_per_s": live_total as f64 / publish_secs,
            "stored_in_s": live_secs,
            "stored_per_s": live_rate,
            "stored_per_s_steady": live_steady,
            "cpu": live_cpu,
        },
        "backlog": backlog,
        "ceiling": ceiling,
        "store_alone": store_alone,
        "list": {"instances": listed_count, "bytes": list_bytes, "requests": list.len(), "p50_ms": ms(&list, 0.5), "p99_ms": ms(&list, 0.99)},
        "show": {"requests": show.len(), "p50_ms": ms(&show, 0.5), "p99_ms": ms(&show, 0.99)},
        "liveness_check": {
            "idle_p50_ms": ms(&idle_checks, 0.5),
            "mark_all_ms": mark_all_ms,
            "marked_by_bench": marked.len(),
        },
    });
    Ok(result)
}

fn print_table(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let rate = |v: &serde_json::Value| {
        let x = f(v);
        if x.is_nan() {
            "-".to_owned()
        } else {
            format_thousands(x.round() as u64)
        }
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let live = &r["live"];
    let backlog = &r["backlog"];
    let best_stored = f(&live["stored_per_s"]).max(f(&backlog["stored_per_s"]));
    println!();
    println!(
        "{} instances ({} per tenant), {} heartbeats per instance per phase, {} publishers x {} casts in flight; conductor prefetch {}, batch_max {}, batch_window_ms {}, writers {}",
        r["instances"],
        r["per_tenant"],
        r["rounds"],
        r["publishers"],
        r["window"],
        r["conductor"]["prefetch"],
        r["conductor"]["batch_max"],
        r["conductor"]["batch_window_ms"],
        r["conductor"]["writers"],
    );
    println!();
    println!("| figure | measured | target |");
    println!("|---|---|---|");
    println!(
        "| heartbeats stored/s, live (publishers on the same machine) | {} (steady {}) | >= 20,000: {} |",
        rate(&live["stored_per_s"]),
        rate(&live["stored_per_s_steady"]),
        verdict(f(&live["stored_per_s"]) >= TARGET_STORED_PER_S)
    );
    println!(
        "|   published/s meanwhile | {} | |",
        rate(&live["published_per_s"])
    );
    println!("|   CPU meanwhile | {} | |", cpu_line(&live["cpu"]));
    if !backlog.is_null() {
        println!(
            "| heartbeats stored/s, draining a backlog (conductor alone) | {} (steady {}) | >= 20,000: {} |",
            rate(&backlog["stored_per_s"]),
            rate(&backlog["stored_per_s_steady"]),
            verdict(f(&backlog["stored_per_s"]) >= TARGET_STORED_PER_S)
        );
        println!("|   CPU meanwhile | {} | |", cpu_line(&backlog["cpu"]));
    }
    let ceiling = &r["ceiling"];
    if !ceiling.is_null() {
        println!(
            "| ceiling: the same drain by a consumer that verifies and acks but stores nothing | {} | |",
            rate(&ceiling["handled_per_s"])
        );
        println!(
            "|   CPU meanwhile | {} | |",
            cpu_line(&ceiling["cpu"]).replace("publishers", "consumer")
        );
    }
    println!(
        "| the store alone: batch upserts without the broker | {} | |",
        rate(&r["store_alone"]["stored_per_s"])
    );
    println!(
        "|   CPU meanwhile | {} | |",
        cpu_line(&r["store_alone"]["cpu"])
    );
    println!(
        "| API list of {} instances, p50 / p99 | {:.1} / {:.1} ms | < 50 ms: {} |",
        r["list"]["instances"],
        f(&r["list"]["p50_ms"]),
        f(&r["list"]["p99_ms"]),
        verdict(f(&r["list"]["p99_ms"]) < TARGET_LIST_MS)
    );
    println!(
        "| API show, p50 / p99 | {:.2} / {:.2} ms | |",
        f(&r["show"]["p50_ms"]),
        f(&r["show"]["p99_ms"])
    );
    println!(
        "| liveness check over {} rows: nothing to mark p50 / marking all | {:.1} / {:.0} ms | |",
        r["instances"],
        f(&r["liveness_check"]["idle_p50_ms"]),
        f(&r["liveness_check"]["mark_all_ms"])
    );
    println!();
    println!(
        "heartbeats: {} stored/s at best against a target of 20,000 ({}); Trove's one row per heartbeat per guest every 30 s is about {} writes/s for {} guests",
        format_thousands(best_stored.round() as u64),
        verdict(best_stored >= TARGET_STORED_PER_S),
        (f(&r["instances"]) / 30.0).round(),
        r["instances"]
    );
    println!();
    println!("{r}");
}

/// "conductor 38%, rabbitmq 85%, ... of a core; machine 90% busy".
fn cpu_line(cpu: &serde_json::Value) -> String {
    let f = |k: &str| cpu[k].as_f64();
    let parts: Vec<String> = [
        "conductor",
        "rabbitmq",
        "mariadb",
        "publishers",
        "consumer",
        "bench",
    ]
    .iter()
    .filter_map(|name| Some(format!("{name} {:.0}%", f(&format!("{name}_cpu_percent"))?)))
    .collect();
    format!(
        "{} of one core; machine {:.0}% busy (2 cores = 200% of one)",
        parts.join(", "),
        f("machine_busy_percent").unwrap_or(f64::NAN)
    )
}

fn format_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let run = Run::create(&args)?;
    let result = runtime.block_on(bench(&args, &run));
    runtime.block_on(run.remove(&args));
    let result = result?;
    print_table(&result);
    Ok(())
}
