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

/// What a daemon that refuses its configuration says first: "bad configuration", and in
/// which file when it was given one (the error that follows says what is wrong).
pub fn bad_config(path: Option<&std::path::Path>) -> String {
    match path {
        Some(path) => format!("bad configuration in {}", path.display()),
        None => "bad configuration".to_owned(),
    }
}

/// Loads a daemon's configuration: the built-in defaults of `T`, then the TOML file at
/// `path` (when given, it must exist), then `<env_prefix>__<SECTION>__<KEY>` environment
/// variables, whose values are read as numbers or booleans where the key wants one.
///
/// A section that the file or the environment gives at all is filled from its own type's
/// defaults, not from `T`'s, so `section_defaults` names the keys whose default in `T`
/// differs from their section type's (the conductor's `bus.prefetch`); each applies
/// unless the file or the environment sets that key.
pub fn load_config<T: serde::de::DeserializeOwned>(
    path: Option<&std::path::Path>,
    env_prefix: &str,
    section_defaults: &[(&str, config::Value)],
) -> Result<T, config::ConfigError> {
    let mut builder = config::Config::builder();
    for (key, value) in section_defaults {
        builder = builder.set_default(*key, value.clone())?;
    }
    if let Some(path) = path {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    builder
        .add_source(
            config::Environment::with_prefix(env_prefix)
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
}
