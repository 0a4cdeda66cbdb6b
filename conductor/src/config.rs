//! The conductor's configuration: a TOML file plus `FTROVE_CONDUCTOR__*` environment
//! overrides (e.g. `FTROVE_CONDUCTOR__BUS__URL`, `FTROVE_CONDUCTOR__HEARTBEATS__BATCH_MAX`).

use ferrotrove_bus::BusConfig;
use ferrotrove_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConductorConfig {
    /// The message bus (`[bus]`): url, exchange, prefetch. The conductor's prefetch bounds
    /// how many heartbeats wait for their batch at once; keep it at least twice
    /// `heartbeats.batch_max`, so the next batch fills while one is being written.
    pub bus: BusConfig,
    /// The control DB (`[store]`): url, database.
    pub store: StoreConfig,
    /// How long to keep trying to reach the broker at start, in seconds. Default 60.
    pub startup_timeout_secs: u64,
    /// Batching and liveness (`[heartbeats]`).
    pub heartbeats: HeartbeatConfig,
}

/// `[heartbeats]`: how heartbeats are written and when an instance counts as silent.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// The most heartbeats written in one statement. Default 512.
    pub batch_max: usize,
    /// How long a batch waits for more heartbeats after its first one, in milliseconds,
    /// unless it is full sooner. Default 5.
    pub batch_window_ms: u64,
    /// Batches written at once, each on a connection of its own (at most `store.pool_max`
    /// are used). Default 2.
    pub writers: usize,
    /// An instance whose last heartbeat was applied longer ago than this is marked stale
    /// in the control DB (its ACTIVE status shows as SHUTDOWN), in seconds. Default 30.
    pub expiry_secs: u64,
    /// How often the liveness check runs, in seconds. Default 5. The first check runs one
    /// expiry after start, so agents have reported to a conductor that was away.
    pub check_interval_secs: u64,
    /// Silence is judged only while at most this many heartbeats wait in the conductors'
    /// queue: with more, the conductors are behind, and a guest's newest heartbeat may be
    /// waiting there. Default 1000.
    pub backlog_max: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            batch_max: 512,
            batch_window_ms: 5,
            writers: 2,
            expiry_secs: 30,
            check_interval_secs: 5,
            backlog_max: 1000,
        }
    }
}

impl HeartbeatConfig {
    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }

    pub fn expiry(&self) -> Duration {
        Duration::from_secs(self.expiry_secs)
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_secs(self.check_interval_secs)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=5_000).contains(&self.batch_max) {
            return Err("heartbeats.batch_max must be between 1 and 5000".to_owned());
        }
        if self.batch_window_ms > 1_000 {
            return Err("heartbeats.batch_window_ms must be at most 1000".to_owned());
        }
        if !(1..=16).contains(&self.writers) {
            return Err("heartbeats.writers must be between 1 and 16".to_owned());
        }
        if !(1..=86_400).contains(&self.expiry_secs) {
            return Err("heartbeats.expiry_secs must be between 1 and 86400".to_owned());
        }
        if !(1..=3_600).contains(&self.check_interval_secs) {
            return Err("heartbeats.check_interval_secs must be between 1 and 3600".to_owned());
        }
        Ok(())
    }
}

impl Default for ConductorConfig {
    fn default() -> Self {
        ConductorConfig {
            bus: BusConfig {
                prefetch: 1024,
                ..BusConfig::default()
            },
            store: StoreConfig::default(),
            startup_timeout_secs: 60,
            heartbeats: HeartbeatConfig::default(),
        }
    }
}

impl ConductorConfig {
    /// Loads `path` (when given) over the defaults, then the environment, and checks it.
    pub fn load(path: Option<&Path>) -> Result<ConductorConfig, config::ConfigError> {
        let cfg: Self = ferrotrove_bus::daemon::load_config(path, "FTROVE_CONDUCTOR")?;
        cfg.bus.validate().map_err(config::ConfigError::Message)?;
        cfg.store
            .validate()
            .map_err(|e| config::ConfigError::Message(format!("[store]: {e}")))?;
        cfg.heartbeats
            .validate()
            .map_err(config::ConfigError::Message)?;
        Ok(cfg)
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads_with_the_defaults() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etc/conductor.toml.example");
        let cfg = ConductorConfig::load(Some(&example)).unwrap();
        assert_eq!(cfg.bus.prefetch, ConductorConfig::default().bus.prefetch);
        assert_eq!(cfg.store.database, "ferrotrove");
        assert_eq!(cfg.heartbeats, HeartbeatConfig::default());
    }

    #[test]
    fn a_bus_section_without_prefetch_keeps_the_conductors_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conductor.toml");
        std::fs::write(&path, "[bus]\nurl = \"amqp://u:p@10.0.0.1:5672/%2f\"\n").unwrap();
        let cfg = ConductorConfig::load(Some(&path)).unwrap();
        assert_eq!(cfg.bus.prefetch, 1024);
        assert_eq!(cfg.bus.url, "amqp://u:p@10.0.0.1:5672/%2f");
        assert_eq!(cfg.bus.exchange, ConductorConfig::default().bus.exchange);
        std::fs::write(&path, "[bus]\nprefetch = 2048\n").unwrap();
        assert_eq!(
            ConductorConfig::load(Some(&path)).unwrap().bus.prefetch,
            2048
        );
    }

    #[test]
    fn heartbeat_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let path = dir.path().join("conductor.toml");
            std::fs::write(&path, text).unwrap();
            ConductorConfig::load(Some(&path)).map_err(|e| e.to_string())
        };
        let cfg = load("[heartbeats]\nbatch_max = 100\nexpiry_secs = 10\n").unwrap();
        assert_eq!(
            (cfg.heartbeats.batch_max, cfg.heartbeats.expiry()),
            (100, Duration::from_secs(10))
        );
        assert_eq!(cfg.heartbeats.batch_window(), Duration::from_millis(5));
        for bad in [
            "batch_max = 0",
            "batch_window_ms = 5000",
            "writers = 0",
            "expiry_secs = 0",
            "check_interval_secs = 0",
        ] {
            let err = load(&format!("[heartbeats]\n{bad}\n")).unwrap_err();
            assert!(err.contains(bad.split(' ').next().unwrap()), "{err}");
        }
        assert!(
            load("[heartbeats]\nbatch_size = 3\n").is_err(),
            "unknown keys are refused"
        );
    }
}
