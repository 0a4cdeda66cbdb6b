//! The consuming side: a queue's deliveries, decoded and handed to a typed handler.

use crate::acks::{self, Event, Notice};
use crate::auth::{SigningKey, Verifier};
use crate::connection::{Bus, DEFAULT_EXCHANGE, declare_and_bind};
use crate::{BusError, now_ms};
use ferrotrove_proto::envelope::{decode, encode};
use ferrotrove_proto::{Envelope, ErrorKind, Method, PROTOCOL_VERSION, RemoteError};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, PublisherConfirm};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

/// The largest message a consumer looks at; every real one is a few KiB at most.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A service's answer to its methods.
pub trait Handler: Send + Sync + 'static {
    type Request: Method;
    type Response: Serialize + Send + Sync + 'static;

    /// Handles one request. The reply (for calls) is sent and the message acked after this
    /// returns, so work recorded here is never lost to a crash.
    fn handle(
        &self,
        request: Self::Request,
        ctx: RequestContext,
    ) -> impl Future<Output = Result<Self::Response, RemoteError>> + Send;
}

/// Who sent a request, and as part of what.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub message_id: Uuid,
    pub operation_id: Option<Uuid>,
    pub sender: String,
    pub method: &'static str,
    /// Whether the broker delivered this message before (the consumer died before acking).
    pub redelivered: bool,
    /// The key that signed the message, on a queue served with a [`Verifier`]: the handler
    /// must accept only what that key may say (a guest speaks only for its own instance).
    pub key_id: Option<Uuid>,
}

/// How long [`Server::stop`] waits for the messages being handled to finish.
pub const STOP_DRAIN: Duration = Duration::from_secs(5);

/// A running consumer. Dropping it leaves it running; [`Server::stop`] ends it.
pub struct Server {
    channel: Channel,
    consumer_tag: String,
    task: JoinHandle<()>,
    /// Ends once every handler is done and its ack sent (see `acks`).
    acker: JoinHandle<()>,
    rejected: Arc<AtomicU64>,
    refused_replies: Arc<AtomicU64>,
}

impl Server {
    /// How many messages this consumer has sent to the dead-letter queue.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// How many of this consumer's replies the broker refused (nacked).
    pub fn refused_replies(&self) -> u64 {
        self.refused_replies.load(Ordering::Relaxed)
    }

    /// Stops taking new messages, lets the messages being handled finish and be acked
    /// (for at most [`STOP_DRAIN`]), then closes the channel. What is still being handled
    /// then, and what the broker had sent but no handler had taken, goes back to the queue
    /// and is delivered again, marked redelivered, with the same operation id.
    pub async fn stop(self) {
        let _ = self
            .channel
            .basic_cancel(
                self.consumer_tag.as_str().into(),
                BasicCancelOptions::default(),
            )
            .await;
        self.task.abort();
        if tokio::time::timeout(STOP_DRAIN, self.acker).await.is_err() {
            tracing::info!(
                after = ?STOP_DRAIN,
                "stopping with messages still being handled; the broker will deliver them again"
            );
        }
        // Closed here, not when the last handle goes: lapin closes a dropped channel
        // later, and a close that comes after the connection's is logged as an error.
        if let Err(error) = self.channel.close(200, "stopped".into()).await {
            tracing::debug!(%error, "closing the consumer's channel");
        }
    }

    /// Resolves when the consumer ends by itself: the connection or channel was lost.
    pub async fn closed(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Bus {
    /// Consumes the durable queue `queue` (declaring and binding it), handing each message
    /// to `handler` in a task of its own, at most `prefetch` at a time.
    pub async fn serve<H: Handler>(&self, queue: &str, handler: H) -> Result<Server, BusError> {
        self.serve_verified(queue, handler, None).await
    }

    /// [`Bus::serve`], accepting only messages `verifier` finds signed; the rest go to the
    /// dead-letter queue unhandled. Replies are signed with the verifier's key.
    pub async fn serve_verified<H: Handler>(
        &self,
        queue: &str,
        handler: H,
        verifier: Option<Verifier>,
    ) -> Result<Server, BusError> {
        let verifier = verifier.map(Arc::new);
        let inner = self.inner().await?;
        let channel = inner.connection.create_channel().await?;
        if self.confined() {
            // Made beforehand by the control plane; a missing queue is an error here.
            channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        } else {
            declare_and_bind(&channel, self.exchange(), queue).await?;
        }
        channel
            .basic_qos(self.prefetch(), BasicQosOptions::default())
            .await?;
        // Replies are the publishes of this channel (see `acks` for their confirms).
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer_tag = format!("{}.{}", self.sender(), Uuid::now_v7());
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let handler = Arc::new(handler);
        let queue_name: Arc<str> = queue.into();
        let reply_channel = channel.clone();
        let sender: Arc<str> = self.sender().into();
        let rejected = Arc::new(AtomicU64::new(0));
        let rejected_count = rejected.clone();
        let refused_replies = Arc::new(AtomicU64::new(0));
        let (acker, acker_done) =
            acks::start(channel.clone(), queue_name.clone(), refused_replies.clone());
        let task = tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                match delivery {
                    Ok(delivery) => {
                        if acker
                            .send(Event::Delivered(delivery.delivery_tag).into())
                            .is_err()
                        {
                            tracing::error!(queue = %queue_name, "the acker stopped; ending the consumer");
                            break;
                        }
                        let settle = Settle {
                            channel: reply_channel.clone(),
                            acker: acker.clone(),
                            tag: delivery.delivery_tag,
                            rejected: rejected_count.clone(),
                        };
                        let (handler, queue, sender, verifier) = (
                            handler.clone(),
                            queue_name.clone(),
                            sender.clone(),
                            verifier.clone(),
                        );
                        tokio::spawn(async move {
                            handle_delivery(
                                &*handler,
                                &sender,
                                &queue,
                                delivery,
                                settle,
                                verifier.as_deref(),
                            )
                            .await
                        });
                    }
                    Err(error) => {
                        tracing::error!(queue = %queue_name, %error, "consumer failed");
                        break;
                    }
                }
            }
        });
        Ok(Server {
            channel,
            consumer_tag,
            task,
            acker: acker_done,
            rejected,
            refused_replies,
        })
    }
}

/// Decodes, checks and handles one delivery, replies if asked, then acks (or rejects what
/// can never be handled, so it goes to the dead-letter queue instead of looping).
async fn handle_delivery<H: Handler>(
    handler: &H,
    sender: &str,
    queue: &str,
    delivery: Delivery,
    settle: Settle,
    verifier: Option<&Verifier>,
) {
    let reply_to = delivery.properties.reply_to().clone();
    if delivery.data.len() > MAX_MESSAGE_BYTES {
        tracing::warn!(
            queue,
            bytes = delivery.data.len(),
            "rejecting an oversized message"
        );
        settle.reject().await;
        return;
    }
    let key_id = match verifier {
        None => None,
        Some(verifier) => match verifier.check(&delivery.properties, &delivery.data).await {
            Ok(key_id) => key_id,
            Err(reason) => {
                tracing::warn!(queue, reason, "rejecting an unauthenticated message");
                settle.reject().await;
                return;
            }
        },
    };
    let envelope = match Envelope::from_bytes(&delivery.data) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(queue, %error, "rejecting a message that is not an envelope");
            settle.reject().await;
            return;
        }
    };
    let span = tracing::info_span!(
        "rpc",
        queue,
        method = %envelope.method,
        sender = %envelope.sender,
        message_id = %envelope.message_id,
        operation_id = ?envelope.operation_id,
    );
    async {
        let outcome: Result<H::Response, RemoteError> = if envelope.version != PROTOCOL_VERSION {
            tracing::warn!(version = envelope.version, "unsupported protocol version");
            Err(RemoteError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this peer speaks {PROTOCOL_VERSION})",
                    envelope.version
                ),
            ))
        } else if envelope.expired(now_ms()) {
            tracing::warn!("dropping a message whose deadline has passed");
            settle.ack();
            return;
        } else {
            match decode::<H::Request>(&envelope.payload) {
                Ok(request) => {
                    let ctx = RequestContext {
                        message_id: envelope.message_id,
                        operation_id: envelope.operation_id,
                        sender: envelope.sender.clone(),
                        method: request.name(),
                        redelivered: delivery.redelivered,
                        key_id,
                    };
                    let outcome = handler.handle(request, ctx).await;
                    if let Err(error) = &outcome {
                        tracing::warn!(%error, "request failed");
                    }
                    outcome
                }
                Err(error) => {
                    tracing::warn!(%error, "unknown method or malformed arguments");
                    Err(RemoteError::new(
                        ErrorKind::UnknownMethod,
                        format!(
                            "cannot handle method {:?} on {queue}: {error}",
                            envelope.method
                        ),
                    ))
                }
            }
        };
        if let Some(reply_to) = reply_to {
            let replier = Replier {
                channel: &settle.channel,
                sender,
                key: verifier.and_then(Verifier::reply_key),
            };
            match replier.send(&envelope, reply_to, &outcome).await {
                Ok(confirm) => settle.replied(envelope.message_id, confirm),
                Err(error) => tracing::warn!(%error, "could not send the reply"),
            }
        }
        // What this consumer can never handle goes to the dead-letter queue, not around again.
        match &outcome {
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::UnknownMethod | ErrorKind::UnsupportedVersion
                ) =>
            {
                settle.reject().await
            }
            _ => settle.ack(),
        }
    }
    .instrument(span)
    .await;
}

/// Sends replies on the channel the request came in on, in this process's name.
struct Replier<'a> {
    channel: &'a Channel,
    sender: &'a str,
    key: Option<&'a SigningKey>,
}

impl Replier<'_> {
    async fn send<T: Serialize>(
        &self,
        request: &Envelope,
        reply_to: ShortString,
        outcome: &Result<T, RemoteError>,
    ) -> Result<PublisherConfirm, BusError> {
        let mut reply = Envelope::new(self.sender, "Reply", encode(outcome)?, now_ms());
        reply.correlation_id = Some(request.message_id);
        reply.operation_id = request.operation_id;
        let body = reply.to_bytes()?;
        let mut properties =
            BasicProperties::default().with_correlation_id(request.message_id.to_string().into());
        if let Some(key) = self.key {
            properties = properties.with_headers(key.sign(&body));
        }
        // Replies go through the default exchange, which routes `amq.rabbitmq.reply-to.*`
        // names straight to the caller's channel. The acker looks at the confirm.
        Ok(self
            .channel
            .basic_publish(
                DEFAULT_EXCHANGE.into(),
                reply_to,
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?)
    }
}

/// How one delivery is settled once handled: acked through the consumer's acker, or
/// rejected to the dead letters.
struct Settle {
    channel: Channel,
    acker: UnboundedSender<Notice>,
    tag: u64,
    rejected: Arc<AtomicU64>,
}

impl Settle {
    /// Hands the acker the confirm of the reply to call `id`.
    fn replied(&self, id: Uuid, confirm: PublisherConfirm) {
        let _ = self.acker.send(Notice::Replied(id, confirm));
    }

    fn ack(self) {
        // A closed acker means a lost channel: the broker delivers the message again.
        let _ = self.acker.send(Event::Handled(self.tag).into());
    }

    async fn reject(self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        match self
            .channel
            .basic_reject(self.tag, BasicRejectOptions { requeue: false })
            .await
        {
            // Sent before the acker hears of it, so no `multiple` ack can cover it first.
            Ok(()) => {
                let _ = self.acker.send(Event::Settled(self.tag).into());
            }
            Err(error) => tracing::warn!(%error, "reject failed"),
        }
    }
}
