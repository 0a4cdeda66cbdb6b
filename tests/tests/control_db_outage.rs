//! The real `ftrove-api` while its control DB cannot be reached: on a MariaDB server of
//! the test's own, stopped (the port refuses connections) and then frozen (the port
//! accepts connections that nobody answers, as with a hung server or a lost host). List,
//! show and create get 503 `serviceUnavailable` saying the control database is
//! unreachable (after `store.timeout_secs` at most, not hanging), nothing is cast to the
//! taskmanager meanwhile, and once the server is back the same requests succeed.

use ferrotrove_tests::mariadb_server::MariadbServer;
use ferrotrove_tests::{RabbitVhost, binary, free_port};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXCHANGE: &str = "ferrotrove";

/// `ftrove-api` as a child process, stopped on drop.
struct Api {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Api {
    fn start(dir: &Path, config: &str) -> Api {
        let path = dir.join("api.toml");
        std::fs::write(&path, config).expect("write api.toml");
        let log = dir.join("api.log");
        let out = std::fs::File::create(&log).expect("api.log");
        let child = Command::new(binary("ftrove-api"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("api.log"))
            .stderr(out)
            .spawn()
            .expect("start ftrove-api");
        let port = config
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|rest| rest.trim_end_matches('"').parse::<u16>().ok())
            .expect("a listen line");
        Api {
            child,
            log,
            url: format!("http://127.0.0.1:{port}/v1.0/outage-tenant"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- api.log\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `taskmanager` queue, declared as the bus declares it, so every cast the API makes
/// lands there to be counted.
struct TaskQueue {
    runtime: tokio::runtime::Runtime,
    url: String,
}

impl TaskQueue {
    fn declare(url: &str) -> TaskQueue {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let config = ferrotrove_bus::BusConfig {
                url: url.to_owned(),
                exchange: EXCHANGE.to_owned(),
                ..Default::default()
            };
            let bus = ferrotrove_bus::Bus::connect(&config, "test")
                .await
                .expect("connect to RabbitMQ");
            bus.declare_queue(ferrotrove_proto::queues::TASKMANAGER)
                .await
                .expect("declare the taskmanager queue");
            bus.close().await;
        });
        TaskQueue {
            runtime,
            url: url.to_owned(),
        }
    }

    /// How many casts wait in the queue (the broker's count, asked with a passive declare).
    fn casts(&self) -> u32 {
        self.runtime.block_on(async {
            let connection = lapin::Connection::connect(&self.url, Default::default())
                .await
                .expect("connect to RabbitMQ");
            let channel = connection.create_channel().await.expect("a channel");
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let count = channel
                .queue_declare(
                    ferrotrove_proto::queues::TASKMANAGER.into(),
                    options,
                    Default::default(),
                )
                .await
                .expect("the taskmanager queue")
                .message_count();
            let _ = connection.close(0, "done".into()).await;
            count
        })
    }
}

/// The three requests, as a client sends them; each returns (status, body).
struct Requests<'a> {
    http: Client,
    api: &'a Api,
}

impl Requests<'_> {
    fn answer(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().expect("a body");
        assert!(
            json || status.is_success(),
            "a {status} must be JSON: {text}"
        );
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    fn list(&self) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}/instances", self.api.url)).send();
        Self::answer(response.expect("the API answers the list"))
    }

    fn show(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/instances/{id}", self.api.url))
            .send();
        Self::answer(response.expect("the API answers the show"))
    }

    fn create(&self, name: &str) -> (StatusCode, Value) {
        let body = json!({"instance": {"name": name, "flavorRef": "7", "volume": {"size": 1}}});
        let response = self
            .http
            .post(format!("{}/instances", self.api.url))
            .json(&body)
            .send();
        Self::answer(response.expect("the API answers the create"))
    }

    /// List, show and create all succeed; returns the new instance's id.
    fn all_succeed(&self, shown: &str, name: &str) -> String {
        let (status, body) = self.list();
        assert_eq!(status, StatusCode::OK, "list: {body}");
        assert!(
            body["instances"]
                .as_array()
                .is_some_and(|all| all.iter().any(|i| i["id"] == shown)),
            "{body}"
        );
        let (status, body) = self.show(shown);
        assert_eq!(status, StatusCode::OK, "show: {body}");
        let (status, body) = self.create(name);
        assert_eq!(status, StatusCode::OK, "create: {body}");
        body["instance"]["id"]
            .as_str()
            .expect("the new instance's id")
            .to_owned()
    }

    /// List, show and create all get 503 saying the control database is unreachable.
    fn all_unavailable(&self, shown: &str, name: &str) {
        for (what, (status, body)) in [
            ("list", self.list()),
            ("show", self.show(shown)),
            ("create", self.create(name)),
        ] {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
            let fault = &body["serviceUnavailable"];
            assert_eq!(fault["code"], 503, "{what}: {body}");
            let message = fault["message"].as_str().unwrap_or_default();
            assert_eq!(
                message, "The control database is unreachable; try again later.",
                "{what}: {body}"
            );
        }
    }
}

#[test]
fn requests_get_503_while_the_control_db_is_unreachable_and_succeed_once_it_is_back() {
    let mut db = MariadbServer::start();
    let vhost = RabbitVhost::create();
    let queue = TaskQueue::declare(&vhost.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let api = Api::start(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\n\n[auth]\nmode = \"none\"\n\n\
             [bus]\nurl = \"{}\"\nexchange = \"{EXCHANGE}\"\n\n\
             [store]\nurl = \"{}\"\ndatabase = \"ftrove_outage\"\ntimeout_secs = 3\n",
            vhost.url(),
            db.url()
        ),
    );
    // A generous limit, far above the store's 3 s: what hangs fails the test, late.
    let requests = Requests {
        http: Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client"),
        api: &api,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !requests
        .http
        .get(format!("{}/flavors", api.url))
        .send()
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(
            Instant::now() < deadline,
            "the API did not come up:\n{}",
            api.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, body) = requests.create("m1");
    assert_eq!(status, StatusCode::OK, "{body}");
    let m1 = body["instance"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(queue.casts(), 1, "the create was cast");

    // The server stops: connections are refused.
    db.stop();
    requests.all_unavailable(&m1, "m2");
    assert_eq!(
        queue.casts(),
        1,
        "nothing cast while the control DB is down"
    );

    // Started again: the same requests succeed (the pool's dead connections are dropped).
    db.boot();
    requests.all_succeed(&m1, "m2");
    assert_eq!(queue.casts(), 2, "the create was cast");

    // The server freezes: connections are accepted and never answered, so only the
    // store's time limit stops the API from waiting for ever.
    db.freeze();
    requests.all_unavailable(&m1, "m3");
    assert_eq!(queue.casts(), 2, "nothing cast while the control DB hangs");
    db.thaw();
    requests.all_succeed(&m1, "m3");
    assert_eq!(queue.casts(), 3, "the create was cast");

    // What went wrong is in the API's log, without the control DB's URL.
    let log = api.log();
    assert!(log.contains("control DB unreachable"), "{log}");
    assert!(!log.contains(&db.url()), "{log}");
}
