//! The subcommands, one function each: `instances` for the instance lifecycle and
//! replication, `catalog` for flavors and datastores.

mod catalog;
mod instances;

use anyhow::anyhow;
use serde_json::Value;

use crate::args::{Cli, Command, DEFAULT_URL};
use crate::client::Client;

/// What every command needs: the API client and the output mode.
pub struct Ctx {
    pub client: Client,
    /// `--json`: print the API's JSON instead of tables.
    pub json: bool,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = &cli.command {
        crate::args::completions(*shell, &mut std::io::stdout().lock());
        return Ok(());
    }
    // An empty FTROVE_URL counts as unset.
    let url = if cli.url.trim().is_empty() {
        DEFAULT_URL
    } else {
        cli.url.as_str()
    };
    let client = Client::new(url, cli.token.as_ref().map(|t| t.0.as_str()))?;
    let ctx = Ctx {
        client,
        json: cli.json,
    };
    match &cli.command {
        Command::List => instances::list(&ctx),
        Command::Show { instance } => instances::show(&ctx, instance),
        Command::Create(args) => instances::create(&ctx, args),
        Command::DetachReplica { instance, wait } => {
            instances::detach_replica(&ctx, instance, wait)
        }
        Command::Delete { instance, wait } => instances::delete(&ctx, instance, wait),
        Command::FlavorList => catalog::flavor_list(&ctx),
        Command::DatastoreList => catalog::datastore_list(&ctx),
        Command::DatastoreVersionList { datastore } => {
            catalog::datastore_version_list(&ctx, datastore)
        }
        Command::Completions { .. } => Ok(()),
    }
}

/// The array under `key` in a list answer (`{"instances": [...]}`).
fn items<'a>(body: &'a Value, key: &str) -> anyhow::Result<&'a Vec<Value>> {
    body.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the API's answer has no \"{key}\" array"))
}
