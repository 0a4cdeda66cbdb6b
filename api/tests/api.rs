//! The API in-process against real MariaDB and RabbitMQ: the requests Trove's clients send
//! (see reference/trove-rest-api.md), the casts they cause, and every refusal with its
//! status and fault name.

mod common;

use common::{TENANT, TestApi, assert_fault, instance_id};
use ferrotrove_proto::agent::{Progress, ServerStatus};
use ferrotrove_proto::conductor::{Heartbeat, HostStats};
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_proto::taskmanager::TaskRequest;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn create_show_list_and_the_cast() {
    let mut api = TestApi::start().await;

    // What `openstack database instance create` sends, plus databases and users.
    let (status, body) = api
        .post(
            "/instances",
            json!({"instance": {
                "name": "m1", "flavorRef": 7, "volume": {"size": 2, "type": null},
                "datastore": {"type": "mysql", "version": "5.7"}, "access": {"is_public": false},
                "nics": [{"network_id": "x"}], "availability_zone": "nova",
                "databases": [{"name": "app", "character_set": "utf8mb4"}, {"name": "logs"}],
                "users": [{"name": "appuser", "password": "s3cret", "databases": [{"name": "app"}]},
                          {"name": "ro", "password": "pw", "host": "10.0.0.%"}]
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m1 = instance_id(&body);
    let view = &body["instance"];
    assert_eq!(view["name"], "m1");
    assert_eq!(view["status"], "BUILD");
    assert_eq!(view["operating_status"], "BUILD");
    assert_eq!(view["flavor"]["id"], "7");
    assert_eq!(
        view["datastore"],
        json!({"type": "mariadb", "version": "10.11", "version_number": "10.11"})
    );
    assert_eq!(view["region"], "RegionOne");
    assert_eq!(view["volume"]["size"], 2);
    assert_eq!(view["access"]["is_public"], false);
    assert_eq!(view["links"][0]["rel"], "self");
    assert!(
        view["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1.0/{TENANT}/instances/{m1}"))
    );
    for absent in [
        "replica_of",
        "replicas",
        "fault",
        "configuration",
        "ip",
        "password",
    ] {
        assert!(view.get(absent).is_none(), "{absent} in {view}");
    }
    assert!(
        !body.to_string().contains("s3cret"),
        "passwords never come back"
    );

    match api.tasks.next().await {
        TaskRequest::CreateInstance {
            instance_id,
            databases,
            users,
        } => {
            assert_eq!(instance_id, m1);
            assert_eq!(databases, ["app", "logs"]);
            assert_eq!(users.len(), 2);
            assert_eq!(
                (
                    users[0].name.as_str(),
                    users[0].password.expose(),
                    users[0].host.as_str()
                ),
                ("appuser", "s3cret", "%")
            );
            assert_eq!(users[0].databases, ["app"]);
            assert_eq!(
                (users[1].name.as_str(), users[1].host.as_str()),
                ("ro", "10.0.0.%")
            );
        }
        other => panic!("unexpected cast {other:?}"),
    }

    // What the legacy shell sends: no access; a flavor href works too.
    let (status, body) = api
        .post(
            "/instances",
            json!({"instance": {"name": "m2", "flavorRef": "http://h/v1.0/x/flavors/2", "volume": {"size": "3"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m2 = instance_id(&body);
    assert_eq!(body["instance"]["flavor"]["id"], "2");
    assert!(
        matches!(api.tasks.next().await, TaskRequest::CreateInstance { instance_id, .. } if instance_id == m2)
    );

    // Show by id and by name.
    let (status, body) = api.get(&format!("/instances/{m1}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instance_id(&body), m1);
    assert_eq!(
        body["instance"]["created"].as_str().unwrap().len(),
        "2026-11-24T16:44:26".len()
    );
    let (status, body) = api.get("/instances/m2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(instance_id(&body), m2);
    assert_fault(&api.get("/instances/nosuch").await, 404, "itemNotFound");
    assert_fault(
        &api.get(&format!("/instances/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "itemNotFound",
    );

    // Lists carry what the CLIs would otherwise fetch per instance.
    for path in ["/instances?include_clustered=False", "/instances/detail"] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::OK);
        let items = body["instances"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], m1.to_string());
        assert_eq!(items[1]["id"], m2.to_string());
        for item in items {
            for key in ["volume", "region", "datastore", "flavor", "status", "name"] {
                assert!(item.get(key).is_some(), "{key} in {item}");
            }
        }
    }
    let (_, page) = api.get("/instances?limit=1&include_clustered=False").await;
    assert_eq!(page["instances"].as_array().unwrap().len(), 1);
    let next = page["links"][0]["href"].as_str().unwrap();
    assert!(next.contains(&format!("marker={m1}")), "{next}");
    let (_, page) = api.get(&format!("/instances?limit=1&marker={m1}")).await;
    assert_eq!(page["instances"][0]["id"], m2.to_string());
    assert!(page.get("links").is_none());
    assert_fault(&api.get("/instances?limit=0").await, 400, "badRequest");
    assert_fault(&api.get("/instances?marker=nope").await, 400, "badRequest");

    // An ACTIVE instance with a live agent is HEALTHY; without heartbeats it is SHUTDOWN.
    api.make_active(m1).await;
    let (_, body) = api.get(&format!("/instances/{m1}")).await;
    assert_eq!(
        (
            body["instance"]["status"].as_str(),
            body["instance"]["operating_status"].as_str()
        ),
        (Some("ACTIVE"), Some("HEALTHY"))
    );
    assert!(body["instance"]["service_status_updated"].is_string());
    api.store
        .set_status(m2, InstanceStatus::Active, None)
        .await
        .unwrap();
    api.store.set_endpoint(m2, "10.0.0.5", 3307).await.unwrap();
    let (_, body) = api.get(&format!("/instances/{m2}")).await;
    let view = &body["instance"];
    assert_eq!(
        (view["status"].as_str(), view["operating_status"].as_str()),
        (Some("SHUTDOWN"), Some("SHUTDOWN"))
    );
    assert_eq!(view["ip"], json!(["10.0.0.5"]));
    assert_eq!(
        view["addresses"],
        json!([{"address": "10.0.0.5", "type": "private"}])
    );
    assert_eq!(view["port"], 3307);

    // A fault shows as an object with message and time.
    api.store
        .set_status(m2, InstanceStatus::Error, Some("prepare failed: disk full"))
        .await
        .unwrap();
    let (_, body) = api.get("/instances/m2").await;
    assert_eq!(body["instance"]["status"], "ERROR");
    assert_eq!(
        body["instance"]["fault"]["message"],
        "prepare failed: disk full"
    );
    assert!(body["instance"]["fault"]["created"].is_string());

    // Another project sees none of it.
    assert_fault(
        &api.get_as("other-project", &format!("/instances/{m1}"))
            .await,
        404,
        "itemNotFound",
    );
    assert_fault(
        &api.get_as("other-project", "/instances/m1").await,
        404,
        "itemNotFound",
    );
    let (_, body) = api.get_as("other-project", "/instances").await;
    assert_eq!(body["instances"], json!([]));
    let other_delete = api
        .send(
            api.http
                .delete(api.url("other-project", &format!("/instances/{m1}"))),
        )
        .await;
    assert_fault(&other_delete, 404, "itemNotFound");

    // Two instances with one name: by name is ambiguous, by id works.
    api.create_instance("m1").await;
    let message = assert_fault(&api.get("/instances/m1").await, 409, "conflictingRequest");
    assert!(message.contains("use its id"), "{message}");

    api.tasks.assert_empty().await;
    api.stop().await;
}

#[tokio::test]
async fn flavors_and_datastores() {
    let api = TestApi::start().await;
    let (status, body) = api.get("/flavors").await;
    assert_eq!(status, StatusCode::OK);
    let flavors = body["flavors"].as_array().unwrap();
    assert_eq!(flavors.len(), 8);
    let ds1g = flavors
        .iter()
        .find(|f| f["id"] == 7)
        .expect("flavor 7, with a numeric id");
    assert_eq!(
        (ds1g["name"].as_str(), ds1g["str_id"].as_str()),
        (Some("ds1G"), Some("7"))
    );
    assert_eq!(
        (
            ds1g["ram"].as_u64(),
            ds1g["vcpus"].as_u64(),
            ds1g["disk"].as_u64()
        ),
        (Some(1024), Some(1), Some(5))
    );
    let (status, body) = api.get("/flavors/7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["flavor"]["name"], "ds1G");
    assert_fault(&api.get("/flavors/nosuch").await, 404, "itemNotFound");
    // Names are 404 too: the CLIs then search the list themselves.
    assert_fault(&api.get("/flavors/ds1G").await, 404, "itemNotFound");

    let (status, body) = api.get("/datastores").await;
    assert_eq!(status, StatusCode::OK);
    let datastores = body["datastores"].as_array().unwrap();
    assert_eq!(datastores.len(), 1);
    let mariadb = &datastores[0];
    assert_eq!(mariadb["name"], "mariadb");
    assert_eq!(mariadb["default_version"], mariadb["versions"][0]["id"]);
    let version_id = mariadb["versions"][0]["id"].as_str().unwrap().to_owned();
    let datastore_id = mariadb["id"].as_str().unwrap().to_owned();

    for name in ["mysql", "mariadb", datastore_id.as_str()] {
        let (status, body) = api.get(&format!("/datastores/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(body["datastore"]["name"], "mariadb");
        let (status, body) = api.get(&format!("/datastores/{name}/versions")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["versions"][0]["name"], "10.11");
        assert_eq!(body["versions"][0]["datastore"], datastore_id.as_str());
    }
    for version in ["5.7", "10.11", version_id.as_str()] {
        let (status, body) = api
            .get(&format!("/datastores/mysql/versions/{version}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{version}");
        assert_eq!(body["version"]["id"], version_id.as_str());
    }
    let (status, body) = api.get(&format!("/datastores/versions/{version_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"]["version"], "10.11");
    assert_fault(
        &api.get("/datastores/postgresql").await,
        404,
        "itemNotFound",
    );
    assert_fault(
        &api.get("/datastores/mysql/versions/8.0").await,
        404,
        "itemNotFound",
    );
    api.stop().await;
}

#[tokio::test]
async fn bad_requests_get_trove_faults() {
    let api = TestApi::start().await;
    let create = |instance: Value| api.post("/instances", json!({ "instance": instance }));

    let message = assert_fault(
        &create(json!({"name": "x", "flavorRef": 99, "volume": {"size": 1}})).await,
        404,
        "itemNotFound",
    );
    assert_eq!(message, "Flavor 99 could not be found.");
    let message = assert_fault(
        &create(json!({"name": "x", "flavorRef": 7})).await,
        400,
        "badRequest",
    );
    assert_eq!(message, "Volume size is required.");
    assert_fault(
        &create(json!({"name": "x", "flavorRef": 7, "volume": {"size": 0}})).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(json!({"name": "x", "flavorRef": 7, "volume": {"size": 1025}})).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(json!({"flavorRef": 7, "volume": {"size": 1}})).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(json!({"name": "", "flavorRef": 7, "volume": {"size": 1}})).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(json!({"name": "x", "volume": {"size": 1}})).await,
        400,
        "badRequest",
    );
    let message = assert_fault(
        &create(json!({"name": "x", "flavorRef": 7, "volume": {"size": 1}, "datastore": {"type": "postgresql"}})).await,
        400,
        "badRequest",
    );
    assert!(message.contains("postgresql"), "{message}");
    let message = assert_fault(
        &create(json!({"name": "x", "flavorRef": 7, "volume": {"size": 1}, "datastore": {"type": "mysql", "version": "8.0"}}))
            .await,
        400,
        "badRequest",
    );
    assert!(
        message.contains("8.0") && message.contains("10.11"),
        "{message}"
    );
    let ok = json!({"name": "x", "flavorRef": 7, "volume": {"size": 1}});
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    assert_fault(
        &create(with("databases", json!([{"name": "bad name"}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with("databases", json!([{"name": "mysql"}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with("databases", json!([{"name": "a"}, {"name": "a"}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with("users", json!([{"name": "u"}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with("users", json!([{"name": "u", "password": ""}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with("users", json!([{"name": "root", "password": "p"}]))).await,
        400,
        "badRequest",
    );
    assert_fault(
        &create(with(
            "users",
            json!([{"name": "u", "password": "p".repeat(257)}]),
        ))
        .await,
        400,
        "badRequest",
    );
    let message = assert_fault(
        &create(with(
            "users",
            json!([{"name": "u", "password": "p", "databases": [{"name": "nodb"}]}]),
        ))
        .await,
        400,
        "badRequest",
    );
    assert!(message.contains("nodb"), "{message}");
    let message = assert_fault(
        &create(with("replica_count", json!(2))).await,
        400,
        "badRequest",
    );
    assert!(message.contains("replica_of"), "{message}");
    let message = assert_fault(
        &create(with("volume", json!({"size": "big"}))).await,
        400,
        "badRequest",
    );
    assert!(message.contains("volume.size"), "{message}");

    // Unreadable bodies: a fault saying what is wrong, never axum's plain text.
    let url = api.url(TENANT, "/instances");
    let raw = |body: &'static str, content_type: &'static str| {
        api.send(
            api.http
                .post(&url)
                .header("content-type", content_type)
                .body(body),
        )
    };
    let message = assert_fault(
        &raw("{\"instance\": {", "application/json").await,
        400,
        "badRequest",
    );
    assert!(message.contains("not valid JSON"), "{message}");
    let message = assert_fault(
        &raw("{\"instance\": {\"name\": 5}}", "application/json").await,
        400,
        "badRequest",
    );
    assert!(message.contains("instance.name"), "{message}");
    let message = assert_fault(&raw("[]", "application/json").await, 400, "badRequest");
    assert!(message.contains("wrong shape"), "{message}");
    assert_fault(&raw("{}", "application/json").await, 400, "badRequest");
    assert_fault(
        &raw("{\"instance\": {}}", "text/plain").await,
        415,
        "badMediaType",
    );
    let huge = format!(
        "{{\"instance\": {{\"name\": \"{}\"}}}}",
        "x".repeat(1_100_000)
    );
    let too_big = api
        .send(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_fault(&too_big, 413, "overLimit");

    // Routes and methods that do not exist.
    assert_fault(&api.get("/nosuch").await, 404, "itemNotFound");
    assert_fault(
        &api.send(api.http.get(format!("{}/nosuch", api.root))).await,
        404,
        "itemNotFound",
    );
    assert_fault(
        &api.send(api.http.patch(api.url(TENANT, "/instances")))
            .await,
        405,
        "badMethod",
    );
    assert_fault(
        &api.send(api.http.post(api.url(TENANT, "/flavors"))).await,
        405,
        "badMethod",
    );

    // Updates other than rename and detach are refused, not ignored.
    assert_fault(
        &api.put("/instances/x", json!({"instance": {"configuration": "c"}}))
            .await,
        400,
        "badRequest",
    );
    assert_fault(
        &api.put("/instances/x", json!({"instance": {}})).await,
        400,
        "badRequest",
    );
    assert_fault(
        &api.put("/instances/x", json!({"instance": {"replica_of": "y"}}))
            .await,
        400,
        "badRequest",
    );
    assert_fault(
        &api.put("/instances/x", json!({"instance": {"replica_of": null}}))
            .await,
        404,
        "itemNotFound",
    );
    assert_fault(&api.delete("/instances/x").await, 404, "itemNotFound");

    // Actions Trove has and this service does not run yet say so.
    let id = api.insert_instance("acted-on").await;
    let message = assert_fault(
        &api.post(
            &format!("/instances/{id}/action"),
            json!({"promote_to_replica_source": {}}),
        )
        .await,
        501,
        "notImplemented",
    );
    assert!(message.contains("promote_to_replica_source"), "{message}");
    assert_fault(
        &api.post(
            &format!("/instances/{id}/action"),
            json!({"frobnicate": {}}),
        )
        .await,
        400,
        "badRequest",
    );
    assert_fault(
        &api.post("/instances/nosuch/action", json!({"restart": {}}))
            .await,
        404,
        "itemNotFound",
    );

    // The legacy shell's handshake.
    let handshake = api.handshake("u", "p").await;
    assert_eq!(handshake.status(), StatusCode::NO_CONTENT);
    assert!(handshake.headers().contains_key("x-auth-token"));
    let management = handshake.headers()["x-server-management-url"]
        .to_str()
        .unwrap();
    assert!(management.ends_with("/v1.0/u"), "{management}");

    api.stop().await;
}

#[tokio::test]
async fn replicas_detach_and_delete() {
    let mut api = TestApi::start().await;
    let source = api.create_instance("src").await;

    // Not ACTIVE yet: refused with what it is doing.
    let replica = |name: &str, source: &str| json!({"instance": {"name": name, "replica_of": source, "replica_count": 1}});
    let message = assert_fault(
        &api.post("/instances", replica("r0", &source.to_string()))
            .await,
        422,
        "unprocessableEntity",
    );
    assert!(
        message.starts_with(&format!(
            "Instance {source} is busy: being created (waiting for a taskmanager for "
        )) && message.ends_with("try again when it is ACTIVE."),
        "{message}"
    );
    // ACTIVE in the control DB but no heartbeat: its server is not known to be up.
    api.store
        .set_status(source, InstanceStatus::Active, None)
        .await
        .unwrap();
    let message = assert_fault(
        &api.post("/instances", replica("r0", &source.to_string()))
            .await,
        422,
        "unprocessableEntity",
    );
    assert!(message.contains("SHUTDOWN"), "{message}");
    api.make_active(source).await;

    // The legacy shell's body (flavorRef always, source by name); flavor etc. are inherited.
    let (status, body) = api
        .post("/instances", json!({"instance": {"name": "r1", "flavorRef": 2, "replica_of": "src", "replica_count": 1}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r1 = instance_id(&body);
    assert_eq!(body["instance"]["replica_of"]["id"], source.to_string());
    assert_eq!(body["instance"]["status"], "BUILD");
    assert_eq!(
        body["instance"]["flavor"]["id"], "7",
        "inherited, flavorRef ignored"
    );
    assert_eq!(body["instance"]["volume"]["size"], 2);
    assert_eq!(
        api.tasks.next().await,
        TaskRequest::CreateReplicas {
            source_id: source,
            replica_ids: vec![r1]
        }
    );

    // Several at once: name-1..name-N, one cast, the last one returned. `slave_of` works too.
    let (status, body) = api
        .post(
            "/instances",
            json!({"instance": {"name": "r2", "slave_of": source.to_string(), "replica_count": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instance"]["name"], "r2-2");
    let r2_2 = instance_id(&body);
    let (_, r2_1) = api.get("/instances/r2-1").await;
    let r2_1 = instance_id(&r2_1);
    assert_eq!(
        api.tasks.next().await,
        TaskRequest::CreateReplicas {
            source_id: source,
            replica_ids: vec![r2_1, r2_2]
        }
    );

    // The source lists its replicas.
    let (_, body) = api.get(&format!("/instances/{source}")).await;
    let replicas: Vec<&str> = body["instance"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        replicas,
        [r1.to_string(), r2_1.to_string(), r2_2.to_string()]
    );

    // Refusals.
    let message = assert_fault(
        &api.post("/instances", replica("rx", "nosuch")).await,
        404,
        "itemNotFound",
    );
    assert_eq!(message, "Replica source nosuch could not be found.");
    api.make_active(r1).await;
    let message = assert_fault(
        &api.post("/instances", replica("rr", &r1.to_string())).await,
        400,
        "badRequest",
    );
    assert!(message.contains("replica of a replica"), "{message}");
    let with_users = json!({"instance": {"name": "ru", "replica_of": "src", "users": [{"name": "u", "password": "p"}]}});
    assert_fault(&api.post("/instances", with_users).await, 400, "badRequest");
    assert_fault(
        &api.post(
            "/instances",
            json!({"instance": {"name": "r9", "replica_of": "src", "replica_count": 6}}),
        )
        .await,
        400,
        "badRequest",
    );
    let elsewhere = api
        .send(
            api.http
                .post(api.url("other-project", "/instances"))
                .json(&replica("r", &source.to_string())),
        )
        .await;
    assert_fault(&elsewhere, 404, "itemNotFound");

    // Detach: only replicas, only when ACTIVE.
    let detach = json!({"instance": {"replica_of": null}});
    let message = assert_fault(
        &api.put(&format!("/instances/{source}"), detach.clone())
            .await,
        400,
        "badRequest",
    );
    assert_eq!(message, format!("Instance {source} is not a replica."));
    assert_fault(
        &api.put(&format!("/instances/{r2_1}"), detach.clone()).await,
        422,
        "unprocessableEntity",
    );
    let (status, body) = api.put(&format!("/instances/{r1}"), detach.clone()).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    let (task, detach_task) = api.tasks.next_with_id().await;
    assert_eq!(task, TaskRequest::DetachReplica { instance_id: r1 });
    let (_, body) = api.get(&format!("/instances/{r1}")).await;
    assert_eq!(body["instance"]["status"], "DETACH");
    // Asked again (Trove's older spelling): the same task again, under the same id.
    let (status, body) = api
        .put(
            &format!("/instances/{r1}"),
            json!({"instance": {"slave_of": null}}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    assert_eq!(api.tasks.next_with_id().await, (task, detach_task));
    api.tasks.assert_empty().await;

    // Rename.
    let (status, _) = api
        .put(
            &format!("/instances/{r1}"),
            json!({"instance": {"name": "r1-new"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(api.get("/instances/r1-new").await.0, StatusCode::OK);

    // Delete: not a source seeding replicas (422, naming them), nor a replica while a
    // taskmanager seeds it; ERROR is fine; twice is fine.
    let message = assert_fault(
        &api.delete(&format!("/instances/{source}")).await,
        422,
        "unprocessableEntity",
    );
    assert!(
        message.starts_with(&format!(
            "Instance {source} is busy: seeding replicas r2-1, r2-2 (waiting for a taskmanager for "
        )),
        "{message}"
    );
    api.running_task("create_replicas", source, &[r2_1, r2_2], "attach")
        .await;
    let message = assert_fault(
        &api.delete(&format!("/instances/{r2_1}")).await,
        422,
        "unprocessableEntity",
    );
    assert!(
        message.starts_with(&format!(
            "Instance {r2_1} is busy: being seeded from src (step attach, started "
        )) && message.ends_with(" s ago); try again when it is ACTIVE or ERROR."),
        "{message}"
    );
    api.store
        .set_status(r2_1, InstanceStatus::Error, Some("seeding failed"))
        .await
        .unwrap();
    let (status, body) = api.delete(&format!("/instances/{r2_1}")).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, Value::Null));
    let (task, delete_task) = api.tasks.next_with_id().await;
    assert_eq!(task, TaskRequest::DeleteInstance { instance_id: r2_1 });
    let (_, body) = api.get(&format!("/instances/{r2_1}")).await;
    assert_eq!(
        body["instance"]["status"], "SHUTDOWN",
        "deleting shows as Trove shows it"
    );
    // Asked again: the same task again, under the same id (the taskmanager runs it once).
    assert_eq!(
        api.delete(&format!("/instances/{r2_1}")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(api.tasks.next_with_id().await, (task, delete_task));
    api.tasks.assert_empty().await;
    assert_fault(
        &api.delete(&format!("/instances/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "itemNotFound",
    );

    // With replicas no longer in BUILD, the source gets Trove's refusal.
    api.make_active(r2_2).await;
    let message = assert_fault(
        &api.delete(&format!("/instances/{source}")).await,
        403,
        "forbidden",
    );
    assert_eq!(message, "Detach replicas before deleting replica source.");

    // Once the replicas are gone (or detached), the source can go.
    for replica in [r1, r2_1, r2_2] {
        api.store.mark_deleted(replica).await.unwrap();
    }
    assert_fault(
        &api.get(&format!("/instances/{r2_1}")).await,
        404,
        "itemNotFound",
    );
    assert_eq!(
        api.delete(&format!("/instances/{source}")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.tasks.next().await,
        TaskRequest::DeleteInstance {
            instance_id: source
        }
    );
    api.stop().await;
}

/// Task rows are written as the taskmanager writes them ([`TestApi::running_task`]),
/// in the same control DB: the API reads nothing else.
#[tokio::test]
async fn busy_instances_are_refused_with_what_they_are_busy_with() {
    let mut api = TestApi::start().await;
    let not_possible = |response: &(StatusCode, Value)| -> String {
        assert_fault(response, 422, "unprocessableEntity")
    };

    // Being created, its task at its first step: not deleted.
    let m = api.create_instance("m").await;
    let create = api
        .running_task("create", m, &[m], "provision and prepare")
        .await;
    let message = not_possible(&api.delete(&format!("/instances/{m}")).await);
    assert!(
        message.starts_with(&format!(
            "Instance {m} is busy: being created (step provision and prepare, started "
        )) && message.ends_with(" s ago); try again when it is ACTIVE or ERROR."),
        "{message}"
    );
    // Its taskmanager dies: once the lease lapses, the instance stuck in BUILD can be
    // deleted (a taskmanager that takes the task up later finds it DELETING).
    assert!(
        api.store
            .renew_task_lease(create, "tm-test", Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = api.delete(&format!("/instances/{m}")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        api.tasks.next().await,
        TaskRequest::DeleteInstance { instance_id: m }
    );

    // A source being deleted cannot be replicated from.
    let gone = api.create_instance("gone").await;
    api.make_active(gone).await;
    assert_eq!(
        api.delete(&format!("/instances/{gone}")).await.0,
        StatusCode::ACCEPTED
    );
    api.tasks.next().await;
    let message = not_possible(
        &api.post(
            "/instances",
            json!({"instance": {"name": "rg", "replica_of": "gone"}}),
        )
        .await,
    );
    assert!(
        message.starts_with(&format!(
            "Instance {gone} is busy: being deleted (waiting for a taskmanager for "
        )) && message.ends_with("; it is going away."),
        "{message}"
    );

    // A detach in progress: the replica is neither deleted nor detached again.
    let src = api.create_instance("src").await;
    api.make_active(src).await;
    let (status, body) = api
        .post(
            "/instances",
            json!({"instance": {"name": "r", "replica_of": "src"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = instance_id(&body);
    api.tasks.next().await;
    api.make_active(r).await;
    let detach = json!({"instance": {"replica_of": null}});
    assert_eq!(
        api.put(&format!("/instances/{r}"), detach.clone()).await.0,
        StatusCode::ACCEPTED
    );
    let (_, detach_task) = api.tasks.next_with_id().await;
    let detaching = api.running_task("detach", r, &[r], "detach").await;
    let message = not_possible(&api.delete(&format!("/instances/{r}")).await);
    assert!(
        message.starts_with(&format!(
            "Instance {r} is busy: being detached from its source (step detach, started "
        )) && message.ends_with("; try again when the detach has finished."),
        "{message}"
    );
    // Detaching it again is the same request: accepted, and its task resent under its id
    // (the running taskmanager's claim keeps it the only run).
    assert_eq!(
        api.put(&format!("/instances/{r}"), detach.clone()).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.tasks.next_with_id().await,
        (TaskRequest::DetachReplica { instance_id: r }, detach_task)
    );
    // Its source still has it as a replica, not in BUILD: Trove's refusal.
    assert_fault(
        &api.delete(&format!("/instances/{src}")).await,
        403,
        "forbidden",
    );

    // The detach fails: an ERROR replica is not detached, but it is deleted.
    api.store
        .finish_task(detaching, "tm-test", Some("the agent stopped answering"))
        .await
        .unwrap();
    api.store
        .set_status(
            r,
            InstanceStatus::Error,
            Some("detaching the replica: the agent stopped answering"),
        )
        .await
        .unwrap();
    let message = not_possible(&api.put(&format!("/instances/{r}"), detach.clone()).await);
    assert_eq!(
        message,
        format!(
            "Instance {r} cannot be detached now: its status is ERROR. It will not become ACTIVE by itself: delete it and create it again."
        )
    );
    assert_eq!(
        api.delete(&format!("/instances/{r}")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.tasks.next().await,
        TaskRequest::DeleteInstance { instance_id: r }
    );
    api.tasks.assert_empty().await;
    api.stop().await;
}

#[tokio::test]
async fn a_failed_cast_leaves_no_build_behind() {
    let mut api = TestApi::start().await;
    let source = api.create_instance("src").await;
    api.make_active(source).await;

    // The broker refuses everything sent to the taskmanager queue.
    ferrotrove_tests::rabbitmqctl(&[
        "set_policy",
        "-p",
        &api.vhost,
        "--apply-to",
        "queues",
        "refuse",
        "^taskmanager$",
        r#"{"max-length":0,"overflow":"reject-publish"}"#,
    ])
    .expect("set_policy");
    // Policies apply asynchronously; wait until a cast is refused.
    let mut refused = None;
    for attempt in 0..50 {
        let (status, body) = api
            .post("/instances", json!({"instance": {"name": format!("m{attempt}"), "flavorRef": 7, "volume": {"size": 1}}}))
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(body);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        api.tasks.next().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = refused.expect("the broker refuses the cast once the policy applies");
    let message = body["serviceUnavailable"]["message"].as_str().unwrap();
    assert!(message.contains("ERROR"), "{message}");

    // The instance that was not built is ERROR with a fault, not BUILD forever.
    let (_, list) = api.get("/instances").await;
    let failed = list["instances"].as_array().unwrap().iter().find(|i| {
        i["status"] != "ACTIVE" && i["id"] != source.to_string() && i["status"] == "ERROR"
    });
    let failed = failed.unwrap_or_else(|| panic!("an ERROR instance in {list}"));
    assert!(
        failed["fault"]["message"]
            .as_str()
            .unwrap()
            .contains("taskmanager")
    );
    assert!(
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] != "BUILD"),
        "{list}"
    );

    // Same for replicas, and a refused delete or detach undoes its status change.
    let (status, _) = api
        .post(
            "/instances",
            json!({"instance": {"name": "r", "replica_of": "src", "replica_count": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, r1) = api.get("/instances/r-1").await;
    assert_eq!(r1["instance"]["status"], "ERROR");
    for replica in api.store.replicas_of(source).await.unwrap() {
        api.store.mark_deleted(replica).await.unwrap();
    }
    assert_fault(
        &api.delete(&format!("/instances/{source}")).await,
        503,
        "serviceUnavailable",
    );
    let (_, body) = api.get(&format!("/instances/{source}")).await;
    assert_eq!(body["instance"]["status"], "ACTIVE");

    // Once the broker takes messages again, so does the API.
    ferrotrove_tests::rabbitmqctl(&["clear_policy", "-p", &api.vhost, "refuse"])
        .expect("clear_policy");
    let mut accepted = false;
    for attempt in 0..50 {
        let (status, _) = api
            .post("/instances", json!({"instance": {"name": format!("later{attempt}"), "flavorRef": 7, "volume": {"size": 1}}}))
            .await;
        if status == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "casts work again after the broker recovers");
    api.stop().await;
}

/// What an agent reports `secs` seconds into a snapshot or restore of 2 GiB at 100 MiB/s.
fn seeding(operation: &str, secs: u64, total: Option<u64>) -> Progress {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    Progress {
        operation: operation.to_owned(),
        stage: "copying".to_owned(),
        bytes_done: (secs * 100) << 20,
        bytes_total: total,
        started_at_ms: now_ms - i64::try_from(secs * 1000).unwrap(),
    }
}

/// The next heartbeat of an agent, with `progress`, recorded as the conductor would.
async fn report(api: &TestApi, id: Uuid, boot_id: Uuid, seq: u64, progress: Option<Progress>) {
    let heartbeat = Heartbeat {
        instance_id: id,
        boot_id,
        seq,
        server: ServerStatus {
            up: true,
            ..Default::default()
        },
        host: HostStats::default(),
        progress,
    };
    assert!(api.store.record_heartbeat(&heartbeat).await.unwrap());
}

/// Makes an instance's last heartbeat a minute old, past the API's 30 s expiry.
fn age_heartbeat(api: &TestApi, id: Uuid) {
    let sql = format!(
        "UPDATE `{}`.guest_status SET received_at = received_at - INTERVAL 1 MINUTE \
         WHERE instance_id = '{id}'",
        api.store.database()
    );
    if let Err(e) = ferrotrove_tests::control_sql(None, &sql) {
        panic!("{sql}: {e}");
    }
}

async fn shown_progress(api: &TestApi, id: Uuid) -> Option<Value> {
    let (status, body) = api.get(&format!("/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["instance"].get("progress").cloned()
}

#[tokio::test]
async fn seeding_progress_shows_while_in_build() {
    let api = TestApi::start().await;
    let source = api.insert_instance("src").await;
    api.make_active(source).await;
    let replica = api
        .store
        .insert_instance(&ferrotrove_store::NewInstance {
            id: Uuid::new_v4(),
            tenant_id: TENANT.to_owned(),
            name: "r1".to_owned(),
            flavor_id: "7".to_owned(),
            volume_size: 1,
            datastore: "mariadb".to_owned(),
            datastore_version: "10.11".to_owned(),
            status: InstanceStatus::Build,
            replica_of: Some(source),
            create_task: None,
        })
        .await
        .unwrap()
        .id;
    assert_eq!(
        shown_progress(&api, replica).await,
        None,
        "nobody reports yet"
    );

    // The source's snapshot is the replica's first stage; the source shows none (ACTIVE).
    let source_boot = Uuid::now_v7();
    report(
        &api,
        source,
        source_boot,
        2,
        Some(seeding("snapshot", 4, None)),
    )
    .await;
    let shown = shown_progress(&api, replica)
        .await
        .expect("the source's snapshot");
    assert_eq!(shown["operation"], "snapshot");
    assert_eq!(shown["stage"], "copying");
    assert_eq!(shown["bytes_done"], 400u64 << 20);
    for unknown in ["bytes_total", "percent", "eta_seconds"] {
        assert_eq!(
            shown.get(unknown),
            Some(&Value::Null),
            "{unknown} in {shown}"
        );
    }
    let rate = shown["rate_bytes_per_sec"].as_u64().expect("a rate");
    assert!((90u64 << 20..=101 << 20).contains(&rate), "{rate}");
    let (_, body) = api.get(&format!("/instances/{source}")).await;
    assert!(body["instance"].get("progress").is_none(), "{body}");
    assert_eq!(body["instance"]["status"], "ACTIVE");

    // Its own agent up but idle: still the source's. Then its own restore.
    let boot = Uuid::now_v7();
    report(&api, replica, boot, 1, None).await;
    assert_eq!(
        shown_progress(&api, replica).await.unwrap()["operation"],
        "snapshot"
    );
    report(
        &api,
        replica,
        boot,
        2,
        Some(seeding("restore", 6, Some(2 << 30))),
    )
    .await;
    let shown = shown_progress(&api, replica)
        .await
        .expect("its own restore");
    assert_eq!(shown["operation"], "restore");
    assert_eq!(shown["bytes_total"], 2u64 << 30);
    let percent = shown["percent"].as_f64().expect("a percent");
    assert!((29.0..=29.4).contains(&percent), "{percent}");
    let eta = shown["eta_seconds"].as_u64().expect("an eta");
    assert!((13..=16).contains(&eta), "{eta}");

    // In lists too, and the Trove fields are as before.
    let (_, body) = api.get("/instances").await;
    let listed = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == replica.to_string())
        .unwrap()
        .clone();
    assert_eq!(listed["progress"]["operation"], "restore");
    assert_eq!(
        (
            listed["status"].as_str(),
            listed["operating_status"].as_str()
        ),
        (Some("BUILD"), Some("HEALTHY"))
    );
    assert_eq!(listed["replica_of"]["id"], source.to_string());

    // A report older than the expiry is ignored: the source's snapshot shows again, until
    // that one is old too.
    age_heartbeat(&api, replica);
    assert_eq!(
        shown_progress(&api, replica).await.unwrap()["operation"],
        "snapshot"
    );
    age_heartbeat(&api, source);
    assert_eq!(shown_progress(&api, replica).await, None);

    // Out of BUILD, no progress key, whatever the agents report.
    report(
        &api,
        source,
        source_boot,
        3,
        Some(seeding("snapshot", 1, None)),
    )
    .await;
    report(&api, replica, boot, 3, Some(seeding("restore", 1, None))).await;
    assert!(shown_progress(&api, replica).await.is_some());
    api.store
        .set_status(replica, InstanceStatus::Active, None)
        .await
        .unwrap();
    assert_eq!(shown_progress(&api, replica).await, None);
    api.stop().await;
}
