//! `flavor-list`, `datastore-list` and `datastore-version-list`.

use serde_json::Value;

use super::{Ctx, items};
use crate::output;
use crate::table::Table;
use crate::view::{self, text};

/// `ftrove flavor-list`: ID, Name, RAM, vCPUs, Disk.
pub fn flavor_list(ctx: &Ctx) -> anyhow::Result<()> {
    let body = ctx.client.get(&["flavors"])?;
    if ctx.json {
        return output::print_json(&body);
    }
    let mut table = Table::new(["ID", "Name", "RAM", "vCPUs", "Disk"]);
    for flavor in items(&body, "flavors")? {
        table.push_row(vec![
            view::id_of(flavor),
            text(flavor, &["name"]),
            text(flavor, &["ram"]),
            text(flavor, &["vcpus"]),
            text(flavor, &["disk"]),
        ]);
    }
    output::print(&table.render())
}

/// `ftrove datastore-list`: ID, Name, Default Version, Versions.
pub fn datastore_list(ctx: &Ctx) -> anyhow::Result<()> {
    let body = ctx.client.get(&["datastores"])?;
    if ctx.json {
        return output::print_json(&body);
    }
    let mut table = Table::new(["ID", "Name", "Default Version", "Versions"]);
    for datastore in items(&body, "datastores")? {
        let versions: Vec<&Value> = view::at(datastore, &["versions"])
            .and_then(Value::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let version_name = |v: &Value| {
            let name = text(v, &["name"]);
            if name.is_empty() {
                text(v, &["version"])
            } else {
                name
            }
        };
        // Upstream gives the default version as an id; show its name when it is listed.
        let default_id = text(datastore, &["default_version"]);
        let default = versions
            .iter()
            .find(|v| view::id_of(v) == default_id)
            .map(|v| version_name(v))
            .unwrap_or(default_id);
        table.push_row(vec![
            view::id_of(datastore),
            text(datastore, &["name"]),
            default,
            versions
                .iter()
                .map(|v| version_name(v))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    output::print(&table.render())
}

/// `ftrove datastore-version-list <datastore>`: ID, Name, Version.
pub fn datastore_version_list(ctx: &Ctx, datastore: &str) -> anyhow::Result<()> {
    let body = ctx.client.get(&["datastores", datastore, "versions"])?;
    if ctx.json {
        return output::print_json(&body);
    }
    let mut table = Table::new(["ID", "Name", "Version"]);
    for version in items(&body, "versions")? {
        table.push_row(vec![
            view::id_of(version),
            text(version, &["name"]),
            text(version, &["version"]),
        ]);
    }
    output::print(&table.render())
}
