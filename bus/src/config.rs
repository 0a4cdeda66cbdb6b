//! Where the broker is and which exchange to use.

use lapin::uri::AMQPUri;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The frame size proposed to the broker unless the URL names one: RabbitMQ's default.
const FRAME_MAX: u32 = 128 * 1024;

/// [`BusConfig::confirm_timeout_secs`] unless configured.
pub const DEFAULT_CONFIRM_TIMEOUT_SECS: u64 = 10;

/// Connection settings, embedded in each daemon's config file as `[bus]`.
#[derive(Clone, Deserialize, Serialize)]
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
    /// `[bus.tls]`: certificates for an `amqps://` URL. Default: none (system roots).
    pub tls: TlsConfig,
    /// How long a cast waits for the broker to confirm it, in seconds, before failing as
    /// unavailable; a broker that has raised a resource alarm (disk or memory) blocks
    /// publishers and confirms nothing until it clears. At least 1. Default 10.
    pub confirm_timeout_secs: u64,
}

/// TLS settings for `amqps://` URLs. The broker's certificate is checked against the
/// system's roots plus `ca_file`, and its name against the URL's host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate authorities to trust besides the system's (a private
    /// CA that signed the broker's certificate). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain this process presents to the broker, for brokers that ask for
    /// client certificates. Needs `key_file`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM (PKCS#8) private key of `cert_file`. A secret: keep it 0600. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            exchange: "ferrotrove".to_owned(),
            prefetch: 32,
            confined: false,
            tls: TlsConfig::default(),
            confirm_timeout_secs: DEFAULT_CONFIRM_TIMEOUT_SECS,
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

    /// The URL as lapin takes it. When the URL sets no `frame_max`, RabbitMQ's default
    /// (128 KiB) is proposed up front: lapin sizes its buffers from the frame size it starts
    /// with, and when it learns a bigger one from the broker it grows them zero-filled, so an
    /// unset `frame_max` costs every process 8 MiB of resident memory.
    pub fn amqp_uri(&self) -> Result<AMQPUri, String> {
        let mut uri: AMQPUri = self.url.parse().map_err(|reason: String| {
            format!(
                "bus.url {} is not an AMQP URL: {reason}",
                self.redacted_url()
            )
        })?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        Ok(uri)
    }

    /// Whether the URL asks for TLS (`amqps://`).
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("amqps://")
    }

    /// Checks what can be checked without connecting: a URL the broker can be reached at,
    /// and TLS settings that fit it. Daemons call this before they start.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("amqp://") || self.uses_tls()) {
            return Err(format!(
                "bus.url must start with amqp:// or amqps://, not {}",
                self.redacted_url()
            ));
        }
        self.amqp_uri()?;
        if self.exchange.is_empty() {
            return Err("bus.exchange must not be empty".into());
        }
        if self.confirm_timeout_secs == 0 {
            return Err("bus.confirm_timeout_secs must be at least 1".into());
        }
        if self.tls.is_set() && !self.uses_tls() {
            return Err(
                "bus.tls is set but bus.url is not amqps://: the connection would not use TLS"
                    .into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(
                "bus.tls.cert_file and bus.tls.key_file go together: give both or neither".into(),
            );
        }
        for (option, path) in [
            ("bus.tls.ca_file", &self.tls.ca_file),
            ("bus.tls.cert_file", &self.tls.cert_file),
            ("bus.tls.key_file", &self.tls.key_file),
        ] {
            if let Some(path) = path
                && let Err(error) = std::fs::metadata(path)
            {
                return Err(format!("{option} {}: {error}", path.display()));
            }
        }
        Ok(())
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
            .field("tls", &self.tls)
            .field("confirm_timeout_secs", &self.confirm_timeout_secs)
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

    #[test]
    fn a_frame_size_is_proposed_unless_the_url_names_one_and_bad_urls_are_refused() {
        let mut cfg = BusConfig::default();
        assert_eq!(cfg.amqp_uri().unwrap().query.frame_max, Some(FRAME_MAX));
        cfg.url = "amqp://u:p@localhost:5672/%2f?frame_max=8192".into();
        assert_eq!(cfg.amqp_uri().unwrap().query.frame_max, Some(8192));
        cfg.url = "amqp://u:s3cr3t@localhost:notaport/%2f".into();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("is not an AMQP URL"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn tls_settings_must_fit_the_url() {
        let mut cfg = BusConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("not amqps://"), "{err}");
        cfg.url = "amqps://u:p@localhost:5671/%2f".into();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("bus.tls.ca_file /nonexistent/ca.pem"), "{err}");
        cfg.tls.ca_file = None;
        cfg.tls.cert_file = Some("/etc/hostname".into());
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("go together"), "{err}");
        cfg.url = "http://x".into();
        assert!(cfg.validate().unwrap_err().contains("amqp:// or amqps://"));
    }
}
