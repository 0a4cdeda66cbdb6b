//! The wire contract of Ferrotrove and nothing else.
//!
//! Every process depends on this crate, and it depends on nothing of ours. It owns:
//! - [`envelope`]: the one message type on the bus, and its MessagePack codec;
//! - [`agent`], [`conductor`], [`taskmanager`]: the methods each service answers, as enums;
//! - [`error`]: error kinds that survive the wire;
//! - [`status`]: the status words shared by the agent, the control DB and the API;
//! - [`queues`]: queue and routing-key names;
//! - [`secret`]: a string that never prints.
//!
//! It must not do I/O, know about lapin, MySQL or HTTP, or hold any state.
//! Deriving `Serialize` here makes a type a contract between processes of different
//! versions: add fields with `#[serde(default)]`, never rename or reuse them.

pub mod agent;
pub mod conductor;
pub mod envelope;
pub mod error;
pub mod queues;
pub mod secret;
pub mod status;
pub mod taskmanager;

pub use envelope::{Envelope, Method, PROTOCOL_VERSION};
pub use error::{ErrorKind, RemoteError};
pub use secret::Secret;
