//! The JSON shapes Trove clients read, built from store rows.
//!
//! Keys a client's printer flattens (`configuration`, `fault`, `networks`, `access`) are
//! objects when present and omitted when there is nothing to say: a `null` there crashes
//! python-troveclient's printer.

use crate::liveness::Liveness;
use ferrotrove_store::{Datastore, DatastoreVersion, Flavor, GuestStatus, Instance};
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Builds the `links` of resources, from where the request reached us.
pub struct Linker {
    /// `http://host:port`.
    pub base: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Link {
    pub href: String,
    pub rel: &'static str,
}

impl Linker {
    /// Trove's pair: `self` under the project, `bookmark` without version or project.
    pub fn links(&self, collection: &str, id: &str) -> Vec<Link> {
        let id = encode_segment(id);
        vec![
            Link {
                href: format!(
                    "{}/v1.0/{}/{collection}/{id}",
                    self.base,
                    encode_segment(&self.tenant)
                ),
                rel: "self",
            },
            Link {
                href: format!("{}/{collection}/{id}", self.base),
                rel: "bookmark",
            },
        ]
    }

    /// The URL of a collection under the project, for `next` links.
    pub fn collection(&self, collection: &str) -> String {
        format!(
            "{}/v1.0/{}/{collection}",
            self.base,
            encode_segment(&self.tenant)
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Trove's timestamp format: UTC, seconds, no zone suffix (`2026-11-24T16:44:26`).
pub fn trove_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.format(&format).unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct IdRef {
    pub id: String,
    pub links: Vec<Link>,
}

#[derive(Debug, Serialize)]
pub struct DatastoreRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    pub version_number: String,
}

#[derive(Debug, Serialize)]
pub struct Access {
    pub is_public: bool,
}

#[derive(Debug, Serialize)]
pub struct Volume {
    pub size: u32,
}

#[derive(Debug, Serialize)]
pub struct Address {
    pub address: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct FaultView {
    pub message: String,
    pub created: String,
    pub details: String,
}

/// One instance, for lists and for show (the same view: list items carry everything the
/// clients would otherwise fetch one GET per instance for).
#[derive(Debug, Serialize)]
pub struct InstanceView {
    pub id: Uuid,
    pub name: String,
    pub status: &'static str,
    pub operating_status: &'static str,
    pub links: Vec<Link>,
    pub flavor: IdRef,
    pub datastore: DatastoreRef,
    pub region: String,
    pub access: Access,
    pub volume: Volume,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// Not in Trove: where the server listens, since ours need not use 3306.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub created: String,
    pub updated: String,
    /// When the agent last reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_status_updated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<IdRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<IdRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultView>,
}

/// What rendering instances needs besides the rows.
pub struct InstanceRenderer<'a> {
    pub linker: &'a Linker,
    pub region: &'a str,
    pub heartbeat_expiry: Duration,
    pub datastores: &'a [Datastore],
}

impl InstanceRenderer<'_> {
    pub fn render(
        &self,
        instance: &Instance,
        guest: Option<&GuestStatus>,
        replicas: &[Uuid],
    ) -> InstanceView {
        let liveness = Liveness::of(
            instance.status,
            instance.updated,
            guest,
            self.heartbeat_expiry,
        );
        let version_number = self
            .datastores
            .iter()
            .find(|d| d.name == instance.datastore)
            .and_then(|d| d.version(&instance.datastore_version))
            .map_or_else(|| instance.datastore_version.clone(), |v| v.version.clone());
        let instance_ref = |id: Uuid| IdRef {
            id: id.to_string(),
            links: self.linker.links("instances", &id.to_string()),
        };
        InstanceView {
            id: instance.id,
            name: instance.name.clone(),
            status: liveness.shown_status(),
            operating_status: liveness.operating_status,
            links: self.linker.links("instances", &instance.id.to_string()),
            flavor: IdRef {
                id: instance.flavor_id.clone(),
                links: self.linker.links("flavors", &instance.flavor_id),
            },
            datastore: DatastoreRef {
                kind: instance.datastore.clone(),
                version: instance.datastore_version.clone(),
                version_number,
            },
            region: self.region.to_owned(),
            access: Access { is_public: false },
            volume: Volume {
                size: instance.volume_size,
            },
            ip: instance.host.iter().cloned().collect(),
            addresses: instance
                .host
                .iter()
                .map(|h| Address {
                    address: h.clone(),
                    kind: "private",
                })
                .collect(),
            port: instance.port,
            created: trove_time(instance.created),
            updated: trove_time(instance.updated),
            service_status_updated: guest.map(|g| trove_time(g.received_at)),
            replica_of: instance.replica_of.map(instance_ref),
            replicas: replicas.iter().copied().map(instance_ref).collect(),
            fault: instance.fault.as_ref().map(|message| FaultView {
                message: message.clone(),
                created: trove_time(instance.fault_at.unwrap_or(instance.updated)),
                details: String::new(),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FlavorView {
    /// A number when the id is numeric (clients copy its type into `flavorRef`), else null.
    pub id: Option<u64>,
    pub str_id: String,
    pub name: String,
    pub ram: u32,
    pub vcpus: u32,
    pub disk: u32,
    pub ephemeral: u32,
    pub links: Vec<Link>,
}

pub fn flavor(linker: &Linker, flavor: &Flavor) -> FlavorView {
    FlavorView {
        id: flavor.id.parse().ok(),
        str_id: flavor.id.clone(),
        name: flavor.name.clone(),
        ram: flavor.ram_mb,
        vcpus: flavor.vcpus,
        disk: flavor.disk_gb,
        ephemeral: 0,
        links: linker.links("flavors", &flavor.id),
    }
}

#[derive(Debug, Serialize)]
pub struct DatastoreView {
    pub id: Uuid,
    pub name: String,
    pub links: Vec<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_version: Option<Uuid>,
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub id: Uuid,
    pub name: String,
    pub datastore: Uuid,
    pub version: String,
    pub active: bool,
    pub packages: String,
    pub image: String,
    pub links: Vec<Link>,
}

pub fn datastore(linker: &Linker, ds: &Datastore) -> DatastoreView {
    DatastoreView {
        id: ds.id,
        name: ds.name.clone(),
        links: linker.links("datastores", &ds.id.to_string()),
        default_version: ds.default_version_id,
        versions: ds.versions.iter().map(|v| version(linker, v)).collect(),
    }
}

pub fn version(linker: &Linker, v: &DatastoreVersion) -> VersionView {
    VersionView {
        id: v.id,
        name: v.name.clone(),
        datastore: v.datastore_id,
        version: v.version.clone(),
        active: v.active,
        packages: String::new(),
        image: String::new(),
        links: linker.links("datastores/versions", &v.id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_times() {
        let linker = Linker {
            base: "http://h:8779".into(),
            tenant: "demo project".into(),
        };
        let links = linker.links("instances", "abc");
        assert_eq!(
            links[0].href,
            "http://h:8779/v1.0/demo%20project/instances/abc"
        );
        assert_eq!(links[1].href, "http://h:8779/instances/abc");
        assert_eq!(
            trove_time(time::macros::datetime!(2026-11-24 16:44:26.5 UTC)),
            "2026-11-24T16:44:26"
        );
    }
}
