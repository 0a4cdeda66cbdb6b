//! The taskmanager's configuration: a TOML file plus `FTROVE_TASKMANAGER__*` environment
//! overrides (e.g. `FTROVE_TASKMANAGER__LOCAL__STATE_DIR`).

use ferrotrove_bus::BusConfig;
use ferrotrove_proto::Secret;
use ferrotrove_proto::agent::SnapshotMethod;
use ferrotrove_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskmanagerConfig {
    /// The message bus (`[bus]`). Its prefetch is how many tasks run at once. Default 16.
    pub bus: BusConfig,
    /// The control DB (`[store]`).
    pub store: StoreConfig,
    /// Which provisioner gives new instances a host: only `local` exists today.
    pub provisioner: ProvisionerKind,
    /// Settings of the `local` provisioner (`[local]`).
    pub local: LocalConfig,
    /// Time limits of the agent calls (`[timeouts]`).
    pub timeouts: Timeouts,
    /// How replicas are seeded (`[seeding]`).
    pub seeding: SeedingConfig,
    /// How long to keep trying to reach the broker at start, in seconds. Default 60.
    pub startup_timeout_secs: u64,
    /// The broker users whose tasks are taken (the API's). Anything else on the
    /// `taskmanager` queue (a guest publishing through the default exchange) is
    /// dead-lettered. Default: the taskmanager's own broker user only.
    pub trusted_publishers: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionerKind {
    /// Instances are agent processes with their own MariaDB server on this host.
    Local,
}

/// The `local` provisioner: every instance is a directory under `state_dir` holding the
/// agent's config and log and the MariaDB data, with a port of its own on `host`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Where instance directories and the snapshot store live. Default `/var/lib/ferrotrove`.
    pub state_dir: PathBuf,
    /// The address instances listen on and replicas connect to. Default `127.0.0.1`.
    pub host: String,
    /// The agent binary. Default: `ftrove-agent` next to this binary, else on `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// How often agents send heartbeats, in seconds. Default 5.
    pub heartbeat_interval_secs: u64,
    /// Largest InnoDB buffer pool an instance gets, in MiB (many share one host). Default 256.
    pub max_buffer_pool_mb: u64,
    /// The system user the database servers run as. Default `mysql`.
    pub mysqld_user: String,
    /// Give each agent a RabbitMQ user of its own (made with `rabbitmqctl`, so the broker
    /// must run on this host) that may only consume its queue and report. Default true;
    /// false hands agents the control plane's broker credentials.
    pub broker_users: bool,
    /// `[local.snapshot_s3]`: keep snapshots in an S3-compatible bucket instead of
    /// `<state_dir>/snapshots`; every agent gets these settings as its `[snapshots.s3]`.
    /// Default: none.
    pub snapshot_s3: Option<SnapshotS3Config>,
}

/// `[local.snapshot_s3]`: the agents' S3 snapshot store. The same keys as the agent's
/// `[snapshots.s3]` (its `S3Settings`), which this is copied into.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotS3Config {
    /// The S3 endpoint URL, e.g. `http://127.0.0.1:8080` (path-style requests). Required.
    pub endpoint: String,
    /// The bucket; it must exist. Required.
    pub bucket: String,
    /// The region requests are signed for. Default `us-east-1`.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// The access key id. Required.
    pub access_key_id: String,
    /// The secret access key. Required. A secret: never logged, but written into each
    /// agent's `agent.toml` (mode 0600).
    pub secret_access_key: Secret,
    /// Objects are stored under `<prefix><name>`. Default: empty.
    #[serde(default)]
    pub prefix: String,
    /// Allow an `http://` endpoint. Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Multipart upload part size in MiB, 5 to 5120; each snapshot being written holds up
    /// to 5 parts in the agent's memory. Default 16.
    #[serde(default = "default_s3_part_size_mb")]
    pub part_size_mb: u32,
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

fn default_s3_part_size_mb() -> u32 {
    16
}

impl SnapshotS3Config {
    /// What the agent would refuse at start, refused here once instead.
    fn validate(&self) -> Result<(), String> {
        let endpoint = self.endpoint.trim();
        let http = endpoint.starts_with("http://");
        if !http && !endpoint.starts_with("https://") {
            return Err("local.snapshot_s3.endpoint must be an http:// or https:// URL".into());
        }
        if http && !self.allow_http {
            return Err(
                "local.snapshot_s3.endpoint is plain http: set local.snapshot_s3.allow_http = true \
                 to allow it"
                    .into(),
            );
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!(
                "local.snapshot_s3.bucket must be a bucket name, not {:?}",
                self.bucket
            ));
        }
        if self.region.is_empty() {
            return Err("local.snapshot_s3.region must not be empty".into());
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err(
                "local.snapshot_s3.access_key_id and secret_access_key must not be empty".into(),
            );
        }
        if !(5..=5120).contains(&self.part_size_mb) {
            return Err(format!(
                "local.snapshot_s3.part_size_mb must be from 5 to 5120, not {}",
                self.part_size_mb
            ));
        }
        Ok(())
    }
}

/// `[seeding]`: how replicas get their first copy of the data.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedingConfig {
    /// `auto` (physical when the source's host has mariabackup, else logical), `physical`
    /// or `logical`. Default `auto`.
    pub method: SnapshotMethod,
}

/// Seconds each kind of agent call may take.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// A new agent must answer a ping within this. Default 60.
    pub agent_start_secs: u64,
    /// How often a running command's agent is pinged, and how long it has to answer;
    /// a command fails when a ping goes unanswered. Default 5.
    pub ping_secs: u64,
    /// Quick calls (status, users, detach, shutdown). Default 30.
    pub short_secs: u64,
    /// Prepare (initialise and start a server). Default 300.
    pub prepare_secs: u64,
    /// Snapshot of a source and restore on a replica, each. Default 3600.
    pub seed_secs: u64,
    /// How long a command keeps being sent again (with the same operation id, so the agent
    /// runs it once) while the message broker is unreachable. Default 300.
    pub broker_outage_secs: u64,
    /// A taskmanager holds a task for this long at a time, renewing it every third of it
    /// while it works; another takes the task over only once it has lapsed. Default 30.
    pub task_lease_secs: u64,
    /// A create whose task the broker has not confirmed this long after the API recorded
    /// it, and that no taskmanager has taken up, was lost by an API that stopped in
    /// between: a replica request is sent again, a standalone create is failed (its users'
    /// passwords were never stored). Keep it longer than the API can take to send a task.
    /// Default 120.
    pub unsent_create_secs: u64,
}

impl Default for TaskmanagerConfig {
    fn default() -> Self {
        TaskmanagerConfig {
            bus: BusConfig {
                prefetch: 16,
                ..BusConfig::default()
            },
            store: StoreConfig::default(),
            provisioner: ProvisionerKind::Local,
            local: LocalConfig::default(),
            timeouts: Timeouts::default(),
            seeding: SeedingConfig::default(),
            startup_timeout_secs: 60,
            trusted_publishers: Vec::new(),
        }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            state_dir: PathBuf::from("/var/lib/ferrotrove"),
            host: "127.0.0.1".to_owned(),
            agent_binary: None,
            heartbeat_interval_secs: 5,
            max_buffer_pool_mb: 256,
            mysqld_user: "mysql".to_owned(),
            broker_users: true,
            snapshot_s3: None,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            agent_start_secs: 60,
            ping_secs: 5,
            short_secs: 30,
            prepare_secs: 300,
            seed_secs: 3600,
            broker_outage_secs: 300,
            task_lease_secs: 30,
            unsent_create_secs: 120,
        }
    }
}

impl Timeouts {
    pub fn agent_start(&self) -> Duration {
        Duration::from_secs(self.agent_start_secs)
    }
    pub fn ping(&self) -> Duration {
        Duration::from_secs(self.ping_secs.max(1))
    }
    pub fn short(&self) -> Duration {
        Duration::from_secs(self.short_secs)
    }
    pub fn prepare(&self) -> Duration {
        Duration::from_secs(self.prepare_secs)
    }
    pub fn seed(&self) -> Duration {
        Duration::from_secs(self.seed_secs)
    }
    pub fn broker_outage(&self) -> Duration {
        Duration::from_secs(self.broker_outage_secs)
    }
    pub fn task_lease(&self) -> Duration {
        Duration::from_secs(self.task_lease_secs.max(3))
    }
    pub fn unsent_create(&self) -> Duration {
        Duration::from_secs(self.unsent_create_secs)
    }
}

impl TaskmanagerConfig {
    /// Loads `path` (when given) over the defaults, then the environment, and checks it.
    pub fn load(path: Option<&Path>) -> Result<TaskmanagerConfig, config::ConfigError> {
        let cfg: Self = ferrotrove_bus::daemon::load_config(path, "FTROVE_TASKMANAGER")?;
        cfg.validate().map_err(config::ConfigError::Message)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.bus.validate()?;
        self.store.validate().map_err(|e| format!("[store]: {e}"))?;
        if !self.local.state_dir.is_absolute() {
            return Err(format!(
                "local.state_dir must be an absolute path, not {:?}",
                self.local.state_dir
            ));
        }
        if self.timeouts.unsent_create_secs == 0 {
            return Err("timeouts.unsent_create_secs must be at least 1".into());
        }
        if self.local.heartbeat_interval_secs == 0 {
            return Err("local.heartbeat_interval_secs must be at least 1".into());
        }
        if self.local.host.is_empty() {
            return Err("local.host must not be empty".into());
        }
        if let Some(s3) = &self.local.snapshot_s3 {
            s3.validate()?;
        }
        Ok(())
    }

    /// Who may publish tasks: `trusted_publishers`, or the taskmanager's own broker user.
    pub fn task_publishers(&self) -> Vec<String> {
        if self.trusted_publishers.is_empty() {
            vec![self.bus.user()]
        } else {
            self.trusted_publishers.clone()
        }
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bus_section_without_prefetch_keeps_the_taskmanagers_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taskmanager.toml");
        std::fs::write(&path, "[bus]\nexchange = \"other\"\n").unwrap();
        let cfg = TaskmanagerConfig::load(Some(&path)).unwrap();
        assert_eq!((cfg.bus.prefetch, cfg.bus.exchange.as_str()), (16, "other"));
        std::fs::write(&path, "[bus]\nprefetch = 4\n").unwrap();
        assert_eq!(
            TaskmanagerConfig::load(Some(&path)).unwrap().bus.prefetch,
            4
        );
    }

    #[test]
    fn the_shipped_example_config_loads_with_the_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etc/taskmanager.toml.example");
        let cfg = TaskmanagerConfig::load(Some(&example)).unwrap();
        assert_eq!(cfg.timeouts.seed_secs, Timeouts::default().seed_secs);
        assert_eq!(cfg.bus.prefetch, TaskmanagerConfig::default().bus.prefetch);
    }

    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> Result<TaskmanagerConfig, config::ConfigError> {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        TaskmanagerConfig::load(Some(f.path()))
    }

    #[test]
    fn defaults_apply_to_what_the_file_leaves_out() {
        let cfg = load_str("[local]\nstate_dir = \"/tmp/ft\"\n").unwrap();
        assert_eq!(cfg.local.state_dir, PathBuf::from("/tmp/ft"));
        assert_eq!(cfg.local.heartbeat_interval_secs, 5);
        assert_eq!(cfg.bus.exchange, "ferrotrove");
        assert_eq!(cfg.provisioner, ProvisionerKind::Local);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = load_str("[local]\nstate_dir = \"relative/dir\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("state_dir"), "{err}");
        let err = load_str("[local]\nstat_dir = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("stat_dir"), "{err}");
        let err = load_str("provisioner = \"cloud\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cloud"), "{err}");
    }

    #[test]
    fn agents_can_be_given_an_s3_snapshot_store() {
        assert!(load_str("").unwrap().local.snapshot_s3.is_none());
        let cfg = load_str(
            "[local.snapshot_s3]\nendpoint = \"http://127.0.0.1:8080\"\nbucket = \"snaps\"\n\
             access_key_id = \"test:tester\"\nsecret_access_key = \"s3cr3t-key\"\n\
             allow_http = true\n",
        )
        .unwrap();
        let s3 = cfg.local.snapshot_s3.as_ref().expect("[local.snapshot_s3]");
        assert_eq!((s3.region.as_str(), s3.prefix.as_str()), ("us-east-1", ""));
        assert_eq!(s3.part_size_mb, 16);
        assert_eq!(s3.secret_access_key.expose(), "s3cr3t-key");
        assert!(!format!("{cfg:?}").contains("s3cr3t-key"));

        let base = "[local.snapshot_s3]\nendpoint = \"http://h:1\"\nbucket = \"b\"\n\
                    access_key_id = \"a\"\nsecret_access_key = \"s\"\n";
        let err = load_str(base).unwrap_err().to_string();
        assert!(err.contains("allow_http"), "{err}");
        let err = load_str(&format!("{base}allow_http = true\npart_size_mb = 4\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("part_size_mb"), "{err}");
        let err = load_str(&format!("{base}allow_http = true\nsecret_key = \"s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret_key"), "{err}");
        let err = load_str("[local.snapshot_s3]\nendpoint = \"https://h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "{err}");
    }
}
