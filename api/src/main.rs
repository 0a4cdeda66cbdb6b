//! `ftrove-api`: serves Ferrotrove's Trove v1.0 REST API. See the library's docs, and
//! `ferrotrove_api::config` for every option. `ftrove-api tokens add|list|revoke` manages
//! the API tokens kept in the control DB.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrotrove_api::{ApiConfig, admin};
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Parser)]
#[command(version, about = "Ferrotrove's Trove-compatible REST API")]
struct Args {
    /// A TOML configuration file; without one, defaults and FTROVE_API__* variables apply.
    #[arg(long, env = "FTROVE_API_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Without a command, serve the API.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the API tokens kept in the control DB (the config's [store]).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token for a tenant and print it, once (only its SHA-256 digest is stored).
    Add {
        /// The tenant (project) id the token acts for.
        #[arg(long)]
        tenant: String,
        /// A note for `tokens list` (who or what uses it).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens' ids, tenants, dates and descriptions (never the tokens).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token by its id: the API refuses it from its next request on.
    Revoke {
        /// The id `tokens add` and `tokens list` print.
        id: Uuid,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.command {
        None => ferrotrove_bus::daemon::init_logging(),
        // stdout is for the command's output (a new token); warnings go to stderr.
        Some(Command::Tokens(_)) => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init(),
    }
    let config = ferrotrove_bus::daemon::config_or_exit(
        "ftrove-api",
        args.config.as_deref(),
        ApiConfig::load(args.config.as_deref()),
    );
    match args.command {
        None => serve(config).await,
        Some(Command::Tokens(command)) => tokens(config, command).await,
    }
}

async fn serve(config: ApiConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("ftrove-api cannot listen on {}", config.listen))?;
    ferrotrove_api::run(config, listener, ferrotrove_bus::daemon::shutdown_signal())
        .await
        .context("ftrove-api stopped")?;
    Ok(())
}

async fn tokens(config: ApiConfig, command: TokensCommand) -> anyhow::Result<()> {
    let store = ferrotrove_store::Store::connect(&config.store)
        .await
        .context("cannot open the control DB")?;
    let result = async {
        match command {
            TokensCommand::Add {
                tenant,
                description,
            } => {
                let (token, row) = admin::add_token(&store, &tenant, &description).await?;
                // The token alone on stdout, for scripts; the rest on stderr.
                println!("{token}");
                eprintln!(
                    "token {} for tenant {}: keep it now, it is not shown again",
                    row.id, row.tenant_id
                );
            }
            TokensCommand::List { tenant } => {
                let rows = store.list_tokens(tenant.as_deref()).await?;
                print!("{}", admin::token_table(&rows));
            }
            TokensCommand::Revoke { id } => {
                let row = admin::revoke_token(&store, id).await?;
                println!("token {} of tenant {} is revoked", row.id, row.tenant_id);
            }
        }
        Ok::<(), admin::AdminError>(())
    }
    .await;
    if let Err(e) = store.close().await {
        tracing::debug!(error = %e, "closing the control DB");
    }
    result.context("ftrove-api tokens")?;
    Ok(())
}
