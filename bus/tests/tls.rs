//! AMQP over TLS against a RabbitMQ node of the test's own, with a TLS listener whose
//! certificate the test's own CA signed.

use ferrotrove_bus::{Bus, BusConfig, BusError, Handler, RequestContext, TlsConfig};
use ferrotrove_proto::{Method, RemoteError};
use ferrotrove_tests::rabbit_node::{RabbitNode, TestCa};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Hello(String);

impl Method for Hello {
    fn name(&self) -> &'static str {
        "Hello"
    }
}

#[derive(Clone)]
struct Greeter;

impl Handler for Greeter {
    type Request = Hello;
    type Response = String;

    async fn handle(&self, request: Hello, ctx: RequestContext) -> Result<String, RemoteError> {
        Ok(format!("hello {} from {}", request.0, ctx.sender))
    }
}

#[tokio::test]
async fn amqps_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::generate(certs.path());
    let node = RabbitNode::start_with_tls(&ca);
    let config = BusConfig {
        url: node.tls_url().unwrap(),
        exchange: "ft-tls".into(),
        tls: TlsConfig {
            ca_file: Some(ca.ca_cert.clone()),
            ..TlsConfig::default()
        },
        ..BusConfig::default()
    };
    config.validate().unwrap();

    let server_bus = Bus::connect(&config, "server").await.expect("TLS connect");
    let client = Bus::connect(&config, "client").await.expect("TLS connect");
    let _server = server_bus.serve("greeter", Greeter).await.unwrap();
    let reply: String = client
        .call("greeter", &Hello("tls".into()), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply, "hello tls from client");
    client.cast("greeter", &Hello("cast".into())).await.unwrap();

    // Nothing but TLS reaches the TLS port: the plain listener is another port.
    let plain = node.ctl(&["list_connections", "ssl"]).unwrap();
    assert_eq!(
        plain.matches("true").count(),
        2,
        "both connections use TLS:\n{plain}"
    );

    // Without the CA, the broker's certificate is not trusted, and the error says so.
    let untrusting = BusConfig {
        tls: TlsConfig::default(),
        ..config.clone()
    };
    let err = Bus::connect(&untrusting, "client")
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, BusError::Connect { .. }), "{err}");
    let shown = err.to_string();
    assert!(shown.to_lowercase().contains("certificate"), "{shown}");
    assert!(
        !shown.contains("guest:guest"),
        "the password stays out: {shown}"
    );

    // A CA file that cannot be read names the file.
    let missing = BusConfig {
        tls: TlsConfig {
            ca_file: Some(certs.path().join("nope.pem")),
            ..TlsConfig::default()
        },
        ..config.clone()
    };
    let err = Bus::connect(&missing, "client")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    server_bus.close().await;
    client.close().await;
}
