//! How a daemon tells the store where the control DB is.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where the control DB lives. Daemons embed this as their `[store]` section.
/// Unknown keys are refused, so a misspelt key cannot silently leave a default in force.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `mysql://user:password@host:port`; a database path in it is ignored in favour of
    /// `database`. Holds a password: never logged, and `Debug` hides it.
    /// Default `mysql://root@127.0.0.1:3306`.
    pub url: String,
    /// The control database, created at start when missing. `[A-Za-z0-9_]{1,64}`.
    /// Default `ferrotrove`.
    pub database: String,
    /// The most connections the pool opens. Default 10.
    pub pool_max: usize,
    /// How long one store operation may wait for the control DB, in seconds: for a
    /// connection (waiting for a free one in the pool and connecting included) and for the
    /// answers to its statements. Past it the operation fails as unavailable
    /// ([`StoreError::Timeout`]; the API answers 503) instead of waiting for ever on a
    /// server that does not answer (hung, or its host lost). Migrations at start are not
    /// bounded by it. Default 10; at least 1.
    pub timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "mysql://root@127.0.0.1:3306".to_owned(),
            database: "ferrotrove".to_owned(),
            pool_max: 10,
            timeout_secs: 10,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &"***")
            .field("database", &self.database)
            .field("pool_max", &self.pool_max)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl StoreConfig {
    /// Checks what can be checked without connecting, so a daemon refuses a bad config
    /// at start with a message naming the problem.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_database_name(&self.database)?;
        if !(self.url.starts_with("mysql://")) {
            return Err(StoreError::Config(
                "store url must start with mysql://".to_owned(),
            ));
        }
        if let Err(e) = mysql_async::Opts::from_url(&self.url) {
            return Err(StoreError::Config(format!("store url does not parse: {e}")));
        }
        if self.pool_max == 0 {
            return Err(StoreError::Config(
                "store pool_max must be at least 1".to_owned(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(StoreError::Config(
                "store timeout_secs must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// [`StoreConfig::timeout_secs`] as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }
}

/// A database name we can put between backticks without quoting: `[A-Za-z0-9_]{1,64}`.
pub fn validate_database_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "store database name {name:?} is invalid: use 1 to 64 letters, digits or underscores"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert!(validate_database_name("ferrotrove").is_ok());
        assert!(validate_database_name("ft_test_0af3").is_ok());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name("a-b").is_err());
        assert!(validate_database_name("x`; DROP").is_err());
        assert!(validate_database_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn debug_hides_the_url() {
        let cfg = StoreConfig {
            url: "mysql://root:hunter2@db:3306".into(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(cfg.validate().is_ok());
        let bad = StoreConfig {
            url: "postgres://x".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let no_time = StoreConfig {
            timeout_secs: 0,
            ..Default::default()
        };
        assert!(no_time.validate().is_err());
    }
}
