//! The JSON shapes Trove clients read, built from store rows.
//!
//! Keys a client's printer flattens (`configuration`, `fault`, `networks`, `access`) are
//! objects when present and omitted when there is nothing to say: a `null` there crashes
//! python-troveclient's printer.
//!
//! `progress` (not in Trove) follows the same rule: an object while an instance in BUILD is
//! being seeded, and absent otherwise.

use crate::liveness::Liveness;
use ferrotrove_proto::agent::Progress;
use ferrotrove_proto::status::InstanceStatus;
use ferrotrove_store::{Datastore, DatastoreVersion, Flavor, GuestLiveness, Instance};
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
    /// Not in Trove: the snapshot or restore seeding an instance in BUILD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

/// A snapshot or restore under way, as an agent last reported it. Figures that cannot be
/// known yet are null (the key is still there).
#[derive(Debug, PartialEq, Serialize)]
pub struct ProgressView {
    /// `snapshot` or `restore`.
    pub operation: String,
    /// The step within it, e.g. `copying`, `preparing`, `starting`.
    pub stage: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Of `bytes_total`, 0 to 100, rounded down to one decimal.
    pub percent: Option<f64>,
    /// The average since the operation started.
    pub rate_bytes_per_sec: Option<u64>,
    /// What remains at that rate, rounded up; 0 once every byte is done.
    pub eta_seconds: Option<u64>,
}

impl ProgressView {
    /// The view of `progress` as reported at `reported_at_ms` (ms since the Unix epoch;
    /// the rate is measured up to then, since `bytes_done` was true then).
    pub fn of(progress: &Progress, reported_at_ms: i64) -> ProgressView {
        let total = progress.bytes_total.filter(|t| *t > 0);
        let done = progress.bytes_done;
        let rate = rate(done, reported_at_ms.saturating_sub(progress.started_at_ms));
        ProgressView {
            operation: progress.operation.clone(),
            stage: progress.stage.clone(),
            bytes_done: done,
            bytes_total: progress.bytes_total,
            percent: total.map(|t| percent(done, t)),
            rate_bytes_per_sec: rate,
            eta_seconds: total.and_then(|t| eta(done, t, rate)),
        }
    }
}

/// Bytes per second over `elapsed_ms`; none when no time has passed (or the agent's clock
/// is ahead of ours).
fn rate(done: u64, elapsed_ms: i64) -> Option<u64> {
    let elapsed_ms = u128::try_from(elapsed_ms).ok().filter(|ms| *ms > 0)?;
    let per_sec = u128::from(done) * 1000 / elapsed_ms;
    Some(u64::try_from(per_sec).unwrap_or(u64::MAX))
}

/// `done` of `total` (> 0) in percent, rounded down to one decimal so that 100 means done.
fn percent(done: u64, total: u64) -> f64 {
    let tenths = (u128::from(done) * 1000 / u128::from(total)).min(1000);
    // At most 1000: exact in an f64.
    tenths as f64 / 10.0
}

/// Seconds until `total` at `rate`, rounded up; none without a rate.
fn eta(done: u64, total: u64, rate: Option<u64>) -> Option<u64> {
    let remaining = total.saturating_sub(done);
    if remaining == 0 {
        return Some(0);
    }
    rate.filter(|r| *r > 0).map(|r| remaining.div_ceil(r))
}

/// The heartbeat whose progress an instance shows, if any: only in BUILD, only from a
/// heartbeat within the expiry (a stale one may describe work that died with its agent).
/// Its own agent's first; for a replica whose agent reports none yet, its source's
/// snapshot, the first stage of seeding it.
pub fn seeding_progress<'a>(
    instance: &Instance,
    own: Option<&'a GuestLiveness>,
    source: Option<&'a GuestLiveness>,
    expiry: Duration,
) -> Option<&'a GuestLiveness> {
    if instance.status != InstanceStatus::Build {
        return None;
    }
    let expiry_ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX);
    let reporting = |g: &&GuestLiveness| g.age_ms <= expiry_ms && g.progress.is_some();
    if let Some(own) = own.filter(reporting) {
        return Some(own);
    }
    let snapshotting = |g: &&GuestLiveness| {
        g.progress
            .as_ref()
            .is_some_and(|p| p.operation == SNAPSHOT_OPERATION)
    };
    source
        .filter(|g| instance.replica_of == Some(g.instance_id))
        .filter(reporting)
        .filter(snapshotting)
}

/// The `operation` of an agent's progress while it takes a snapshot.
const SNAPSHOT_OPERATION: &str = "snapshot";

/// Milliseconds since the Unix epoch.
fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// What rendering instances needs besides the rows.
pub struct InstanceRenderer<'a> {
    pub linker: &'a Linker,
    pub region: &'a str,
    pub heartbeat_expiry: Duration,
    pub datastores: &'a [Datastore],
    /// The time of the request, for progress rates.
    pub now: OffsetDateTime,
}

impl InstanceRenderer<'_> {
    /// `guest` is the instance's last heartbeat; `source_guest` its source's, for a replica
    /// (only read while it is in BUILD, for the source's snapshot).
    pub fn render(
        &self,
        instance: &Instance,
        guest: Option<&GuestLiveness>,
        source_guest: Option<&GuestLiveness>,
        replicas: &[Uuid],
    ) -> InstanceView {
        let liveness = Liveness::of(instance.status, instance.updated, guest);
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
            progress: self.progress(instance, guest, source_guest),
        }
    }

    fn progress(
        &self,
        instance: &Instance,
        guest: Option<&GuestLiveness>,
        source_guest: Option<&GuestLiveness>,
    ) -> Option<ProgressView> {
        let reporter = seeding_progress(instance, guest, source_guest, self.heartbeat_expiry)?;
        let age_ms = i64::try_from(reporter.age_ms).unwrap_or(i64::MAX);
        let reported_at_ms = unix_ms(self.now).saturating_sub(age_ms);
        reporter
            .progress
            .as_ref()
            .map(|p| ProgressView::of(p, reported_at_ms))
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
    use time::macros::datetime;

    const EXPIRY: Duration = Duration::from_secs(30);
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn progress(operation: &str, done: u64, total: Option<u64>) -> Progress {
        Progress {
            operation: operation.to_owned(),
            stage: "copying".to_owned(),
            bytes_done: done,
            bytes_total: total,
            started_at_ms: 1_000_000,
        }
    }

    fn guest(instance_id: Uuid, age_ms: u64, progress: Option<Progress>) -> GuestLiveness {
        GuestLiveness {
            instance_id,
            progress,
            ..crate::liveness::test_guest(age_ms, true)
        }
    }

    fn instance(status: InstanceStatus, replica_of: Option<Uuid>) -> Instance {
        let t = datetime!(2026-01-01 00:00 UTC);
        Instance {
            id: Uuid::new_v4(),
            tenant_id: "t".into(),
            name: "r1".into(),
            flavor_id: "7".into(),
            volume_size: 1,
            datastore: "mariadb".into(),
            datastore_version: "10.11".into(),
            status,
            fault: None,
            fault_at: None,
            replica_of,
            server_id: 1,
            host: None,
            port: None,
            created: t,
            updated: t,
            deleted_at: None,
        }
    }

    #[test]
    fn progress_figures() {
        // 1.2 GiB of 2 GiB in 4 s.
        let view = ProgressView::of(&progress("restore", 1_228 * MIB, Some(2 * GIB)), 1_004_000);
        assert_eq!(view.percent, Some(59.9));
        assert_eq!(view.rate_bytes_per_sec, Some(307 * MIB));
        assert_eq!(view.eta_seconds, Some(3));
        // No total: no percent, no eta; the rate still.
        let view = ProgressView::of(&progress("snapshot", 10 * MIB, None), 1_010_000);
        assert_eq!(
            (view.percent, view.rate_bytes_per_sec, view.eta_seconds),
            (None, Some(MIB), None)
        );
        // No time yet (or the agent's clock ahead): no rate, no eta.
        let view = ProgressView::of(&progress("restore", 0, Some(GIB)), 900_000);
        assert_eq!(
            (view.percent, view.rate_bytes_per_sec, view.eta_seconds),
            (Some(0.0), None, None)
        );
        // Nothing copied yet: a zero rate gives no eta.
        let view = ProgressView::of(&progress("restore", 0, Some(GIB)), 1_005_000);
        assert_eq!((view.rate_bytes_per_sec, view.eta_seconds), (Some(0), None));
        // Every byte done (preparing, starting), or more than announced.
        let view = ProgressView::of(&progress("restore", 3 * GIB, Some(2 * GIB)), 1_001_000);
        assert_eq!((view.percent, view.eta_seconds), (Some(100.0), Some(0)));
        // 99.96 % is not yet 100.
        let view = ProgressView::of(&progress("restore", 9_996, Some(10_000)), 1_001_000);
        assert_eq!(view.percent, Some(99.9));
    }

    #[test]
    fn progress_json_keeps_unknown_figures_as_null() {
        let view = ProgressView::of(&progress("snapshot", 5, None), 1_000_000);
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::json!({
                "operation": "snapshot", "stage": "copying", "bytes_done": 5,
                "bytes_total": null, "percent": null, "rate_bytes_per_sec": null,
                "eta_seconds": null
            })
        );
    }

    #[test]
    fn which_progress_an_instance_shows() {
        let source_id = Uuid::new_v4();
        let replica = instance(InstanceStatus::Build, Some(source_id));
        let restoring = guest(replica.id, 1_000, Some(progress("restore", 1, None)));
        let idle = guest(replica.id, 1_000, None);
        let snapshotting = guest(source_id, 1_000, Some(progress("snapshot", 1, None)));
        let show = |i: &Instance, own: Option<&GuestLiveness>, source: Option<&GuestLiveness>| {
            seeding_progress(i, own, source, EXPIRY)
                .and_then(|g| g.progress.as_ref())
                .map(|p| p.operation.clone())
        };

        // Its own first; the source's snapshot while its own agent reports none.
        assert_eq!(
            show(&replica, Some(&restoring), Some(&snapshotting)).as_deref(),
            Some("restore")
        );
        assert_eq!(
            show(&replica, Some(&idle), Some(&snapshotting)).as_deref(),
            Some("snapshot")
        );
        assert_eq!(
            show(&replica, None, Some(&snapshotting)).as_deref(),
            Some("snapshot")
        );
        // Not the source's restore, nor another instance's snapshot, nor for a non-replica.
        let source_restoring = guest(source_id, 1_000, Some(progress("restore", 1, None)));
        assert_eq!(show(&replica, None, Some(&source_restoring)), None);
        let stranger = guest(Uuid::new_v4(), 1_000, Some(progress("snapshot", 1, None)));
        assert_eq!(show(&replica, None, Some(&stranger)), None);
        let lone = instance(InstanceStatus::Build, None);
        assert_eq!(show(&lone, None, Some(&snapshotting)), None);

        // Stale reports count for nothing: the source's snapshot shows instead, or nothing.
        let stale_own = guest(replica.id, 31_000, Some(progress("restore", 1, None)));
        assert_eq!(
            show(&replica, Some(&stale_own), Some(&snapshotting)).as_deref(),
            Some("snapshot")
        );
        let stale_source = guest(source_id, 31_000, Some(progress("snapshot", 1, None)));
        assert_eq!(show(&replica, None, Some(&stale_source)), None);

        // Only in BUILD.
        let active = instance(InstanceStatus::Active, Some(source_id));
        let own = guest(active.id, 1_000, Some(progress("restore", 1, None)));
        assert_eq!(show(&active, Some(&own), Some(&snapshotting)), None);
    }

    #[test]
    fn rendered_progress_is_measured_when_reported() {
        let linker = Linker {
            base: "http://h".into(),
            tenant: "t".into(),
        };
        let now = datetime!(2026-01-01 00:01 UTC);
        let renderer = InstanceRenderer {
            linker: &linker,
            region: "RegionOne",
            heartbeat_expiry: EXPIRY,
            datastores: &[],
            now,
        };
        let building = instance(InstanceStatus::Build, None);
        let mut reported = progress("restore", 100 * MIB, Some(200 * MIB));
        // Started 12 s before now, reported 2 s ago: 10 s of copying.
        reported.started_at_ms = unix_ms(now) - 12_000;
        let own = guest(building.id, 2_000, Some(reported));
        let view = renderer.render(&building, Some(&own), None, &[]);
        let shown = view.progress.expect("progress in BUILD");
        assert_eq!(
            (shown.rate_bytes_per_sec, shown.eta_seconds, shown.percent),
            (Some(10 * MIB), Some(10), Some(50.0))
        );
        let json = serde_json::to_value(renderer.render(&building, None, None, &[])).unwrap();
        assert!(json.get("progress").is_none(), "{json}");
    }

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
