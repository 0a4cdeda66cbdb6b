//! A panic in a handler or a middleware answers 500 in Trove's fault shape instead of
//! dropping the connection, and is logged once: one error event with the request's method
//! and path (never its headers, query string or body, which may hold tokens or
//! passwords), the panic's message and where it happened.
//!
//! [`catch_panics`] is how the router installs it. It also installs, once per process, a
//! panic hook that stays silent for panics inside a request (the event above reports
//! them) and hands every other panic to the hook that was there before, so the default
//! hook does not print a second, unstructured report of the same panic to the log.

use crate::fault::Fault;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::task::Poll;

/// What a client is told: nothing of the panic itself.
pub const MESSAGE: &str = "The API failed while handling this request; the operator will find the cause in the API's log.";

/// Wraps `router` so that a panic anywhere in it (handlers, middleware, fallbacks) answers
/// 500 `instanceFault` and is logged once with the request's method and path.
pub fn catch_panics<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    install_hook();
    router.layer(axum::middleware::from_fn(catch_panic))
}

async fn catch_panic(request: Request, next: Next) -> Response {
    // Only the method and the path: the query string and headers may hold secrets.
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut running = Box::pin(next.run(request));
    let outcome = std::future::poll_fn(|cx| {
        let _inside = InsideRequest::enter();
        match catch_unwind(AssertUnwindSafe(|| running.as_mut().poll(cx))) {
            Ok(Poll::Ready(response)) => Poll::Ready(Ok(response)),
            Ok(Poll::Pending) => Poll::Pending,
            // The future is not polled again after this.
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    match outcome {
        Ok(response) => response,
        Err(payload) => {
            let report = LAST_PANIC.with(|last| last.borrow_mut().take());
            let (location, backtrace) = match report {
                Some(report) => (report.location, report.backtrace),
                None => (String::from("unknown"), None),
            };
            tracing::error!(
                %method,
                %path,
                panic = panic_message(payload.as_ref()),
                %location,
                backtrace = backtrace.as_deref().unwrap_or(""),
                "request handler panicked; answered 500"
            );
            Fault::internal(MESSAGE).into_response()
        }
    }
}

/// The text a panic was raised with, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// Where a panic inside a request happened, kept by the hook for [`catch_panic`] on the
/// same thread (the hook runs where the panic is raised, and the unwinding stops in the
/// same `poll`).
struct PanicReport {
    location: String,
    /// Captured as `RUST_BACKTRACE` asks; `None` when it is off.
    backtrace: Option<String>,
}

thread_local! {
    /// Whether this thread is polling a request under [`catch_panic`].
    static INSIDE_REQUEST: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
}

/// Marks this thread as polling a request until dropped (also when unwinding).
struct InsideRequest {
    before: bool,
}

impl InsideRequest {
    fn enter() -> InsideRequest {
        InsideRequest {
            before: INSIDE_REQUEST.with(|inside| inside.replace(true)),
        }
    }
}

impl Drop for InsideRequest {
    fn drop(&mut self) {
        INSIDE_REQUEST.with(|inside| inside.set(self.before));
    }
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if INSIDE_REQUEST.with(Cell::get) {
                let backtrace = Backtrace::capture();
                let report = PanicReport {
                    location: info
                        .location()
                        .map_or_else(|| String::from("unknown"), ToString::to_string),
                    backtrace: (backtrace.status() == BacktraceStatus::Captured)
                        .then(|| backtrace.to_string()),
                };
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(report));
            } else {
                previous(info);
            }
        }));
    });
}
