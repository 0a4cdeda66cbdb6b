//! Reading Trove-shaped JSON for display: the instance's list row and its Property/Value
//! rows, flattened the way Trove's printer does (`flavor` → its id, `datastore` → type and
//! version, `ip` comma-joined, `replicas` → their ids comma-joined, `fault` → its message).
//!
//! Everything works on `serde_json::Value` and tolerates missing or odd fields (ids may be
//! numbers or strings), because the same JSON is also printed raw with `--json`.

use serde_json::Value;

/// The columns of `ftrove list`.
pub const LIST_HEADERS: [&str; 9] = [
    "ID",
    "Name",
    "Datastore",
    "Version",
    "Status",
    "Flavor",
    "Size",
    "Role",
    "Replica Of",
];

/// The value at `path`, if present and not null.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    (!current.is_null()).then_some(current)
}

/// A value as one cell: strings as they are, numbers and booleans written out, arrays
/// comma-joined, objects as compact JSON, null as blank.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(_) => value.to_string(),
    }
}

/// The text at `path`, blank when absent.
pub fn text(value: &Value, path: &[&str]) -> String {
    at(value, path).map(scalar).unwrap_or_default()
}

/// An object's id: `id`, or Trove's `str_id` when `id` is null.
pub fn id_of(value: &Value) -> String {
    at(value, &["id"])
        .or_else(|| at(value, &["str_id"]))
        .map(scalar)
        .unwrap_or_default()
}

/// The instance's status, upper case as the API gives it.
pub fn status(instance: &Value) -> String {
    text(instance, &["status"])
}

/// The instance's name, or its id when it has none.
pub fn label(instance: &Value) -> String {
    let name = text(instance, &["name"]);
    if name.is_empty() {
        id_of(instance)
    } else {
        name
    }
}

/// The id of the instance's replication source, if it is a replica.
pub fn replica_of(instance: &Value) -> Option<String> {
    at(instance, &["replica_of"])
        .map(id_of)
        .filter(|id| !id.is_empty())
}

/// The ids of the instance's replicas.
pub fn replica_ids(instance: &Value) -> Vec<String> {
    at(instance, &["replicas"])
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(id_of)
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `replica`, `source` or blank, as the Role column shows it.
pub fn role(instance: &Value) -> &'static str {
    if replica_of(instance).is_some() {
        "replica"
    } else if !replica_ids(instance).is_empty() {
        "source"
    } else {
        ""
    }
}

/// One row of `ftrove list`, in [`LIST_HEADERS`] order.
pub fn list_row(instance: &Value) -> Vec<String> {
    vec![
        id_of(instance),
        text(instance, &["name"]),
        text(instance, &["datastore", "type"]),
        text(instance, &["datastore", "version"]),
        status(instance),
        at(instance, &["flavor"]).map(id_of).unwrap_or_default(),
        text(instance, &["volume", "size"]),
        role(instance).to_owned(),
        replica_of(instance).unwrap_or_default(),
    ]
}

/// The Property/Value rows of `ftrove show`, only for what the instance has.
pub fn instance_properties(instance: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut add = |property: &str, value: String| {
        if !value.is_empty() {
            rows.push((property.to_owned(), value));
        }
    };
    add("id", id_of(instance));
    add("name", text(instance, &["name"]));
    add("status", status(instance));
    add("operating_status", text(instance, &["operating_status"]));
    add("created", text(instance, &["created"]));
    add("updated", text(instance, &["updated"]));
    add("datastore", text(instance, &["datastore", "type"]));
    add(
        "datastore_version",
        text(instance, &["datastore", "version"]),
    );
    add(
        "flavor",
        at(instance, &["flavor"]).map(id_of).unwrap_or_default(),
    );
    add("volume", text(instance, &["volume", "size"]));
    add("volume_used", text(instance, &["volume", "used"]));
    add(
        "ip",
        at(instance, &["ip"])
            .map(|ip| match ip {
                Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
                other => scalar(other),
            })
            .unwrap_or_default(),
    );
    add("port", text(instance, &["port"]));
    add("replica_of", replica_of(instance).unwrap_or_default());
    add("replicas", replica_ids(instance).join(","));
    add("fault", text(instance, &["fault", "message"]));
    rows
}

/// The fault message of an instance, if it has one.
pub fn fault_message(instance: &Value) -> Option<String> {
    let message = text(instance, &["fault", "message"]);
    (!message.is_empty()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replica() -> Value {
        json!({
            "id": "r-1", "name": "s1", "status": "ACTIVE", "operating_status": "HEALTHY",
            "flavor": {"id": 7, "links": []}, "datastore": {"type": "mariadb", "version": "10.11"},
            "volume": {"size": 2}, "ip": ["10.0.0.5", "10.0.0.6"], "port": 3306,
            "created": "2026-01-01T00:00:00", "updated": "2026-01-01T00:01:00",
            "replica_of": {"id": "m-1", "links": []}
        })
    }

    #[test]
    fn list_row_of_a_replica_and_a_source() {
        assert_eq!(
            list_row(&replica()),
            [
                "r-1", "s1", "mariadb", "10.11", "ACTIVE", "7", "2", "replica", "m-1"
            ]
        );
        let source = json!({"id": "m-1", "name": "m1", "status": "BUILD", "flavor": {"id": "7"},
                            "replicas": [{"id": "r-1"}, {"id": "r-2"}]});
        assert_eq!(
            list_row(&source),
            ["m-1", "m1", "", "", "BUILD", "7", "", "source", ""]
        );
        let lone = json!({"id": "x", "name": "x", "status": "ACTIVE", "flavor": {"id": 1}, "replicas": []});
        assert_eq!(role(&lone), "");
    }

    #[test]
    fn properties_of_a_replica() {
        let rows = instance_properties(&replica());
        let get = |k: &str| rows.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ip"), Some("10.0.0.5,10.0.0.6"));
        assert_eq!(get("flavor"), Some("7"));
        assert_eq!(get("volume"), Some("2"));
        assert_eq!(get("port"), Some("3306"));
        assert_eq!(get("replica_of"), Some("m-1"));
        assert_eq!(get("datastore_version"), Some("10.11"));
        assert_eq!(get("replicas"), None);
        assert_eq!(get("fault"), None);
    }

    #[test]
    fn properties_of_a_failed_source() {
        let inst = json!({"id": "m-1", "name": "m1", "status": "ERROR", "flavor": {"id": null, "str_id": "small"},
                          "replicas": [{"id": "a"}, {"id": "b"}],
                          "fault": {"message": "mariadb did not start", "created": "t"},
                          "replica_of": null});
        let rows = instance_properties(&inst);
        let get = |k: &str| rows.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("replicas"), Some("a,b"));
        assert_eq!(get("fault"), Some("mariadb did not start"));
        assert_eq!(get("flavor"), Some("small"));
        assert_eq!(get("replica_of"), None);
        assert_eq!(
            fault_message(&inst).as_deref(),
            Some("mariadb did not start")
        );
    }
}
