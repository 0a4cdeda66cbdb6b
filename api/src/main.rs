//! `ftrove-api`: serves Ferrotrove's Trove v1.0 REST API. See the library's docs, and
//! `ferrotrove_api::config` for every option.

use anyhow::Context;
use clap::Parser;
use ferrotrove_api::ApiConfig;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Ferrotrove's Trove-compatible REST API")]
struct Args {
    /// A TOML configuration file; without one, defaults and FTROVE_API__* variables apply.
    #[arg(long, env = "FTROVE_API_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrotrove_bus::daemon::init_logging();
    let args = Args::parse();
    let config = ApiConfig::load(args.config.as_deref()).context("ftrove-api cannot start")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("ftrove-api cannot listen on {}", config.listen))?;
    ferrotrove_api::run(config, listener, ferrotrove_bus::daemon::shutdown_signal())
        .await
        .context("ftrove-api stopped")?;
    Ok(())
}
