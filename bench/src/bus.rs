//! `ftrove-bench-bus`: measures Ferrotrove's bus on the local RabbitMQ and prints figures.
//!
//! `all` (the default) starts an echo server as a child process (`server`), then measures
//! from this process: sequential call latency (p50, p99, calls/s), calls/s with `--window`
//! calls in flight, casts/s with publisher confirms and `--cast-window` casts in flight
//! (timed until the server has received them all), the server's RSS idle and after, and the
//! RSS of an idle `ftrove-agent` (connected, serving its queue, heartbeating, no database
//! server). It prints a table and one JSON line. Each run uses an exchange and queue of its
//! own and deletes its queue at the end. Compare with `../shared/bench/` in the same run:
//! `deploy/bench/bus.sh` does that and prints the ratios.

use anyhow::{Context, bail};
use clap::Parser;
use ferrotrove_bus::{Bus, BusConfig, Handler, RequestContext};
use ferrotrove_proto::{Method, RemoteError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
#[command(about = "Benchmark Ferrotrove's bus on the local RabbitMQ")]
struct Args {
    /// all | server
    #[arg(default_value = "all")]
    mode: String,
    #[arg(
        long,
        env = "AMQP_ADDR",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Calls in flight for the concurrent-call figure.
    #[arg(long, default_value_t = 64)]
    window: usize,
    #[arg(long, default_value_t = 100_000)]
    casts: usize,
    /// Casts in flight (each awaits its own confirm).
    #[arg(long, default_value_t = 256)]
    cast_window: usize,
    /// Exchange and queue suffix (set by `all` for its server).
    #[arg(long)]
    run_id: Option<String>,
    /// Skip the idle-agent RSS figure.
    #[arg(long)]
    no_agent: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum BenchRequest {
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    Count,
    Stats,
    Reset,
}

impl Method for BenchRequest {
    fn name(&self) -> &'static str {
        match self {
            Self::Echo(_) => "Echo",
            Self::Count => "Count",
            Self::Stats => "Stats",
            Self::Reset => "Reset",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    casts: u64,
    first_ms: u64,
    last_ms: u64,
    rss_kib: u64,
}

#[derive(Default)]
struct EchoServer {
    casts: AtomicU64,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

impl Handler for EchoServer {
    type Request = BenchRequest;
    type Response = BenchReply;

    async fn handle(
        &self,
        request: BenchRequest,
        _ctx: RequestContext,
    ) -> Result<BenchReply, RemoteError> {
        Ok(match request {
            BenchRequest::Echo(bytes) => BenchReply::Echo(bytes),
            BenchRequest::Count => {
                let now = epoch_ms();
                let _ = self.first_ms.compare_exchange(0, now, Relaxed, Relaxed);
                self.last_ms.store(now, Relaxed);
                self.casts.fetch_add(1, Relaxed);
                BenchReply::Done
            }
            BenchRequest::Stats => BenchReply::Stats(Stats {
                casts: self.casts.load(Relaxed),
                first_ms: self.first_ms.load(Relaxed),
                last_ms: self.last_ms.load(Relaxed),
                rss_kib: rss_kib(std::process::id()),
            }),
            BenchRequest::Reset => {
                self.casts.store(0, Relaxed);
                self.first_ms.store(0, Relaxed);
                self.last_ms.store(0, Relaxed);
                BenchReply::Done
            }
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum BenchReply {
    Echo(#[serde(with = "serde_bytes")] Vec<u8>),
    Stats(Stats),
    Done,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// VmRSS of a process, in KiB (0 when unreadable).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn bus_config(args: &Args, run_id: &str) -> BusConfig {
    BusConfig {
        url: args.url.clone(),
        exchange: format!("ftrove-bench-{run_id}"),
        prefetch: 256,
        ..BusConfig::default()
    }
}

fn queue(run_id: &str) -> String {
    format!("ftrove-bench.{run_id}")
}

async fn run_server(args: Args) -> anyhow::Result<()> {
    let run_id = args.run_id.clone().context("server needs --run-id")?;
    let bus = Bus::connect(&bus_config(&args, &run_id), "bench-server").await?;
    let mut server = bus.serve(&queue(&run_id), EchoServer::default()).await?;
    println!("READY");
    server.closed().await;
    Ok(())
}

/// Deletes `queues`, the run's dead letters and its exchange: a run leaves nothing behind.
async fn remove_topology(bus: &Bus, run_id: &str, queues: &[&str]) {
    let exchange = format!("ftrove-bench-{run_id}");
    let dead = ferrotrove_bus::dead_letter_name(&exchange);
    for queue in queues.iter().copied().chain([dead.as_str()]) {
        if let Err(error) = bus.delete_queue(queue).await {
            eprintln!("cleanup: queue {queue}: {error}");
        }
    }
    for exchange in [&dead, &exchange] {
        if let Err(error) = bus.delete_exchange(exchange).await {
            eprintln!("cleanup: exchange {exchange}: {error}");
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn call(bus: &Bus, q: &str, req: &BenchRequest) -> anyhow::Result<BenchReply> {
    Ok(bus.call(q, req, Duration::from_secs(30)).await?)
}

async fn stats(bus: &Bus, q: &str) -> anyhow::Result<Stats> {
    match call(bus, q, &BenchRequest::Stats).await? {
        BenchReply::Stats(s) => Ok(s),
        other => bail!("unexpected reply {other:?}"),
    }
}

async fn run_all(args: Args) -> anyhow::Result<()> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["server", "--url", &args.url, "--run-id", &run_id])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let server_pid = child.id().context("server pid")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "READY" => {}
        other => bail!("the bench server did not start: {other:?}"),
    }
    let q = queue(&run_id);
    let bus = Bus::connect(&bus_config(&args, &run_id), "bench-client").await?;
    let payload = vec![b'x'; 100];
    let rss_idle = rss_kib(server_pid);

    for _ in 0..args.warmup {
        call(&bus, &q, &BenchRequest::Echo(payload.clone())).await?;
    }
    // Sequential calls.
    let mut latencies = Vec::with_capacity(args.calls);
    let started = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        call(&bus, &q, &BenchRequest::Echo(payload.clone())).await?;
        latencies.push(t.elapsed());
    }
    let seq_rate = args.calls as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));

    // Calls with a window in flight.
    let total = args.calls * 4;
    let started = Instant::now();
    let mut inflight = futures::stream::iter((0..total).map(|_| {
        let (bus, q, payload) = (bus.clone(), q.clone(), payload.clone());
        async move { call(&bus, &q, &BenchRequest::Echo(payload)).await }
    }))
    .buffer_unordered(args.window);
    while let Some(r) = inflight.next().await {
        r?;
    }
    let window_rate = total as f64 / started.elapsed().as_secs_f64();

    // Casts with confirms, a window in flight, timed until the server has them all:
    // persistent (commands, results) and transient (heartbeats).
    let (cast_rate, rss_after) = measure_casts(&bus, &q, &args, false).await?;
    let (transient_rate, _) = measure_casts(&bus, &q, &args, true).await?;

    drop(child);
    remove_topology(&bus, &run_id, &[&q]).await;
    bus.close().await;

    let agent_rss = if args.no_agent {
        None
    } else {
        let (args, run_id) = (args.clone(), run_id.clone());
        Some(tokio::task::spawn_blocking(move || idle_agent_rss(&args, &run_id)).await??)
    };

    println!("Ferrotrove bus on {}", redact(&args.url));
    println!(
        "  sequential call   p50 {p50:.3} ms   p99 {p99:.3} ms   {seq_rate:.0} calls/s   ({} calls, 100-byte payload)",
        args.calls
    );
    println!(
        "  {:>3} in flight     {window_rate:.0} calls/s",
        args.window
    );
    println!(
        "  casts, confirms   {cast_rate:.0} casts/s received   ({} persistent casts, {} in flight)",
        args.casts, args.cast_window
    );
    println!("  transient casts   {transient_rate:.0} casts/s received   (as heartbeats are sent)");
    println!(
        "  server RSS        {:.1} MiB idle, {:.1} MiB after",
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    if let Some(kib) = agent_rss {
        println!("  idle agent RSS    {:.1} MiB", kib as f64 / 1024.0);
    }
    let json = serde_json::json!({
        "impl": "ferrotrove",
        "call_p50_ms": p50, "call_p99_ms": p99, "calls_per_s": seq_rate,
        "window": args.window, "window_calls_per_s": window_rate,
        "casts_confirmed_per_s": cast_rate, "transient_casts_confirmed_per_s": transient_rate, "cast_window": args.cast_window,
        "server_rss_idle_kib": rss_idle, "server_rss_after_kib": rss_after,
        "agent_rss_idle_kib": agent_rss,
    });
    println!("{json}");
    Ok(())
}

/// Sends `args.casts` confirmed casts with `args.cast_window` in flight and returns the rate
/// at which the server received them, and its RSS after.
async fn measure_casts(
    bus: &Bus,
    q: &str,
    args: &Args,
    transient: bool,
) -> anyhow::Result<(f64, u64)> {
    call(bus, q, &BenchRequest::Reset).await?;
    let started_ms = epoch_ms();
    let started = Instant::now();
    let mut casts = futures::stream::iter((0..args.casts).map(|_| async move {
        if transient {
            bus.cast_transient(q, &BenchRequest::Count).await
        } else {
            bus.cast(q, &BenchRequest::Count).await
        }
    }))
    .buffer_unordered(args.cast_window);
    while let Some(r) = casts.next().await {
        r?;
    }
    let sent = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let received = loop {
        let s = stats(bus, q).await?;
        if s.casts as usize >= args.casts {
            break s;
        }
        if Instant::now() > deadline {
            bail!(
                "the server received only {} of {} casts",
                s.casts,
                args.casts
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = (received.last_ms.saturating_sub(started_ms)) as f64 / 1000.0;
    Ok((
        args.casts as f64 / secs.max(sent.as_secs_f64()),
        received.rss_kib,
    ))
}

/// Starts a real `ftrove-agent` with no database server prepared, lets it connect, serve
/// and heartbeat for a few seconds, and reads its RSS.
fn idle_agent_rss(args: &Args, run_id: &str) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let agent = exe.with_file_name("ftrove-agent");
    if !agent.exists() {
        bail!(
            "{} is not built; run `cargo build --release --workspace --bins`",
            agent.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let id = uuid::Uuid::now_v7();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "instance_id = \"{id}\"\n[bus]\nurl = \"{}\"\nexchange = \"ftrove-bench-{run_id}\"\n[server]\nbase_dir = \"{}\"\nport = 1\n[snapshots]\ndir = \"{}\"\n[heartbeat]\ninterval_secs = 1\n",
            args.url,
            dir.path().join("instance").display(),
            dir.path().join("snapshots").display()
        ),
    )?;
    let mut child = Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    // The agent's heartbeats declared a conductor queue on this run's exchange; remove it.
    tokio::runtime::Handle::current().block_on(async {
        if let Ok(bus) = Bus::connect(&bus_config(args, run_id), "bench-cleanup").await {
            let guest = ferrotrove_proto::queues::guest(id);
            remove_topology(&bus, run_id, &[ferrotrove_proto::queues::CONDUCTOR, &guest]).await;
            bus.close().await;
        }
    });
    if rss == 0 {
        bail!(
            "the agent exited early; run it by hand with {} to see why",
            config.display()
        );
    }
    Ok(rss)
}

fn redact(url: &str) -> String {
    BusConfig {
        url: url.to_owned(),
        ..BusConfig::default()
    }
    .redacted_url()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode.as_str() {
        "server" => runtime()?.block_on(run_server(args)),
        "all" => runtime()?.block_on(run_all(args)),
        other => bail!("unknown mode {other:?}: use all or server"),
    }
}

/// The agent's runtime flavour: one thread (see the agent's main).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
