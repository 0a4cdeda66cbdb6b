//! Naming instances and flavors by id or by name, as Trove's CLIs do: try
//! `GET /<collection>/<arg>` first; on 404, list the collection and take the one item with that
//! name. Zero or several matches are errors that say so.

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::client::Client;
use crate::view;

/// The instance named `arg` (id or name), as the detail view of `GET /instances/{id}`
/// returns it: the object inside `{"instance": ...}`.
pub fn instance(client: &Client, arg: &str) -> anyhow::Result<Value> {
    if arg.trim().is_empty() {
        bail!("an instance id or name must not be empty");
    }
    match client.get(&["instances", arg]) {
        Ok(body) => return unwrap_instance(body, arg),
        Err(err) if err.is_status(404) => {}
        Err(err) => return Err(err.into()),
    }
    let listed = client.get(&["instances"])?;
    let items = listed
        .get("instances")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the API's instance list has no \"instances\" array"))?;
    let id = pick_by_name(items, arg, "instance")?;
    let body = client
        .get(&["instances", &id])
        .with_context(|| format!("get instance {arg} ({id})"))?;
    unwrap_instance(body, arg)
}

/// The object inside `{"instance": {...}}`.
pub fn unwrap_instance(body: Value, arg: &str) -> anyhow::Result<Value> {
    match body {
        Value::Object(mut map) => match map.remove("instance") {
            Some(inner @ Value::Object(_)) => Ok(inner),
            _ => bail!("the API's answer for instance {arg} has no \"instance\" object"),
        },
        _ => bail!("the API's answer for instance {arg} is not a JSON object"),
    }
}

/// The flavor reference to send for `arg`: a number is sent as a number without asking the
/// API; otherwise the flavor with that id or name, as the API spells its id.
pub fn flavor_ref(client: &Client, arg: &str) -> anyhow::Result<Value> {
    if let Some(number) = numeric(arg) {
        return Ok(number);
    }
    let listed = client.get(&["flavors"])?;
    let items = listed
        .get("flavors")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the API's flavor list has no \"flavors\" array"))?;
    if let Some(flavor) = items.iter().find(|f| view::id_of(f) == arg) {
        return Ok(api_id(flavor));
    }
    let id = pick_by_name(items, arg, "flavor")?;
    let flavor = items
        .iter()
        .find(|f| view::id_of(f) == id)
        .ok_or_else(|| anyhow!("no flavor named {arg}"))?;
    Ok(api_id(flavor))
}

/// `arg` as a JSON number when it is one (`7`), as Trove's CLIs send flavor ids.
pub fn numeric(arg: &str) -> Option<Value> {
    arg.trim().parse::<u64>().ok().map(Value::from)
}

/// The flavor's id as the API gives it (a number stays a number).
fn api_id(flavor: &Value) -> Value {
    match view::at(flavor, &["id"]) {
        Some(id) => id.clone(),
        None => Value::String(view::id_of(flavor)),
    }
}

/// The id of the one item named `name`.
fn pick_by_name(items: &[Value], name: &str, kind: &str) -> anyhow::Result<String> {
    let matches: Vec<String> = items
        .iter()
        .filter(|item| item.get("name").and_then(Value::as_str) == Some(name))
        .map(view::id_of)
        .collect();
    match matches.as_slice() {
        [] => bail!("no {kind} named {name}"),
        [id] => Ok(id.clone()),
        many => bail!("{} {kind}s are named {name}; use the id", many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_exactly_one_by_name() {
        let items = vec![
            json!({"id": "a", "name": "m1"}),
            json!({"id": "b", "name": "s1"}),
            json!({"id": "c", "name": "s1"}),
        ];
        assert_eq!(
            pick_by_name(&items, "m1", "instance").ok().as_deref(),
            Some("a")
        );
        let err = pick_by_name(&items, "s1", "instance")
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("2 instances are named s1; use the id"));
        let err = pick_by_name(&items, "zz", "instance")
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("no instance named zz"));
    }

    #[test]
    fn numeric_flavors() {
        assert_eq!(numeric("7"), Some(json!(7)));
        assert_eq!(numeric("m1.small"), None);
    }

    #[test]
    fn unwraps_instance_objects() {
        assert!(unwrap_instance(json!({"instance": {"id": "x"}}), "x").is_ok());
        assert!(unwrap_instance(json!({"instances": []}), "x").is_err());
        assert!(unwrap_instance(Value::Null, "x").is_err());
    }
}
