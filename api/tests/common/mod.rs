//! A private world for each test: the API running in-process on 127.0.0.1:0, its own
//! control database (`ft_test_<random>`) and its own RabbitMQ vhost (`ft-test-<random>`),
//! with the `taskmanager` queue consumed by the test so it can see every cast.
//!
//! The harness's guards drop the database and the vhost when the test ends, also when it
//! fails.

#![allow(dead_code)]

use ferrotrove_api::ApiConfig;
use ferrotrove_api::config::{AuthConfig, AuthMode};
use ferrotrove_bus::BusConfig;
use ferrotrove_proto::Envelope;
use ferrotrove_proto::agent::ServerStatus;
use ferrotrove_proto::conductor::{Heartbeat, HostStats};
use ferrotrove_proto::envelope::decode;
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::taskmanager::TaskRequest;
use ferrotrove_store::{Store, StoreConfig};
use ferrotrove_tests::{ControlDb, RabbitVhost};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

pub const EXCHANGE: &str = "ferrotrove";
pub const TENANT: &str = "demo-project";

/// The `taskmanager` queue, consumed by the test.
pub struct TaskQueue {
    consumer: Consumer,
    _connection: Connection,
}

impl TaskQueue {
    async fn open(url: &str) -> TaskQueue {
        // The queue as the bus declares it (same arguments), then a raw consumer on it.
        let bus_config = BusConfig {
            url: url.to_owned(),
            exchange: EXCHANGE.to_owned(),
            ..BusConfig::default()
        };
        let bus = ferrotrove_bus::Bus::connect(&bus_config, "test")
            .await
            .expect("connect to RabbitMQ");
        let queue = ferrotrove_proto::queues::TASKMANAGER;
        bus.declare_queue(queue)
            .await
            .expect("declare the taskmanager queue");
        bus.close().await;
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        let consumer = channel
            .basic_consume(
                queue.into(),
                "test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        TaskQueue {
            consumer,
            _connection: connection,
        }
    }

    /// The next cast, decoded from its envelope.
    pub async fn next(&mut self) -> TaskRequest {
        self.next_with_id().await.0
    }

    /// The next cast, and the message id it was sent under (a task's id).
    pub async fn next_with_id(&mut self) -> (TaskRequest, uuid::Uuid) {
        let delivery = tokio::time::timeout(Duration::from_secs(10), self.consumer.next())
            .await
            .expect("a cast to the taskmanager within 10 s")
            .expect("consumer open")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let envelope = Envelope::from_bytes(&delivery.data).expect("an envelope");
        assert_eq!(envelope.sender, ferrotrove_api::BUS_SENDER);
        let task: TaskRequest = decode(&envelope.payload).expect("a TaskRequest");
        assert_eq!(envelope.method, ferrotrove_proto::Method::name(&task));
        (task, envelope.message_id)
    }

    /// Asserts that nothing more was cast (within a short wait).
    pub async fn assert_empty(&mut self) {
        if let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(300), self.consumer.next()).await
        {
            let envelope = Envelope::from_bytes(&delivery.data).unwrap();
            panic!("unexpected cast: {}", envelope.method);
        }
    }
}

/// The API under test and what it talks to.
pub struct TestApi {
    /// `http://127.0.0.1:<port>`.
    pub root: String,
    pub http: reqwest::Client,
    /// The same control DB, for setting up states the test needs.
    pub store: Store,
    pub tasks: TaskQueue,
    pub vhost: String,
    /// Sent as X-Auth-Token by [`TestApi::send`]; `notused` (what `openstack
    /// --os-auth-type none` sends) unless the test says otherwise.
    pub token: String,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), ferrotrove_api::RunError>>>,
    // Dropped last, in this order: the API is stopped first.
    _vhost: RabbitVhost,
    _db: ControlDb,
}

impl TestApi {
    /// The API with `auth.mode = "none"`.
    pub async fn start() -> TestApi {
        let auth = AuthConfig {
            mode: AuthMode::None,
            tokens_file: None,
        };
        TestApi::start_with(auth, "notused").await
    }

    /// The API with `auth`, sending `token` (which must be admitted, since the API's
    /// readiness is probed with it).
    pub async fn start_with(auth: AuthConfig, token: &str) -> TestApi {
        let db = ControlDb::new();
        let vhost = RabbitVhost::create();
        let store_config = StoreConfig {
            url: db.server_url().to_owned(),
            database: db.name.clone(),
            pool_max: 4,
            ..StoreConfig::default()
        };
        let store = Store::connect(&store_config)
            .await
            .expect("connect to the test MariaDB");
        let tasks = TaskQueue::open(&vhost.url()).await;
        let config = ApiConfig {
            store: store_config,
            bus: BusConfig {
                url: vhost.url(),
                exchange: EXCHANGE.to_owned(),
                ..BusConfig::default()
            },
            heartbeat_expiry_secs: 30,
            auth,
            ..ApiConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ferrotrove_api::run(config, listener, async move {
            let _ = stop_rx.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let api = TestApi {
            root,
            http,
            store,
            tasks,
            vhost: vhost.name.clone(),
            token: token.to_owned(),
            stop_tx: Some(stop_tx),
            server: Some(server),
            _vhost: vhost,
            _db: db,
        };
        // Requests queue on the bound listener until the API has connected and serves.
        let (status, _) = api.get("/flavors").await;
        assert_eq!(status, StatusCode::OK, "the API serves");
        api
    }

    /// Stops the API and waits for it; it must stop cleanly.
    pub async fn stop(mut self) {
        if let Some(stop_tx) = self.stop_tx.take() {
            let _ = stop_tx.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), server).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "the API stops cleanly: {result:?}"
            );
        }
    }

    /// `http://.../v1.0/<tenant><path>`.
    pub fn url(&self, tenant: &str, path: &str) -> String {
        format!("{}/v1.0/{tenant}{path}", self.root)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .header("X-Auth-Token", &self.token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let json_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.unwrap();
        if !status.is_success() {
            assert!(json_type, "a {status} must be JSON: {text}");
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(TENANT, path))).await
    }

    pub async fn get_as(&self, tenant: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(tenant, path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(TENANT, path)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(self.url(TENANT, path)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(TENANT, path))).await
    }

    /// Creates a standalone instance and takes its cast off the queue.
    pub async fn create_instance(&mut self, name: &str) -> Uuid {
        let (status, body) = self
            .post("/instances", serde_json::json!({"instance": {"name": name, "flavorRef": 7, "volume": {"size": 2}}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = instance_id(&body);
        let (task, task_id) = self.tasks.next_with_id().await;
        assert!(
            matches!(task, TaskRequest::CreateInstance { instance_id, .. } if instance_id == id)
        );
        // Recorded as sent before the answer, so the sweep for lost creates never acts on it.
        let unsent = self.store.unsent_creates(Duration::ZERO).await.unwrap();
        assert!(unsent.iter().all(|c| c.task != task_id), "{unsent:?}");
        id
    }

    /// Inserts an instance straight into the control DB (no request, no cast).
    pub async fn insert_instance(&self, name: &str) -> Uuid {
        let new = ferrotrove_store::NewInstance {
            id: Uuid::new_v4(),
            tenant_id: TENANT.to_owned(),
            name: name.to_owned(),
            flavor_id: "7".to_owned(),
            volume_size: 1,
            datastore: "mariadb".to_owned(),
            datastore_version: "10.11".to_owned(),
            status: InstanceStatus::Build,
            replica_of: None,
            create_task: None,
        };
        self.store.insert_instance(&new).await.unwrap().id
    }

    /// Records a running task about `instance` that builds or changes `instances` (a
    /// replica request: its replicas), at `step`, as a live taskmanager (`tm-test`) records
    /// it: claimed, with a lease no test outlives. Returns its id.
    pub async fn running_task(
        &self,
        kind: &str,
        instance: Uuid,
        instances: &[Uuid],
        step: &str,
    ) -> Uuid {
        let task = Uuid::now_v7();
        self.store
            .claim_task(
                task,
                kind,
                instance,
                instances,
                "tm-test",
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        self.store
            .record_task_step(task, "tm-test", step)
            .await
            .unwrap();
        task
    }

    /// The legacy shell's `GET /auth`, with `X-Auth-User: user` and `X-Auth-Key: key`.
    pub async fn handshake(&self, user: &str, key: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/auth", self.root))
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key)
            .send()
            .await
            .unwrap()
    }

    /// Makes an instance ACTIVE with a fresh heartbeat from a running server, as the
    /// taskmanager and conductor would.
    pub async fn make_active(&self, id: Uuid) {
        self.store
            .set_status(id, InstanceStatus::Active, None)
            .await
            .unwrap();
        let heartbeat = Heartbeat {
            instance_id: id,
            boot_id: Uuid::now_v7(),
            seq: 1,
            server: ServerStatus {
                up: true,
                ..Default::default()
            },
            host: HostStats::default(),
            progress: None,
        };
        assert!(self.store.record_heartbeat(&heartbeat).await.unwrap());
    }
}

/// The `instance.id` of a response.
pub fn instance_id(body: &Value) -> Uuid {
    body["instance"]["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("no instance id in {body}"))
}

/// Asserts a Trove fault: the status, the fault's name, its code, and a message.
pub fn assert_fault(response: &(StatusCode, Value), status: u16, name: &str) -> String {
    let (got, body) = response;
    assert_eq!(got.as_u16(), status, "{body}");
    let fault = &body[name];
    assert_eq!(fault["code"], status, "fault {name} in {body}");
    let message = fault["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a message in {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}
