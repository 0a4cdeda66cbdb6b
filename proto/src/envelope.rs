//! The envelope: the one type every AMQP message body holds, as MessagePack.
//!
//! The envelope is decoded first and on its own, so that a receiver can answer an unknown
//! method or protocol version with a typed error instead of failing to parse. The method's
//! arguments travel as an inner MessagePack document in `payload`.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// The version of this envelope and of the method enums. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u16 = 1;

/// A request, cast or reply on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    /// Unique per message (UUID v7, so ids sort by time).
    pub message_id: Uuid,
    /// On a reply: the `message_id` of the request it answers.
    #[serde(default)]
    pub correlation_id: Option<Uuid>,
    /// The operation this message belongs to: the same for every retry of one command.
    #[serde(default)]
    pub operation_id: Option<Uuid>,
    /// Who sent it: `taskmanager`, `api`, `guestagent.<id>`, ...
    pub sender: String,
    /// Milliseconds since the Unix epoch, by the sender's clock.
    pub sent_at_ms: i64,
    /// After this instant (ms since the epoch) the receiver drops the message.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    /// The method's name, for routing errors and logs; the payload is authoritative.
    pub method: String,
    /// The method enum (or a reply's `Result`), MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A method enum that can travel in an envelope.
pub trait Method: Serialize + DeserializeOwned + Send + 'static {
    /// The variant's name, as it appears in logs and in the envelope's `method` field.
    fn name(&self) -> &'static str;
}

/// Why bytes could not be turned into a message, or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encodes a value as MessagePack, with struct fields as names (so peers of different
/// versions can skip unknown fields and default missing ones).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes a MessagePack value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

impl Envelope {
    /// A new message carrying `payload` (already encoded) for `method`.
    pub fn new(sender: &str, method: &str, payload: Vec<u8>, sent_at_ms: i64) -> Envelope {
        Envelope::with_id(Uuid::now_v7(), sender, method, payload, sent_at_ms)
    }

    /// [`Envelope::new`] under a message id the sender chose (a copy of a message sent
    /// before, which receivers keyed by message id take as the same message).
    pub fn with_id(
        message_id: Uuid,
        sender: &str,
        method: &str,
        payload: Vec<u8>,
        sent_at_ms: i64,
    ) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            message_id,
            correlation_id: None,
            operation_id: None,
            sender: sender.to_owned(),
            sent_at_ms,
            deadline_ms: None,
            method: method.to_owned(),
            payload,
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        // Sized once: the fixed fields (ids, times, names of fields) take under 200 bytes.
        let mut bytes =
            Vec::with_capacity(200 + self.payload.len() + self.sender.len() + self.method.len());
        rmp_serde::encode::write_named(&mut bytes, self)?;
        Ok(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, CodecError> {
        decode(bytes)
    }

    /// Whether the deadline has passed at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.deadline_ms.is_some_and(|d| now_ms > d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentInfo, AgentRequest, AgentResponse};
    use crate::{ErrorKind, RemoteError};

    #[test]
    fn envelope_round_trips() {
        let req = AgentRequest::Ping;
        let env = Envelope::new(
            "taskmanager",
            req.name(),
            encode(&req).unwrap(),
            1_700_000_000_000,
        );
        let bytes = env.to_bytes().unwrap();
        let back = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(
            decode::<AgentRequest>(&back.payload).unwrap(),
            AgentRequest::Ping
        );
    }

    #[test]
    fn reply_result_round_trips_with_error_kind() {
        let ok: Result<AgentResponse, RemoteError> = Ok(AgentResponse::Pong(AgentInfo {
            version: "0.1.0".into(),
            server_up: true,
        }));
        let err: Result<AgentResponse, RemoteError> =
            Err(RemoteError::new(ErrorKind::Conflict, "not a replica"));
        for v in [ok, err] {
            let back: Result<AgentResponse, RemoteError> = decode(&encode(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn unknown_method_is_a_decode_error_not_a_panic() {
        // A newer peer's method: a map with a variant name this build does not know.
        #[derive(Serialize)]
        enum Newer {
            Frobnicate { level: u8 },
        }
        let bytes = encode(&Newer::Frobnicate { level: 3 }).unwrap();
        assert!(decode::<AgentRequest>(&bytes).is_err());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(Envelope::from_bytes(b"\xc1\xff not msgpack").is_err());
        assert!(Envelope::from_bytes(&[]).is_err());
    }

    #[test]
    fn missing_optional_fields_default() {
        // An envelope from a peer that does not send the optional fields.
        #[derive(Serialize)]
        struct Old<'a> {
            version: u16,
            message_id: Uuid,
            sender: &'a str,
            sent_at_ms: i64,
            method: &'a str,
            #[serde(with = "serde_bytes")]
            payload: Vec<u8>,
        }
        let old = Old {
            version: 1,
            message_id: Uuid::now_v7(),
            sender: "x",
            sent_at_ms: 5,
            method: "Ping",
            payload: vec![],
        };
        let env = Envelope::from_bytes(&encode(&old).unwrap()).unwrap();
        assert_eq!(env.deadline_ms, None);
        assert_eq!(env.correlation_id, None);
        assert!(!env.expired(i64::MAX));
    }
}
