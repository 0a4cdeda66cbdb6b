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
//! timeout_secs = 10                   # how long one store operation may wait for the
//!                                     # control DB before a request gets 503
//!
//! [bus]                               # the message broker (see ferrotrove_bus::BusConfig)
//! url = "amqp://guest:guest@127.0.0.1:5672/%2f"   # a secret: never logged
//! exchange = "ferrotrove"
//! prefetch = 32                       # unused by the API, which consumes nothing
//!
//! [auth]
//! mode = "tokens"                     # "tokens": every request under /v1.0/{tenant}/ needs
//!                                     # an X-Auth-Token mapped to that tenant, by the
//!                                     # tokens file or the control DB; "none": no check at
//!                                     # all (development only; warned at start)
//! tokens_file = "/etc/ferrotrove/tokens.toml"   # optional; no default
//! ```
//!
//! With `mode = "tokens"`, a token is accepted when the tokens file maps it (looked at
//! first) or when the control DB holds it unrevoked (`ftrove-api tokens add|list|revoke`
//! manages those; they are looked up on every request, so a revocation counts at once).
//! Without a tokens file, only the control DB's tokens are accepted.
//!
//! The tokens file maps each token to the tenant (project) id it acts for; a tenant may
//! have many tokens. TOML (any extension but `.json`):
//!
//! ```toml
//! "9c1f0e4b7d2a4d4f8a1e6b3c5d7e9f01" = "demo"
//! "2b8d4f6a0c1e3a5b7d9f1e3c5a7b9d0e" = "demo"
//! "f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3" = "acme"
//! ```
//!
//! or JSON (a `.json` file): `{"9c1f...": "demo", "f3a5...": "acme"}`. Tokens are 16 to
//! 256 visible ASCII characters (no spaces); they are read once at start (restart the API
//! to change them), kept only as SHA-256 digests, and never logged.
//!
//! Environment variables override the file: `FTROVE_API__<KEY>`, with `__` between
//! section and key, e.g. `FTROVE_API__LISTEN=0.0.0.0:8779`, `FTROVE_API__STORE__URL=...`.
//! Unknown keys are refused, so a typo cannot silently leave a default in force.

use ferrotrove_bus::BusConfig;
use ferrotrove_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable prefix; `__` separates it, sections and keys.
pub const ENV_PREFIX: &str = "FTROVE_API";

/// Everything `ftrove-api` can be told.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    /// Who may call the API.
    pub auth: AuthConfig,
}

/// `[auth]`: how requests are authenticated.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Default [`AuthMode::Tokens`].
    pub mode: AuthMode,
    /// The token → tenant file, with [`AuthMode::Tokens`] (optional: the control DB's
    /// tokens are accepted too); refused with [`AuthMode::None`] (where it would not be
    /// used).
    pub tokens_file: Option<PathBuf>,
}

/// `auth.mode`. Anything but these two words is refused at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request under `/v1.0/{tenant}/` needs an `X-Auth-Token` that the tokens file
    /// or the control DB maps to that tenant.
    #[default]
    Tokens,
    /// No authentication: every request acts for the tenant in its URL. Only when the
    /// configuration says so explicitly; the API warns at start.
    None,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8779)),
            store: StoreConfig::default(),
            bus: BusConfig::default(),
            heartbeat_expiry_secs: 30,
            region: "RegionOne".to_owned(),
            auth: AuthConfig::default(),
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
        match (self.auth.mode, &self.auth.tokens_file) {
            (AuthMode::None, Some(_)) => invalid(
                "auth.tokens_file is set but auth.mode = \"none\" would not check tokens; \
                 remove one of them",
            ),
            _ => Ok(()),
        }
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
    fn defaults_are_valid_and_check_tokens() {
        let mut cfg = ApiConfig::default();
        assert_eq!(cfg.auth.mode, AuthMode::Tokens);
        // The control DB's tokens only.
        cfg.validate().unwrap();
        cfg.auth.tokens_file = Some("/etc/ferrotrove/tokens.toml".into());
        cfg.validate().unwrap();
        let cfg = ApiConfig {
            auth: AuthConfig {
                mode: AuthMode::None,
                tokens_file: None,
            },
            ..ApiConfig::default()
        };
        cfg.validate().unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8779");
        assert_eq!(cfg.store.database, "ferrotrove");
        assert_eq!(cfg.bus.exchange, "ferrotrove");
        assert_eq!(cfg.heartbeat_expiry(), Duration::from_secs(30));
    }

    #[test]
    fn file_values_and_sections() {
        let cfg = load_toml(
            "listen = \"0.0.0.0:18779\"\nregion = \"r2\"\n[store]\ndatabase = \"ft2\"\n[bus]\nexchange = \"x\"\n[auth]\nmode = \"none\"\n",
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

    #[test]
    fn auth_mode_is_tokens_or_none_and_nothing_else() {
        let cfg = load_toml("[auth]\ntokens_file = \"/etc/ferrotrove/tokens.toml\"\n").unwrap();
        assert_eq!(cfg.auth.mode, AuthMode::Tokens);
        let cfg = load_toml("[auth]\nmode = \"none\"\n").unwrap();
        assert_eq!(cfg.auth.mode, AuthMode::None);
        for bad in ["\"None\"", "\"off\"", "\"\"", "false"] {
            let err = load_toml(&format!("[auth]\nmode = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("auth.mode"), "{bad}: {err}");
        }
        let cfg = load_toml("[auth]\nmode = \"tokens\"\n").unwrap();
        assert_eq!(cfg.auth.tokens_file, None);
        let err = load_toml("[auth]\nmode = \"none\"\ntokens_file = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.tokens_file"), "{err}");
        let err = load_toml("[auth]\nmode = \"none\"\ntoken_file = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_file"), "{err}");
    }
}
