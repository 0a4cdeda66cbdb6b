//! Replies to our calls: one direct reply-to consumer per connection, dispatching each
//! reply to the call waiting for it by correlation id. Replies are handed over raw, with
//! their headers, so the call can check their signature before decoding them.
//!
//! Calls are published without publisher confirms (the reply acknowledges a call end to
//! end, and a confirm costs the broker about a sixth of a call's round trip), but
//! `mandatory`: a request for a queue that does not exist comes back as `basic.return`.
//! lapin keeps what a channel without confirms gets returned until it is asked for, so a
//! waiting call asks, after [`RETURN_POLL_FIRST`] and then less and less often
//! ([`Replies::collect_returns`]), and each returned request settles its own call,
//! whichever call collected it.

use futures::StreamExt;
use lapin::Channel;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// When a call not yet answered first looks for returned requests: about how late a call
/// to a queue that does not exist learns it, after the broker's return. It looks again
/// twice as late each time, up to [`RETURN_POLL_MAX`] apart.
pub(crate) const RETURN_POLL_FIRST: Duration = Duration::from_millis(5);
pub(crate) const RETURN_POLL_MAX: Duration = Duration::from_secs(1);

/// A reply as it arrived.
pub(crate) struct RawReply {
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Option<FieldTable>,
}

/// How a call was settled.
pub(crate) enum Answer {
    Reply(RawReply),
    /// The broker returned the request: no queue by that name.
    Returned,
}

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<Answer>>>>;

/// The calls waiting for a reply.
#[derive(Clone, Default)]
pub(crate) struct Replies {
    waiters: Waiters,
}

/// A call's claim on its reply; dropping it (timeout, cancellation) forgets the call.
pub(crate) struct PendingReply {
    id: Uuid,
    waiters: Waiters,
    pub(crate) rx: oneshot::Receiver<Answer>,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.id);
    }
}

fn lock(waiters: &Waiters) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Answer>>> {
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
                let Some(id) = correlation_id(&delivery.properties) else {
                    tracing::warn!("dropping a reply without a correlation id");
                    continue;
                };
                let waiter = lock(&waiters).remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(Answer::Reply(RawReply {
                            body: delivery.data,
                            headers: delivery.properties.headers().clone(),
                        }));
                    }
                    None => tracing::debug!(%id, "reply for a call that gave up"),
                }
            }
            // The connection is gone: fail every waiting call now instead of at its deadline.
            lock(&waiters).clear();
        });
        Ok(replies)
    }

    /// Settles the calls whose requests the broker returned on `channel` (the calls'
    /// channel, which has no publisher confirms) since the last look.
    pub(crate) async fn collect_returns(&self, channel: &Channel) {
        // Without confirms there is nothing to wait for: this only takes what came back.
        let returned = match channel.wait_for_confirms().await {
            Ok(returned) => returned,
            Err(error) => {
                tracing::debug!(%error, "cannot look for returned calls");
                return;
            }
        };
        for message in returned {
            let waiter = correlation_id(&message.delivery.properties)
                .and_then(|id| lock(&self.waiters).remove(&id));
            if let Some(tx) = waiter {
                let _ = tx.send(Answer::Returned);
            }
        }
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

/// A call's id, as its request and its reply carry it.
fn correlation_id(properties: &lapin::BasicProperties) -> Option<Uuid> {
    properties
        .correlation_id()
        .as_ref()
        .and_then(|c| c.as_str().parse().ok())
}
