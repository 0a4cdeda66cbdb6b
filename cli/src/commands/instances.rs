//! `list`, `show`, `create` (instances and replicas), `detach-replica` and `delete`.

use serde_json::{Map, Value, json};

use super::{Ctx, items};
use crate::args::{CreateArgs, WaitArgs};
use crate::output;
use crate::resolve;
use crate::table::Table;
use crate::view;
use crate::wait::{self, Goal, Target};

/// `ftrove list`.
pub fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let body = ctx.client.get(&["instances"])?;
    if ctx.json {
        return output::print_json(&body);
    }
    let mut table = Table::new(view::LIST_HEADERS);
    for instance in items(&body, "instances")? {
        table.push_row(view::list_row(instance));
    }
    output::print(&table.render())
}

/// `ftrove show <instance>`.
pub fn show(ctx: &Ctx, arg: &str) -> anyhow::Result<()> {
    let instance = resolve::instance(&ctx.client, arg)?;
    print_instance(ctx, instance)
}

/// The instance as `{"instance": ...}` JSON or as the Property/Value table.
fn print_instance(ctx: &Ctx, instance: Value) -> anyhow::Result<()> {
    if ctx.json {
        output::print_json(&json!({ "instance": instance }))
    } else {
        output::print(&Table::properties(view::instance_properties(&instance)).render())
    }
}

/// `ftrove create`.
pub fn create(ctx: &Ctx, args: &CreateArgs) -> anyhow::Result<()> {
    let source = match &args.replica_of {
        Some(arg) => Some(resolve::instance(&ctx.client, arg)?),
        None => None,
    };
    let source_id = source.as_ref().map(view::id_of);
    let flavor = match (&args.flavor, &source_id) {
        (None, _) => None,
        // Replicas inherit the source's flavor and the server ignores this one; send it as
        // given, without looking it up, as Trove's legacy shell does.
        (Some(arg), Some(_)) => {
            Some(resolve::numeric(arg).unwrap_or_else(|| Value::String(arg.clone())))
        }
        (Some(arg), None) => Some(resolve::flavor_ref(&ctx.client, arg)?),
    };
    let body = create_body(args, flavor, source_id.as_deref());
    let answer = ctx.client.post(&["instances"], &body)?;
    let created = resolve::unwrap_instance(answer, &args.name)?;
    if !args.wait.wait {
        return print_instance(ctx, created);
    }

    let mut targets = vec![Target::of(&created)];
    if let (Some(source_id), Some(count)) = (&source_id, args.replica_count.filter(|n| *n > 1)) {
        targets.extend(sibling_replicas(
            ctx, &created, source_id, &args.name, count,
        ));
    }
    let finals = wait::wait(&ctx.client, &targets, Goal::Active, &args.wait)?;
    match finals.into_iter().next().flatten() {
        Some(instance) => print_instance(ctx, instance),
        None => print_instance(ctx, created),
    }
}

/// The body of `POST /instances`. Keys the user did not ask for are left out, so the
/// server's defaults apply (datastore, replica flavor and size).
pub fn create_body(args: &CreateArgs, flavor: Option<Value>, replica_of: Option<&str>) -> Value {
    let mut instance = Map::new();
    instance.insert("name".into(), json!(args.name));
    if let Some(flavor) = flavor {
        instance.insert("flavorRef".into(), flavor);
    }
    if let Some(size) = args.size {
        instance.insert("volume".into(), json!({ "size": size }));
    }
    let databases: Vec<Value> = args
        .databases
        .iter()
        .map(|db| json!({ "name": db }))
        .collect();
    if !databases.is_empty() {
        instance.insert("databases".into(), Value::Array(databases.clone()));
    }
    if !args.user_specs.is_empty() {
        let users: Vec<Value> = args
            .user_specs
            .iter()
            .map(|u| json!({ "name": u.name, "password": u.password, "databases": databases }))
            .collect();
        instance.insert("users".into(), Value::Array(users));
    }
    if args.datastore.is_some() || args.datastore_version.is_some() {
        let mut datastore = Map::new();
        if let Some(kind) = &args.datastore {
            datastore.insert("type".into(), json!(kind));
        }
        if let Some(version) = &args.datastore_version {
            datastore.insert("version".into(), json!(version));
        }
        instance.insert("datastore".into(), Value::Object(datastore));
    }
    if let Some(source) = replica_of {
        instance.insert("replica_of".into(), json!(source));
        instance.insert(
            "replica_count".into(),
            json!(args.replica_count.unwrap_or(1)),
        );
    }
    json!({ "instance": instance })
}

/// With `--replica-count N`, the API answers with the last replica only; the others are
/// named `<name>-1` .. `<name>-N` and replicate from the same source. Best effort: if the
/// list cannot be read, only the answered replica is followed.
fn sibling_replicas(
    ctx: &Ctx,
    created: &Value,
    source_id: &str,
    name: &str,
    count: u32,
) -> Vec<Target> {
    let Ok(body) = ctx.client.get(&["instances"]) else {
        return Vec::new();
    };
    let Ok(listed) = items(&body, "instances") else {
        return Vec::new();
    };
    let names: Vec<String> = (1..=count).map(|i| format!("{name}-{i}")).collect();
    let created_id = view::id_of(created);
    listed
        .iter()
        .filter(|inst| view::replica_of(inst).as_deref() == Some(source_id))
        .filter(|inst| names.contains(&view::text(inst, &["name"])))
        .filter(|inst| view::id_of(inst) != created_id)
        .map(Target::of)
        .collect()
}

/// `ftrove detach-replica <instance>`.
pub fn detach_replica(ctx: &Ctx, arg: &str, wait_args: &WaitArgs) -> anyhow::Result<()> {
    let instance = resolve::instance(&ctx.client, arg)?;
    let id = view::id_of(&instance);
    let label = view::label(&instance);
    ctx.client.put(
        &["instances", &id],
        &json!({ "instance": { "replica_of": null } }),
    )?;
    if !ctx.json {
        output::print_line(&format!(
            "Request to detach replica {label} ({id}) from its source has been accepted."
        ))?;
    }
    let latest = if wait_args.wait {
        let target = Target {
            status: None,
            ..Target::of(&instance)
        };
        let finals = wait::wait(&ctx.client, &[target], Goal::Detached, wait_args)?;
        if !ctx.json {
            output::print_line(&format!("{label} is detached and ACTIVE."))?;
        }
        finals.into_iter().next().flatten()
    } else {
        None
    };
    if ctx.json {
        let instance = match latest {
            Some(instance) => instance,
            None => resolve::unwrap_instance(ctx.client.get(&["instances", &id])?, &label)?,
        };
        output::print_json(&json!({ "instance": instance }))?;
    }
    Ok(())
}

/// `ftrove delete <instance>`.
pub fn delete(ctx: &Ctx, arg: &str, wait_args: &WaitArgs) -> anyhow::Result<()> {
    let instance = resolve::instance(&ctx.client, arg)?;
    let id = view::id_of(&instance);
    let label = view::label(&instance);
    let answer = ctx.client.delete(&["instances", &id])?;
    if ctx.json {
        // Trove answers 202 with no body; print one only if the API sent one.
        if !answer.is_null() {
            output::print_json(&answer)?;
        }
    } else {
        output::print_line(&format!(
            "Request to delete instance {label} ({id}) has been accepted."
        ))?;
    }
    if wait_args.wait {
        wait::wait(&ctx.client, &[Target::of(&instance)], Goal::Gone, wait_args)?;
        if !ctx.json {
            output::print_line(&format!("{label} is deleted."))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Command, parse_from};

    fn create_args(argv: &[&str]) -> CreateArgs {
        let mut full = vec!["ftrove", "create"];
        full.extend_from_slice(argv);
        match parse_from(full).map(|cli| cli.command) {
            Ok(Command::Create(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn body_of_a_plain_create() {
        let args = create_args(&[
            "m1",
            "7",
            "--size",
            "2",
            "--databases",
            "appdb,logs",
            "--users",
            "app:apppass",
            "--datastore",
            "mariadb",
            "--datastore-version",
            "10.11",
        ]);
        assert_eq!(
            create_body(&args, Some(json!(7)), None),
            json!({"instance": {
                "name": "m1", "flavorRef": 7, "volume": {"size": 2},
                "databases": [{"name": "appdb"}, {"name": "logs"}],
                "users": [{"name": "app", "password": "apppass",
                           "databases": [{"name": "appdb"}, {"name": "logs"}]}],
                "datastore": {"type": "mariadb", "version": "10.11"}
            }})
        );
    }

    #[test]
    fn body_of_a_replica_create() {
        let args = create_args(&[
            "s1",
            "7",
            "--size",
            "2",
            "--slave-of",
            "m1",
            "--replica-count",
            "2",
        ]);
        assert_eq!(
            create_body(&args, Some(json!(7)), Some("m-id")),
            json!({"instance": {
                "name": "s1", "flavorRef": 7, "volume": {"size": 2},
                "replica_of": "m-id", "replica_count": 2
            }})
        );
        let args = create_args(&["s2", "--replica-of", "m1"]);
        assert_eq!(
            create_body(&args, None, Some("m-id")),
            json!({"instance": {"name": "s2", "replica_of": "m-id", "replica_count": 1}})
        );
    }
}
