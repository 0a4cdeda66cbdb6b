//! Replies to our calls: one direct reply-to consumer per connection, dispatching each
//! reply to the call waiting for it by correlation id.

use ferrotrove_proto::Envelope;
use futures::StreamExt;
use lapin::Channel;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use uuid::Uuid;

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Envelope>>>>;

/// The calls waiting for a reply.
#[derive(Clone, Default)]
pub(crate) struct Replies {
    waiters: Waiters,
}

/// A call's claim on its reply; dropping it (timeout, cancellation) forgets the call.
pub(crate) struct PendingReply {
    id: Uuid,
    waiters: Waiters,
    pub(crate) rx: oneshot::Receiver<Envelope>,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.id);
    }
}

fn lock(waiters: &Waiters) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Envelope>>> {
    // The map holds no invariant a panic could break half-way.
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Replies {
    /// Starts consuming `amq.rabbitmq.reply-to` on `channel`; calls must publish on the same
    /// channel for RabbitMQ to route their replies here.
    pub(crate) async fn start(channel: &Channel) -> Result<Replies, lapin::Error> {
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = channel
            .basic_consume(
                ferrotrove_proto::queues::DIRECT_REPLY_TO.into(),
                "".into(),
                opts,
                FieldTable::default(),
            )
            .await?;
        let replies = Replies::default();
        let waiters = replies.waiters.clone();
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = match delivery {
                    Ok(d) => d,
                    Err(error) => {
                        tracing::warn!(%error, "reply consumer failed");
                        break;
                    }
                };
                let envelope = match Envelope::from_bytes(&delivery.data) {
                    Ok(e) => e,
                    Err(error) => {
                        tracing::warn!(%error, "dropping a malformed reply");
                        continue;
                    }
                };
                let Some(id) = envelope.correlation_id else {
                    tracing::warn!(message_id = %envelope.message_id, "dropping a reply without correlation id");
                    continue;
                };
                match lock(&waiters).remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(envelope);
                    }
                    None => tracing::debug!(%id, "reply for a call that gave up"),
                }
            }
            // The connection is gone: fail every waiting call now instead of at its deadline.
            lock(&waiters).clear();
        });
        Ok(replies)
    }

    /// Registers a call before its request is published.
    pub(crate) fn expect(&self, id: Uuid) -> PendingReply {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        PendingReply {
            id,
            waiters: self.waiters.clone(),
            rx,
        }
    }
}
