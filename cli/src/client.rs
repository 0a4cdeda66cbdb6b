//! HTTP to the Trove v1.0 API: one blocking client, paths built from segments (so names are
//! percent-encoded), and every failure turned into a typed [`Error`]: an API fault with its
//! HTTP code, an unreachable API, a timeout, or an answer that is not JSON.
//!
//! The token travels only in the `X-Auth-Token` header, marked sensitive, and appears in no
//! message. Redirects are not followed, so the token is never sent to another host.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use serde_json::Value;

/// A failed request.
#[derive(Debug)]
pub enum Error {
    /// The API answered with an error status.
    Api(Fault),
    /// Nothing answered at the endpoint (connection refused, unknown host, ...).
    Unreachable { endpoint: String, detail: String },
    /// The API took too long.
    Timeout { endpoint: String },
    /// Any other transport failure.
    Transport { endpoint: String, detail: String },
    /// The API answered 2xx with a body that is not JSON.
    BadResponse { what: String, detail: String },
}

impl Error {
    /// Whether this is an API fault with this HTTP status.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, Error::Api(fault) if fault.status == status)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api(fault) => fault.fmt(f),
            Error::Unreachable { endpoint, detail } => write!(
                f,
                "the API is not reachable at {endpoint} ({detail}); check FTROVE_URL (or --url) \
                 or start the stack"
            ),
            Error::Timeout { endpoint } => {
                write!(f, "the API at {endpoint} did not answer in time")
            }
            Error::Transport { endpoint, detail } => {
                write!(f, "request to the API at {endpoint} failed: {detail}")
            }
            Error::BadResponse { what, detail } => {
                write!(
                    f,
                    "the API answered {what} with something unexpected: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// An API error: `{"<faultName>":{"code":N,"message":"..."}}` or `{"message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The HTTP status of the answer.
    pub status: u16,
    /// Trove's fault name (`itemNotFound`, `badRequest`, ...), when the body had one.
    pub name: Option<String>,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl Fault {
    /// Reads an error answer. Never fails: a body that is not a fault is summarised, and an
    /// empty one is described by its status.
    pub fn parse(status: u16, body: &str) -> Fault {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        if let Some(Value::Object(map)) = &parsed {
            if let Some(message) = map.get("message").and_then(Value::as_str) {
                return Fault {
                    status,
                    name: None,
                    message: message.to_owned(),
                };
            }
            for (name, inner) in map {
                if let Some(message) = inner.get("message").and_then(Value::as_str) {
                    return Fault {
                        status,
                        name: Some(name.clone()),
                        message: message.to_owned(),
                    };
                }
            }
        }
        let text = body.trim();
        let message = if text.is_empty() {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|code| code.canonical_reason())
                .unwrap_or("request failed")
                .to_owned()
        } else {
            shorten(text, 300)
        };
        Fault {
            status,
            name: None,
            message,
        }
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        let cut: String = one_line.chars().take(max_chars).collect();
        format!("{cut}...")
    }
}

/// The HTTP client of one endpoint.
pub struct Client {
    http: reqwest::blocking::Client,
    base: Url,
    /// The endpoint as shown in messages: without user info.
    shown: String,
}

impl Client {
    /// A client for `endpoint` (`http://host:port/v1.0/<tenant>`), sending `token` as
    /// X-Auth-Token when given.
    pub fn new(endpoint: &str, token: Option<&str>) -> anyhow::Result<Client> {
        let mut base = Url::parse(endpoint.trim()).map_err(|e| {
            anyhow::anyhow!(
                "invalid API URL '{}': {e}; set FTROVE_URL or --url to e.g. \
                 http://127.0.0.1:8779/v1.0/demo",
                redact(endpoint)
            )
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!(
                "invalid API URL '{}': expected http://HOST:PORT/v1.0/<tenant>",
                redact(endpoint)
            );
        }
        if base.path().ends_with('/') {
            let trimmed = base.path().trim_end_matches('/').to_owned();
            base.set_path(&trimmed);
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                anyhow::anyhow!(
                    "the token (FTROVE_TOKEN or --token) has characters not allowed in an HTTP header"
                )
            })?;
            value.set_sensitive(true);
            headers.insert("X-Auth-Token", value);
        }
        let http = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("ftrove/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        let shown = redact(base.as_str());
        Ok(Client { http, base, shown })
    }

    /// The URL of `segments` under the endpoint, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub fn get(&self, segments: &[&str]) -> Result<Value, Error> {
        self.send(reqwest::Method::GET, segments, None)
    }

    pub fn post(&self, segments: &[&str], body: &Value) -> Result<Value, Error> {
        self.send(reqwest::Method::POST, segments, Some(body))
    }

    pub fn put(&self, segments: &[&str], body: &Value) -> Result<Value, Error> {
        self.send(reqwest::Method::PUT, segments, Some(body))
    }

    pub fn delete(&self, segments: &[&str]) -> Result<Value, Error> {
        self.send(reqwest::Method::DELETE, segments, None)
    }

    /// Sends one request; a 2xx answer gives its JSON body, or `Value::Null` when empty.
    fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let what = format!("{method} /{}", segments.join("/"));
        let mut request = self.http.request(method, self.url(segments));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().map_err(|e| self.transport_error(&e))?;
        self.read(response, &what)
    }

    fn read(&self, response: Response, what: &str) -> Result<Value, Error> {
        let status = response.status();
        let text = response.text().map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(Error::Api(Fault::parse(status.as_u16(), &text)));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            what: what.to_owned(),
            detail: format!("not JSON ({e}): {}", shorten(&text, 120)),
        })
    }

    fn transport_error(&self, err: &reqwest::Error) -> Error {
        let endpoint = self.shown.clone();
        if err.is_timeout() {
            return Error::Timeout { endpoint };
        }
        let detail = root_cause(err);
        if err.is_connect() {
            Error::Unreachable { endpoint, detail }
        } else {
            Error::Transport { endpoint, detail }
        }
    }
}

/// The innermost error's text ("Connection refused (os error 111)"), without the URL that
/// reqwest puts in its own message.
fn root_cause(err: &reqwest::Error) -> String {
    let mut innermost = None;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    innermost.unwrap_or_else(|| {
        let text = err.to_string();
        match err.url() {
            Some(url) => text.replace(&format!(" for url ({url})"), ""),
            None => text,
        }
    })
}

/// `endpoint` with any user info (`user:password@`) removed, for messages.
fn redact(endpoint: &str) -> String {
    match Url::parse(endpoint.trim()) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(url) => url.to_string().trim_end_matches('/').to_owned(),
        Err(_) => endpoint
            .split('@')
            .next_back()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trove_fault_shape() {
        let f = Fault::parse(
            403,
            r#"{"forbidden":{"code":403,"message":"Detach replicas before deleting replica source."}}"#,
        );
        assert_eq!(f.status, 403);
        assert_eq!(f.name.as_deref(), Some("forbidden"));
        assert_eq!(
            f.to_string(),
            "Detach replicas before deleting replica source. (HTTP 403)"
        );
    }

    #[test]
    fn flat_message_shape() {
        let f = Fault::parse(400, r#"{"message":"Volume size is required."}"#);
        assert_eq!(f.name, None);
        assert_eq!(f.to_string(), "Volume size is required. (HTTP 400)");
    }

    #[test]
    fn body_that_is_not_a_fault() {
        assert_eq!(Fault::parse(502, "").to_string(), "Bad Gateway (HTTP 502)");
        assert_eq!(
            Fault::parse(500, "<html>\n oops \n</html>").to_string(),
            "<html> oops </html> (HTTP 500)"
        );
        assert_eq!(Fault::parse(404, "{}").message, "{}");
        assert_eq!(Fault::parse(418, "[1]").message, "[1]");
        let long = "x".repeat(1000);
        assert!(Fault::parse(500, &long).message.len() < 400);
    }

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let client = Client::new("http://127.0.0.1:8779/v1.0/demo/", None).expect("client");
        assert_eq!(
            client.url(&["instances", "my db/1"]).as_str(),
            "http://127.0.0.1:8779/v1.0/demo/instances/my%20db%2F1"
        );
        assert_eq!(client.shown, "http://127.0.0.1:8779/v1.0/demo");
    }

    #[test]
    fn bad_urls_and_tokens() {
        assert!(Client::new("not a url", None).is_err());
        assert!(Client::new("ftp://h/v1.0/t", None).is_err());
        let err = Client::new("http://h/v1.0/t", Some("bad\ntoken-XYZ"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not allowed"), "{err}");
        assert!(!err.contains("XYZ"), "{err}");
    }

    #[test]
    fn user_info_is_not_shown() {
        let client = Client::new("http://u:secret@h:1/v1.0/t", None).expect("client");
        assert_eq!(client.shown, "http://h:1/v1.0/t");
        assert!(!redact("http://u:secret@h:1/v1.0/t").contains("secret"));
    }
}
