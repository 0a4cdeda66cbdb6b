//! The connection, its topology, and the publishing side: call and cast.

use crate::auth::{Claimed, SigningKey};
use crate::replies::{Answer, CONFIRM_LOOK_FIRST, CONFIRM_LOOK_MAX, CallConfirm, Replies};
use crate::{BusConfig, BusError, TlsConfig, now_ms};
use ferrotrove_proto::envelope::{decode, encode};
use ferrotrove_proto::{Envelope, Method, RemoteError, queues};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use uuid::Uuid;

/// How long connecting (TCP, TLS, AMQP handshake and topology) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The routing key of [`Bus::probe_publishing`]: no queue is bound to it.
const PROBE_ROUTING_KEY: &str = "ferrotrove.probe";

/// AMQP delivery mode 2: the broker writes the message to disk on a durable queue.
const PERSISTENT: u8 = 2;
/// The default exchange: routes to the queue named by the routing key.
pub(crate) const DEFAULT_EXCHANGE: &str = "";

/// A connection to the broker, shared by every task of a process (cheap to clone).
///
/// When the connection is lost, calls in flight fail at once with [`BusError::Closed`]
/// (retryable), and the next operation connects again and declares the topology anew.
/// Consumers end with the connection ([`crate::Server::closed`]); their owner serves again.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
    /// Signs what this handle sends and checks the replies it gets (see [`Bus::signed_by`]).
    key: Option<Arc<SigningKey>>,
}

struct Shared {
    config: BusConfig,
    /// The broker user, sent as `user-id` on every publish (see [`BusConfig::user`]).
    user: ShortString,
    sender: String,
    current: RwLock<Arc<Inner>>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

/// One connection and what lives on it.
pub(crate) struct Inner {
    pub(crate) connection: Connection,
    /// Casts publish here, with publisher confirms.
    channel: Channel,
    /// Calls publish here, with publisher confirms, and their replies are consumed here
    /// (direct reply-to, which answers on the channel a request was published on).
    calls: Channel,
    replies: Replies,
    /// Queues declared on this connection, so casts declare their target once.
    declared: Mutex<HashSet<String>>,
}

impl Inner {
    /// Connects and declares the exchange and the dead letters, giving up after
    /// [`CONNECT_TIMEOUT`]: a broker that is starting or stopping may accept the TCP
    /// connection and never answer.
    async fn open(config: &BusConfig) -> Result<Inner, BusError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Inner::open_now(config)).await {
            Ok(result) => result,
            Err(_) => Err(BusError::ConnectTimeout {
                url: config.redacted_url(),
                after: CONNECT_TIMEOUT,
            }),
        }
    }

    async fn open_now(config: &BusConfig) -> Result<Inner, BusError> {
        let uri = config.amqp_uri().map_err(BusError::InvalidUrl)?;
        let connected = if config.uses_tls() {
            let runtime = lapin::runtime::default_runtime()?;
            let tls = tls_config(&config.tls)?;
            Connection::connect_uri_with_config(uri, ConnectionProperties::default(), tls, runtime)
                .await
        } else {
            Connection::connect_uri(uri, ConnectionProperties::default()).await
        };
        let connection = connected.map_err(|source| BusError::Connect {
            url: config.redacted_url(),
            source,
        })?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if !config.confined {
            channel
                .exchange_declare(
                    config.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            declare_dead_letters(&channel, &config.exchange).await?;
        }
        let calls = connection.create_channel().await?;
        calls
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let replies = Replies::start(&calls).await?;
        Ok(Inner {
            connection,
            channel,
            calls,
            replies,
            declared: Mutex::new(HashSet::new()),
        })
    }

    /// Fails at once while the broker blocks this connection's publishes (a resource
    /// alarm): nothing published now would be confirmed before the alarm clears.
    fn refuse_if_blocked(&self) -> Result<(), BusError> {
        if self.connection.status().blocked() {
            return Err(BusError::Blocked);
        }
        Ok(())
    }

    fn declared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.declared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Bus {
    /// Connects and declares the exchange. `sender` names this process in every envelope
    /// (`taskmanager`, `guestagent.<id>`, ...).
    pub async fn connect(config: &BusConfig, sender: impl Into<String>) -> Result<Bus, BusError> {
        let inner = Inner::open(config).await?;
        Ok(Bus {
            shared: Arc::new(Shared {
                config: config.clone(),
                user: config.user().into(),
                sender: sender.into(),
                current: RwLock::new(Arc::new(inner)),
                reconnecting: tokio::sync::Mutex::new(()),
            }),
            key: None,
        })
    }

    /// The same connection, signing every message it sends with `key` and accepting only
    /// replies signed with it: how the taskmanager talks to one guest, and a guest to all.
    pub fn signed_by(&self, key: SigningKey) -> Bus {
        Bus {
            shared: self.shared.clone(),
            key: Some(Arc::new(key)),
        }
    }

    fn current(&self) -> Arc<Inner> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The live connection, connecting again (once per call) if it was lost.
    pub(crate) async fn inner(&self) -> Result<Arc<Inner>, BusError> {
        let current = self.current();
        if current.connection.status().connected() {
            return Ok(current);
        }
        let _one_at_a_time = self.shared.reconnecting.lock().await;
        let current = self.current();
        if current.connection.status().connected() {
            return Ok(current);
        }
        let fresh = Arc::new(Inner::open(&self.shared.config).await?);
        tracing::info!(url = %self.shared.config.redacted_url(), "reconnected to the message broker");
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        Ok(fresh)
    }

    pub(crate) fn exchange(&self) -> &str {
        &self.shared.config.exchange
    }

    pub(crate) fn confined(&self) -> bool {
        self.shared.config.confined
    }

    pub(crate) fn prefetch(&self) -> u16 {
        self.shared.config.prefetch.max(1)
    }

    /// Connects, retrying with exponential backoff (up to 5 s apart) until `give_up_after`.
    pub async fn connect_with_retry(
        config: &BusConfig,
        sender: impl Into<String>,
        give_up_after: Duration,
    ) -> Result<Bus, BusError> {
        let sender = sender.into();
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match Bus::connect(config, sender.clone()).await {
                Ok(bus) => return Ok(bus),
                Err(error) if started.elapsed() + pause < give_up_after => {
                    tracing::warn!(%error, retry_in = ?pause, "message broker not reachable");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// This process's name in envelopes.
    pub fn sender(&self) -> &str {
        &self.shared.sender
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.current().connection.status().connected()
    }

    /// Sends `request` to `queue` and waits up to `timeout` for the reply.
    ///
    /// Fails at once with [`BusError::NotListening`] when there is no queue `queue`, and
    /// with [`BusError::Remote`] carrying the peer's typed error when it answers with one.
    pub async fn call<Req: Method, Resp: DeserializeOwned>(
        &self,
        queue: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError> {
        self.call_in_operation(queue, request, timeout, Uuid::now_v7())
            .await
    }

    /// [`Bus::call`] as a step of `operation_id`: every retry of one step carries the same
    /// operation id, so the receiver can tell a retry from a new command.
    pub async fn call_in_operation<Req: Method, Resp: DeserializeOwned>(
        &self,
        queue: &str,
        request: &Req,
        timeout: Duration,
        operation_id: Uuid,
    ) -> Result<Resp, BusError> {
        let method = request.name();
        let timeout_ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        let inner = self.inner().await?;
        let mut envelope = Envelope::new(self.sender(), method, encode(request)?, now_ms());
        envelope.deadline_ms = Some(envelope.sent_at_ms.saturating_add(timeout_ms));
        envelope.operation_id = Some(operation_id);
        let id = envelope.message_id;
        let mut pending = inner.replies.expect(id);
        let properties = BasicProperties::default()
            .with_reply_to(queues::DIRECT_REPLY_TO.into())
            .with_correlation_id(id.to_string().into())
            // The broker drops the request if nobody takes it before the caller gives up.
            .with_expiration(timeout_ms.max(1).to_string().into());
        // Straight to the queue by name through the default exchange: the broker's
        // cheapest route. Topic permissions confine only what guests publish, and guests
        // make no calls.
        // A blocked connection would hold the request until the alarm clears, and the
        // call until its deadline.
        inner.refuse_if_blocked()?;
        let mut confirm = CallConfirm::Awaited(
            self.send(&inner.calls, DEFAULT_EXCHANGE, queue, &envelope, properties)
                .await?,
        );
        // Settled by the reply. The broker's confirm comes long before it (it confirms a
        // transient request as it routes it), so the call looks at the confirm only when
        // no reply has come after `CONFIRM_LOOK_FIRST`, and then less and less often,
        // without ever being woken by it: a returned request (`mandatory`: no queue by
        // that name) settles its call as not listening, a nack fails it as refused. Once
        // the request is confirmed, only the answer is awaited.
        let answered = async {
            let mut pause = CONFIRM_LOOK_FIRST;
            loop {
                if confirm.is_settled() {
                    return (&mut pending.rx).await.map_err(|_| BusError::Closed);
                }
                tokio::select! {
                    biased;
                    answer = &mut pending.rx => return answer.map_err(|_| BusError::Closed),
                    _ = tokio::time::sleep(pause) => {
                        confirm.look(&inner.replies, queue)?;
                        pause = (pause * 2).min(CONFIRM_LOOK_MAX);
                    }
                }
            }
        };
        let answered = tokio::time::timeout(timeout, answered).await;
        confirm.finish(&inner.replies);
        let reply = match answered {
            Err(_) => {
                return Err(BusError::Timeout {
                    queue: queue.to_owned(),
                    method: method.to_owned(),
                    after: timeout,
                });
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(Answer::Returned)) => {
                return Err(BusError::NotListening {
                    queue: queue.to_owned(),
                });
            }
            Ok(Ok(Answer::Reply(reply))) => reply,
        };
        if let Some(key) = &self.key {
            let signed = Claimed::from_headers(reply.headers.as_ref())
                .is_some_and(|c| c.key_id == key.key_id && c.verify(&key.secret, &reply.body));
            if !signed {
                tracing::warn!(queue, method, "reply without a valid signature");
                return Err(BusError::Protocol(format!(
                    "{queue} answered {method} without a valid signature"
                )));
            }
        }
        let reply = Envelope::from_bytes(&reply.body)?;
        let result: Result<Resp, RemoteError> = decode(&reply.payload)?;
        result.map_err(|error| BusError::Remote {
            queue: queue.to_owned(),
            method: method.to_owned(),
            error,
        })
    }

    /// Sends `message` to `queue` without waiting for an answer, once the broker has
    /// confirmed it holds the message, persistently (it survives a broker restart). The queue is declared (durable) if it does not
    /// exist yet, so a cast to a service that has not started yet waits for it.
    pub async fn cast<M: Method>(&self, queue: &str, message: &M) -> Result<(), BusError> {
        self.cast_as(queue, message, Uuid::now_v7()).await
    }

    /// [`Bus::cast`] under `message_id` instead of a fresh one: receivers that key their
    /// work by message id (the taskmanager's task rows) take every copy sent under one id
    /// as one message, so a request repeated after an uncertain outcome resends it safely.
    pub async fn cast_as<M: Method>(
        &self,
        queue: &str,
        message: &M,
        message_id: Uuid,
    ) -> Result<(), BusError> {
        let persistent = BasicProperties::default().with_delivery_mode(PERSISTENT);
        self.cast_with(queue, message, message_id, persistent).await
    }

    /// [`Bus::cast`] for what may be lost in a broker restart because the next one replaces
    /// it (heartbeats): confirmed like any cast, but kept in the broker's memory only.
    pub async fn cast_transient<M: Method>(
        &self,
        queue: &str,
        message: &M,
    ) -> Result<(), BusError> {
        self.cast_with(queue, message, Uuid::now_v7(), BasicProperties::default())
            .await
    }

    async fn cast_with<M: Method>(
        &self,
        queue: &str,
        message: &M,
        message_id: Uuid,
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        let inner = self.inner().await?;
        self.declare_on(&inner, queue).await?;
        let envelope = Envelope::with_id(
            message_id,
            self.sender(),
            message.name(),
            encode(message)?,
            now_ms(),
        );
        self.publish(&inner, queue, &envelope, properties).await
    }

    /// Declares the durable queue `queue` and binds it to the exchange under its own name.
    /// Idempotent; each process does it once per queue.
    pub async fn declare_queue(&self, queue: &str) -> Result<(), BusError> {
        let inner = self.inner().await?;
        self.declare_on(&inner, queue).await
    }

    async fn declare_on(&self, inner: &Inner, queue: &str) -> Result<(), BusError> {
        // A confined guest may declare nothing; the control plane declared what it uses.
        if self.shared.config.confined || inner.declared().contains(queue) {
            return Ok(());
        }
        declare_and_bind(&inner.channel, self.exchange(), queue).await?;
        inner.declared().insert(queue.to_owned());
        Ok(())
    }

    /// How many messages wait in `queue` to be delivered (not counting those delivered and
    /// not yet acknowledged), asked on a channel of its own: a passive declare of a queue
    /// that does not exist fails, and closes the channel it was asked on.
    pub async fn queue_backlog(&self, queue: &str) -> Result<u32, BusError> {
        let inner = self.inner().await?;
        let channel = inner.connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if channel.status().connected()
            && let Err(error) = channel.close(200, "done".into()).await
        {
            tracing::debug!(%error, "closing the channel that asked for a queue's backlog");
        }
        Ok(declared?.message_count())
    }

    /// Deletes a queue and the messages in it (an instance's guest queue, on delete).
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BusError> {
        let inner = self.inner().await?;
        inner
            .channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        inner.declared().remove(queue);
        Ok(())
    }

    /// Deletes an exchange (a benchmark's or a test's own, when it is done).
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), BusError> {
        let inner = self.inner().await?;
        inner
            .channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
        Ok(())
    }

    /// Closes the connection; calls in flight fail with [`BusError::Closed`].
    pub async fn close(&self) {
        if let Err(error) = self.current().connection.close(200, "closing".into()).await {
            tracing::debug!(%error, "closing the bus connection");
        }
    }

    /// Publishes `envelope` to the exchange with routing key `queue`, `mandatory`, and waits
    /// for the broker's confirm.
    async fn publish(
        &self,
        inner: &Inner,
        queue: &str,
        envelope: &Envelope,
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        let sent = self.send(&inner.channel, self.exchange(), queue, envelope, properties);
        confirmation_result(self.confirmed(inner, queue, sent).await?, queue)
    }

    /// The broker's confirm of what `sent` publishes on `inner` (for `queue`), waited for
    /// at most `bus.confirm_timeout_secs`: a broker on a resource alarm confirms nothing.
    /// Nothing is written while the broker says it blocks the connection, so then it fails
    /// at once instead.
    async fn confirmed(
        &self,
        inner: &Inner,
        queue: &str,
        sent: impl Future<Output = Result<PublisherConfirm, BusError>>,
    ) -> Result<Confirmation, BusError> {
        inner.refuse_if_blocked()?;
        let after = Duration::from_secs(self.shared.config.confirm_timeout_secs.max(1));
        tokio::time::timeout(after, async { Ok::<_, BusError>(sent.await?.await?) })
            .await
            .map_err(|_| BusError::Unconfirmed {
                queue: queue.to_owned(),
                after,
            })?
    }

    /// Whether the broker takes publishes now, which a connection that only consumes is
    /// never told: publishes an empty message that no queue takes (the broker drops it)
    /// and waits for its confirm as a cast does. While the broker blocks publishers (a
    /// resource alarm) it fails, with [`BusError::Blocked`] once the broker has said so
    /// (it lets the first publish after the alarm through, then blocks the connection) or
    /// [`BusError::Unconfirmed`].
    pub async fn probe_publishing(&self) -> Result<(), BusError> {
        let inner = self.inner().await?;
        let sent = async {
            Ok(inner
                .channel
                .basic_publish(
                    self.exchange().into(),
                    PROBE_ROUTING_KEY.into(),
                    BasicPublishOptions::default(),
                    &[],
                    BasicProperties::default(),
                )
                .await?)
        };
        match self.confirmed(&inner, PROBE_ROUTING_KEY, sent).await? {
            Confirmation::Nack(_) => Err(BusError::Nacked {
                queue: PROBE_ROUTING_KEY.to_owned(),
            }),
            // The first publish after an alarm goes through; the connection is blocked after.
            _ => inner.refuse_if_blocked(),
        }
    }

    /// Publishes `envelope` on `channel` to `exchange` with routing key `queue`,
    /// `mandatory`, signed when this handle has a key; returns the broker's confirm still
    /// to come (when `channel` has confirms on).
    async fn send(
        &self,
        channel: &Channel,
        exchange: &str,
        queue: &str,
        envelope: &Envelope,
        properties: BasicProperties,
    ) -> Result<PublisherConfirm, BusError> {
        let body = envelope.to_bytes()?;
        let properties = match &self.key {
            Some(key) => properties.with_headers(key.sign(&body)),
            None => properties,
        };
        let properties = properties
            // The broker refuses a user id other than the publisher's login, so consumers
            // can trust it (see `Verifier::Publishers`).
            .with_user_id(self.shared.user.clone());
        Ok(channel
            .basic_publish(
                exchange.into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                properties,
            )
            .await?)
    }
}

/// What the broker's confirm of a `mandatory` publish to `queue` means.
fn confirmation_result(confirmation: Confirmation, queue: &str) -> Result<(), BusError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(BusError::NotListening {
            queue: queue.to_owned(),
        }),
        Confirmation::Nack(_) => Err(BusError::Nacked {
            queue: queue.to_owned(),
        }),
    }
}

/// Reads the certificate files `tls` names, for lapin.
fn tls_config(tls: &TlsConfig) -> Result<OwnedTLSConfig, BusError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| BusError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_chain = match &tls.ca_file {
        Some(path) => Some(String::from_utf8_lossy(&read("the CA file", path)?).into_owned()),
        None => None,
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read("the client certificate", cert)?,
            key: read("the client key", key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Where messages that can never be handled go: a fanout exchange and a durable queue,
/// both named `<exchange>.dead`, so an operator can read what was refused and why it came.
pub fn dead_letter_name(exchange: &str) -> String {
    format!("{exchange}.dead")
}

async fn declare_dead_letters(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    let dead = dead_letter_name(exchange);
    channel
        .exchange_declare(
            dead.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            dead.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares a durable queue that dead-letters what its consumers reject, and binds it to
/// the exchange with its own name as routing key. Every declaration of a queue goes
/// through here, so its arguments are always the same (RabbitMQ refuses a redeclaration
/// with other arguments).
pub(crate) async fn declare_and_bind(
    channel: &Channel,
    exchange: &str,
    queue: &str,
) -> Result<(), lapin::Error> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead_letter_name(exchange).into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
