//! `ftrove-taskmanager`: runs orchestrations.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Ferrotrove taskmanager: creates, seeds, detaches and deletes instances"
)]
struct Args {
    /// TOML config file; defaults apply to every key it does not set.
    #[arg(long, env = "FTROVE_TASKMANAGER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrotrove_bus::daemon::init_logging();
    let args = Args::parse();
    let config = ferrotrove_bus::daemon::config_or_exit(
        "ftrove-taskmanager",
        args.config.as_deref(),
        ferrotrove_taskmanager::TaskmanagerConfig::load(args.config.as_deref()),
    );
    ferrotrove_taskmanager::run(config, ferrotrove_bus::daemon::shutdown_signal()).await
}
