//! Runs the built `ftrove` binary against a fake Trove v1.0 API (see `support`) and checks
//! the requests it sends and what it prints: tables, JSON, name resolution through the 404
//! fallback, API faults, an unreachable API, and `--wait` reaching ACTIVE or failing on
//! ERROR with the instance's fault message.

mod support;

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::{FakeApi, Reply, Request, instance, run_ftrove};

const M1: &str = "11111111-1111-4111-8111-111111111111";
const S1: &str = "22222222-2222-4222-8222-222222222222";
const NEW: &str = "33333333-3333-4333-8333-333333333333";

/// The fake's state: the instances it lists, and scripted answers for `GET /instances/{id}`
/// (one per poll; the last one repeats).
#[derive(Default)]
struct State {
    instances: Vec<Value>,
    scripts: HashMap<String, VecDeque<Reply>>,
}

/// A small Trove: list, show, create, detach, delete, flavors and datastores.
fn trove(instances: Vec<Value>, scripts: Vec<(&str, Vec<Reply>)>) -> FakeApi {
    let state = Arc::new(Mutex::new(State {
        instances,
        scripts: scripts
            .into_iter()
            .map(|(id, replies)| (id.to_owned(), replies.into()))
            .collect(),
    }));
    FakeApi::start(move |req| route(&mut state.lock().expect("lock"), req))
}

fn route(state: &mut State, req: &Request) -> Reply {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["instances"]) => Reply::json(200, json!({ "instances": state.instances })),
        ("GET", ["instances", id]) => {
            if let Some(script) = state.scripts.get_mut(*id) {
                if script.len() > 1 {
                    return script.pop_front().expect("non-empty");
                }
                if let Some(last) = script.front() {
                    return last.clone();
                }
            }
            match find(state, id) {
                Some(inst) => Reply::json(200, json!({ "instance": inst })),
                None => Reply::not_found(),
            }
        }
        ("POST", ["instances"]) => {
            let body = req.json();
            let asked = &body["instance"];
            let name = asked["name"].as_str().unwrap_or_default();
            let mut created = instance(NEW, name, "BUILD");
            if let Some(source) = asked.get("replica_of").and_then(Value::as_str) {
                created["replica_of"] = json!({ "id": source, "links": [] });
            }
            state.instances.push(created.clone());
            Reply::json(200, json!({ "instance": created }))
        }
        ("PUT", ["instances", id]) => match find(state, id) {
            Some(inst) if inst.get("replica_of").is_some() => Reply::empty(202),
            Some(_) => Reply::json(
                400,
                json!({"badRequest": {"code": 400, "message": format!("Instance {id} is not a replica.")}}),
            ),
            None => Reply::not_found(),
        },
        ("DELETE", ["instances", id]) => match find(state, id) {
            Some(inst) if inst.get("replicas").is_some() => Reply::json(
                403,
                json!({"forbidden": {"code": 403, "message": "Detach replicas before deleting replica source."}}),
            ),
            Some(_) => {
                state.instances.retain(|i| i["id"] != *id);
                Reply::empty(202)
            }
            None => Reply::not_found(),
        },
        ("GET", ["flavors"]) => Reply::json(
            200,
            json!({"flavors": [
                {"id": 7, "str_id": "7", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 10},
                {"id": null, "str_id": "big", "name": "m1.big", "ram": 8192, "vcpus": 4, "disk": 40}
            ]}),
        ),
        ("GET", ["datastores"]) => Reply::json(
            200,
            json!({"datastores": [{"id": "ds-1", "name": "mariadb", "default_version": "v-2",
                "versions": [{"id": "v-1", "name": "10.6"}, {"id": "v-2", "name": "10.11"}]}]}),
        ),
        ("GET", ["datastores", "mariadb", "versions"]) => Reply::json(
            200,
            json!({"versions": [{"id": "v-2", "name": "10.11", "version": "10.11.6"}]}),
        ),
        _ => Reply::not_found(),
    }
}

fn find(state: &State, id: &str) -> Option<Value> {
    state.instances.iter().find(|i| i["id"] == id).cloned()
}

/// m1, a source with one replica s1.
fn pair() -> Vec<Value> {
    let mut m1 = instance(M1, "m1", "ACTIVE");
    m1["replicas"] = json!([{ "id": S1, "links": [] }]);
    let mut s1 = instance(S1, "s1", "ACTIVE");
    s1["replica_of"] = json!({ "id": M1, "links": [] });
    vec![m1, s1]
}

fn with_status(mut inst: Value, status: &str) -> Value {
    inst["status"] = json!(status);
    inst
}

fn found(inst: Value) -> Reply {
    Reply::json(200, json!({ "instance": inst }))
}

/// The Value cell of a Property/Value table row.
fn property(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (cells.len() >= 3 && cells[1] == name).then(|| cells[2].to_owned())
    })
}

#[test]
fn list_prints_a_table_with_roles_and_sends_the_token() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove_env(&["list"], &[("FTROVE_TOKEN", "tok-secret-1")]);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[1],
        "| ID                                   | Name | Datastore | Version | Status | Flavor | Size | Role    | Replica Of                           |"
    );
    assert_eq!(
        lines[3],
        format!(
            "| {M1} | m1   | mariadb   | 10.11   | ACTIVE | 7      | 2    | source  |                                      |"
        )
    );
    assert_eq!(
        lines[4],
        format!("| {S1} | s1   | mariadb   | 10.11   | ACTIVE | 7      | 2    | replica | {M1} |")
    );
    let reqs = api.requests();
    assert_eq!(api.lines(), ["GET /instances"]);
    assert_eq!(reqs[0].header("X-Auth-Token"), Some("tok-secret-1"));
    assert_eq!(reqs[0].header("Accept"), Some("application/json"));
    assert!(!run.stdout.contains("tok-secret") && !run.stderr.contains("tok-secret"));
}

#[test]
fn token_flag_overrides_the_environment_and_no_token_sends_no_header() {
    let api = trove(pair(), vec![]);
    api.ftrove_env(
        &["list", "--token", "from-flag"],
        &[("FTROVE_TOKEN", "from-env")],
    )
    .assert_ok();
    api.ftrove(&["list"]).assert_ok();
    let reqs = api.requests();
    assert_eq!(reqs[0].header("X-Auth-Token"), Some("from-flag"));
    assert_eq!(reqs[1].header("X-Auth-Token"), None);
}

#[test]
fn url_flag_overrides_the_environment() {
    let api = trove(pair(), vec![]);
    let run = run_ftrove(
        "http://127.0.0.1:9/v1.0/nowhere",
        &["--url", &api.url, "list"],
        &[],
    );
    run.assert_ok();
    assert_eq!(api.lines(), ["GET /instances"]);
}

#[test]
fn show_by_id_prints_sorted_properties() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove(&["show", M1]);
    run.assert_ok();
    assert_eq!(api.lines(), [format!("GET /instances/{M1}")]);
    let props: Vec<String> = run
        .stdout
        .lines()
        .skip(3)
        .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_owned()))
        .collect();
    assert_eq!(
        props,
        [
            "created",
            "datastore",
            "datastore_version",
            "flavor",
            "id",
            "ip",
            "name",
            "operating_status",
            "port",
            "replicas",
            "status",
            "updated",
            "volume"
        ]
    );
    assert_eq!(property(&run.stdout, "replicas").as_deref(), Some(S1));
    assert_eq!(property(&run.stdout, "ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(property(&run.stdout, "port").as_deref(), Some("3306"));
    assert!(
        run.stdout.starts_with("+-------------------+--"),
        "{}",
        run.stdout
    );
}

#[test]
fn show_by_name_falls_back_to_the_list_after_a_404() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove(&["show", "s1"]);
    run.assert_ok();
    assert_eq!(
        api.lines(),
        [
            "GET /instances/s1".to_owned(),
            "GET /instances".to_owned(),
            format!("GET /instances/{S1}")
        ]
    );
    assert_eq!(property(&run.stdout, "replica_of").as_deref(), Some(M1));
    assert_eq!(property(&run.stdout, "replicas"), None);
}

#[test]
fn unknown_and_ambiguous_names_are_clear_errors() {
    let mut twins = pair();
    twins[1]["name"] = json!("m1");
    let api = trove(twins, vec![]);
    let run = api.ftrove(&["show", "m1"]);
    run.assert_code(1);
    assert_eq!(run.stderr, "ftrove: 2 instances are named m1; use the id\n");
    assert_eq!(run.stdout, "");

    let run = api.ftrove(&["delete", "nope"]);
    run.assert_code(1);
    assert_eq!(run.stderr, "ftrove: no instance named nope\n");
    assert!(api.lines().iter().all(|l| !l.starts_with("DELETE")));
}

#[test]
fn names_are_percent_encoded_in_paths() {
    let api = trove(pair(), vec![]);
    api.ftrove(&["show", "a b/c"]).assert_code(1);
    assert_eq!(api.lines()[0], "GET /instances/a%20b%2Fc");
}

#[test]
fn show_json_prints_the_api_object() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove(&["show", "m1", "--json"]);
    run.assert_ok();
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({ "instance": pair()[0] }));

    let run = api.ftrove(&["--json", "list"]);
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({ "instances": pair() }));
}

#[test]
fn create_sends_the_trove_body_and_prints_the_new_instance() {
    let api = trove(vec![], vec![]);
    let run = api.ftrove(&[
        "create",
        "m1",
        "7",
        "--size",
        "2",
        "--databases",
        "appdb",
        "--databases",
        "logs",
        "--users",
        "app:apppass,ro:ro:pw",
        "--datastore",
        "mariadb",
        "--datastore-version",
        "10.11",
    ]);
    run.assert_ok();
    let reqs = api.requests();
    assert_eq!(api.lines(), ["POST /instances"]);
    assert_eq!(reqs[0].header("Content-Type"), Some("application/json"));
    let dbs = json!([{"name": "appdb"}, {"name": "logs"}]);
    assert_eq!(
        reqs[0].json(),
        json!({"instance": {
            "name": "m1", "flavorRef": 7, "volume": {"size": 2},
            "databases": dbs,
            "users": [{"name": "app", "password": "apppass", "databases": dbs},
                      {"name": "ro", "password": "ro:pw", "databases": dbs}],
            "datastore": {"type": "mariadb", "version": "10.11"}
        }})
    );
    assert_eq!(property(&run.stdout, "id").as_deref(), Some(NEW));
    assert_eq!(property(&run.stdout, "status").as_deref(), Some("BUILD"));
    assert!(!run.stdout.contains("apppass"));
}

#[test]
fn create_resolves_a_flavor_name() {
    let api = trove(vec![], vec![]);
    api.ftrove(&["create", "m2", "m1.big", "--size", "3"])
        .assert_ok();
    assert_eq!(api.lines(), ["GET /flavors", "POST /instances"]);
    assert_eq!(
        api.requests()[1].json()["instance"]["flavorRef"],
        json!("big")
    );

    let run = api.ftrove(&["create", "m3", "tiny", "--size", "3"]);
    run.assert_code(1);
    assert_eq!(run.stderr, "ftrove: no flavor named tiny\n");
}

#[test]
fn create_replica_with_each_alias_sends_the_resolved_source_id() {
    for flag in ["--replica-of", "--slave-of", "--slave_of", "--replica_of"] {
        let api = trove(pair(), vec![]);
        let run = api.ftrove(&["create", "s2", "7", "--size", "2", flag, "m1"]);
        run.assert_ok();
        assert_eq!(
            api.lines(),
            [
                "GET /instances/m1".to_owned(),
                "GET /instances".to_owned(),
                format!("GET /instances/{M1}"),
                "POST /instances".to_owned()
            ],
            "{flag}"
        );
        assert_eq!(
            api.requests()[3].json(),
            json!({"instance": {"name": "s2", "flavorRef": 7, "volume": {"size": 2},
                                "replica_of": M1, "replica_count": 1}}),
            "{flag}"
        );
        assert_eq!(property(&run.stdout, "replica_of").as_deref(), Some(M1));
    }
    // Size and flavor may be left out for a replica.
    let api = trove(pair(), vec![]);
    api.ftrove(&["create", "s3", "--replica-of", M1, "--replica_count", "1"])
        .assert_ok();
    assert_eq!(
        api.requests()[1].json(),
        json!({"instance": {"name": "s3", "replica_of": M1, "replica_count": 1}})
    );
}

#[test]
fn create_wait_follows_the_instance_to_active() {
    let building = instance(NEW, "m1", "BUILD");
    let api = trove(
        vec![],
        vec![(
            NEW,
            vec![
                found(building.clone()),
                found(building),
                found(instance(NEW, "m1", "ACTIVE")),
            ],
        )],
    );
    let run = api.ftrove(&["create", "m1", "7", "--size", "2", "--wait"]);
    run.assert_ok();
    assert_eq!(run.stderr, "m1: BUILD -> ACTIVE\n");
    assert_eq!(property(&run.stdout, "status").as_deref(), Some("ACTIVE"));
    let polls = api
        .lines()
        .iter()
        .filter(|l| **l == format!("GET /instances/{NEW}"))
        .count();
    assert_eq!(polls, 3);
}

#[test]
fn create_wait_fails_on_error_with_the_fault_message() {
    let mut failed = instance(NEW, "m1", "ERROR");
    failed["fault"] = json!({"message": "mariadb failed to start: disk full", "code": 500});
    let api = trove(
        vec![],
        vec![(
            NEW,
            vec![found(instance(NEW, "m1", "BUILD")), found(failed)],
        )],
    );
    let run = api.ftrove(&["create", "m1", "7", "--size", "2", "--wait"]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        format!(
            "m1: BUILD -> ERROR\nftrove: m1 ({NEW}): it went to ERROR: mariadb failed to start: disk full\n"
        )
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn wait_gives_up_after_the_timeout() {
    let api = trove(
        vec![],
        vec![(NEW, vec![found(instance(NEW, "m1", "BUILD"))])],
    );
    let run = api.ftrove(&[
        "create",
        "m1",
        "7",
        "--size",
        "2",
        "--wait",
        "--wait-timeout",
        "0",
    ]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        "ftrove: timed out after 0 s waiting for m1 to become ACTIVE (m1 is BUILD); \
         it may still finish: see `ftrove list`\n"
    );
}

#[test]
fn detach_replica_sends_replica_of_null_and_waits() {
    let mut attached = pair()[1].clone();
    attached["status"] = json!("DETACH");
    let detached = instance(S1, "s1", "ACTIVE");
    let api = trove(
        pair(),
        vec![(
            S1,
            vec![found(pair()[1].clone()), found(attached), found(detached)],
        )],
    );
    let run = api.ftrove(&["detach-replica", "s1", "--wait"]);
    run.assert_ok();
    let reqs = api.requests();
    let put = reqs.iter().find(|r| r.method == "PUT").expect("a PUT");
    assert_eq!(put.path, format!("/instances/{S1}"));
    assert_eq!(put.json(), json!({"instance": {"replica_of": null}}));
    assert_eq!(
        run.stdout,
        format!(
            "Request to detach replica s1 ({S1}) from its source has been accepted.\ns1 is detached and ACTIVE.\n"
        )
    );
    assert_eq!(run.stderr, "s1: DETACH\ns1: DETACH -> ACTIVE\n");
}

#[test]
fn detach_of_a_non_replica_prints_the_api_fault() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove(&["detach-replica", M1]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        format!("ftrove: Instance {M1} is not a replica. (HTTP 400)\n")
    );
}

#[test]
fn delete_of_a_source_prints_the_fault() {
    let api = trove(pair(), vec![]);
    let run = api.ftrove(&["delete", "m1"]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        "ftrove: Detach replicas before deleting replica source. (HTTP 403)\n"
    );
}

#[test]
fn delete_wait_follows_until_404() {
    let api = trove(
        pair(),
        vec![(
            S1,
            vec![
                found(pair()[1].clone()),
                found(with_status(pair()[1].clone(), "DELETING")),
                Reply::not_found(),
            ],
        )],
    );
    let run = api.ftrove(&["delete", "s1", "--wait"]);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!("Request to delete instance s1 ({S1}) has been accepted.\ns1 is deleted.\n")
    );
    assert_eq!(run.stderr, "s1: ACTIVE -> DELETING\ns1: DELETING -> gone\n");
    assert!(api.lines().contains(&format!("DELETE /instances/{S1}")));
}

#[test]
fn catalog_tables() {
    let api = trove(vec![], vec![]);
    let run = api.ftrove(&["flavor-list"]);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "\
+-----+----------+------+-------+------+
| ID  | Name     | RAM  | vCPUs | Disk |
+-----+----------+------+-------+------+
| 7   | m1.small | 2048 | 1     | 10   |
| big | m1.big   | 8192 | 4     | 40   |
+-----+----------+------+-------+------+
"
    );
    let run = api.ftrove(&["datastore-list"]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("| ds-1 | mariadb | 10.11           | 10.6, 10.11 |"),
        "{}",
        run.stdout
    );
    let run = api.ftrove(&["datastore-version-list", "mariadb"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("| v-2 | 10.11 | 10.11.6 |"),
        "{}",
        run.stdout
    );
}

#[test]
fn unreachable_api_says_where_and_what_to_do() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/v1.0/demo");
    let run = run_ftrove(&url, &["list"], &[("FTROVE_TOKEN", "tok-secret-2")]);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with(&format!("ftrove: the API is not reachable at {url} (")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("check FTROVE_URL"), "{}", run.stderr);
    assert!(run.stderr.contains("start the stack"), "{}", run.stderr);
    assert!(!run.stderr.contains("tok-secret"));
}

#[test]
fn usage_errors_exit_2_without_contacting_the_api() {
    let api = trove(vec![], vec![]);
    let run = api.ftrove(&["create", "m1", "7", "--size", "2", "--users", "app"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("invalid user 'app': expected NAME:PASSWORD"),
        "{}",
        run.stderr
    );
    api.ftrove(&["create", "m1", "7"]).assert_code(2);
    api.ftrove(&["frobnicate"]).assert_code(2);
    assert!(api.lines().is_empty());
}

#[test]
fn help_shows_the_walkthrough_and_hides_the_token() {
    let run = run_ftrove(
        "http://127.0.0.1:1/v1.0/demo",
        &["--help"],
        &[("FTROVE_TOKEN", "tok-secret-3")],
    );
    run.assert_ok();
    assert!(
        run.stdout
            .contains("ftrove create s1 7 --size 2 --replica-of m1 --wait")
    );
    assert!(run.stdout.contains("ftrove delete s1 ; ftrove delete m1"));
    assert!(run.stdout.contains("http://127.0.0.1:8779/v1.0/demo"));
    assert!(!run.stdout.contains("tok-secret"));
}

#[test]
fn create_wait_with_replica_count_follows_every_new_replica() {
    const SIB: &str = "44444444-4444-4444-8444-444444444444";
    let mut instances = pair();
    let mut sibling = instance(SIB, "s2-1", "BUILD");
    sibling["replica_of"] = json!({ "id": M1 });
    instances.push(sibling.clone());
    let mut last = instance(NEW, "s2", "ACTIVE");
    last["replica_of"] = json!({ "id": M1 });
    let api = trove(
        instances,
        vec![
            (
                SIB,
                vec![
                    found(sibling.clone()),
                    found(with_status(sibling, "ACTIVE")),
                ],
            ),
            (NEW, vec![found(last)]),
        ],
    );
    let run = api.ftrove(&[
        "create",
        "s2",
        "--replica-of",
        "m1",
        "--replica-count",
        "2",
        "--wait",
    ]);
    run.assert_ok();
    assert_eq!(run.stderr, "s2: BUILD -> ACTIVE\ns2-1: BUILD -> ACTIVE\n");
    assert_eq!(
        api.requests()[3].json()["instance"]["replica_count"],
        json!(2)
    );
}

/// `inst` while seeded: 1.2 GiB of a 2 GiB restore done, as the API reports it.
fn restoring(mut inst: Value) -> Value {
    inst["progress"] = json!({
        "operation": "restore", "stage": "copying",
        "bytes_done": 1_288_490_189u64, "bytes_total": 2u64 << 30, "percent": 60.0,
        "rate_bytes_per_sec": 310u64 << 20, "eta_seconds": 3
    });
    inst
}

#[test]
fn show_prints_the_progress_of_a_seeding_instance() {
    let seeding = restoring(instance(NEW, "s1", "BUILD"));
    let api = trove(vec![seeding.clone()], vec![]);
    let run = api.ftrove(&["show", NEW]);
    run.assert_ok();
    assert_eq!(
        property(&run.stdout, "progress").as_deref(),
        Some("restore: copying 1.2 GiB / 2.0 GiB (60%), 310 MiB/s, 3 s left")
    );
    assert_eq!(property(&run.stdout, "status").as_deref(), Some("BUILD"));

    // --json prints the API's object as it came, progress included.
    let run = api.ftrove(&["show", NEW, "--json"]);
    run.assert_ok();
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({ "instance": seeding }));
}

#[test]
fn create_wait_through_progress_without_a_terminal_prints_as_before() {
    let mut snapshot = instance(NEW, "s1", "BUILD");
    snapshot["progress"] = json!({
        "operation": "snapshot", "stage": "dumping", "bytes_done": 1024,
        "bytes_total": null, "percent": null, "rate_bytes_per_sec": null, "eta_seconds": null
    });
    let restore = restoring(instance(NEW, "s1", "BUILD"));
    let active = instance(NEW, "s1", "ACTIVE");
    let script = || {
        vec![(
            NEW,
            vec![
                found(snapshot.clone()),
                found(restore.clone()),
                found(active.clone()),
            ],
        )]
    };

    // No bar: the status lines alone on stderr, the table on stdout.
    let api = trove(vec![], script());
    let run = api.ftrove(&["create", "s1", "7", "--size", "2", "--wait"]);
    run.assert_ok();
    assert_eq!(run.stderr, "s1: BUILD -> ACTIVE\n");
    assert_eq!(property(&run.stdout, "status").as_deref(), Some("ACTIVE"));
    assert_eq!(property(&run.stdout, "progress"), None);

    // --json: stdout is exactly the final instance, as JSON.
    let api = trove(vec![], script());
    let run = api.ftrove(&["create", "s1", "7", "--size", "2", "--wait", "--json"]);
    run.assert_ok();
    assert_eq!(run.stderr, "s1: BUILD -> ACTIVE\n");
    let printed: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(printed, json!({ "instance": active }));
}

#[test]
fn completions_cover_every_subcommand_and_need_no_api() {
    // No API at this URL: completions must not try to reach one.
    let run = run_ftrove("http://127.0.0.1:9/v1.0/x", &["completions", "bash"], &[]);
    run.assert_ok();
    for word in [
        "create",
        "detach-replica",
        "datastore-version-list",
        "--replica-of",
        "--wait",
    ] {
        assert!(
            run.stdout.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let zsh = run_ftrove("http://127.0.0.1:9/v1.0/x", &["completions", "zsh"], &[]);
    zsh.assert_ok();
    assert!(zsh.stdout.starts_with("#compdef ftrove"), "{}", zsh.stdout);
    let bad = run_ftrove("http://127.0.0.1:9/v1.0/x", &["completions", "tcsh"], &[]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
}
