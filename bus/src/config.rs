//! Where the broker is and which exchange to use.

use serde::Deserialize;
use std::fmt;

/// Connection settings, embedded in each daemon's config file as `[bus]`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// AMQP URL with credentials, e.g. `amqp://user:password@127.0.0.1:5672/%2f`. A secret:
    /// it is never logged. Default: the local broker's `guest` user on vhost `/`.
    pub url: String,
    /// The durable topic exchange every queue binds to. Default `ferrotrove`.
    pub exchange: String,
    /// How many unacknowledged messages one consumer may hold at once. Default 32.
    pub prefetch: u16,
    /// A guest's connection, whose broker user may declare nothing: the control plane
    /// made the exchange, the dead letters and the guest's queue beforehand, and the guest
    /// only consumes its queue and publishes. Default false.
    pub confined: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            exchange: "ferrotrove".to_owned(),
            prefetch: 32,
            confined: false,
        }
    }
}

impl BusConfig {
    /// The broker user of the URL (`guest` when it names none): what the broker checks
    /// the `user-id` property of everything this process publishes against.
    pub fn user(&self) -> String {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        match authority.rsplit_once('@') {
            Some((userinfo, _)) => userinfo.split(':').next().unwrap_or("guest").to_owned(),
            None => "guest".to_owned(),
        }
    }

    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}/{path}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &self.redacted_url())
            .field("exchange", &self.exchange)
            .field("prefetch", &self.prefetch)
            .field("confined", &self.confined)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shows() {
        let cfg = BusConfig {
            url: "amqp://ga-1:s3cr3t@10.0.0.1:5672/trove".into(),
            ..Default::default()
        };
        let shown = format!("{cfg:?} {}", cfg.redacted_url());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("amqp://ga-1:***@10.0.0.1:5672/trove"),
            "{shown}"
        );
        assert_eq!(redact_url("garbage"), "***");
    }
}
