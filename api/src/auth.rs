//! Who is asking: the token, and the project (tenant) in the URL.
//!
//! With `auth.mode = "tokens"` (the default), [`require_token`] admits a request under
//! `/v1.0/{tenant}/` only with an `X-Auth-Token` that the tokens file or the control DB's
//! `api_tokens` table knows (401 otherwise; both are accepted, the file is looked at
//! first). The control DB is asked on every request, without a cache, so a token revoked
//! there (`ftrove-api tokens revoke`) is refused from the next request on. [`Tenant`]
//! lets it act only for the tenant that token maps to: a token of another
//! tenant gets 404, as if that tenant's resources did not exist, never 403. With
//! `auth.mode = "none"` nothing is checked and every request acts for the tenant in its
//! URL. Either way, every query is scoped to that tenant, so a tenant never sees or
//! touches another's instances.
//!
//! Tokens are secrets: only their SHA-256 digests are kept (a lookup in a map of digests
//! reveals nothing about a token through its timing), and no token appears in a log line
//! or an error message.
//!
//! The legacy `trove` shell also needs a v1 auth handshake (`GET <auth-url>`), answered
//! here at `/auth`; with tokens, the password it sends is the token.

use crate::config::{AuthConfig, AuthMode, ConfigError};
use crate::extract::{BaseUrl, path_param};
use crate::fault::Fault;
use crate::state::AppState;
use crate::views::encode_segment;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The header every Trove client sends its token in.
pub const TOKEN_HEADER: &str = "x-auth-token";

/// How requests are authenticated, as configured.
pub enum Auth {
    /// `auth.mode = "none"`.
    None,
    /// `auth.mode = "tokens"`: the tokens file's contents, when there is a file; the
    /// control DB's tokens are looked up too.
    Tokens(Option<Tokens>),
}

impl Auth {
    /// The configured mode; with tokens, reads and checks the tokens file, if one is set.
    pub fn from_config(config: &AuthConfig) -> Result<Auth, ConfigError> {
        match (config.mode, &config.tokens_file) {
            (AuthMode::None, _) => Ok(Auth::None),
            (AuthMode::Tokens, Some(path)) => Tokens::load(path)
                .map(|tokens| Auth::Tokens(Some(tokens)))
                .map_err(|e| {
                    ConfigError::Invalid(format!("auth.tokens_file {}: {e}", path.display()))
                }),
            (AuthMode::Tokens, None) => Ok(Auth::Tokens(None)),
        }
    }
}

/// The tenant `token` acts for, if it is known: the tokens file's (in memory) first, then
/// the control DB's unrevoked tokens. A control DB that cannot answer is a 503, never a
/// 401: the token may well be valid.
async fn tenant_of_token(state: &AppState, token: &[u8]) -> Result<Option<Arc<str>>, Fault> {
    let Auth::Tokens(file) = &*state.auth else {
        return Ok(None);
    };
    if let Some(tenant) = file.as_ref().and_then(|f| f.tenant_of(token)) {
        return Ok(Some(tenant.clone()));
    }
    // No stored token has another length; spare the database the question.
    if !TOKEN_LEN.contains(&token.len()) {
        return Ok(None);
    }
    Ok(state
        .store
        .token_tenant(&digest(token))
        .await?
        .map(Arc::from))
}

/// Token → tenant, keyed by the token's SHA-256 digest.
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Arc<str>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} tokens)", self.by_digest.len())
    }
}

/// The shortest and longest token accepted.
pub const TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=256;

impl Tokens {
    /// Reads a tokens file: JSON when its name ends in `.json`, TOML otherwise. Errors say
    /// where the file is wrong, never what a token is.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let tokens = Tokens::parse(&text, json)?;
        warn_if_readable_by_others(path);
        Ok(tokens)
    }

    /// Parses a flat map of `"token" = "tenant id"`.
    pub fn parse(text: &str, json: bool) -> Result<Tokens, String> {
        let shape = if json {
            "must be one JSON object of \"token\": \"tenant id\" strings"
        } else {
            "must hold only lines of \"token\" = \"tenant id\""
        };
        // Parser messages can quote the text they stumbled on, which may be a token: only
        // the position is passed on.
        let map: HashMap<String, String> = if json {
            serde_json::from_str(text).map_err(|e| {
                format!(
                    "{shape} (the error is at line {}, column {})",
                    e.line(),
                    e.column()
                )
            })?
        } else {
            toml::from_str(text).map_err(|e| match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("{shape} (the error is at line {line}, column {column})")
                }
                None => shape.to_owned(),
            })?
        };
        if map.is_empty() {
            return Err("holds no tokens".to_owned());
        }
        let mut by_digest = HashMap::with_capacity(map.len());
        for (n, (token, tenant)) in map.into_iter().enumerate() {
            if !TOKEN_LEN.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "has a token (for tenant {tenant:?}) that is not {} to {} visible ASCII characters without spaces",
                    TOKEN_LEN.start(),
                    TOKEN_LEN.end()
                ));
            }
            if !valid_tenant(&tenant) {
                return Err(format!(
                    "maps token number {} to a tenant id that is not 1 to 64 characters without control characters",
                    n + 1
                ));
            }
            by_digest.insert(digest(token.as_bytes()), Arc::from(tenant));
        }
        Ok(Tokens { by_digest })
    }

    /// The tenant `token` acts for, if it is known.
    pub fn tenant_of(&self, token: &[u8]) -> Option<&Arc<str>> {
        self.by_digest.get(&digest(token))
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// How many distinct tenants the tokens act for.
    pub fn tenants(&self) -> usize {
        let mut tenants: Vec<&str> = self.by_digest.values().map(|t| &**t).collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants.len()
    }
}

/// A token's SHA-256 digest: all that is kept of it, in memory and in the control DB.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the tokens file is readable by every user of this host; make it 0600 or 0640"
        );
    }
}

/// The URL's tenant as the API accepts it.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && tenant.chars().count() <= 64 && !tenant.chars().any(char::is_control)
}

/// Who a request under `/v1.0/{tenant}/` was admitted as, set by [`require_token`].
#[derive(Clone, Debug)]
pub enum Caller {
    /// `auth.mode = "none"`: whoever names a tenant acts for it.
    Anyone,
    /// Holds a token for this tenant.
    Tenant(Arc<str>),
}

/// Middleware for everything under `/v1.0/{tenant}/`: with tokens, a request without a
/// known `X-Auth-Token` gets 401 in Trove's fault shape; an admitted one carries its
/// [`Caller`], which [`Tenant`] checks against the URL.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match &*state.auth {
        Auth::None => Caller::Anyone,
        Auth::Tokens(_) => match request.headers().get(TOKEN_HEADER) {
            None => {
                tracing::info!("refused: no X-Auth-Token");
                return Fault::unauthorized(
                    "This request needs a token: send it in the X-Auth-Token header.",
                )
                .into_response();
            }
            Some(token) => match tenant_of_token(&state, token.as_bytes()).await {
                Ok(Some(tenant)) => Caller::Tenant(tenant),
                Ok(None) => {
                    tracing::info!("refused: unknown or revoked X-Auth-Token");
                    return Fault::unauthorized("The X-Auth-Token is not valid.").into_response();
                }
                Err(fault) => return fault.into_response(),
            },
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The project a request acts for, from the `{tenant}` path segment, once the caller may
/// act for it.
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Fault;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Fault> {
        let tenant = path_param(parts, "tenant").await?;
        if !valid_tenant(&tenant) {
            return Err(Fault::bad_request(
                "The project id in the URL must be 1 to 64 characters.",
            ));
        }
        match parts.extensions.get::<Caller>() {
            Some(Caller::Anyone) => {}
            Some(Caller::Tenant(own)) if **own == *tenant => {}
            // Another tenant's resources do not exist for this caller.
            Some(Caller::Tenant(_)) => {
                tracing::info!("refused: the token is for another tenant");
                return Err(Fault::not_found("The resource could not be found."));
            }
            // Only if a route escaped require_token: refuse rather than trust the URL.
            None => {
                tracing::error!("a request reached a handler without passing the token check");
                return Err(Fault::unauthorized(
                    "This request needs a token: send it in the X-Auth-Token header.",
                ));
            }
        }
        tracing::Span::current().record("tenant", tenant.as_str());
        Ok(Tenant(tenant))
    }
}

/// `GET /auth`: the legacy shell's v1 handshake. It needs a 2xx with `X-Auth-Token` and
/// `X-Server-Management-Url` (which `--bypass-url` then replaces).
///
/// With tokens, the password (`X-Auth-Key`, the shell's `--os-password`) must be a token;
/// it is handed back as `X-Auth-Token`, with the management URL of its tenant, and an
/// unknown one gets 401 (the shell prints "Invalid OpenStack Trove credentials."). With
/// `auth.mode = "none"` any password will do, and the tenant is taken from
/// `X-Auth-Project-Id` or else `X-Auth-User`.
pub async fn legacy_handshake(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
) -> Response {
    let (token, project) = match &*state.auth {
        Auth::Tokens(_) => {
            let Some(key) = headers.get("x-auth-key") else {
                return Fault::unauthorized(
                    "Give a token as the password (X-Auth-Key, the trove shell's --os-password).",
                )
                .into_response();
            };
            let tenant = match tenant_of_token(&state, key.as_bytes()).await {
                Ok(Some(tenant)) => tenant,
                Ok(None) => {
                    tracing::info!("legacy handshake refused: unknown or revoked token");
                    return Fault::unauthorized("The token given as the password is not valid.")
                        .into_response();
                }
                Err(fault) => return fault.into_response(),
            };
            let mut token = key.clone();
            token.set_sensitive(true);
            (token, encode_segment(&tenant))
        }
        Auth::None => {
            let project = ["x-auth-project-id", "x-auth-user"]
                .iter()
                .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
                .find(|v| {
                    !v.is_empty()
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                })
                .unwrap_or("tenant")
                .to_owned();
            let Ok(token) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) else {
                return Fault::internal("could not make a token").into_response();
            };
            (token, project)
        }
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(TOKEN_HEADER, token);
    if let Ok(url) = HeaderValue::from_str(&format!("{base}/v1.0/{project}")) {
        out.insert("x-server-management-url", url);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "tok-0123456789abcdef";
    const T2: &str = "tok-fedcba9876543210";

    #[test]
    fn toml_and_json_map_tokens_to_tenants() {
        let toml = format!("# comment\n\"{T1}\" = \"demo\"\n'{T2}' = \"acme\"\n");
        let json = format!("{{\"{T1}\": \"demo\", \"{T2}\": \"acme\"}}");
        for tokens in [
            Tokens::parse(&toml, false).unwrap(),
            Tokens::parse(&json, true).unwrap(),
        ] {
            assert_eq!(tokens.len(), 2);
            // A bare TOML key is a token too.
            assert_eq!(
                Tokens::parse(&format!("{T1} = \"demo\""), false).map(|t| t.len()),
                Ok(1)
            );
            assert_eq!(tokens.tenants(), 2);
            assert_eq!(tokens.tenant_of(T1.as_bytes()).map(|t| &**t), Some("demo"));
            assert_eq!(tokens.tenant_of(T2.as_bytes()).map(|t| &**t), Some("acme"));
            assert!(tokens.tenant_of(b"tok-0123456789abcdeF").is_none());
            assert!(tokens.tenant_of(b"").is_none());
            let shown = format!("{tokens:?}");
            assert!(!shown.contains("tok-"), "{shown}");
        }
    }

    #[test]
    fn bad_files_are_refused_without_quoting_a_token() {
        let secret = "tok-SECRET-0123456789";
        for (text, json) in [
            (String::new(), false),
            ("{}".to_owned(), true),
            (format!("{secret} = demo"), false),
            (format!("\"{secret}\" = 7"), false),
            (format!("[tokens]\n\"{secret}\" = \"demo\""), false),
            (
                format!("\"{secret}\" = \"demo\"\n\"{secret}\" = \"acme\""),
                false,
            ),
            (format!("{{\"{secret}\": [\"demo\"]}}"), true),
            (format!("[\"{secret}\"]"), true),
            (format!("\"{secret}\""), true),
            ("\"short\" = \"demo\"".to_owned(), false),
            (format!("\"{secret} x\" = \"demo\""), false),
            (format!("\"{secret}\" = \"\""), false),
            (format!("\"{secret}\" = \"a\\nb\""), false),
        ] {
            let err = Tokens::parse(&text, json)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(!err.contains("SECRET"), "{text}: {err}");
        }
        let err =
            Tokens::parse(&format!("\"{T1}\" = \"demo\"\n\"{T2}\" = 7\n"), false).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let config = AuthConfig {
            mode: AuthMode::Tokens,
            tokens_file: Some("/nonexistent/tokens.toml".into()),
        };
        let err = Auth::from_config(&config).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/tokens.toml"), "{err}");
    }
}
