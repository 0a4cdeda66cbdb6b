//! The command line: clap definitions of the global flags and every subcommand, plus the
//! checks clap cannot express (the `NAME:PASSWORD` user specs and database names).
//!
//! Those checks run after clap, in [`parse_from`], and report through clap's own error type
//! so that every usage error looks the same and exits with code 2. They do it without echoing
//! what was typed, because a bad user spec may contain a password.

use std::convert::Infallible;
use std::fmt;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// The endpoint used when neither `--url` nor `FTROVE_URL` is given: the API on this host,
/// tenant `demo`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8779/v1.0/demo";

/// The help heading of the flags every subcommand takes.
const GLOBAL: &str = "Global options";

/// Shown at the end of `ftrove --help`.
const AFTER_HELP: &str = "\
Instances are named by id or by name everywhere.

Environment:
  FTROVE_URL    API endpoint, tenant included [default: http://127.0.0.1:8779/v1.0/demo,
                that is the API on this host and the tenant `demo`]
  FTROVE_TOKEN  sent as X-Auth-Token when set (never printed)
--url and --token override them.

Replication walkthrough:
  ftrove flavor-list
  ftrove create m1 7 --size 2 --databases appdb --users app:apppass --wait
  ftrove list
  ftrove create s1 7 --size 2 --replica-of m1 --wait
  ftrove show s1
  ftrove detach-replica s1
  ftrove delete s1 ; ftrove delete m1

Exit status: 0 on success, 1 on an error (API fault, unreachable API, instance in ERROR or
timeout while waiting), 2 on a usage error.";

/// `ftrove`: the command line of Ferrotrove, speaking its Trove v1.0 REST API.
#[derive(Debug, Parser)]
#[command(
    name = "ftrove",
    version,
    about = "Ferrotrove command line: database instances and their replicas (Trove v1.0 API)",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
pub struct Cli {
    /// API endpoint including the tenant: http://HOST:PORT/v1.0/<tenant>.
    #[arg(
        long,
        global = true,
        env = "FTROVE_URL",
        default_value = DEFAULT_URL,
        value_name = "URL",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub url: String,

    /// Auth token, sent as X-Auth-Token.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "FTROVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = parse_token
    )]
    pub token: Option<Token>,

    /// Print the API's JSON (pretty) instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List instances.
    List,

    /// Show one instance.
    Show {
        /// Instance id or name.
        instance: String,
    },

    /// Create an instance, or replicas of one (--replica-of).
    Create(CreateArgs),

    /// Detach a replica from its source; it becomes a writable standalone instance.
    DetachReplica {
        /// Replica id or name.
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },

    /// Delete an instance (a source must have no replicas left).
    Delete {
        /// Instance id or name.
        instance: String,
        #[command(flatten)]
        wait: WaitArgs,
    },

    /// List flavors.
    FlavorList,

    /// List datastores.
    DatastoreList,

    /// List the versions of a datastore.
    DatastoreVersionList {
        /// Datastore name or id, e.g. mariadb.
        datastore: String,
    },

    /// Print a shell completion script, e.g. `ftrove completions bash >
    /// /etc/bash_completion.d/ftrove` or `source <(ftrove completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Writes the completion script of `shell` for the whole command line to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "ftrove", out);
}

/// `ftrove create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new instance (with --replica-count N > 1 the server names them NAME-1..N).
    pub name: String,

    /// Flavor id or name. Replicas inherit their source's flavor; the server ignores this
    /// for them, so it may be left out with --replica-of.
    #[arg(required_unless_present = "replica_of")]
    pub flavor: Option<String>,

    /// Volume size in GB (replicas inherit their source's; optional with --replica-of).
    #[arg(
        long,
        value_name = "GB",
        required_unless_present = "replica_of",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub size: Option<u32>,

    /// Databases to create: --databases a,b or --databases a --databases b.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub databases: Vec<String>,

    /// Users to create, with access to all the listed databases:
    /// --users name:password[,name:password] (may be repeated).
    #[arg(long, value_delimiter = ',', value_name = "NAME:PASSWORD", value_parser = raw_user)]
    pub users: Vec<RawUser>,

    /// Datastore name or id (the server's default when not given), e.g. mariadb.
    #[arg(long, value_name = "DATASTORE")]
    pub datastore: Option<String>,

    /// Datastore version name or id (the datastore's default when not given), e.g. 10.11.
    #[arg(long, alias = "datastore_version", value_name = "VERSION")]
    pub datastore_version: Option<String>,

    /// Create a replica of this instance (id or name). Also spelled --slave-of, --slave_of
    /// and --replica_of.
    #[arg(
        long = "replica-of",
        value_name = "INSTANCE",
        aliases = ["slave-of", "slave_of", "replica_of"]
    )]
    pub replica_of: Option<String>,

    /// Number of replicas to create [default: 1].
    #[arg(
        long = "replica-count",
        alias = "replica_count",
        value_name = "N",
        requires = "replica_of",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub replica_count: Option<u32>,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// The parsed `--users`, filled in by [`parse_from`].
    #[arg(skip)]
    pub user_specs: Vec<UserSpec>,
}

/// `--wait` and its timeout, shared by the commands that start long work.
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Follow the instance until the work is done, printing status changes on stderr.
    #[arg(long)]
    pub wait: bool,

    /// Give up waiting after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wait_timeout: u64,

    /// Milliseconds between polls while waiting (for tests).
    #[arg(
        long,
        hide = true,
        env = "FTROVE_POLL_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub poll_interval_ms: u64,
}

/// An auth token; its Debug form never shows the value.
#[derive(Clone)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn parse_token(s: &str) -> Result<Token, Infallible> {
    Ok(Token(s.to_owned()))
}

/// One `--users` item as typed, checked later by [`parse_user`]; its Debug form hides it,
/// since it holds a password.
#[derive(Clone)]
pub struct RawUser(pub String);

impl fmt::Debug for RawUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawUser(<redacted>)")
    }
}

fn raw_user(s: &str) -> Result<RawUser, Infallible> {
    Ok(RawUser(s.to_owned()))
}

/// A user to create: `name:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses one `name:password`. The password is everything after the first colon, so it may
/// contain colons (but not commas, which separate users). Error messages never contain the
/// password.
pub fn parse_user(s: &str) -> Result<UserSpec, String> {
    let Some((name, password)) = s.split_once(':') else {
        return Err(format!(
            "invalid user '{s}': expected NAME:PASSWORD, e.g. --users app:apppass"
        ));
    };
    if name.is_empty() {
        return Err("invalid user: the name before ':' is empty; expected NAME:PASSWORD".into());
    }
    if password.is_empty() {
        return Err(format!(
            "invalid user '{name}': the password after ':' is empty; expected NAME:PASSWORD"
        ));
    }
    Ok(UserSpec {
        name: name.to_owned(),
        password: password.to_owned(),
    })
}

/// Parses the command line and applies the checks clap cannot express; on a usage error,
/// prints it and exits with code 2.
pub fn parse() -> Cli {
    match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    }
}

/// [`parse`] without exiting, for tests.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cli = Cli::try_parse_from(args)?;
    if let Command::Create(create) = &mut cli.command {
        check_create(create).map_err(|msg| {
            let mut cmd = Cli::command();
            cmd.build();
            match cmd.find_subcommand_mut("create") {
                Some(sub) => sub.error(ErrorKind::ValueValidation, &msg),
                None => cmd.error(ErrorKind::ValueValidation, &msg),
            }
        })?;
    }
    Ok(cli)
}

fn check_create(create: &mut CreateArgs) -> Result<(), String> {
    if create.name.trim().is_empty() {
        return Err("the instance name must not be empty".into());
    }
    if create.databases.iter().any(|db| db.trim().is_empty()) {
        return Err("--databases: empty database name; use --databases a,b".into());
    }
    create.user_specs = create
        .users
        .iter()
        .map(|raw| parse_user(&raw.0).map_err(|e| format!("--users: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(args: &[&str]) -> CreateArgs {
        let mut argv = vec!["ftrove", "create"];
        argv.extend_from_slice(args);
        match parse_from(argv) {
            Ok(Cli {
                command: Command::Create(c),
                ..
            }) => c,
            Ok(other) => panic!("not a create: {other:?}"),
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn usage_error(argv: &[&str]) -> clap::Error {
        match parse_from(argv) {
            Ok(cli) => panic!("parsed but should not have: {cli:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn replica_of_and_all_its_aliases() {
        for flag in ["--replica-of", "--slave-of", "--slave_of", "--replica_of"] {
            let c = create(&["s1", "7", "--size", "2", flag, "m1"]);
            assert_eq!(c.replica_of.as_deref(), Some("m1"), "{flag}");
        }
        let c = create(&["s1", "--replica_of=m1", "--replica_count", "3"]);
        assert_eq!(c.replica_of.as_deref(), Some("m1"));
        assert_eq!(c.replica_count, Some(3));
        assert_eq!(c.flavor, None);
        assert_eq!(c.size, None);
    }

    #[test]
    fn size_and_flavor_required_without_replica_of() {
        let e = usage_error(&["ftrove", "create", "m1", "7"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--size"), "{e}");
        let e = usage_error(&["ftrove", "create", "m1", "--size", "2"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = usage_error(&["ftrove", "create", "m1", "7", "--size", "0"]);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn replica_count_needs_replica_of() {
        let e = usage_error(&[
            "ftrove",
            "create",
            "m1",
            "7",
            "--size",
            "2",
            "--replica-count",
            "2",
        ]);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn databases_comma_separated_or_repeated() {
        let c = create(&[
            "m1",
            "7",
            "--size",
            "2",
            "--databases",
            "a,b",
            "--databases",
            "c",
        ]);
        assert_eq!(c.databases, ["a", "b", "c"]);
        let e = usage_error(&[
            "ftrove",
            "create",
            "m1",
            "7",
            "--size",
            "2",
            "--databases",
            "a,,b",
        ]);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("empty database name"), "{e}");
    }

    #[test]
    fn users_parse() {
        let c = create(&[
            "m1",
            "7",
            "--size",
            "2",
            "--users",
            "app:pw,ro:p:w:x",
            "--users",
            "z:1",
        ]);
        let names: Vec<_> = c
            .user_specs
            .iter()
            .map(|u| (u.name.as_str(), u.password.as_str()))
            .collect();
        assert_eq!(names, [("app", "pw"), ("ro", "p:w:x"), ("z", "1")]);
    }

    #[test]
    fn bad_users_are_clear_usage_errors_without_the_password() {
        let e = usage_error(&[
            "ftrove", "create", "m1", "7", "--size", "2", "--users", "app",
        ]);
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("invalid user 'app': expected NAME:PASSWORD"),
            "{msg}"
        );

        let e = usage_error(&[
            "ftrove", "create", "m1", "7", "--size", "2", "--users", ":sekrit",
        ]);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("name before ':' is empty"), "{e}");
        assert!(!e.to_string().contains("sekrit"), "{e}");

        let e = usage_error(&[
            "ftrove", "create", "m1", "7", "--size", "2", "--users", "app:",
        ]);
        assert!(e.to_string().contains("password after ':' is empty"), "{e}");
    }

    #[test]
    fn parse_user_directly() {
        assert_eq!(
            parse_user("app:apppass"),
            Ok(UserSpec {
                name: "app".into(),
                password: "apppass".into()
            })
        );
        assert!(parse_user("app").is_err());
        assert!(parse_user("").is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cli = parse_from([
            "ftrove", "--token", "tok-XYZ", "create", "m1", "7", "--size", "2", "--users",
            "a:pw-XYZ",
        ])
        .expect("parses");
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("XYZ"), "{dbg}");
    }

    #[test]
    fn global_flags_anywhere_and_url_default() {
        let cli = parse_from(["ftrove", "list", "--json"]).expect("parses");
        assert!(cli.json);
        if std::env::var_os("FTROVE_URL").is_none() {
            assert_eq!(cli.url, DEFAULT_URL);
        }
        let cli =
            parse_from(["ftrove", "--url", "http://h:1/v1.0/t", "show", "m1"]).expect("parses");
        assert_eq!(cli.url, "http://h:1/v1.0/t");
        assert!(matches!(cli.command, Command::Show { ref instance } if instance == "m1"));
    }

    #[test]
    fn wait_flags() {
        let cli = parse_from(["ftrove", "delete", "m1", "--wait", "--wait-timeout", "5"])
            .expect("parses");
        match cli.command {
            Command::Delete { wait, .. } => {
                assert!(wait.wait);
                assert_eq!(wait.wait_timeout, 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
