//! `ftrove`, the command line of Ferrotrove: database instances and their replicas, through
//! the Trove v1.0 REST API of the Ferrotrove control plane.
//!
//! Layout:
//! - `args`: the clap command line and the checks clap cannot express;
//! - `client`: HTTP to the API, with faults and transport failures as typed errors;
//! - `resolve`: instances and flavors named by id or by name;
//! - `view`: Trove-shaped JSON flattened for display;
//! - `table`: boxed text tables;
//! - `wait`: `--wait`, polling until the work is done;
//! - `commands`: one function per subcommand;
//! - `output`: stdout that tolerates a closed pipe.
//!
//! Exit status: 0 on success, 1 on any error, 2 on a usage error (from clap).

mod args;
mod client;
mod commands;
mod output;
mod resolve;
mod table;
mod view;
mod wait;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ftrove: {err:#}");
            ExitCode::FAILURE
        }
    }
}
