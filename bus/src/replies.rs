//! Replies to our calls: one direct reply-to consumer per connection, dispatching each
//! reply to the call waiting for it by correlation id. Replies are handed over raw, with
//! their headers, so the call can check their signature before decoding them.
//!
//! Calls are published with publisher confirms, `mandatory`, like every publish; a request
//! for a queue that does not exist comes back with its confirm. The confirm comes long
//! before the reply, so a call does not wait for it: it looks at it ([`CallConfirm::look`])
//! only when no reply has come after [`CONFIRM_LOOK_FIRST`], and then less and less often,
//! without being woken by it (a confirm awaited on its own costs a wake-up of the calling
//! task per call, about a sixth of a call's round trip here).
//!
//! lapin hands a returned request to a confirm of the channel, not always its own (the
//! broker acks several publishes in one frame), so a returned request settles the call its
//! correlation id names, whichever call found it.

use crate::BusError;
use futures::{FutureExt, StreamExt};
use lapin::message::BasicReturnMessage;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, PublisherConfirm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// When a call not yet answered first looks at its request's confirm: about how late a
/// call to a queue that does not exist learns it. It looks again twice as late each time,
/// up to [`CONFIRM_LOOK_MAX`] apart, until the request is confirmed.
pub(crate) const CONFIRM_LOOK_FIRST: Duration = Duration::from_millis(5);
pub(crate) const CONFIRM_LOOK_MAX: Duration = Duration::from_secs(1);

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
                    Err(error) if closed_by_us(&error) => {
                        tracing::debug!(%error, "reply consumer closed");
                        break;
                    }
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

    /// Settles the call whose request the broker returned.
    fn returned(&self, message: &BasicReturnMessage) {
        let waiter = correlation_id(&message.delivery.properties)
            .and_then(|id| lock(&self.waiters).remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.send(Answer::Returned);
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

/// The broker's confirm of a call's request, as far as the call has looked.
pub(crate) enum CallConfirm {
    Awaited(PublisherConfirm),
    Settled,
}

impl CallConfirm {
    pub(crate) fn is_settled(&self) -> bool {
        matches!(self, CallConfirm::Settled)
    }

    /// Takes the confirm if it has come, without registering this task to be woken by it.
    /// A returned request it carries settles its own call through `replies` (this one's
    /// answer is then `Returned`); an error when the broker refused the request to
    /// `queue`, or the channel is gone.
    pub(crate) fn look(&mut self, replies: &Replies, queue: &str) -> Result<(), BusError> {
        let CallConfirm::Awaited(confirm) = self else {
            return Ok(());
        };
        // Polled with a waker that does nothing: the call's own timer comes back here.
        let Some(confirmation) = confirm.now_or_never() else {
            return Ok(());
        };
        *self = CallConfirm::Settled;
        if hand_over(replies, confirmation?) {
            return Err(BusError::Nacked {
                queue: queue.to_owned(),
            });
        }
        Ok(())
    }

    /// Once the call is over: a confirm not taken yet is awaited in the background, so
    /// a returned request it may carry still settles its call, and the channel keeps
    /// nothing for it (lapin keeps a dropped, unsettled confirm until someone asks for
    /// all of them).
    pub(crate) fn finish(self, replies: &Replies) {
        let CallConfirm::Awaited(mut confirm) = self else {
            return;
        };
        match (&mut confirm).now_or_never() {
            Some(Ok(confirmation)) => {
                hand_over(replies, confirmation);
            }
            Some(Err(_)) => {}
            None => {
                let replies = replies.clone();
                tokio::spawn(async move {
                    if let Ok(confirmation) = confirm.await {
                        hand_over(&replies, confirmation);
                    }
                });
            }
        }
    }
}

/// Hands a returned request the confirm carries to its call; answers whether the broker
/// refused (nacked) the publish.
fn hand_over(replies: &Replies, confirmation: Confirmation) -> bool {
    let nacked = confirmation.is_nack();
    if let Some(message) = confirmation.take_message() {
        replies.returned(&message);
    }
    nacked
}

/// Whether `error` ends a consumer because this process closed its channel or connection
/// (a stop, not a fault).
fn closed_by_us(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::InvalidChannelState(
            lapin::ChannelState::Closing | lapin::ChannelState::Closed,
            _
        )
    )
}

/// A call's id, as its request and its reply carry it.
fn correlation_id(properties: &lapin::BasicProperties) -> Option<Uuid> {
    properties
        .correlation_id()
        .as_ref()
        .and_then(|c| c.as_str().parse().ok())
}
