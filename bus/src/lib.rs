//! The one way a Ferrotrove process talks AMQP.
//!
//! Owns the lapin connection, the topology (one durable topic exchange; a durable queue per
//! service, bound with its own name as routing key), and three typed operations:
//! - [`Bus::call`]: request/reply over RabbitMQ's direct reply-to, straight to the queue
//!   through the default exchange, with a deadline, a `mandatory` publish (a call to a
//!   queue nobody declared fails at once) and typed remote errors. Its publisher confirm
//!   is looked at only when the reply is late (a returned request means nobody listens);
//!   every publish but a reply is confirmed;
//! - [`Bus::cast`]: a persistent, publisher-confirmed one-way message;
//! - [`Bus::serve`]: consume a queue and hand each decoded request to a [`Handler`],
//!   replying when the sender asked for a reply and acking after the handler returns (one
//!   `multiple` ack for everything handled below the oldest message still in a handler).
//!
//! [`daemon`] holds what every bus-speaking daemon does at start (logging that never dumps
//! message bodies, the stop signal).
//!
//! Messages carry, besides the envelope (which names its method, ids and times), only what
//! the broker or a receiver acts on: `user-id` (checked by the broker against the login),
//! the signature headers, `reply-to`, `correlation-id` and `expiration` on calls, and the
//! delivery mode. Each further property costs the broker time on every message (about 4%
//! of a call's round trip for `message-id`, `type` and `content-type` together).
//!
//! It must not know what any method means: it moves [`ferrotrove_proto::Envelope`]s.

mod acks;
pub mod auth;
mod config;
mod connection;
pub mod daemon;
mod error;
mod replies;
mod serve;

pub use auth::{KeyLookup, SigningKey, Verifier};
pub use config::{BusConfig, DEFAULT_CONFIRM_TIMEOUT_SECS, TlsConfig};
pub use connection::{Bus, dead_letter_name};
pub use error::BusError;
pub use serve::{Handler, MAX_MESSAGE_BYTES, RequestContext, STOP_DRAIN, Server};

/// Milliseconds since the Unix epoch by this host's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
