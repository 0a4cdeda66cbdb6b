//! Every error path of the API answers in Trove's fault shape
//! (`{"<faultName>": {"code": N, "message": "..."}}`, `Content-Type: application/json`) with
//! a fitting status and a message saying what is wrong: paths, methods and query strings
//! axum rejects, a name two instances share, a control DB that fails a query, a broker
//! that is gone. (Bodies axum rejects are in `api.rs`, tokens in `auth.rs`.) Each is a
//! real HTTP request to the API running against real MariaDB and RabbitMQ.

mod common;

use common::{TENANT, TestApi, assert_fault};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn paths_methods_and_queries_axum_rejects_are_trove_faults() {
    let api = TestApi::start().await;

    // A path segment that is not UTF-8 once decoded.
    let message = assert_fault(&api.get("/instances/%FF%FE").await, 400, "badRequest");
    assert!(
        message.starts_with("The request path is unusable"),
        "{message}"
    );
    let message = assert_fault(&api.get_as("%C3%28", "/flavors").await, 400, "badRequest");
    assert!(
        message.starts_with("The request path is unusable"),
        "{message}"
    );
    let message = assert_fault(
        &api.get_as(&"t".repeat(65), "/flavors").await,
        400,
        "badRequest",
    );
    assert!(message.contains("project id"), "{message}");

    // Paths outside the API.
    for path in ["/", "/v1.0", "/v1.0/", "/v2/x/instances", "/auth/x"] {
        let message = assert_fault(
            &api.send(api.http.get(format!("{}{path}", api.root))).await,
            404,
            "itemNotFound",
        );
        assert_eq!(message, "The resource could not be found.", "{path}");
    }
    assert_fault(&api.get("/instances/").await, 404, "itemNotFound");

    // Methods a path does not serve, inside the API and outside it.
    for (method, path) in [
        (Method::OPTIONS, api.url(TENANT, "/instances")),
        (Method::DELETE, api.url(TENANT, "/flavors/7")),
        (Method::PUT, api.url(TENANT, "/datastores")),
        (Method::POST, format!("{}/auth", api.root)),
    ] {
        let message = assert_fault(
            &api.send(api.http.request(method.clone(), &path)).await,
            405,
            "badMethod",
        );
        assert_eq!(
            message, "This method is not allowed on this resource.",
            "{method} {path}"
        );
    }

    // Query strings.
    let message = assert_fault(&api.get("/instances?limit=abc").await, 400, "badRequest");
    assert!(message.contains("limit"), "{message}");
    let message = assert_fault(&api.get("/instances?marker=nope").await, 400, "badRequest");
    assert!(message.contains("marker"), "{message}");
    let message = assert_fault(
        &api.get(&format!("/instances?marker={}", uuid::Uuid::new_v4()))
            .await,
        400,
        "badRequest",
    );
    assert!(message.contains("Marker"), "{message}");

    // A JSON body with a charset is JSON; without a body, a PUT says what it needs.
    let (status, body) = api
        .send(
            api.http
                .post(api.url(TENANT, "/instances"))
                .header("content-type", "application/json; charset=utf-8")
                .body("{\"instance\": {\"name\": \"x\", \"flavorRef\": 99, \"volume\": {\"size\": 1}}}"),
        )
        .await;
    assert_fault(&(status, body), 404, "itemNotFound");
    let message = assert_fault(
        &api.send(api.http.put(api.url(TENANT, "/instances/x")))
            .await,
        415,
        "badMediaType",
    );
    assert!(
        message.contains("Content-Type: application/json"),
        "{message}"
    );
    api.stop().await;
}

#[tokio::test]
async fn store_and_bus_failures_are_trove_faults_without_internals() {
    let api = TestApi::start().await;

    // Two instances share a name: asking by that name is a conflict (409), not a guess.
    api.insert_instance("twin").await;
    api.insert_instance("twin").await;
    let message = assert_fault(&api.get("/instances/twin").await, 409, "conflictingRequest");
    assert_eq!(message, "More than one instance is named twin; use its id.");

    // The broker is gone (the vhost deleted under the API): 503. A create leaves its
    // instance in ERROR (not BUILD, waiting for a task never sent); a delete is undone.
    let solo = api.insert_instance("solo").await;
    api.make_active(solo).await;
    ferrotrove_tests::rabbitmqctl(&["delete_vhost", &api.vhost]).expect("delete_vhost");
    let message = assert_fault(
        &api.post(
            "/instances",
            json!({"instance": {"name": "late", "flavorRef": "7", "volume": {"size": 1}}}),
        )
        .await,
        503,
        "serviceUnavailable",
    );
    assert!(message.contains("marked ERROR"), "{message}");
    let (_, late) = api.get("/instances/late").await;
    assert_eq!(late["instance"]["status"], "ERROR", "{late}");
    let message = assert_fault(
        &api.delete(&format!("/instances/{solo}")).await,
        503,
        "serviceUnavailable",
    );
    assert_eq!(
        message,
        "The taskmanager cannot be reached; try again later."
    );
    let (status, body) = api.get(&format!("/instances/{solo}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["instance"]["status"], "ACTIVE",
        "the delete was undone"
    );

    // The control DB fails a query (its table is gone): 500, naming no SQL.
    ferrotrove_tests::control_sql(Some(api.store.database()), "DROP TABLE flavors")
        .expect("drop the flavors table");
    for path in ["/flavors", "/flavors/7"] {
        let message = assert_fault(&api.get(path).await, 500, "instanceFault");
        assert!(
            message.contains("control database") && !message.contains("flavors"),
            "{path}: {message}"
        );
    }
    api.stop().await;
}
