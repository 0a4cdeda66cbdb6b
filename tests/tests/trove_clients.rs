//! OpenStack's own Trove clients against the real daemons: `openstack database ...`
//! (python-openstackclient with python-troveclient) and the legacy `trove` shell, from
//! PyPI at pinned versions (`deploy/dev/trove-clients.sh` installs them into
//! `target/trove-clients-venv`, once), pointed at Ferrotrove without Keystone as
//! README.md's "Trove's own clients" says.
//!
//! The main run goes through an API with `auth.mode = "tokens"` (the production setting),
//! started next to the stack on the stack's control DB and broker: `openstack` with
//! `--os-auth-type admin_token --os-token`, `trove` with the token as its password. Flavor,
//! datastore and datastore-version lists; two sources; replicas with `--replica-of` and
//! `--replica-count 2` from each client, awaited by polling `show`; list and show with
//! roles and `replica_of`; a refused delete of a source with replicas; detach (both
//! `openstack` forms: the legacy shell's detach is broken client-side in 8.11.0, see
//! trove-rest-api.md); deletes. Then: wrong and foreign tokens as the clients report
//! them, `ftrove` with `FTROVE_TOKEN`, and the stack's own API in `auth.mode = "none"`.

mod common;

use common::{Stack, eventually};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stack's tenant (`Stack::api_url`), which the tokens API serves too.
const TENANT: &str = "test-tenant";
const OTHER_TENANT: &str = "other-tenant";
/// How long an instance (a source, or a batch of replicas seeded from a snapshot) may take
/// to become ACTIVE.
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `deploy/dev/trove-clients.sh` (which returns at once when the venv is already
/// there) and returns the venv's bin directory.
fn install_clients() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev/trove-clients.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/dev/trove-clients.sh");
    assert!(out.status.success(), "trove-clients.sh failed");
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(bin.join("openstack").exists() && bin.join("trove").exists());
    bin
}

/// What one client run did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// One client (`openstack` or `trove`) with the options that point it at an API.
struct Cli {
    program: PathBuf,
    options: Vec<String>,
    home: PathBuf,
}

impl Cli {
    /// `openstack --os-auth-type admin_token --os-endpoint <endpoint> --os-token <token>`.
    fn osc(bin: &Path, home: &Path, endpoint: &str, token: &str) -> Cli {
        Cli::new(
            bin.join("openstack"),
            home,
            &[
                "--os-auth-type",
                "admin_token",
                "--os-endpoint",
                endpoint,
                "--os-token",
                token,
            ],
        )
    }

    /// `openstack --os-auth-type none --os-endpoint <endpoint>`.
    fn osc_noauth(bin: &Path, home: &Path, endpoint: &str) -> Cli {
        Cli::new(
            bin.join("openstack"),
            home,
            &["--os-auth-type", "none", "--os-endpoint", endpoint],
        )
    }

    /// The legacy shell: the v1 handshake at `<root>/auth` with the token as password, then
    /// `--bypass-url <root>/v1.0/<tenant>`.
    fn legacy(bin: &Path, home: &Path, root: &str, tenant: &str, password: &str) -> Cli {
        Cli::new(
            bin.join("trove"),
            home,
            &[
                "--os-auth-url",
                &format!("{root}/auth"),
                "--os-username",
                "someone",
                "--os-password",
                password,
                "--os-project-id",
                tenant,
                "--bypass-url",
                &format!("{root}/v1.0/{tenant}"),
            ],
        )
    }

    fn new(program: PathBuf, home: &Path, options: &[&str]) -> Cli {
        Cli {
            program,
            options: options.iter().map(|s| s.to_string()).collect(),
            home: home.to_owned(),
        }
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(&self.program);
        command.args(&self.options).args(args);
        // Nothing from the caller's OpenStack settings, clouds.yaml or caches.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("OS_") || key.starts_with("TROVE_") {
                command.env_remove(&*key);
            }
        }
        let out = command
            .env("HOME", &self.home)
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .output()
            .expect("run a Trove client");
        let run = Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // The transcript (shown with --nocapture or on failure); the options, which hold
        // the token, are left out.
        eprintln!(
            "$ {} {} -> {}\n{}{}",
            self.name(),
            args.join(" "),
            if run.ok { "ok" } else { "FAILED" },
            run.stdout,
            run.stderr
        );
        run
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.ok,
            "{} {args:?} failed:\n{}\n{}",
            self.name(),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs and insists on failure; returns stdout and stderr together.
    fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            !run.ok,
            "{} {args:?} succeeded:\n{}",
            self.name(),
            run.stdout
        );
        format!("{}{}", run.stdout, run.stderr)
    }

    /// `openstack ... -f json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// `trove --json ...`, parsed (the option must come before the subcommand).
    fn legacy_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("trove {args:?} printed no JSON ({e}):\n{stdout}"))
    }
}

/// A second `ftrove-api`, with `auth.mode = "tokens"`, on the stack's control DB and broker
/// (the API keeps no state of its own). Stopped on drop.
struct TokenApi {
    root: String,
    child: Child,
    log: PathBuf,
}

impl TokenApi {
    fn start(stack: &Stack, dir: &Path, tokens: &[(&str, &str)]) -> TokenApi {
        let tokens_file = dir.join("tokens.toml");
        let text: String = tokens
            .iter()
            .map(|(token, tenant)| format!("\"{token}\" = \"{tenant}\"\n"))
            .collect();
        std::fs::write(&tokens_file, text).expect("write the tokens file");
        set_mode(&tokens_file, 0o600);
        let port = ferrotrove_tests::free_port();
        let config = dir.join("api-tokens.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nheartbeat_expiry_secs = 10\n\n[auth]\nmode = \"tokens\"\ntokens_file = \"{}\"\n\n[bus]\nurl = \"{}\"\nexchange = \"ferrotrove\"\n\n[store]\nurl = \"{}\"\ndatabase = \"{}\"\n",
                tokens_file.display(),
                stack.bus_url(),
                stack.db.server_url(),
                stack.db.name
            ),
        )
        .expect("write the config");
        let log = dir.join("api-tokens.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(ferrotrove_tests::binary("ftrove-api"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start ftrove-api");
        let api = TokenApi {
            root: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let (token, tenant) = tokens[0];
        let client = reqwest::blocking::Client::new();
        let up = eventually(Duration::from_secs(60), || {
            client
                .get(format!("{}/v1.0/{tenant}/flavors", api.root))
                .header("X-Auth-Token", token)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        assert!(up, "the tokens API did not come up:\n{}", api.logs());
        api
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TokenApi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- api-tokens.log\n{}", self.logs());
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Polls `openstack database instance show <name>` until every one of `names` is ACTIVE;
/// returns what `show` printed last for each. An ERROR fails at once.
fn wait_active(osc: &Cli, names: &[&str]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let mut shown = BTreeMap::new();
    for name in names {
        loop {
            let view = osc.json(&["database", "instance", "show", name]);
            let status = view["status"].as_str().unwrap_or_default().to_owned();
            assert_ne!(status, "ERROR", "{name} failed: {view}");
            if status == "ACTIVE" {
                shown.insert(name.to_string(), view);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is still {status} after {BUILD_TIMEOUT:?}: {view}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    shown
}

/// Polls `openstack database instance show <name>` until it says there is no such
/// instance (a delete has finished).
fn wait_gone(osc: &Cli, names: &[&str]) {
    for name in names {
        let gone = eventually(Duration::from_secs(90), || {
            let run = osc.run(&["database", "instance", "show", name]);
            !run.ok && run.stderr.contains("with a name or ID of")
        });
        assert!(gone, "{name} was not deleted");
    }
}

/// The id `openstack ... -f json` printed.
fn id_of(view: &Value) -> String {
    view["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {view}"))
        .to_owned()
}

/// The rows of an `openstack ... list -f json`, by name.
fn rows_by_name(rows: &Value) -> BTreeMap<String, Value> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not a list: {rows}"))
        .iter()
        .map(|row| {
            (
                row["Name"].as_str().unwrap_or_default().to_owned(),
                row.clone(),
            )
        })
        .collect()
}

#[test]
fn openstack_and_trove_clients_drive_the_stack() {
    let started = Instant::now();
    let bin = install_clients();
    let stack = Stack::start();
    // The stack's API runs without tokens, and says so in its log.
    assert!(
        stack
            .logs()
            .contains("auth.mode = \"none\": tokens are NOT checked"),
        "no warning about auth.mode = none:\n{}",
        stack.logs()
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let other_token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let api = TokenApi::start(
        &stack,
        scratch.path(),
        &[(&token, TENANT), (&other_token, OTHER_TENANT)],
    );
    let endpoint = format!("{}/v1.0/{TENANT}", api.root);
    let osc = Cli::osc(&bin, &home, &endpoint, &token);
    let trove = Cli::legacy(&bin, &home, &api.root, TENANT, &token);

    // Flavors, datastores and versions, in both clients' tables.
    for out in [
        osc.ok(&["database", "flavor", "list"]),
        trove.ok(&["flavor-list"]),
    ] {
        for expected in ["m1.tiny", "ds1G", "1024"] {
            assert!(out.contains(expected), "{expected} missing:\n{out}");
        }
    }
    for out in [
        osc.ok(&["datastore", "list"]),
        trove.ok(&["datastore-list"]),
    ] {
        assert!(out.contains("mariadb"), "{out}");
    }
    for datastore in ["mariadb", "mysql"] {
        for out in [
            osc.ok(&["datastore", "version", "list", datastore]),
            trove.ok(&["datastore-version-list", datastore]),
        ] {
            assert!(out.contains("10.11"), "{out}");
        }
    }

    // Two sources: one from each client. The flavor by name (a 404 on GET /flavors/ds1G,
    // then the client searches the list) and the datastore by Trove's alias names.
    let out = osc.ok(&[
        "database",
        "instance",
        "create",
        "m1",
        "--flavor",
        "ds1G",
        "--size",
        "1",
        "--datastore",
        "mysql",
        "--datastore-version",
        "5.7",
    ]);
    assert!(out.contains("m1") && out.contains("BUILD"), "{out}");
    let out = trove.ok(&[
        "create",
        "m2",
        "7",
        "--size",
        "1",
        "--datastore",
        "mariadb",
        "--datastore_version",
        "10.11",
    ]);
    assert!(out.contains("m2") && out.contains("BUILD"), "{out}");
    let sources = wait_active(&osc, &["m1", "m2"]);
    let m1 = id_of(&sources["m1"]);
    let m2 = id_of(&sources["m2"]);
    assert_eq!(sources["m1"]["datastore"], "mariadb", "{}", sources["m1"]);
    assert_eq!(sources["m1"]["flavor"], "7", "{}", sources["m1"]);
    assert_eq!(sources["m2"]["volume"], 1, "{}", sources["m2"]);

    // Replicas: from openstack, one with --replica-of (by name) and two with
    // --replica-count 2; from trove (which also sends a flavor) two of m2.
    let out = osc.ok(&["database", "instance", "create", "r1", "--replica-of", "m1"]);
    assert!(out.contains("r1") && out.contains(&m1), "{out}");
    let out = osc.ok(&[
        "database",
        "instance",
        "create",
        "r2",
        "--replica-of",
        &m1,
        "--replica-count",
        "2",
    ]);
    assert!(out.contains("r2-2") && out.contains(&m1), "{out}");
    let out = trove.ok(&[
        "create",
        "r3",
        "7",
        "--replica_of",
        "m2",
        "--replica_count",
        "2",
    ]);
    assert!(out.contains("r3-2") && out.contains(&m2), "{out}");
    let replicas = wait_active(&osc, &["r1", "r2-1", "r2-2", "r3-1", "r3-2"]);
    for (name, source) in [
        ("r1", &m1),
        ("r2-1", &m1),
        ("r2-2", &m1),
        ("r3-1", &m2),
        ("r3-2", &m2),
    ] {
        assert_eq!(replicas[name]["replica_of"], source.as_str(), "{name}");
    }

    // List: every instance, with openstack's Role column; the legacy shell's table too.
    let rows = rows_by_name(&osc.json(&["database", "instance", "list"]));
    assert_eq!(rows.len(), 7, "{rows:?}");
    for (name, role) in [("m1", "primary"), ("m2", "primary"), ("r1", "replica")] {
        assert_eq!(rows[name]["Role"], role, "{name}: {:?}", rows[name]);
        assert_eq!(rows[name]["Status"], "ACTIVE");
    }
    let out = trove.ok(&["list"]);
    for name in ["m1", "m2", "r1", "r2-1", "r2-2", "r3-1", "r3-2"] {
        assert!(out.contains(&format!("'{name}'")), "{name} missing:\n{out}");
    }
    assert!(out.contains("ACTIVE"), "{out}");

    // Show: a source lists its replicas; a replica names its source.
    let shown = osc.json(&["database", "instance", "show", "m1"]);
    let listed = shown["replicas"].as_str().unwrap_or_default();
    for name in ["r1", "r2-1", "r2-2"] {
        assert!(listed.contains(&id_of(&replicas[name])), "{name}: {shown}");
    }
    let out = trove.ok(&["show", "r3-1"]);
    assert!(out.contains("replica_of") && out.contains(&m2), "{out}");
    let shown = trove.legacy_json(&["show", "m2"]);
    assert_eq!(shown["name"], "m2", "{shown}");
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    // Printed flattened, as the table shows it: the replicas' ids, comma-separated.
    let listed = shown["replicas"].as_str().unwrap_or_default();
    for name in ["r3-1", "r3-2"] {
        assert!(listed.contains(&id_of(&replicas[name])), "{name}: {shown}");
    }

    // A source with replicas is not deleted: both clients print Trove's refusal.
    for out in [
        osc.fails(&["database", "instance", "delete", "m1"]),
        trove.fails(&["delete", "m2"]),
    ] {
        assert!(
            out.contains("Detach replicas before deleting replica source."),
            "{out}"
        );
    }

    // Detach, in both of openstack's forms.
    osc.ok(&["database", "instance", "detach", "r1"]);
    osc.ok(&[
        "database",
        "instance",
        "update",
        "r2-1",
        "--detach-replica-source",
    ]);
    for name in ["r1", "r2-1"] {
        let detached = eventually(Duration::from_secs(60), || {
            let view = osc.json(&["database", "instance", "show", name]);
            view["status"] == "ACTIVE" && view.get("replica_of").is_none()
        });
        assert!(detached, "{name} was not detached");
    }
    let rows = rows_by_name(&osc.json(&["database", "instance", "list"]));
    assert_eq!(rows["r1"]["Role"], "", "{:?}", rows["r1"]);

    // The legacy shell's detach is broken in the client (8.11.0): it fails before sending
    // anything, and the replica stays attached.
    let out = trove.fails(&["detach-replica", "r2-2"]);
    assert!(out.contains("has no attribute 'edit'"), "{out}");
    let view = osc.json(&["database", "instance", "show", "r2-2"]);
    assert_eq!(view["replica_of"], m1.as_str(), "{view}");

    // A foreign or wrong token, as the clients report it.
    let stranger = Cli::osc(&bin, &home, &endpoint, &other_token);
    let out = stranger.fails(&["database", "instance", "list"]);
    assert!(out.contains("could not be found. (HTTP 404)"), "{out}");
    let out = stranger.fails(&["database", "instance", "show", &m1]);
    assert!(out.contains("with a name or ID of"), "{out}");
    let own = Cli::osc(
        &bin,
        &home,
        &format!("{}/v1.0/{OTHER_TENANT}", api.root),
        &other_token,
    );
    assert!(
        own.json(&["database", "instance", "list"])
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let out = own.fails(&["database", "instance", "delete", &m1]);
    assert!(out.contains("could not be found. (HTTP 404)"), "{out}");
    for cli in [
        Cli::osc(&bin, &home, &endpoint, "tok-not-a-real-token-000000"),
        Cli::osc_noauth(&bin, &home, &endpoint),
    ] {
        let out = cli.fails(&["database", "instance", "list"]);
        assert!(
            out.contains("The X-Auth-Token is not valid. (HTTP 401)"),
            "{out}"
        );
    }
    let out = Cli::legacy(&bin, &home, &api.root, TENANT, "wrong-password").fails(&["list"]);
    assert!(out.contains("Invalid OpenStack Trove credentials"), "{out}");

    // ftrove sends FTROVE_TOKEN as X-Auth-Token.
    let ftrove = |token: Option<&str>| {
        let mut command = Command::new(ferrotrove_tests::binary("ftrove"));
        command.args(["list"]).env("FTROVE_URL", &endpoint);
        match token {
            Some(token) => command.env("FTROVE_TOKEN", token),
            None => command.env_remove("FTROVE_TOKEN"),
        };
        let out = command.output().expect("run ftrove");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = ftrove(Some(&token));
    assert!(ok && out.contains("r3-2"), "{out}");
    let (ok, out) = ftrove(None);
    assert!(!ok && out.contains("401"), "{out}");
    assert!(!out.contains(&token));

    // The stack's own API, without tokens: openstack with --os-auth-type none, and the
    // legacy shell with any password, see the same instances.
    let noauth = Cli::osc_noauth(&bin, &home, &stack.api_url);
    let rows = rows_by_name(&noauth.json(&["database", "instance", "list"]));
    assert_eq!(rows.len(), 7, "{rows:?}");
    let stack_root = stack.api_url.trim_end_matches(&format!("/v1.0/{TENANT}"));
    let out = Cli::legacy(&bin, &home, stack_root, TENANT, "anything").ok(&["show", "m1"]);
    assert!(out.contains(&m1), "{out}");

    // Delete: the replicas first (openstack by name and by id; trove by name), then the
    // sources, which are free to go once their replicas are gone.
    let accepted =
        |id: &str| format!("Request to delete database instance {id} has been accepted.");
    let out = osc.ok(&["database", "instance", "delete", "r1"]);
    assert!(out.contains(&accepted(&id_of(&replicas["r1"]))), "{out}");
    let r2_1 = id_of(&replicas["r2-1"]);
    let out = osc.ok(&["database", "instance", "delete", &r2_1]);
    assert!(out.contains(&accepted(&r2_1)), "{out}");
    osc.ok(&["database", "instance", "delete", "r2-2"]);
    for name in ["r3-1", "r3-2"] {
        let out = trove.ok(&["delete", name]);
        assert!(
            out.contains(&format!(
                "Request to delete instance {name} has been accepted."
            )),
            "{out}"
        );
    }
    wait_gone(&osc, &["r1", "r2-1", "r2-2", "r3-1", "r3-2"]);
    osc.ok(&["database", "instance", "delete", "m1"]);
    trove.ok(&["delete", "m2"]);
    wait_gone(&osc, &["m1", "m2"]);
    assert!(
        osc.json(&["database", "instance", "list"])
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    // Tokens are secrets: the API never logged one.
    let log = api.logs();
    assert!(log.contains("requests need an X-Auth-Token"), "{log}");
    assert!(!log.contains(&token) && !log.contains(&other_token));
    eprintln!("trove clients e2e took {:?}", started.elapsed());
}
