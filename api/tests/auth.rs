//! `auth.mode = "tokens"`: a tokens file and the control DB map tokens to tenants; without
//! a known token a request gets 401, a token of another tenant gets 404 for that tenant's
//! resources (never 403), and the right one gets through. The legacy shell's handshake takes a token as its
//! password. Also: the API refuses to start on a bad `[auth]`.

mod common;

use common::{TENANT, TestApi, assert_fault, instance_id};
use ferrotrove_api::ApiConfig;
use ferrotrove_api::config::{AuthConfig, AuthMode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;

const DEMO_TOKEN: &str = "demo-token-0123456789abcdef";
const DEMO_TOKEN_2: &str = "demo-token-second-0123456789";
const OTHER: &str = "other-project";
const OTHER_TOKEN: &str = "other-token-0123456789abcdef";

/// A tokens file in the temp dir, removed on drop.
struct TokensFile(PathBuf);

impl TokensFile {
    fn new(extension: &str, text: &str) -> TokensFile {
        let path = std::env::temp_dir().join(format!(
            "ftrove-tokens-{}.{extension}",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, text).unwrap();
        TokensFile(path)
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Tokens,
            tokens_file: Some(self.0.clone()),
        }
    }
}

impl Drop for TokensFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `method path` for `tenant`, with `token` as X-Auth-Token when given.
async fn call(
    api: &TestApi,
    method: reqwest::Method,
    tenant: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = api.http.request(method.clone(), api.url(tenant, path));
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    if method == reqwest::Method::PUT {
        request = request.json(&json!({"instance": {"replica_of": null}}));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if !status.is_success() {
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
    }
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn tokens_admit_their_own_tenant_only() {
    let tokens = TokensFile::new(
        "toml",
        &format!(
            "# token = tenant\n\"{DEMO_TOKEN}\" = \"{TENANT}\"\n\"{DEMO_TOKEN_2}\" = \"{TENANT}\"\n\"{OTHER_TOKEN}\" = \"{OTHER}\"\n"
        ),
    );
    let mut api = TestApi::start_with(tokens.auth(), DEMO_TOKEN).await;
    let m1 = api.create_instance("m1").await;
    let paths = [
        "/instances".to_owned(),
        "/instances?include_clustered=False".to_owned(),
        "/instances/detail".to_owned(),
        format!("/instances/{m1}"),
        "/instances/m1".to_owned(),
        "/flavors".to_owned(),
        "/flavors/7".to_owned(),
        "/datastores".to_owned(),
        "/datastores/mariadb/versions".to_owned(),
        "/no/such/route".to_owned(),
    ];
    use reqwest::Method;

    // No token, an unknown one, an empty one, a near miss: 401, Trove's shape, for every
    // route and method under the tenant, known or not.
    for token in [
        None,
        Some("wrong-token-0123456789abcdef"),
        Some(""),
        Some("demo-token-0123456789abcdeF"),
        Some("notused"),
    ] {
        for path in &paths {
            let message = assert_fault(
                &call(&api, Method::GET, TENANT, path, token).await,
                401,
                "unauthorized",
            );
            assert!(message.contains("X-Auth-Token"), "{message}");
        }
        for method in [Method::PUT, Method::DELETE] {
            assert_fault(
                &call(&api, method, TENANT, &format!("/instances/{m1}"), token).await,
                401,
                "unauthorized",
            );
        }
    }

    // A token of another tenant: that tenant's instances do not exist for it (404, not
    // 403), whatever it tries; nothing is changed or cast.
    for path in [format!("/instances/{m1}"), "/instances/m1".to_owned()] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            assert_fault(
                &call(&api, method, TENANT, &path, Some(OTHER_TOKEN)).await,
                404,
                "itemNotFound",
            );
        }
    }
    assert_fault(
        &call(&api, Method::GET, TENANT, "/instances", Some(OTHER_TOKEN)).await,
        404,
        "itemNotFound",
    );
    let created = api
        .http
        .post(api.url(TENANT, "/instances"))
        .header("X-Auth-Token", OTHER_TOKEN)
        .json(&json!({"instance": {"name": "intruder", "flavorRef": 7, "volume": {"size": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::NOT_FOUND);
    // In its own tenant, it sees nothing of the first tenant's.
    let (status, body) = call(&api, Method::GET, OTHER, "/instances", Some(OTHER_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instances"], json!([]));
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        assert_fault(
            &call(
                &api,
                method,
                OTHER,
                &format!("/instances/{m1}"),
                Some(OTHER_TOKEN),
            )
            .await,
            404,
            "itemNotFound",
        );
    }
    // And the first tenant's tokens do not reach into it either.
    assert_fault(
        &call(&api, Method::GET, OTHER, "/instances", Some(DEMO_TOKEN)).await,
        404,
        "itemNotFound",
    );

    // The right tokens (either of the tenant's two): 200.
    for token in [DEMO_TOKEN, DEMO_TOKEN_2] {
        let (status, body) = call(
            &api,
            Method::GET,
            TENANT,
            &format!("/instances/{m1}"),
            Some(token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(instance_id(&body), m1);
        let (status, body) = call(&api, Method::GET, TENANT, "/instances", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["instances"][0]["id"], m1.to_string());
    }
    api.tasks.assert_empty().await;

    // Outside /v1.0/{tenant}/, nothing needs a token, and nothing is served.
    let unknown = api
        .http
        .get(format!("{}/v2/whatever", api.root))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // The legacy shell's handshake: the password is the token, handed back with the
    // management URL of its tenant (whatever user and project the shell names).
    let handshake = |key: Option<&'static str>| {
        let mut request = api
            .http
            .get(format!("{}/auth", api.root))
            .header("X-Auth-User", "someone")
            .header("X-Auth-Project-Id", OTHER);
        if let Some(key) = key {
            request = request.header("X-Auth-Key", key);
        }
        request.send()
    };
    let response = handshake(Some(DEMO_TOKEN)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["x-auth-token"], DEMO_TOKEN);
    let management = response.headers()["x-server-management-url"]
        .to_str()
        .unwrap();
    assert_eq!(management, format!("{}/v1.0/{TENANT}", api.root));
    for key in [None, Some("p"), Some("wrong-token-0123456789abcdef")] {
        let response = handshake(key).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(!response.headers().contains_key("x-auth-token"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["unauthorized"]["code"], 401, "{body}");
    }

    api.stop().await;
}

#[tokio::test]
async fn control_db_tokens_work_beside_the_file_until_revoked() {
    let tokens = TokensFile::new("toml", &format!("\"{DEMO_TOKEN}\" = \"{TENANT}\"\n"));
    let api = TestApi::start_with(tokens.auth(), DEMO_TOKEN).await;
    let (token, row) = ferrotrove_api::admin::add_token(&api.store, OTHER, "test")
        .await
        .unwrap();
    assert_eq!(row.tenant_id, OTHER);
    let get = reqwest::Method::GET;

    // The file's token and the control DB's, each for its own tenant only.
    assert_eq!(
        call(&api, get.clone(), TENANT, "/flavors", Some(DEMO_TOKEN))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&api, get.clone(), OTHER, "/instances", Some(&token))
            .await
            .0,
        StatusCode::OK
    );
    assert_fault(
        &call(&api, get.clone(), TENANT, "/instances", Some(&token)).await,
        404,
        "itemNotFound",
    );
    // The legacy handshake takes it as a password.
    let handshake = api.handshake("u", &token).await;
    assert_eq!(handshake.status(), StatusCode::NO_CONTENT);
    let management = handshake.headers()["x-server-management-url"]
        .to_str()
        .unwrap();
    assert!(
        management.ends_with(&format!("/v1.0/{OTHER}")),
        "{management}"
    );

    // Revoked: refused from the next request on, by the API and the handshake alike.
    ferrotrove_api::admin::revoke_token(&api.store, row.id)
        .await
        .unwrap();
    let message = assert_fault(
        &call(&api, get.clone(), OTHER, "/instances", Some(&token)).await,
        401,
        "unauthorized",
    );
    assert_eq!(message, "The X-Auth-Token is not valid.");
    assert_eq!(
        api.handshake("u", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    api.stop().await;
}

#[tokio::test]
async fn a_json_tokens_file_works_too() {
    let tokens = TokensFile::new("json", &format!("{{\"{DEMO_TOKEN}\": \"{TENANT}\"}}"));
    let api = TestApi::start_with(tokens.auth(), DEMO_TOKEN).await;
    let (status, _) = api.get("/flavors").await;
    assert_eq!(status, StatusCode::OK);
    assert_fault(
        &call(&api, reqwest::Method::GET, TENANT, "/flavors", None).await,
        401,
        "unauthorized",
    );
    api.stop().await;
}

#[tokio::test]
async fn a_bad_auth_config_stops_the_api_before_it_serves() {
    let listener = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let run = |auth: AuthConfig| async {
        let config = ApiConfig {
            auth,
            ..ApiConfig::default()
        };
        ferrotrove_api::run(config, listener().await, std::future::pending())
            .await
            .unwrap_err()
            .to_string()
    };
    // A tokens file that would go unused; a file that is missing; one whose token is too
    // short (the error names the file, not the token).
    let err = run(AuthConfig {
        mode: AuthMode::None,
        tokens_file: Some("/etc/ferrotrove/tokens.toml".into()),
    })
    .await;
    assert!(err.contains("auth.tokens_file"), "{err}");
    let err = run(AuthConfig {
        mode: AuthMode::Tokens,
        tokens_file: Some("/nonexistent/tokens.toml".into()),
    })
    .await;
    assert!(err.contains("/nonexistent/tokens.toml"), "{err}");
    let short = TokensFile::new("toml", "\"tok-SHORT\" = \"demo\"\n");
    let err = run(short.auth()).await;
    assert!(err.contains("auth.tokens_file"), "{err}");
    assert!(!err.contains("SHORT"), "{err}");
}
