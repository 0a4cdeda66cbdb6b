//! Replies to our calls: one direct reply-to consumer per connection, dispatching each
//! reply to the call waiting for it by correlation id. Replies are handed over raw, with
//! their headers, so the call can check their signature before decoding them.

use futures::StreamExt;
use lapin::Channel;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A reply as it arrived.
pub(crate) struct RawReply {
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Option<FieldTable>,
}

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<RawReply>>>>;

/// The calls waiting for a reply.
#[derive(Clone, Default)]
pub(crate) struct Replies {
    waiters: Waiters,
}

/// A call's claim on its reply; dropping it (timeout, cancellation) forgets the call.
pub(crate) struct PendingReply {
    id: Uuid,
    waiters: Waiters,
    pub(crate) rx: oneshot::Receiver<RawReply>,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.id);
    }
}

fn lock(waiters: &Waiters) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<RawReply>>> {
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
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<Uuid>().ok());
                let Some(id) = id else {
                    tracing::warn!("dropping a reply without a correlation id");
                    continue;
                };
                let waiter = lock(&waiters).remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(RawReply {
                            body: delivery.data,
                            headers: delivery.properties.headers().clone(),
                        });
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
