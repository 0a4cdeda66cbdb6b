//! A handler that panics: the client gets 500 in Trove's fault shape on a connection that
//! stays usable, and the panic is logged once, with the request's method and path and
//! nothing from its headers or query string. The router here is a tiny one of the test's
//! own, wrapped by the same function the API's router is wrapped with.
//!
//! One test in this file: it replaces the process's panic hook.

use axum::Router;
use axum::routing::get;
use ferrotrove_api::panics::{MESSAGE, catch_panics};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Panics the hook that was there before `catch_panics` saw.
static EARLIER_HOOK_SAW: AtomicUsize = AtomicUsize::new(0);

/// A log writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn boom() -> &'static str {
    let detail = String::from("the test's own panic");
    panic!("boom: {detail}");
}

async fn fine() -> &'static str {
    "fine"
}

// current_thread (the default): the server's tasks run on this thread, under the
// subscriber set for it below.
#[tokio::test]
async fn a_panicking_handler_answers_500_and_is_logged_once() {
    std::panic::set_hook(Box::new(|_| {
        EARLIER_HOOK_SAW.fetch_add(1, Ordering::SeqCst);
    }));
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let router = catch_panics(
        Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(fine)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    let response = http
        .get(format!("{root}/boom?password=hunter2"))
        .header("X-Auth-Token", "tok-9c1f0e4b7d2a4d4f8a1e")
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(response.status(), 500);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"instanceFault": {"code": 500, "message": MESSAGE}})
    );

    // The server goes on serving, the same client connection included.
    let response = http.get(format!("{root}/fine")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "fine");

    // Logged once, by the layer: the earlier (default) hook did not print it too...
    assert_eq!(EARLIER_HOOK_SAW.load(Ordering::SeqCst), 0);
    let text = log.text();
    let reports: Vec<&str> = text.lines().filter(|l| l.contains("panic")).collect();
    assert_eq!(reports.len(), 1, "{text}");
    let report = reports[0];
    for expected in [
        "ERROR",
        "method=GET",
        "path=/boom",
        "boom: the test's own panic",
        "api/tests/panics.rs",
    ] {
        assert!(report.contains(expected), "{expected:?} not in {report}");
    }
    for secret in ["hunter2", "tok-9c1f0e4b7d2a4d4f8a1e"] {
        assert!(!text.contains(secret), "{secret:?} logged: {text}");
    }

    // ...while a panic outside a request still reaches it.
    let outside = std::panic::catch_unwind(|| panic!("outside any request"));
    assert!(outside.is_err());
    assert_eq!(EARLIER_HOOK_SAW.load(Ordering::SeqCst), 1);
    server.abort();
}
