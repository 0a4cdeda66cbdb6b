//! Message authentication: an HMAC-SHA256 over the whole body, carried in a header with the
//! id of the key that made it.
//!
//! Each instance has a secret of its own (drawn from a CSPRNG when it is created). Every
//! message to or from its agent is signed with it: the body is the whole envelope (sender,
//! method, deadline, payload), so nothing in it can be changed without the key, and an old
//! message replayed later is refused by its passed deadline or its old heartbeat sequence.

use ferrotrove_proto::Secret;
use hmac::{Hmac, Mac};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use sha2::Sha256;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

pub(crate) const SIGNATURE_HEADER: &str = "x-ft-signature";
pub(crate) const KEY_ID_HEADER: &str = "x-ft-key-id";

/// A key and the id it is known by (the instance id).
#[derive(Clone, Debug)]
pub struct SigningKey {
    pub key_id: Uuid,
    pub secret: Secret,
}

fn mac(secret: &Secret, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac
}

impl SigningKey {
    /// The headers that authenticate `body` (the bus adds them to what it publishes).
    pub fn sign(&self, body: &[u8]) -> FieldTable {
        let tag = hex::encode(mac(&self.secret, body).finalize().into_bytes());
        let mut headers = FieldTable::default();
        headers.insert(SIGNATURE_HEADER.into(), AMQPValue::LongString(tag.into()));
        headers.insert(
            KEY_ID_HEADER.into(),
            AMQPValue::LongString(self.key_id.to_string().into()),
        );
        headers
    }
}

/// What a message claims about its signature.
pub(crate) struct Claimed {
    pub(crate) key_id: Uuid,
    tag: Vec<u8>,
}

impl Claimed {
    /// Reads the headers; `None` when either is missing or malformed.
    pub(crate) fn from_headers(headers: Option<&FieldTable>) -> Option<Claimed> {
        let headers = headers?.inner();
        let text = |name: &str| match headers.get(&ShortString::from(name)) {
            Some(AMQPValue::LongString(s)) => {
                std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
            }
            _ => None,
        };
        let key_id = text(KEY_ID_HEADER)?.parse().ok()?;
        let tag = hex::decode(text(SIGNATURE_HEADER)?).ok()?;
        Some(Claimed { key_id, tag })
    }

    /// Whether `body` was signed with `secret` (constant-time comparison).
    pub(crate) fn verify(&self, secret: &Secret, body: &[u8]) -> bool {
        mac(secret, body).verify_slice(&self.tag).is_ok()
    }
}

/// Finds the secret of a key id (the conductor looks instances up in the control DB).
pub trait KeyLookup: Send + Sync + 'static {
    fn secret(&self, key_id: Uuid) -> Pin<Box<dyn Future<Output = Option<Secret>> + Send + '_>>;
}

/// Which messages a consumer accepts.
#[derive(Clone)]
pub enum Verifier {
    /// Only messages signed with this key (an agent's own queue); replies are signed with it.
    Key(SigningKey),
    /// Only messages signed with the key they name, as `lookup` knows it (the conductor);
    /// the handler learns the key id and checks that the message is about that instance.
    Lookup(Arc<dyn KeyLookup>),
    /// Only messages published by one of these broker users (the control plane's own): the
    /// broker checks the `user-id` property every publisher sets against its login, so a
    /// guest, whose broker user is its own, cannot pass for one. The taskmanager's queue.
    Publishers(Arc<[String]>),
}

impl Verifier {
    /// The key id that signed `body`, when the signature is good (`None` for
    /// [`Verifier::Publishers`], which checks who published instead).
    pub(crate) async fn check(
        &self,
        properties: &lapin::BasicProperties,
        body: &[u8],
    ) -> Result<Option<Uuid>, &'static str> {
        if let Verifier::Publishers(users) = self {
            let user = properties.user_id().as_ref().map(|u| u.as_str());
            return match user {
                Some(user) if users.iter().any(|u| u == user) => Ok(None),
                Some(_) => Err("published by a broker user that is not trusted here"),
                None => Err("published without a user id"),
            };
        }
        let headers = properties.headers().as_ref();
        let claimed = Claimed::from_headers(headers).ok_or("missing or malformed signature")?;
        let secret = match self {
            Verifier::Key(key) if key.key_id == claimed.key_id => Some(key.secret.clone()),
            Verifier::Key(_) => None,
            Verifier::Lookup(lookup) => lookup.secret(claimed.key_id).await,
            Verifier::Publishers(_) => None,
        };
        match secret {
            Some(secret) if claimed.verify(&secret, body) => Ok(Some(claimed.key_id)),
            Some(_) => Err("bad signature"),
            None => Err("signed with an unknown key"),
        }
    }

    /// The key replies are signed with.
    pub(crate) fn reply_key(&self) -> Option<&SigningKey> {
        match self {
            Verifier::Key(key) => Some(key),
            Verifier::Lookup(_) | Verifier::Publishers(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_the_body_and_the_key() {
        let key = SigningKey {
            key_id: Uuid::now_v7(),
            secret: Secret::new("k1"),
        };
        let headers = key.sign(b"body");
        let claimed = Claimed::from_headers(Some(&headers)).unwrap();
        assert_eq!(claimed.key_id, key.key_id);
        assert!(claimed.verify(&key.secret, b"body"));
        assert!(!claimed.verify(&key.secret, b"bodY"));
        assert!(!claimed.verify(&Secret::new("k2"), b"body"));
        assert!(Claimed::from_headers(None).is_none());
        assert!(Claimed::from_headers(Some(&FieldTable::default())).is_none());
    }
}
