//! The API's configuration: a TOML file (optional) overlaid by environment variables.
//!
//! Every key, with its default:
//!
//! ```toml
//! listen = "127.0.0.1:8779"          # address:port to serve HTTP on
//! heartbeat_expiry_secs = 30          # an ACTIVE instance whose agent has not reported for
//!                                     # longer shows SHUTDOWN
//! region = "RegionOne"                # the `region` every instance reports
//!
//! [store]                             # the control DB (see ferrotrove_store::StoreConfig)
//! url = "mysql://root@127.0.0.1:3306" # a secret: never logged
//! database = "ferrotrove"
//! pool_max = 10
//!
//! [bus]                               # the message broker (see ferrotrove_bus::BusConfig)
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"   # a secret: never logged
//! exchange = "ferrotrove"
//! prefetch = 32                       # unused by the API, which consumes nothing
//! ```
//!
//! Environment variables override the file: `FTROVE_API__<KEY>`, with `__` between
//! section and key, e.g. `FTROVE_API__LISTEN=0.0.0.0:8779`, `FTROVE_API__STORE__URL=...`.
//! Unknown keys are refused, so a typo cannot silently leave a default in force.

use ferrotrove_bus::BusConfig;
use ferrotrove_store::StoreConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The environment variable prefix; `__` separates it, sections and keys.
pub const ENV_PREFIX: &str = "FTROVE_API";

/// Everything `ftrove-api` can be told.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to serve HTTP. Default `127.0.0.1:8779`, Trove's port.
    pub listen: SocketAddr,
    /// The control DB.
    pub store: StoreConfig,
    /// The message broker, for casts to the taskmanager.
    pub bus: BusConfig,
    /// How long after its last heartbeat an ACTIVE instance is shown as SHUTDOWN, and
    /// refused as a replica source or for detach. Default 30.
    pub heartbeat_expiry_secs: u64,
    /// The region every instance reports (Trove clients print it). Default `RegionOne`.
    pub region: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8779)),
            store: StoreConfig::default(),
            bus: BusConfig::default(),
            heartbeat_expiry_secs: 30,
            region: "RegionOne".to_owned(),
        }
    }
}

/// Why the configuration cannot be used. The message names the key. (Causes are part of
/// the message, not `source`s, so a printed chain says each thing once.)
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Load(config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> ConfigError {
        ConfigError::Load(e)
    }
}

impl ApiConfig {
    /// Reads `path` (when given; it must exist), overlays `FTROVE_API__*` environment
    /// variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<ApiConfig, ConfigError> {
        let cfg: ApiConfig = ferrotrove_bus::daemon::load_config(path, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what deserializing cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        self.store
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[store]: {e}")))?;
        self.bus.validate().map_err(ConfigError::Invalid)?;
        if !(1..=86_400).contains(&self.heartbeat_expiry_secs) {
            return invalid("heartbeat_expiry_secs must be between 1 and 86400");
        }
        if self.region.trim().is_empty() || self.region.len() > 255 {
            return invalid("region must be 1 to 255 characters");
        }
        Ok(())
    }

    pub fn heartbeat_expiry(&self) -> Duration {
        Duration::from_secs(self.heartbeat_expiry_secs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_config_loads_with_the_defaults() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/etc/api.toml.example");
        let cfg = ApiConfig::load(Some(&example)).unwrap();
        assert_eq!(cfg.listen, ApiConfig::default().listen);
    }

    use super::*;
    use std::io::Write;

    fn load_toml(text: &str) -> Result<ApiConfig, ConfigError> {
        let mut file = tempfile_in_target();
        file.1.write_all(text.as_bytes()).unwrap();
        let result = ApiConfig::load(Some(&file.0));
        let _ = std::fs::remove_file(&file.0);
        result
    }

    /// A scratch file for one test (no tempfile crate in this crate's dependencies).
    fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
        let path =
            std::env::temp_dir().join(format!("ftrove-api-config-{}.toml", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = ApiConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8779");
        assert_eq!(cfg.store.database, "ferrotrove");
        assert_eq!(cfg.bus.exchange, "ferrotrove");
        assert_eq!(cfg.heartbeat_expiry(), Duration::from_secs(30));
    }

    #[test]
    fn file_values_and_sections() {
        let cfg = load_toml(
            "listen = \"0.0.0.0:18779\"\nregion = \"r2\"\n[store]\ndatabase = \"ft2\"\n[bus]\nexchange = \"x\"\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 18779);
        assert_eq!(
            (
                cfg.region.as_str(),
                cfg.store.database.as_str(),
                cfg.bus.exchange.as_str()
            ),
            ("r2", "ft2", "x")
        );
        assert_eq!(cfg.store.url, StoreConfig::default().url);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load_toml("listen = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let err = load_toml("heartbeat_expiry_secs = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_expiry_secs"), "{err}");
        let err = load_toml("[store]\ndatabase = \"no-dashes\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store"), "{err}");
        let err = load_toml("lisen = \"127.0.0.1:1\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = load_toml("[bus]\nurl = \"http://x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.url"), "{err}");
        assert!(ApiConfig::load(Some(Path::new("/nonexistent/ftrove-api.toml"))).is_err());
    }
}
