//! Checks on what users send, each failing with a message that names the value and says
//! what is allowed.

use crate::fault::Fault;
use serde_json::Value;

/// The most instances one replica request may create.
pub const MAX_REPLICA_COUNT: u64 = 5;
/// Volume sizes allowed, in GB.
pub const VOLUME_SIZES: std::ops::RangeInclusive<u64> = 1..=1024;
/// Longest password accepted for a user.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Database names the server owns, and user names the control plane owns; never created
/// on request.
const RESERVED_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];
const RESERVED_USERS: &[&str] = &["root", "os_admin", "public"];
const RESERVED_USER_PREFIX: &str = "ftrove";

/// An instance name: 1 to 255 characters, not blank, no control characters.
pub fn instance_name(name: &str) -> Result<(), Fault> {
    if name.trim().is_empty() {
        return Err(Fault::bad_request("The instance name must not be empty."));
    }
    if name.chars().count() > 255 {
        return Err(Fault::bad_request(
            "The instance name must be at most 255 characters.",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Fault::bad_request(
            "The instance name must not contain control characters.",
        ));
    }
    Ok(())
}

fn identifier_chars_ok(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_$-".contains(&b))
}

/// A database to create: `[A-Za-z0-9_$-]{1,64}`, not a system database.
pub fn database_name(name: &str) -> Result<(), Fault> {
    if !(1..=64).contains(&name.len()) || !identifier_chars_ok(name) {
        return Err(Fault::bad_request(format!(
            "Database name {name:?} is invalid: use 1 to 64 letters, digits, '_', '$' or '-'."
        )));
    }
    if RESERVED_DATABASES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(Fault::bad_request(format!(
            "Database name {name:?} is reserved by the server."
        )));
    }
    Ok(())
}

/// A user to create: `[A-Za-z0-9_$-]{1,80}`, not one of the accounts the service uses.
pub fn user_name(name: &str) -> Result<(), Fault> {
    if !(1..=80).contains(&name.len()) || !identifier_chars_ok(name) {
        return Err(Fault::bad_request(format!(
            "User name {name:?} is invalid: use 1 to 80 letters, digits, '_', '$' or '-'."
        )));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_USERS.contains(&lower.as_str()) || lower.starts_with(RESERVED_USER_PREFIX) {
        return Err(Fault::bad_request(format!(
            "User name {name:?} is reserved for the service's own accounts."
        )));
    }
    Ok(())
}

/// A user's host part: a host name, address, netmask or `%` wildcard pattern.
pub fn user_host(host: &str) -> Result<(), Fault> {
    let ok = (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%:-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Fault::bad_request(format!(
            "User host {host:?} is invalid: use a host name, an address, a netmask or a '%' pattern."
        )))
    }
}

/// A user's password: not empty, at most 256 characters. The message never echoes it.
pub fn password(user: &str, password: &str) -> Result<(), Fault> {
    if password.is_empty() {
        return Err(Fault::bad_request(format!(
            "User {user:?} needs a password."
        )));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(Fault::bad_request(format!(
            "The password of user {user:?} is longer than {MAX_PASSWORD_CHARS} characters."
        )));
    }
    Ok(())
}

/// The flavor id in a `flavorRef`: an integer, a string, or an href whose last path
/// segment is the id (as upstream's `get_id_from_href`).
pub fn flavor_id(flavor_ref: &Value) -> Result<String, Fault> {
    let id = match flavor_ref {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => String::new(),
    };
    if id.is_empty() || id.len() > 36 {
        return Err(Fault::bad_request(format!(
            "flavorRef {flavor_ref} is invalid: give a flavor id, as a number, a string or a link."
        )));
    }
    Ok(id)
}

/// A whole number sent as a JSON number or a string of digits (clients send both).
pub fn whole_number(field: &str, value: &Value) -> Result<u64, Fault> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed
        .ok_or_else(|| Fault::bad_request(format!("{field} must be a whole number, not {value}.")))
}

/// A volume size in GB.
pub fn volume_size(value: Option<&Value>) -> Result<u32, Fault> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Err(Fault::bad_request("Volume size is required."));
    };
    let size = whole_number("volume.size", value)?;
    if !VOLUME_SIZES.contains(&size) {
        return Err(Fault::bad_request(format!(
            "Volume size {size} is out of range: give {} to {} GB.",
            VOLUME_SIZES.start(),
            VOLUME_SIZES.end()
        )));
    }
    u32::try_from(size).map_err(|_| Fault::bad_request("Volume size is out of range."))
}

/// How many replicas one request creates: 1 (the default) to 5.
pub fn replica_count(value: Option<&Value>) -> Result<u64, Fault> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(1);
    };
    let count = whole_number("replica_count", value)?;
    if !(1..=MAX_REPLICA_COUNT).contains(&count) {
        return Err(Fault::bad_request(format!(
            "replica_count {count} is out of range: give 1 to {MAX_REPLICA_COUNT}."
        )));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(instance_name("m1").is_ok());
        assert!(instance_name("  ").is_err());
        assert!(instance_name(&"x".repeat(256)).is_err());
        assert!(instance_name("a\nb").is_err());
        assert!(database_name("app_db$-1").is_ok());
        assert!(database_name("bad name").is_err());
        assert!(database_name("MySQL").is_err());
        assert!(database_name(&"d".repeat(65)).is_err());
        assert!(user_name("app").is_ok());
        assert!(user_name(&"u".repeat(80)).is_ok());
        assert!(user_name(&"u".repeat(81)).is_err());
        assert!(user_name("root").is_err());
        assert!(user_name("ftrove_repl_1").is_err());
        assert!(user_host("10.0.0.%").is_ok());
        assert!(user_host("evil'host").is_err());
    }

    #[test]
    fn passwords_are_never_echoed() {
        let long = "p".repeat(257);
        let err = password("app", &long).unwrap_err();
        assert!(!err.message.contains(&long));
        assert!(password("app", "").is_err());
        assert!(password("app", "s3cret").is_ok());
    }

    #[test]
    fn flavor_refs() {
        assert_eq!(flavor_id(&json!(7)).unwrap(), "7");
        assert_eq!(flavor_id(&json!("7")).unwrap(), "7");
        assert_eq!(flavor_id(&json!("http://h/v1.0/t/flavors/7")).unwrap(), "7");
        assert_eq!(
            flavor_id(&json!("http://h/v1.0/t/flavors/7/")).unwrap(),
            "7"
        );
        assert!(flavor_id(&json!(null)).is_err());
        assert!(flavor_id(&json!("")).is_err());
        assert!(flavor_id(&json!({"id": 7})).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(volume_size(Some(&json!(2))).unwrap(), 2);
        assert_eq!(volume_size(Some(&json!("2"))).unwrap(), 2);
        assert_eq!(
            volume_size(None).unwrap_err().message,
            "Volume size is required."
        );
        assert_eq!(
            volume_size(Some(&json!(null))).unwrap_err().message,
            "Volume size is required."
        );
        assert!(volume_size(Some(&json!(0))).is_err());
        assert!(volume_size(Some(&json!(1025))).is_err());
        assert!(volume_size(Some(&json!(-1))).is_err());
        assert!(volume_size(Some(&json!(1.5))).is_err());
        assert_eq!(replica_count(None).unwrap(), 1);
        assert_eq!(replica_count(Some(&json!(5))).unwrap(), 5);
        assert!(replica_count(Some(&json!(6))).is_err());
        assert!(replica_count(Some(&json!(0))).is_err());
    }
}
