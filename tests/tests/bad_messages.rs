//! Bad messages published raw into a guest's queue and into the conductor's: malformed
//! MessagePack, a wrong protocol version, an oversized body, no signature, a wrong
//! signature, an unknown method, a payload of the wrong shape. Each goes to the dead-letter
//! queue; the agent still answers and no stored status changes.

mod common;

use common::{Stack, eventually, sql};
use ferrotrove_bus::{Bus, BusConfig, SigningKey};
use ferrotrove_proto::agent::{AgentRequest, AgentResponse};
use ferrotrove_proto::envelope::encode;
use ferrotrove_proto::{Envelope, Secret, queues};
use lapin::BasicProperties;
use std::time::Duration;

/// The messages to try, each as (body, signed with the instance's key?).
fn bad_messages(key: &SigningKey) -> Vec<(Vec<u8>, BasicProperties)> {
    let signed = |body: Vec<u8>| {
        let headers = key.sign(&body);
        (body, BasicProperties::default().with_headers(headers))
    };
    let plain = |body: Vec<u8>| (body, BasicProperties::default());
    let envelope = |method: &str, payload: Vec<u8>| Envelope::new("intruder", method, payload, 0);
    let mut wrong_version = envelope("Ping", encode(&AgentRequest::Ping).unwrap());
    wrong_version.version = 99;
    #[derive(serde::Serialize)]
    enum Unknown {
        Frobnicate,
    }
    let forged_key = SigningKey {
        key_id: key.key_id,
        secret: Secret::new("guessed"),
    };
    let ping = envelope("Ping", encode(&AgentRequest::Ping).unwrap())
        .to_bytes()
        .unwrap();
    vec![
        signed(b"\xc1 this is not MessagePack".to_vec()),
        signed(wrong_version.to_bytes().unwrap()),
        signed(vec![0x90; ferrotrove_bus::MAX_MESSAGE_BYTES + 1]),
        plain(ping.clone()),
        (
            ping.clone(),
            BasicProperties::default().with_headers(forged_key.sign(&ping)),
        ),
        signed(
            envelope("Frobnicate", encode(&Unknown::Frobnicate).unwrap())
                .to_bytes()
                .unwrap(),
        ),
        signed(
            envelope("Prepare", encode(&"not a PrepareRequest").unwrap())
                .to_bytes()
                .unwrap(),
        ),
    ]
}

#[test]
fn bad_messages_are_dead_lettered_and_change_nothing() {
    let stack = Stack::start();
    stack.ftrove_ok(&["create", "m1", "7", "--size", "2", "--wait"]);
    let id = stack.ftrove_json(&["show", "m1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = stack.signing_key(&id);
    let status_query = format!(
        "SELECT server_up, boot_id FROM `{}`.guest_status WHERE instance_id = '{id}'",
        stack.db.name
    );
    let boot_of = |row: &str| row.split('\t').nth(1).map(str::to_owned);
    let boot_before = boot_of(&sql(3306, "ferrotrove", "ferrotrove", &status_query).unwrap());
    assert!(boot_before.is_some(), "no heartbeat stored yet");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connection = lapin::Connection::connect(&stack.bus_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let dead_letters = || async {
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .queue_declare("ferrotrove.dead".into(), options, Default::default())
                .await
                .unwrap()
                .message_count()
        };
        let before = dead_letters().await;
        let messages = bad_messages(&key);
        let sent = 2 * messages.len() as u32;
        for queue in [
            queues::guest(id.parse().unwrap()),
            queues::CONDUCTOR.to_owned(),
        ] {
            for (body, properties) in &messages {
                channel
                    .basic_publish(
                        "ferrotrove".into(),
                        queue.as_str().into(),
                        Default::default(),
                        body,
                        properties.clone(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while dead_letters().await < before + sent && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            dead_letters().await,
            before + sent,
            "every bad message is dead-lettered"
        );

        // The agent still answers a good, signed command.
        let config = BusConfig {
            url: stack.bus_url(),
            exchange: "ferrotrove".into(),
            ..BusConfig::default()
        };
        let bus = Bus::connect(&config, "taskmanager")
            .await
            .unwrap()
            .signed_by(key.clone());
        let pong: AgentResponse = bus
            .call(
                &queues::guest(id.parse().unwrap()),
                &AgentRequest::Ping,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(
            matches!(pong, AgentResponse::Pong(ref info) if info.server_up),
            "{pong:?}"
        );
        bus.close().await;
        connection.close(200, "bye".into()).await.unwrap();
    });

    // Nothing changed: the instance is ACTIVE, its server up, its agent on the same boot.
    assert_eq!(stack.ftrove_json(&["show", "m1"])["status"], "ACTIVE");
    assert!(eventually(Duration::from_secs(5), || {
        sql(3306, "ferrotrove", "ferrotrove", &status_query)
            .is_ok_and(|now| now.starts_with('1') && boot_of(&now) == boot_before)
    }));
    stack.ftrove_ok(&["delete", "m1", "--wait"]);
}
