//! `ftrove-conductor`: stores what guest agents report.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Ferrotrove conductor: stores guest agents' heartbeats in the control DB"
)]
struct Args {
    /// TOML config file; defaults apply to every key it does not set.
    #[arg(long, env = "FTROVE_CONDUCTOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrotrove_bus::daemon::init_logging();
    let args = Args::parse();
    let config = ferrotrove_bus::daemon::config_or_exit(
        "ftrove-conductor",
        args.config.as_deref(),
        ferrotrove_conductor::ConductorConfig::load(args.config.as_deref()),
    );
    ferrotrove_conductor::run(config, ferrotrove_bus::daemon::shutdown_signal()).await
}
