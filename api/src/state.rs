//! What every request handler shares: the store, the bus, authentication and a few
//! settings.

use crate::auth::Auth;
use ferrotrove_bus::Bus;
use ferrotrove_store::Store;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Casts to the taskmanager; publisher-confirmed.
    pub bus: Bus,
    pub region: Arc<str>,
    pub heartbeat_expiry: Duration,
    pub auth: Arc<Auth>,
}
