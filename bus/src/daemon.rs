//! What every daemon speaking the bus does at start: logging that never prints message
//! bodies, and the signal that stops it.

use tracing_subscriber::EnvFilter;

/// Directives always added to the log filter. lapin logs every message the broker returns
/// (a call to a guest that is not listening yet) at WARN with its whole body, which can
/// carry passwords; the bus reports those as `NotListening` errors instead.
const ALWAYS: &[&str] = &["lapin::returned_messages=off"];

/// Logs to stderr at `RUST_LOG` (default `info`), with lapin's message dumps off, in
/// colour only when stderr is a terminal.
pub fn init_logging() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in ALWAYS {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Colours only on a terminal: systemd's journal and log files get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(colour)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM (what systemd sends).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// Since when a daemon has been consuming its queue without a break (`None` while it is
/// not), for work that relies on what arrives there: the conductor judges liveness from
/// heartbeats only once it has been receiving them for a whole expiry.
pub type Serving = tokio::sync::watch::Sender<Option<std::time::Instant>>;

/// Serves `queue` with `handler` until `shutdown` resolves. When the broker connection is
/// lost, it connects again (backing off up to 5 s between tries) and serves again, so a
/// broker restart costs a daemon nothing but the time the broker was away. `serving`, when
/// given, says whether it is consuming, and since when.
pub async fn serve_until_shutdown<H: crate::Handler + Clone>(
    bus: &crate::Bus,
    queue: &str,
    handler: H,
    verifier: Option<crate::Verifier>,
    serving: Option<&Serving>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let report = |since: Option<std::time::Instant>| {
        if let Some(serving) = serving {
            serving.send_replace(since);
        }
    };
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let served = tokio::select! {
            () = &mut shutdown => return,
            served = bus.serve_verified(queue, handler.clone(), verifier.clone()) => served,
        };
        let mut server = match served {
            Ok(server) => {
                tracing::info!(queue, "serving");
                report(Some(std::time::Instant::now()));
                pause = std::time::Duration::from_millis(100);
                server
            }
            Err(error) => {
                tracing::warn!(queue, %error, retry_in = ?pause, "cannot consume; trying again");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
                continue;
            }
        };
        tokio::select! {
            () = &mut shutdown => {
                server.stop().await;
                bus.close().await;
                return;
            }
            () = server.closed() => {
                report(None);
                tracing::warn!(queue, "lost the message broker; reconnecting");
            }
        }
    }
}

/// The exit status of a daemon that refuses its configuration: `EX_CONFIG` of
/// sysexits(3). The systemd units do not restart a daemon that exits with it
/// (`RestartPreventExitStatus=78`): starting it again on the same file cannot help.
pub const EXIT_BAD_CONFIG: i32 = 78;

/// The configuration `loaded` from `path` by daemon `name`; when it was refused, says so
/// on stderr ("NAME: bad configuration in FILE: why") and exits with [`EXIT_BAD_CONFIG`].
/// Call it at start, before anything is connected or spawned.
pub fn config_or_exit<T, E: std::fmt::Display>(
    name: &str,
    path: Option<&std::path::Path>,
    loaded: Result<T, E>,
) -> T {
    match loaded {
        Ok(config) => config,
        Err(error) => {
            let file = path.map_or(String::new(), |p| format!(" in {}", p.display()));
            eprintln!("{name}: bad configuration{file}: {error}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    }
}

/// Loads a daemon's configuration: `T::default()`, then the TOML file at `path` (when
/// given, it must exist), then `<env_prefix>__<SECTION>__<KEY>` environment variables,
/// whose values are read as numbers or booleans where the key wants one.
///
/// Each layer sets only the keys it names, so every key left unset keeps the daemon's own
/// default, also in a section the file gives in part (a `[bus]` with only `url` keeps the
/// conductor's `bus.prefetch`, not `BusConfig`'s).
pub fn load_config<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
    env_prefix: &str,
) -> Result<T, config::ConfigError> {
    let environment = config::Environment::with_prefix(env_prefix)
        .separator("__")
        .try_parsing(true);
    load_layers(path, environment)
}

fn load_layers<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
    environment: config::Environment,
) -> Result<T, config::ConfigError> {
    let mut builder =
        config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    if let Some(path) = path {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    builder.add_source(environment).build()?.try_deserialize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::HashMap;

    /// A daemon whose `[section]` defaults differ from `Section::default()`.
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Daemon {
        section: Section,
        names: Vec<String>,
        optional: Option<Section>,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        a: u16,
        b: String,
        c: bool,
    }

    impl Default for Section {
        fn default() -> Self {
            Section {
                a: 1,
                b: "section".into(),
                c: false,
            }
        }
    }

    impl Default for Daemon {
        fn default() -> Self {
            Daemon {
                section: Section {
                    a: 1000,
                    b: "daemon".into(),
                    c: true,
                },
                names: vec!["x".into(), "y".into(), "z".into()],
                optional: None,
            }
        }
    }

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Daemon, config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, file).expect("write config");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let environment = config::Environment::with_prefix("T")
            .separator("__")
            .try_parsing(true)
            .source(Some(env));
        load_layers(Some(&path), environment)
    }

    #[test]
    fn keys_left_unset_keep_the_daemons_defaults_in_a_section_given_in_part() {
        let cfg = load("[section]\nb = \"file\"\n", &[("T__SECTION__C", "false")]).unwrap();
        assert_eq!(
            cfg.section,
            Section {
                a: 1000,
                b: "file".into(),
                c: false
            }
        );
        assert_eq!(load("", &[]).unwrap(), Daemon::default());
    }

    #[test]
    fn lists_and_tables_given_replace_the_defaults() {
        let cfg = load("names = [\"only\"]\n[optional]\na = 7\n", &[]).unwrap();
        assert_eq!(cfg.names, ["only"]);
        assert_eq!(
            cfg.optional,
            Some(Section {
                a: 7,
                ..Section::default()
            })
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_still_refused() {
        let err = load("[section]\nd = 1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field `d`"), "{err}");
        let err = load("", &[("T__SECTION__A", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("section.a"), "{err}");
    }
}
