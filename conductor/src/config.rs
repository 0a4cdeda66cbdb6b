//! The conductor's configuration: a TOML file plus `FTROVE_CONDUCTOR__*` environment
//! overrides (e.g. `FTROVE_CONDUCTOR__BUS__URL`).

use ferrotrove_bus::BusConfig;
use ferrotrove_store::StoreConfig;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConductorConfig {
    /// The message bus (`[bus]`): url, exchange, prefetch.
    pub bus: BusConfig,
    /// The control DB (`[store]`): url, database.
    pub store: StoreConfig,
    /// How long to keep trying to reach the broker at start, in seconds. Default 60.
    pub startup_timeout_secs: u64,
}

impl Default for ConductorConfig {
    fn default() -> Self {
        ConductorConfig {
            bus: BusConfig {
                prefetch: 256,
                ..BusConfig::default()
            },
            store: StoreConfig::default(),
            startup_timeout_secs: 60,
        }
    }
}

impl ConductorConfig {
    /// Loads `path` (when given) over the defaults, then the environment, and checks it.
    pub fn load(path: Option<&Path>) -> Result<ConductorConfig, config::ConfigError> {
        let cfg: ConductorConfig = ferrotrove_bus::daemon::load_config(path, "FTROVE_CONDUCTOR")?;
        cfg.bus.validate().map_err(config::ConfigError::Message)?;
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
    }
}
