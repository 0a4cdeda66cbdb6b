//! Reading Trove-shaped JSON for display: the instance's list row and its Property/Value
//! rows, flattened the way Trove's printer does (`flavor` → its id, `datastore` → type and
//! version, `ip` comma-joined, `replicas` → their ids comma-joined, `fault` → its message).
//! Ferrotrove's own `progress` (a snapshot or restore seeding an instance in BUILD) becomes
//! one line: `restore: copying 1.2 GiB / 2.0 GiB (60%), 310 MiB/s, 3 s left`.
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
    add(
        "progress",
        progress(instance).map(|p| p.summary()).unwrap_or_default(),
    );
    rows
}

/// A snapshot or restore under way, as the API reports it in an instance's `progress`.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// `snapshot` or `restore`.
    pub operation: String,
    /// The step within it (`copying`, `preparing`, ...).
    pub stage: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    pub percent: Option<f64>,
    pub rate_bytes_per_sec: Option<u64>,
    pub eta_seconds: Option<u64>,
}

impl Progress {
    /// `restore: copying 1.2 GiB / 2.0 GiB (60%), 310 MiB/s, 3 s left`; the parts the API
    /// does not know yet are left out.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{}: {} {}",
            self.operation,
            self.stage,
            bytes(self.bytes_done)
        );
        if let Some(total) = self.bytes_total {
            line.push_str(&format!(" / {}", bytes(total)));
        }
        if let Some(percent) = self.percent {
            line.push_str(&format!(" ({}%)", percent.clamp(0.0, 100.0).floor()));
        }
        if let Some(rate) = self.rate_bytes_per_sec {
            line.push_str(&format!(", {}/s", bytes(rate)));
        }
        if let Some(eta) = self.eta_seconds {
            line.push_str(&format!(", {} left", duration(eta)));
        }
        line
    }
}

/// The instance's `progress`, when it has one with at least an operation.
pub fn progress(instance: &Value) -> Option<Progress> {
    let progress = at(instance, &["progress"]).filter(|p| p.is_object())?;
    let operation = text(progress, &["operation"]);
    if operation.is_empty() {
        return None;
    }
    let number = |key: &str| at(progress, &[key]).and_then(Value::as_u64);
    Some(Progress {
        operation,
        stage: text(progress, &["stage"]),
        bytes_done: number("bytes_done").unwrap_or(0),
        bytes_total: number("bytes_total"),
        percent: at(progress, &["percent"]).and_then(Value::as_f64),
        rate_bytes_per_sec: number("rate_bytes_per_sec"),
        eta_seconds: number("eta_seconds"),
    })
}

/// A byte count in binary units: `512 B`, `1.2 GiB`, `310 MiB` (one decimal below 100).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Display only: the precision an f64 loses beyond 2^53 bytes does not show.
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 99.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A duration for people: `45 s`, `2 min 5 s`, `1 h 3 min`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
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
    fn byte_counts_and_durations() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1_288_490_189), "1.2 GiB");
        assert_eq!(bytes(2 << 30), "2.0 GiB");
        assert_eq!(bytes(310 << 20), "310 MiB");
        assert_eq!(bytes((100 << 20) - 1), "100 MiB");
        assert_eq!(bytes(1023 << 20), "1023 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(duration(3), "3 s");
        assert_eq!(duration(125), "2 min 5 s");
        assert_eq!(duration(3_780), "1 h 3 min");
    }

    #[test]
    fn progress_row_of_a_restore() {
        let inst = json!({"id": "r-1", "status": "BUILD", "progress": {
            "operation": "restore", "stage": "copying", "bytes_done": 1_288_490_189u64,
            "bytes_total": 2u64 << 30, "percent": 60.0, "rate_bytes_per_sec": 310u64 << 20,
            "eta_seconds": 3
        }});
        let rows = instance_properties(&inst);
        let get = |k: &str| rows.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("progress"),
            Some("restore: copying 1.2 GiB / 2.0 GiB (60%), 310 MiB/s, 3 s left")
        );
    }

    #[test]
    fn progress_row_leaves_out_what_is_not_known() {
        let snapshot = json!({"progress": {
            "operation": "snapshot", "stage": "dumping", "bytes_done": 5u64 << 20,
            "bytes_total": null, "percent": null, "rate_bytes_per_sec": null, "eta_seconds": null
        }});
        assert_eq!(
            progress(&snapshot).map(|p| p.summary()).as_deref(),
            Some("snapshot: dumping 5.0 MiB")
        );
        let almost = json!({"progress": {
            "operation": "restore", "stage": "copying", "bytes_done": 9_996,
            "bytes_total": 10_000, "percent": 99.9, "rate_bytes_per_sec": 0
        }});
        assert_eq!(
            progress(&almost).map(|p| p.summary()).as_deref(),
            Some("restore: copying 9.8 KiB / 9.8 KiB (99%), 0 B/s")
        );
        // No progress, or nothing readable in it: no row.
        for inst in [
            json!({"status": "ACTIVE"}),
            json!({"progress": null}),
            json!({"progress": "copying"}),
            json!({"progress": {"stage": "copying"}}),
        ] {
            assert_eq!(progress(&inst), None, "{inst}");
            let rows = instance_properties(&inst);
            assert!(rows.iter().all(|(p, _)| p != "progress"), "{inst}");
        }
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
