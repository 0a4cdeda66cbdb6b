//! The agent's configuration: one TOML file plus environment overrides.
//!
//! Layers, later wins: built-in defaults, the TOML file given with `--config`, then
//! environment variables `FTROVE_AGENT__<SECTION>__<KEY>` (for example
//! `FTROVE_AGENT__SERVER__PORT=3307`, `FTROVE_AGENT__INSTANCE_ID=...`). Unknown keys are
//! ignored, so a config file can be rolled out before or after the binary that reads it,
//! but never silently: they are kept in [`AgentConfig::ignored_keys`], which the agent logs
//! at start (a misspelt key is a default taken where the operator meant a value).
//!
//! ```toml
//! instance_id = "0192f0c4-...."       # required: the instance this agent serves
//! [bus]
//! url = "amqp://user:pass@host:5672/vhost"   # required; a secret, never logged
//! exchange = "ferrotrove"
//! prefetch = 8
//! [server]
//! base_dir = "/var/lib/ferrotrove/instance"  # required
//! port = 3306                                 # required
//! [snapshots]
//! dir = "/var/lib/ferrotrove/snapshots"       # required
//! compression = "none"
//! follow_poll_ms = 50
//! follow_stall_secs = 30
//! [heartbeat]
//! interval_secs = 5
//! ```

use crate::store::S3Settings;
use ferrotrove_bus::{BusConfig, TlsConfig};
use ferrotrove_proto::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "FTROVE_AGENT";
/// Separates the prefix, sections and keys in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Everything the agent is told at start.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentConfig {
    /// The instance this agent serves; it listens on `guestagent.<instance_id>`.
    pub instance_id: Uuid,
    /// The instance's message-signing secret, given by the provisioner. Every command must be
    /// signed with it, and every reply and heartbeat is. Without one (development only) the
    /// agent neither signs nor checks, and says so at start.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Where the message bus is.
    pub bus: BusSection,
    /// The database server this agent owns.
    pub server: ServerSection,
    /// Where snapshots are stored.
    pub snapshots: SnapshotsSection,
    /// How often the agent reports.
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    /// The keys this build does not know (`heartbeat.interval_sec`), sorted: a newer
    /// provisioner's, or a misspelling.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

/// `[bus]`: the RabbitMQ broker. `main` turns it into the bus crate's `BusConfig`.
#[derive(Clone, Debug, Deserialize)]
pub struct BusSection {
    /// AMQP URL with credentials, e.g. `amqp://user:pass@127.0.0.1:5672/%2f`. Required.
    /// A secret: `Debug` prints `***`.
    pub url: Secret,
    /// The topic exchange every Ferrotrove process shares. Default `ferrotrove`.
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// How many commands may be delivered before earlier ones are acknowledged. Default 8.
    /// Mutating commands run one at a time anyway; this lets Ping and Status through.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The broker user is this guest's own and may declare nothing (the provisioner made the
    /// queue). Default false.
    #[serde(default)]
    pub confined: bool,
    /// `[bus.tls]`: CA and client certificate for an `amqps://` URL (see the bus crate's
    /// `TlsConfig`). Default: none.
    #[serde(default)]
    pub tls: TlsConfig,
    /// How long a heartbeat waits for the broker's confirm, in seconds (see the bus
    /// crate's `BusConfig`). Default 10.
    #[serde(default = "default_confirm_timeout_secs")]
    pub confirm_timeout_secs: u64,
}

fn default_confirm_timeout_secs() -> u64 {
    ferrotrove_bus::DEFAULT_CONFIRM_TIMEOUT_SECS
}

impl BusSection {
    /// The bus crate's settings for this section.
    pub fn to_bus_config(&self) -> BusConfig {
        BusConfig {
            url: self.url.expose().to_owned(),
            exchange: self.exchange.clone(),
            prefetch: self.prefetch,
            confined: self.confined,
            tls: self.tls.clone(),
            confirm_timeout_secs: self.confirm_timeout_secs,
        }
    }
}

/// `[server]`: the MariaDB server, run as a child process of the agent.
#[derive(Clone, Debug, Deserialize)]
pub struct ServerSection {
    /// The instance's directory: data dir, config, socket, pid file and error log all live
    /// inside it (see [`crate::paths::InstancePaths`]). Required; absolute.
    pub base_dir: PathBuf,
    /// TCP port the server listens on. Required.
    pub port: u16,
    /// Address the server binds to. Default `127.0.0.1`.
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    /// The system user the server runs as when the agent runs as root. Default `mysql`.
    #[serde(default = "default_mysqld_user")]
    pub mysqld_user: String,
    /// The server binary. Default `mariadbd`.
    #[serde(default = "default_mariadbd")]
    pub mariadbd: String,
    /// The data-directory initialiser. Default `mariadb-install-db`.
    #[serde(default = "default_install_db")]
    pub install_db: String,
    /// The logical dump tool. Default `mariadb-dump`.
    #[serde(default = "default_dump")]
    pub dump: String,
    /// The command-line client, used to restore dumps. Default `mariadb`.
    #[serde(default = "default_client")]
    pub client: String,
    /// The physical backup tool. Default `mariabackup`; when it cannot be run, snapshots
    /// fall back to logical ones.
    #[serde(default = "default_backup")]
    pub backup: String,
    /// Upper bound of the InnoDB buffer pool in MiB. Default 256. The pool is half the
    /// flavor's memory, capped by this, because the local provisioner packs many instances
    /// on one host.
    #[serde(default = "default_max_buffer_pool_mb")]
    pub max_buffer_pool_mb: u64,
    /// How long to wait for the server to answer after starting it. Default 60 (crash
    /// recovery of a large redo log can take a while).
    #[serde(default = "default_start_timeout_secs")]
    pub start_timeout_secs: u64,
    /// How long to wait for the server process to exit after asking it to. Default 120.
    #[serde(default = "default_stop_timeout_secs")]
    pub stop_timeout_secs: u64,
}

/// `[snapshots]`: the snapshot store.
#[derive(Clone, Debug, Deserialize)]
pub struct SnapshotsSection {
    /// A directory shared by the agents that seed from each other's snapshots: the store,
    /// unless `[snapshots.s3]` is given. Required.
    pub dir: PathBuf,
    /// `[snapshots.s3]`: keep snapshots in an S3-compatible bucket instead. Default: none.
    #[serde(default)]
    pub s3: Option<S3Settings>,
    /// How physical snapshots are stored: `none` (as mariabackup streams them: fastest
    /// where the store is a local disk or a fast network) or `zstd` (a third of the size,
    /// for slow links; costs CPU). Default `none`.
    #[serde(default)]
    pub compression: Compression,
    /// A replica restoring a snapshot while it is still being taken looks again this
    /// often, in milliseconds, when it has read all there is so far (one small read of the
    /// record and of the manifest each time). Default 50.
    #[serde(default = "default_follow_poll_ms")]
    pub follow_poll_ms: u64,
    /// A replica restoring a snapshot while it is still being taken gives up when the
    /// snapshot shows no sign of life for this many seconds: no new bytes, no new beat of
    /// its manifest (its writer rewrites it every second, even while its tool is busy
    /// elsewhere), or no manifest at all since the replica began. Default 30.
    #[serde(default = "default_follow_stall_secs")]
    pub follow_stall_secs: u64,
}

/// Compression of physical snapshots in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

/// `[heartbeat]`: periodic reports to the conductor.
#[derive(Clone, Debug, Deserialize)]
pub struct HeartbeatSection {
    /// Seconds between heartbeats. Default 5; at least 1.
    #[serde(default = "default_heartbeat_interval_secs")]
    pub interval_secs: u64,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval_secs: default_heartbeat_interval_secs(),
        }
    }
}

fn default_exchange() -> String {
    "ferrotrove".to_owned()
}
fn default_prefetch() -> u16 {
    8
}
fn default_bind_address() -> String {
    "127.0.0.1".to_owned()
}
fn default_mysqld_user() -> String {
    "mysql".to_owned()
}
fn default_mariadbd() -> String {
    "mariadbd".to_owned()
}
fn default_install_db() -> String {
    "mariadb-install-db".to_owned()
}
fn default_dump() -> String {
    "mariadb-dump".to_owned()
}
fn default_backup() -> String {
    "mariabackup".to_owned()
}
fn default_client() -> String {
    "mariadb".to_owned()
}
fn default_max_buffer_pool_mb() -> u64 {
    256
}
fn default_start_timeout_secs() -> u64 {
    60
}
fn default_stop_timeout_secs() -> u64 {
    120
}
fn default_heartbeat_interval_secs() -> u64 {
    5
}
fn default_follow_poll_ms() -> u64 {
    50
}
fn default_follow_stall_secs() -> u64 {
    30
}

/// Why the configuration cannot be used. The message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load agent configuration from {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("invalid agent configuration: `{key}` {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

impl AgentConfig {
    /// Loads the TOML file at `path`, applies environment overrides, and validates.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let source = config::File::from(path)
            .format(config::FileFormat::Toml)
            .required(true);
        Self::build(source, Some(environment()), path)
    }

    /// Parses TOML text without environment overrides (for tests and tools).
    pub fn from_toml(text: &str) -> Result<AgentConfig, ConfigError> {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        Self::build(source, None, Path::new("<string>"))
    }

    fn build<S>(
        source: S,
        env: Option<config::Environment>,
        origin: &Path,
    ) -> Result<AgentConfig, ConfigError>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let load_error = |err: config::ConfigError| ConfigError::Load {
            path: origin.to_owned(),
            message: err.to_string(),
        };
        let mut builder = config::Config::builder().add_source(source);
        if let Some(env) = env {
            builder = builder.add_source(env);
        }
        let mut ignored_keys = Vec::new();
        let mut agent_config: AgentConfig =
            serde_ignored::deserialize(builder.build().map_err(load_error)?, |key| {
                ignored_keys.push(key.to_string())
            })
            .map_err(load_error)?;
        ignored_keys.sort();
        agent_config.ignored_keys = ignored_keys;
        agent_config.validate()?;
        Ok(agent_config)
    }

    /// Checks what serde cannot: relations and ranges.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Err(reason) = self.bus.to_bus_config().validate() {
            return invalid("bus", &reason);
        }
        if !self.server.base_dir.is_absolute() {
            return invalid("server.base_dir", "must be an absolute path");
        }
        let socket = crate::paths::InstancePaths::new(&self.server.base_dir).socket;
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ConfigError::Invalid {
                key: "server.base_dir",
                reason: format!(
                    "is too long: the server socket {} would exceed {MAX_SOCKET_PATH} bytes",
                    socket.display()
                ),
            });
        }
        if self.server.port == 0 {
            return invalid("server.port", "must be a port number from 1 to 65535");
        }
        if self.server.max_buffer_pool_mb == 0 {
            return invalid("server.max_buffer_pool_mb", "must be at least 1");
        }
        if self.server.start_timeout_secs == 0 {
            return invalid("server.start_timeout_secs", "must be at least 1");
        }
        if self.server.stop_timeout_secs == 0 {
            return invalid("server.stop_timeout_secs", "must be at least 1");
        }
        if !self.snapshots.dir.is_absolute() {
            return invalid("snapshots.dir", "must be an absolute path");
        }
        if self.heartbeat.interval_secs == 0 {
            return invalid("heartbeat.interval_secs", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.snapshots.follow_poll_ms) {
            return invalid("snapshots.follow_poll_ms", "must be from 1 to 10000");
        }
        // Several beats of the manifest must fit in it.
        if self.snapshots.follow_stall_secs < 3 {
            return invalid("snapshots.follow_stall_secs", "must be at least 3");
        }
        Ok(())
    }
}

fn environment() -> config::Environment {
    config::Environment::with_prefix(ENV_PREFIX)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        instance_id = "0192f0c4-7a1e-7cc0-8000-000000000001"
        [bus]
        url = "amqp://guest:hunter2@127.0.0.1:5672/%2f"
        [server]
        base_dir = "/var/lib/ferrotrove/i1"
        port = 3311
        [snapshots]
        dir = "/var/lib/ferrotrove/snapshots"
    "#;

    #[test]
    fn defaults_fill_the_rest() {
        let cfg = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(cfg.bus.exchange, "ferrotrove");
        assert_eq!(cfg.server.bind_address, "127.0.0.1");
        assert_eq!(cfg.server.mysqld_user, "mysql");
        assert_eq!(cfg.server.mariadbd, "mariadbd");
        assert_eq!(cfg.server.install_db, "mariadb-install-db");
        assert_eq!(cfg.server.dump, "mariadb-dump");
        assert_eq!(cfg.server.client, "mariadb");
        assert_eq!(cfg.server.max_buffer_pool_mb, 256);
        assert_eq!(cfg.heartbeat.interval_secs, 5);
        assert_eq!(cfg.snapshots.follow_poll_ms, 50);
        assert_eq!(cfg.snapshots.follow_stall_secs, 30);
    }

    #[test]
    fn tls_for_an_amqps_broker() {
        let with_tls = MINIMAL.replace("amqp://", "amqps://").replace(
            "[server]",
            "[bus.tls]\nca_file = \"/etc/hostname\"\n[server]",
        );
        let cfg = AgentConfig::from_toml(&with_tls).unwrap();
        assert_eq!(
            cfg.bus.to_bus_config().tls.ca_file,
            Some("/etc/hostname".into())
        );
        // TLS settings for a plain URL are refused, not silently unused.
        let plain = with_tls.replace("amqps://", "amqp://");
        let err = AgentConfig::from_toml(&plain).unwrap_err().to_string();
        assert!(err.contains("not amqps://"), "{err}");
    }

    #[test]
    fn the_bus_url_never_prints() {
        let cfg = AgentConfig::from_toml(MINIMAL).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let text = MINIMAL.replace("port = 3311", "port = \"many\"");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("server.port"), "{err}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let text = MINIMAL.replace("port = 3311", "");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        let text = MINIMAL.replace("instance_id = \"0192f0c4-7a1e-7cc0-8000-000000000001\"", "");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("instance_id"), "{err}");
    }

    #[test]
    fn a_bad_uuid_is_refused() {
        let text = MINIMAL.replace("0192f0c4-7a1e-7cc0-8000-000000000001", "not-a-uuid");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("instance_id"), "{err}");
    }

    #[test]
    fn relations_are_validated() {
        let text = MINIMAL.replace("/var/lib/ferrotrove/i1", "relative/dir");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("server.base_dir"), "{err}");
        let long = format!("/{}", "x".repeat(100));
        let err =
            AgentConfig::from_toml(&MINIMAL.replace("/var/lib/ferrotrove/i1", &long)).unwrap_err();
        assert!(err.to_string().contains("socket"), "{err}");
        let text = format!("{MINIMAL}\n[heartbeat]\ninterval_secs = 0\n");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("heartbeat.interval_secs"), "{err}");
        let text = format!("{MINIMAL}follow_stall_secs = 1\n");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("snapshots.follow_stall_secs"), "{err}");
    }

    #[test]
    fn unknown_keys_load_and_are_listed() {
        let text = MINIMAL.replace("[snapshots]", "frobnicate = 1\n[snapshots]")
            + "\n[heartbeat]\ninterval_sec = 1\n";
        let cfg = AgentConfig::from_toml(&text).unwrap();
        assert_eq!(
            cfg.ignored_keys,
            ["heartbeat.interval_sec", "server.frobnicate"]
        );
        assert_eq!(
            cfg.heartbeat.interval_secs,
            default_heartbeat_interval_secs()
        );
        assert!(
            AgentConfig::from_toml(MINIMAL)
                .unwrap()
                .ignored_keys
                .is_empty()
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = environment().source(Some(
            [
                ("FTROVE_AGENT__SERVER__PORT".to_owned(), "3399".to_owned()),
                (
                    "FTROVE_AGENT__HEARTBEAT__INTERVAL_SECS".to_owned(),
                    "2".to_owned(),
                ),
                ("FTROVE_AGENT__BUS__EXCHANGE".to_owned(), "other".to_owned()),
                ("UNRELATED__SERVER__PORT".to_owned(), "1".to_owned()),
            ]
            .into(),
        ));
        let file = config::File::from_str(MINIMAL, config::FileFormat::Toml);
        let cfg = AgentConfig::build(file, Some(env), Path::new("<test>")).unwrap();
        assert_eq!(cfg.server.port, 3399);
        assert_eq!(cfg.heartbeat.interval_secs, 2);
        assert_eq!(cfg.bus.exchange, "other");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/agent.toml"), "{err}");
    }
}
