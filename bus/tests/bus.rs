//! The bus against the real local RabbitMQ, each test in a vhost of its own.

use ferrotrove_bus::{Bus, BusConfig, BusError, Handler, RequestContext, Server};
use ferrotrove_proto::envelope::encode;
use ferrotrove_proto::{Envelope, ErrorKind, Method, RemoteError};
use ferrotrove_tests::RabbitVhost;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
enum Echo {
    Say(String),
    Fail(String),
    Sleep(u64),
    Count,
    /// Waits until the test adds a permit to the server's `held` semaphore.
    Hold,
}

impl Method for Echo {
    fn name(&self) -> &'static str {
        match self {
            Echo::Say(_) => "Say",
            Echo::Fail(_) => "Fail",
            Echo::Sleep(_) => "Sleep",
            Echo::Count => "Count",
            Echo::Hold => "Hold",
        }
    }
}

/// A method the echo server does not know.
#[derive(Debug, Serialize, Deserialize)]
enum Newer {
    Frobnicate,
}

impl Method for Newer {
    fn name(&self) -> &'static str {
        "Frobnicate"
    }
}

#[derive(Clone)]
struct EchoServer {
    counted: Arc<AtomicUsize>,
    held: Arc<tokio::sync::Semaphore>,
}

impl Default for EchoServer {
    fn default() -> Self {
        EchoServer {
            counted: Arc::default(),
            held: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Handler for EchoServer {
    type Request = Echo;
    type Response = String;

    async fn handle(&self, request: Echo, ctx: RequestContext) -> Result<String, RemoteError> {
        match request {
            Echo::Say(s) => Ok(format!("{s} from {}", ctx.sender)),
            Echo::Fail(s) => Err(RemoteError::new(ErrorKind::Conflict, s)),
            Echo::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok("slept".into())
            }
            Echo::Count => {
                self.counted.fetch_add(1, Ordering::SeqCst);
                Ok(String::new())
            }
            Echo::Hold => {
                let permit = self.held.acquire().await;
                permit
                    .map(|p| p.forget())
                    .map_err(|_| RemoteError::new(ErrorKind::Internal, "the hold was closed"))?;
                Ok("released".into())
            }
        }
    }
}

async fn bus(vhost: &RabbitVhost, sender: &str) -> Bus {
    let config = BusConfig {
        url: vhost.url(),
        exchange: "ft-test".into(),
        prefetch: 8,
        ..BusConfig::default()
    };
    Bus::connect(&config, sender)
        .await
        .expect("connect to the local RabbitMQ")
}

/// An echo server on queue `echo` (its connection, and what serves) and a client, all on
/// `vhost`.
async fn echo_and_client(vhost: &RabbitVhost) -> ((Bus, Server), Bus) {
    let server_bus = bus(vhost, "server").await;
    let server = server_bus
        .serve("echo", EchoServer::default())
        .await
        .unwrap();
    ((server_bus, server), bus(vhost, "client").await)
}

#[tokio::test]
async fn call_round_trip_and_typed_errors() {
    let vhost = RabbitVhost::create();
    let (_server, client) = echo_and_client(&vhost).await;

    let reply: String = client
        .call("echo", &Echo::Say("hi".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, "hi from client");

    let err = client
        .call::<_, String>(
            "echo",
            &Echo::Fail("not a replica".into()),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.remote().unwrap().message, "not a replica");

    let err = client
        .call::<_, String>("echo", &Newer::Frobnicate, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownMethod, "{err}");

    // Many calls in flight on one connection, each gets its own reply.
    let calls = (0..50).map(|i| {
        let client = client.clone();
        async move {
            client
                .call::<_, String>("echo", &Echo::Say(i.to_string()), Duration::from_secs(5))
                .await
        }
    });
    let replies = futures::future::join_all(calls).await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("{i} from client"));
    }
}

/// A returned request comes with a confirm of the calls' channel, not always its own (one
/// frame acks several publishes); whichever call finds it, it must settle its own call
/// only, and the answered calls must still get their replies.
#[tokio::test]
async fn returned_calls_settle_their_own_calls_only() {
    let vhost = RabbitVhost::create();
    let (_server, client) = echo_and_client(&vhost).await;
    // Slow answers keep the answered calls waiting (and looking for returns) while the
    // calls to nobody come back.
    let answered = (0..10).map(|_| {
        let client = client.clone();
        async move {
            client
                .call::<_, String>("echo", &Echo::Sleep(200), Duration::from_secs(30))
                .await
        }
    });
    let returned = (0..10).map(|i| {
        let client = client.clone();
        async move {
            client
                .call::<_, String>(
                    &format!("guestagent.nobody-{i}"),
                    &Echo::Say("x".into()),
                    Duration::from_secs(30),
                )
                .await
        }
    });
    let (answered, returned) = tokio::join!(
        futures::future::join_all(answered),
        futures::future::join_all(returned)
    );
    for reply in answered {
        assert_eq!(reply.unwrap(), "slept");
    }
    for (i, err) in returned.into_iter().enumerate() {
        let err = err.unwrap_err();
        match err {
            BusError::NotListening { queue } => assert_eq!(queue, format!("guestagent.nobody-{i}")),
            other => panic!("call {i}: {other}"),
        }
    }
}

/// Replies are published with confirms: one the broker refuses (its reply queue is full
/// and rejects publishes) is counted, and the server goes on answering.
#[tokio::test]
async fn a_reply_the_broker_refuses_is_counted() {
    let vhost = RabbitVhost::create();
    let ((_server_bus, server), client) = echo_and_client(&vhost).await;
    let conn = lapin::Connection::connect(&vhost.url(), Default::default())
        .await
        .unwrap();
    let raw = conn.create_channel().await.unwrap();
    let mut full = lapin::types::FieldTable::default();
    full.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(0));
    full.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    raw.queue_declare("full".into(), Default::default(), full)
        .await
        .unwrap();
    let request = Envelope::new("raw", "Say", encode(&Echo::Say("hi".into())).unwrap(), 0);
    raw.basic_publish(
        "ft-test".into(),
        "echo".into(),
        Default::default(),
        &request.to_bytes().unwrap(),
        lapin::BasicProperties::default()
            .with_reply_to("full".into())
            .with_correlation_id(request.message_id.to_string().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.refused_replies() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.refused_replies(), 1);
    let reply: String = client
        .call("echo", &Echo::Say("again".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, "again from client");
    assert_eq!(server.refused_replies(), 1);
    assert_eq!(server.rejected(), 0);
    conn.close(200, "bye".into()).await.unwrap();
}

#[tokio::test]
async fn call_to_nobody_fails_at_once() {
    let vhost = RabbitVhost::create();
    let client = bus(&vhost, "client").await;
    let started = Instant::now();
    let err = client
        .call::<_, String>(
            "guestagent.nobody",
            &Echo::Say("x".into()),
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NotListening { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the deadline instead of failing at once"
    );
}

#[tokio::test]
async fn call_times_out_and_late_reply_is_dropped() {
    let vhost = RabbitVhost::create();
    let (_server, client) = echo_and_client(&vhost).await;
    let err = client
        .call::<_, String>("echo", &Echo::Sleep(1500), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The late reply did not confuse the next call.
    let reply: String = client
        .call("echo", &Echo::Say("after".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, "after from client");
}

#[tokio::test]
async fn casts_wait_for_their_consumer_and_garbage_is_survived() {
    let vhost = RabbitVhost::create();
    let client = bus(&vhost, "client").await;
    // Cast before anyone serves: the queue is declared by the cast, so nothing is lost.
    for _ in 0..20 {
        client.cast("work", &Echo::Count).await.unwrap();
    }
    // Garbage and a wrong protocol version, published raw.
    let conn = lapin::Connection::connect(&vhost.url(), Default::default())
        .await
        .unwrap();
    let raw = conn.create_channel().await.unwrap();
    for body in [b"\xc1 not msgpack".to_vec(), {
        let mut env = Envelope::new("intruder", "Count", encode(&Echo::Count).unwrap(), 0);
        env.version = 99;
        env.to_bytes().unwrap()
    }] {
        raw.basic_publish(
            "ft-test".into(),
            "work".into(),
            Default::default(),
            &body,
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let server = EchoServer::default();
    let counted = server.counted.clone();
    let server_bus = bus(&vhost, "server").await;
    let server = server_bus.serve("work", server).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted.load(Ordering::SeqCst), 20);
    // Still serving after the bad messages.
    client.cast("work", &Echo::Count).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted.load(Ordering::SeqCst) < 21 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted.load(Ordering::SeqCst), 21);
    // Both bad messages were dead-lettered and counted.
    assert_eq!(server.rejected(), 2);
    let dead = raw
        .queue_declare(
            ferrotrove_bus::dead_letter_name("ft-test").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead.message_count(), 2);
    conn.close(200, "bye".into()).await.unwrap();
}

/// Acks are coalesced, yet a message still being handled holds back no later ack: with a
/// prefetch of 8 and the first message held, 40 later ones are all handled (each acked, or
/// the prefetch window would fill after 7), and once the held one is released every
/// message is settled: none comes back when the consumer's connection closes.
#[tokio::test]
async fn acks_are_coalesced_and_a_held_message_holds_back_nothing() {
    let vhost = RabbitVhost::create();
    let client = bus(&vhost, "client").await;
    client.declare_queue("work").await.unwrap();
    let server = EchoServer::default();
    let (counted, held) = (server.counted.clone(), server.held.clone());
    let server_bus = bus(&vhost, "server").await;
    let serving = server_bus.serve("work", server).await.unwrap();
    client.cast("work", &Echo::Hold).await.unwrap();
    for _ in 0..40 {
        client.cast("work", &Echo::Count).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted.load(Ordering::SeqCst) < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counted.load(Ordering::SeqCst),
        40,
        "later messages were held back behind the held one"
    );
    held.add_permits(1);
    // Everything handled is acked while the consumer still runs: the broker holds nothing,
    // ready or unacknowledged (polled: the held message's ack follows its release).
    let counts = || queue_counts(&vhost, "work");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = counts();
    while seen != "0 0" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = counts();
    }
    assert_eq!(seen, "0 0", "messages ready, unacknowledged");
    serving.stop().await;
}

/// Ready and unacknowledged messages of `queue` in `vhost`, as "READY UNACKED".
fn queue_counts(vhost: &RabbitVhost, queue: &str) -> String {
    ferrotrove_tests::rabbitmqctl(&[
        "list_queues",
        "-p",
        &vhost.name,
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ])
    .unwrap()
    .lines()
    .find(|line| line.split_whitespace().next() == Some(queue))
    .map(|line| {
        line.split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    })
    .unwrap_or_default()
}

/// Stopping a server (a daemon's SIGTERM) lets the message being handled finish and be
/// acked before the channel closes: closing the connection right after leaves nothing to
/// deliver again.
#[tokio::test]
async fn stop_lets_the_message_being_handled_finish_and_be_acked() {
    let vhost = RabbitVhost::create();
    let client = bus(&vhost, "client").await;
    client.declare_queue("work").await.unwrap();
    let server = EchoServer::default();
    let held = server.held.clone();
    let server_bus = bus(&vhost, "server").await;
    let serving = server_bus.serve("work", server).await.unwrap();
    client.cast("work", &Echo::Hold).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue_counts(&vhost, "work") != "0 1" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        queue_counts(&vhost, "work"),
        "0 1",
        "the message is being handled"
    );
    // Released while the server is stopping (well within `STOP_DRAIN`).
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.add_permits(1);
    });
    serving.stop().await;
    server_bus.close().await;
    release.await.unwrap();
    assert_eq!(queue_counts(&vhost, "work"), "0 0", "ready, unacknowledged");
}

#[tokio::test]
async fn call_to_a_queue_nobody_consumes_times_out() {
    let vhost = RabbitVhost::create();
    let client = bus(&vhost, "client").await;
    client.declare_queue("orphan").await.unwrap();
    let started = Instant::now();
    let err = client
        .call::<_, String>("orphan", &Echo::Say("x".into()), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // And the bus still works for the next call.
    let server_bus = bus(&vhost, "server").await;
    let _server = server_bus
        .serve("echo", EchoServer::default())
        .await
        .unwrap();
    let reply: String = client
        .call("echo", &Echo::Say("next".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, "next from client");
}

/// Closes every connection of `vhost` from the broker's side, as a broker restart would.
fn drop_connections(vhost: &RabbitVhost) -> usize {
    let listing = ferrotrove_tests::rabbitmqctl(&["list_connections", "pid", "vhost"]).unwrap();
    let pids: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, v)| v.trim() == vhost.name)
        .map(|(pid, _)| pid.trim())
        .collect();
    for pid in &pids {
        ferrotrove_tests::rabbitmqctl(&["close_connection", pid, "test: broker going away"])
            .unwrap();
    }
    pids.len()
}

#[tokio::test]
async fn a_lost_connection_fails_calls_fast_and_both_sides_reconnect() {
    let vhost = RabbitVhost::create();
    let server_bus = bus(&vhost, "server").await;
    let client = bus(&vhost, "client").await;
    let echo = EchoServer::default();
    let counted = echo.counted.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let server_bus = server_bus.clone();
        async move {
            ferrotrove_bus::daemon::serve_until_shutdown(
                &server_bus,
                "echo",
                echo,
                None,
                None,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .call::<_, String>("echo", &Echo::Say("up".into()), Duration::from_secs(2))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server never came up");
    }

    // A call in flight when the connection goes fails at once, as retryable.
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call::<_, String>("echo", &Echo::Sleep(20_000), Duration::from_secs(30))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(drop_connections(&vhost) >= 2);
    // Failed by the lost connection, not by its 30 s deadline (nor answered after 20 s).
    let err = slow.await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.is_connection_lost(), "{err}");

    // Both sides come back by themselves: the client on its next call, the server by
    // serving again; casts sent after the loss are handled.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .call::<_, String>("echo", &Echo::Say("again".into()), Duration::from_secs(2))
            .await
        {
            Ok(reply) => {
                assert_eq!(reply, "again from client");
                break;
            }
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                assert!(Instant::now() < deadline, "no reconnection: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for _ in 0..10 {
        client.cast("echo", &Echo::Count).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted.load(Ordering::SeqCst), 10);
    let _ = stop_tx.send(());
    serving.await.unwrap();
}

#[tokio::test]
async fn only_messages_signed_with_the_right_key_are_handled_and_replies_are_signed() {
    use ferrotrove_bus::{SigningKey, Verifier};
    use ferrotrove_proto::Secret;
    let vhost = RabbitVhost::create();
    let key = SigningKey {
        key_id: uuid::Uuid::now_v7(),
        secret: Secret::new("instance secret"),
    };
    let server_bus = bus(&vhost, "guest").await;
    let server = server_bus
        .serve_verified(
            "guest",
            EchoServer::default(),
            Some(Verifier::Key(key.clone())),
        )
        .await
        .unwrap();
    let client = bus(&vhost, "taskmanager").await;

    let reply: String = client
        .signed_by(key.clone())
        .call("guest", &Echo::Say("signed".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, "signed from taskmanager");

    // Unsigned, or signed with another secret under the same key id: never handled.
    let unsigned = client
        .call::<_, String>("guest", &Echo::Say("x".into()), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(unsigned, BusError::Timeout { .. }), "{unsigned}");
    let forged = SigningKey {
        key_id: key.key_id,
        secret: Secret::new("guessed"),
    };
    let err = client
        .signed_by(forged)
        .call::<_, String>("guest", &Echo::Say("x".into()), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert_eq!(server.rejected(), 2);

    // A peer that does not sign its replies is not believed.
    let _plain = server_bus
        .serve("plain", EchoServer::default())
        .await
        .unwrap();
    let err = client
        .signed_by(key)
        .call::<_, String>("plain", &Echo::Say("x".into()), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Protocol(_)), "{err}");
}
