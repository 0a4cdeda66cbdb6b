//! `ftrove-agent --config /path/agent.toml`: the guest agent daemon.
//!
//! Loads the config (refusing a bad one with exit status 78, which systemd does not
//! restart), adopts or starts a prepared server, serves `guestagent.<instance id>` and
//! heartbeats, reconnecting to the broker whenever the connection drops. SIGTERM/SIGINT
//! stop the agent and leave the database server running (a restarted agent adopts it);
//! the Shutdown command stops both, and the agent exits 0 (its unit restarts it only on
//! failure).

use anyhow::Context;
use clap::Parser;
use ferrotrove_agent::heartbeat::{self, Reporter};
use ferrotrove_agent::{AgentConfig, AgentService, Instance};
use ferrotrove_bus::{Bus, BusConfig, SigningKey, Verifier};
use ferrotrove_proto::queues;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::Instrument;

/// How long each round of connection attempts lasts before the agent logs an error; it
/// then keeps trying.
const BUS_CONNECT_PATIENCE: Duration = Duration::from_secs(60);
/// Pause before serving again after the queue could not be consumed.
const SERVE_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Time for the reply to a Shutdown command to leave before the process exits.
const SHUTDOWN_REPLY_GRACE: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "ftrove-agent",
    version,
    about = "Ferrotrove guest agent: owns one database server"
)]
struct Args {
    /// The agent's TOML config file.
    #[arg(long, env = "FTROVE_AGENT_CONFIG")]
    config: PathBuf,
}

/// Why the agent stops.
enum Exit {
    Signal(&'static str),
    ShutdownCommand,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    ferrotrove_bus::daemon::init_logging();
    let config = ferrotrove_bus::daemon::config_or_exit(
        "ftrove-agent",
        Some(&args.config),
        AgentConfig::load(&args.config),
    );
    let span = tracing::info_span!("agent", instance_id = %config.instance_id);
    match run(config).instrument(span).await {
        Ok(Exit::Signal(name)) => {
            tracing::info!(
                signal = name,
                "agent stopped; the database server keeps running"
            );
            ExitCode::SUCCESS
        }
        Ok(Exit::ShutdownCommand) => {
            tracing::info!("database server and agent stopped on command");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ftrove-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's life: start or adopt the server, then serve until told to stop.
async fn run(config: AgentConfig) -> anyhow::Result<Exit> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), base_dir = %config.server.base_dir.display(), "starting");
    for key in &config.ignored_keys {
        tracing::warn!(
            key,
            "ignoring a config key this agent does not know (a newer provisioner's, or a misspelling)"
        );
    }
    let mut signals = Signals::new()?;
    let bus_config = config.bus.to_bus_config();
    let heartbeat_interval = Duration::from_secs(config.heartbeat.interval_secs);
    let instance_id = config.instance_id;
    let key = config.secret.clone().map(|secret| SigningKey {
        key_id: instance_id,
        secret,
    });
    if key.is_none() {
        tracing::warn!(
            "no secret configured: commands are not authenticated and reports are not signed"
        );
    }
    let instance = Arc::new(Instance::new(config).context("cannot set up the snapshot store")?);
    if let Err(err) = ferrotrove_agent::snapshot::clean_unfinished(&instance).await {
        tracing::warn!(error = %err, "cannot remove unfinished snapshots");
    }
    if let Err(err) = instance.start_if_prepared().await {
        // Keep serving: the control plane sees the server down in Status and heartbeats.
        tracing::error!(error = %err, "cannot start the prepared server");
    }
    let reporter = Arc::new(Reporter::new(instance_id, instance.paths.data_dir.clone()));
    tracing::info!(boot_id = %reporter.boot_id(), "heartbeats carry this boot id");
    let service = AgentService::new(instance.clone());
    let mut shutdown = service.shutdown_requested();
    let queue = queues::guest(instance_id);
    let sender = format!("guestagent.{instance_id}");

    loop {
        let bus = tokio::select! {
            bus = connect(&bus_config, &sender) => bus,
            name = signals.next() => return Ok(Exit::Signal(name)),
        };
        // Everything this agent sends is signed with its instance's secret.
        let bus = match &key {
            Some(key) => bus.signed_by(key.clone()),
            None => bus,
        };
        let verifier = key.clone().map(Verifier::Key);
        let mut server = match bus.serve_verified(&queue, service.clone(), verifier).await {
            Ok(server) => server,
            Err(err) => {
                tracing::error!(%queue, error = %err, "cannot consume the queue; trying again");
                bus.close().await;
                tokio::time::sleep(SERVE_RETRY_PAUSE).await;
                continue;
            }
        };
        tracing::info!(%queue, "serving");
        let heartbeats = {
            let (reporter, instance, bus) = (reporter.clone(), instance.clone(), bus.clone());
            tokio::spawn(
                async move { heartbeat::run(&reporter, &instance, &bus, heartbeat_interval).await }
                    .in_current_span(),
            )
        };
        let exit = tokio::select! {
            _ = server.closed() => None,
            name = signals.next() => Some(Exit::Signal(name)),
            _ = shutdown.wait_for(|requested| *requested) => {
                tokio::time::sleep(SHUTDOWN_REPLY_GRACE).await;
                Some(Exit::ShutdownCommand)
            }
        };
        heartbeats.abort();
        let Some(exit) = exit else {
            tracing::warn!("lost the broker connection; reconnecting");
            continue;
        };
        server.stop().await;
        bus.close().await;
        return Ok(exit);
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Connects to the broker, retrying for as long as it takes.
async fn connect(bus_config: &BusConfig, sender: &str) -> Bus {
    loop {
        match Bus::connect_with_retry(bus_config, sender, BUS_CONNECT_PATIENCE).await {
            Ok(bus) => {
                tracing::info!(url = %bus_config.redacted_url(), "connected to the broker");
                return bus;
            }
            Err(err) => {
                tracing::error!(url = %bus_config.redacted_url(), error = %err, "cannot reach the broker; still trying")
            }
        }
    }
}
