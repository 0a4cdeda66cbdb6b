//! Ferrotrove's REST API: Trove v1.0 compatible, so python-troveclient (the `openstack
//! database` commands and the legacy `trove` shell) works against it.
//!
//! Stateless: it validates a request, writes the intent to the control DB (new rows in
//! BUILD, a guarded status change) and casts one task to the taskmanager. It never talks
//! to guest agents and never runs long work; everything it shows comes from the control
//! DB, where the conductor records the agents' heartbeats.
//!
//! Layout:
//! - [`config`]: [`ApiConfig`], every option with its default;
//! - `routes`: the router, one module per resource (`instances`, `create`, `flavors`,
//!   `datastores`);
//! - `auth`: the token (`auth.mode`) and the project in the URL it may act for;
//! - `views`: the JSON Trove clients read; `liveness`: the status users see;
//! - `validate`: checks on user input; `extract`: extractors that fail with faults;
//! - `fault`: Trove's error shape, and the one mapping of store and bus errors to HTTP;
//!   `busy`: the 422s for actions on busy instances;
//! - `trace`: a span per request; [`panics`]: a panic answers 500 and is logged once;
//! - [`admin`]: `ftrove-api tokens add|list|revoke`, the control DB's API tokens.
//!
//! [`run`] serves on a listener the caller binds, until a shutdown future completes, so
//! tests run the API in-process on port 0.

pub mod admin;
pub mod config;

mod auth;
mod busy;
mod extract;
mod fault;
mod liveness;
pub mod panics;
mod routes;
mod state;
mod trace;
mod validate;
mod views;

pub use config::{ApiConfig, ConfigError};

use ferrotrove_bus::{Bus, BusError};
use ferrotrove_proto::ErrorKind;
use ferrotrove_store::{Store, StoreError};
use state::AppState;
use std::fmt::Display;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The name the API gives itself in every envelope it sends.
pub const BUS_SENDER: &str = "api";

/// Why the API stopped or could not start. Each message includes its cause.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the control DB: {0}")]
    Store(StoreError),
    #[error("cannot connect to the message broker: {0}")]
    Bus(BusError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> RunError {
        RunError::Store(e)
    }
}

impl From<BusError> for RunError {
    fn from(e: BusError) -> RunError {
        RunError::Bus(e)
    }
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> RunError {
        RunError::Serve(e)
    }
}

/// Connects to the control DB (applying migrations) and the broker, retrying while they
/// are unreachable, then serves HTTP on `listener` until `shutdown` completes. Returns
/// early, without error, when `shutdown` completes while still connecting.
pub async fn run(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    // Before connecting to anything: a bad tokens file stops the API at once.
    let auth = auth::Auth::from_config(&config.auth)?;
    match &auth {
        auth::Auth::None => tracing::warn!(
            "auth.mode = \"none\": tokens are NOT checked, and every request acts for the project in its URL; for development only"
        ),
        auth::Auth::Tokens(Some(tokens)) => tracing::info!(
            tokens = tokens.len(),
            tenants = tokens.tenants(),
            "requests need an X-Auth-Token from auth.tokens_file or the control DB"
        ),
        auth::Auth::Tokens(None) => {
            tracing::info!("requests need an X-Auth-Token from the control DB")
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let store_unreachable = |e: &StoreError| e.kind() == ErrorKind::Unavailable;
    let Some(store) = with_retry(
        "control DB",
        &stop_rx,
        || Store::connect(&config.store),
        store_unreachable,
    )
    .await?
    else {
        return Ok(());
    };
    let Some(bus) = with_retry(
        "message broker",
        &stop_rx,
        || Bus::connect(&config.bus, BUS_SENDER),
        BusError::is_retryable,
    )
    .await?
    else {
        return Ok(());
    };

    let state = AppState {
        store,
        bus: bus.clone(),
        region: config.region.as_str().into(),
        heartbeat_expiry: config.heartbeat_expiry(),
        auth: std::sync::Arc::new(auth),
    };
    tracing::info!(address = %listener.local_addr()?, "serving the Trove v1.0 API");
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(stopped(stop_rx))
        .await?;
    bus.close().await;
    Ok(())
}

/// Completes once the shutdown future has.
async fn stopped(mut stop_rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens at runtime shutdown.
    let _ = stop_rx.wait_for(|stop| *stop).await;
}

/// Calls `connect` until it succeeds, fails with an error `retryable` rejects, or the
/// API is told to stop (`Ok(None)`). Pauses grow from 0.2 s to 5 s.
async fn with_retry<T, E: Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    stop_rx: &watch::Receiver<bool>,
    mut connect: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
) -> Result<Option<T>, E> {
    let mut pause = Duration::from_millis(200);
    loop {
        let attempt = tokio::select! {
            result = connect() => result,
            () = stopped(stop_rx.clone()) => return Ok(None),
        };
        match attempt {
            Ok(connected) => return Ok(Some(connected)),
            Err(e) if retryable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "{what} unreachable; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(stop_rx.clone()) => return Ok(None),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
