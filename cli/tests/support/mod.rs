//! A fake Trove v1.0 API for the `ftrove` integration tests: a std `TcpListener` on port 0
//! whose thread answers each HTTP request with what the test's handler returns, and records
//! every request (method, path under the tenant, headers, body) for the test to check.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// The tenant part of the fake's URL.
pub const TENANT_PREFIX: &str = "/v1.0/demo";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path under `/v1.0/demo`, e.g. `/instances/m1`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }

    /// `"GET /instances/m1"`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: String::new(),
        }
    }

    /// Trove's 404: `{"itemNotFound":{"code":404,"message":...}}`.
    pub fn not_found() -> Reply {
        Reply::json(
            404,
            json!({"itemNotFound": {"code": 404, "message": "The resource could not be found."}}),
        )
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running fake API.
pub struct FakeApi {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApi {
    /// Starts the fake; it answers until the test process ends.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || serve(stream, &*handler, &recorded));
            }
        });
        FakeApi {
            url: format!("http://127.0.0.1:{port}{TENANT_PREFIX}"),
            requests,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// `"METHOD /path"` of every request so far.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Request::line).collect()
    }

    /// Runs `ftrove` against this fake (FTROVE_TOKEN unset, fast polling).
    pub fn ftrove(&self, args: &[&str]) -> Run {
        run_ftrove(&self.url, args, &[])
    }

    /// Like [`FakeApi::ftrove`] with extra environment variables.
    pub fn ftrove_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_ftrove(&self.url, args, env)
    }
}

/// Answers the requests of one connection (one, then close).
fn serve(stream: TcpStream, handler: &Handler, recorded: &Mutex<Vec<Request>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let path = target
        .strip_prefix(TENANT_PREFIX)
        .unwrap_or(&target)
        .to_owned();
    let request = Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    recorded.lock().expect("lock").push(request.clone());
    let reply = handler(&request);
    let reason = match reply.status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Whatever",
    };
    let response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let mut stream = stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// The outcome of one `ftrove` run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "ftrove failed: {self:#?}");
        self
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit code: {self:#?}");
        self
    }
}

/// Runs the built `ftrove` with FTROVE_URL set to `url`.
pub fn run_ftrove(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftrove"));
    cmd.args(args)
        .env("FTROVE_URL", url)
        .env_remove("FTROVE_TOKEN")
        .env("FTROVE_POLL_INTERVAL_MS", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run ftrove");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A Trove-shaped instance detail.
pub fn instance(id: &str, name: &str, status: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "status": status,
        "operating_status": if status == "ACTIVE" { "HEALTHY" } else { "UNKNOWN" },
        "flavor": {"id": "7", "links": []},
        "datastore": {"type": "mariadb", "version": "10.11"},
        "volume": {"size": 2},
        "ip": ["127.0.0.1"],
        "port": 3306,
        "created": "2026-01-01T00:00:00",
        "updated": "2026-01-01T00:00:05",
        "links": []
    })
}
