//! `ftrove-taskmanager`: runs orchestrations.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Ferrotrove taskmanager: creates, seeds, detaches and deletes instances")]
struct Args {
    /// TOML config file; defaults apply to every key it does not set.
    #[arg(long, env = "FTROVE_TASKMANAGER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let config = ferrotrove_taskmanager::TaskmanagerConfig::load(args.config.as_deref())
        .with_context(|| format!("bad configuration{}", args.config.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()))?;
    ferrotrove_taskmanager::run(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
