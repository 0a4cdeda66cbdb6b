//! A broker that blocks publishers, as RabbitMQ does on a memory or disk alarm, against a
//! node of the test's own: a cast fails within the confirm timeout as unavailable instead
//! of hanging its caller (an API request, an agent's heartbeat loop), casts and calls fail
//! at once once the broker has said it blocks the connection, a publishing probe
//! tells a connection that only consumes, and the same connections publish again once the
//! alarm clears.

use ferrotrove_bus::{Bus, BusConfig, BusError, Handler, RequestContext};
use ferrotrove_proto::{Method, RemoteError};
use ferrotrove_tests::rabbit_node::RabbitNode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
struct Note(String);

impl Method for Note {
    fn name(&self) -> &'static str {
        "Note"
    }
}

/// Counts the notes it is handed.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Handler for Counter {
    type Request = Note;
    type Response = ();

    async fn handle(&self, _note: Note, _ctx: RequestContext) -> Result<(), RemoteError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_cast_to_a_broker_blocking_publishers_fails_within_the_confirm_timeout() {
    let node = RabbitNode::start();
    let config = BusConfig {
        url: node.url(),
        exchange: "ft-alarm".into(),
        confirm_timeout_secs: 2,
        ..BusConfig::default()
    };
    config.validate().unwrap();
    let bus = Bus::connect(&config, "caster").await.unwrap();
    let counter = Counter::default();
    let consumer = Bus::connect(&config, "consumer").await.unwrap();
    let _server = consumer.serve("notes", counter.clone()).await.unwrap();
    bus.cast("notes", &Note("before".into()))
        .await
        .expect("a broker without alarms confirms");
    consumer
        .probe_publishing()
        .await
        .expect("a broker without alarms takes publishes");

    // A memory high watermark of 0 raises the memory alarm at once: publishers are blocked.
    node.ctl(&["set_vm_memory_high_watermark", "0"]).unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        bus.cast("notes", &Note("during".into())),
    )
    .await
    .expect("the cast hung on the blocked broker")
    .expect_err("a blocked broker confirms nothing");
    assert!(matches!(error, BusError::Unconfirmed { .. }), "{error}");
    // Once the broker has said it blocks the connection, a cast fails at once.
    let error = tokio::time::timeout(
        Duration::from_secs(1),
        bus.cast("notes", &Note("during".into())),
    )
    .await
    .expect("a cast on a connection known to be blocked waited")
    .expect_err("a blocked broker confirms nothing");
    assert!(matches!(error, BusError::Blocked), "{error}");
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("alarm"), "{error}");
    // So does a call on that connection, instead of waiting out its deadline.
    let error = tokio::time::timeout(
        Duration::from_secs(1),
        bus.call::<_, ()>("notes", &Note("call".into()), Duration::from_secs(30)),
    )
    .await
    .expect("a call on a connection known to be blocked waited")
    .expect_err("a blocked broker takes no calls");
    assert!(matches!(error, BusError::Blocked), "{error}");
    // A connection that only consumes is not told; its probes find out (the broker lets
    // a connection's first publish after the alarm through, then blocks it).
    let started = Instant::now();
    loop {
        let probed = tokio::time::timeout(Duration::from_secs(60), consumer.probe_publishing())
            .await
            .expect("the probe hung on the blocked broker");
        match probed {
            Err(BusError::Blocked | BusError::Unconfirmed { .. }) => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the probe never found the broker blocking: {other:?}"
            ),
        }
    }

    // The alarm clears: the same connection publishes again, and its casts arrive.
    node.ctl(&["set_vm_memory_high_watermark", "0.4"]).unwrap();
    let started = Instant::now();
    loop {
        match bus.cast("notes", &Note("after".into())).await {
            Ok(()) => break,
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("still blocked: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the broker never took casts again: {error}"),
        }
    }
    consumer
        .probe_publishing()
        .await
        .expect("the broker takes publishes again");
    let started = Instant::now();
    // "before" and "after" (and "during", if the broker took it once unblocked).
    while counter.0.load(Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the casts confirmed were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.close().await;
    consumer.close().await;
}

#[test]
fn a_confirm_timeout_of_zero_is_refused() {
    let config = BusConfig {
        confirm_timeout_secs: 0,
        ..BusConfig::default()
    };
    let refused = config.validate().expect_err("refused");
    assert!(refused.contains("bus.confirm_timeout_secs"), "{refused}");
}
