//! Names that reach SQL: validation of what callers send, and quoting of everything.
//!
//! Two layers, on purpose. Names from requests are validated into newtypes
//! ([`DatabaseName`], [`UserName`], [`HostPattern`], [`GtidPosition`]) so that odd input is
//! refused with a `BadRequest` naming the field. And every name or literal is still quoted
//! when SQL is built ([`quote_identifier`], [`quote_string`]), because some names come from
//! the server itself (accounts found in `mysql.global_priv`) and are not ours to validate.

use crate::error::{AgentError, Result};
use ferrotrove_proto::Secret;
use std::fmt;

/// Schemas that belong to the server; requests may not create or grant on them.
pub const SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];

/// The account name the agent keeps for itself (`root@localhost`).
pub const ADMIN_USER: &str = "root";

/// Characters allowed in database and user names from requests.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')
}

fn validate_name(field: &str, value: &str, max_len: usize) -> Result<()> {
    if value.is_empty() || value.len() > max_len {
        return Err(AgentError::BadRequest(format!(
            "{field} {value:?} must be 1 to {max_len} characters long"
        )));
    }
    if let Some(bad) = value.chars().find(|c| !is_name_char(*c)) {
        return Err(AgentError::BadRequest(format!(
            "{field} {value:?} contains {bad:?}; use only letters, digits, '_', '-' and '$'"
        )));
    }
    Ok(())
}

/// A database name from a request: 1..=64 of `[A-Za-z0-9_$-]`, not a system schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseName(String);

impl DatabaseName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<DatabaseName> {
        validate_name("database name", value, Self::MAX_LEN)?;
        if SYSTEM_DATABASES
            .iter()
            .any(|s| s.eq_ignore_ascii_case(value))
        {
            return Err(AgentError::BadRequest(format!(
                "database name {value:?} is reserved for the server"
            )));
        }
        Ok(DatabaseName(value.to_owned()))
    }

    /// A database the server already has, named as it is: not validated, since users may
    /// create any name through SQL, and only ever quoted or passed as one argument.
    pub fn existing(value: &str) -> DatabaseName {
        DatabaseName(value.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user name from a request: 1..=80 of `[A-Za-z0-9_$-]`, not the agent's own admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub const MAX_LEN: usize = 80;

    pub fn parse(value: &str) -> Result<UserName> {
        validate_name("user name", value, Self::MAX_LEN)?;
        if value.eq_ignore_ascii_case(ADMIN_USER) {
            return Err(AgentError::BadRequest(format!(
                "user name {value:?} is reserved for the agent"
            )));
        }
        Ok(UserName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host part of an account from a request: `%`, a host name, an IP address, or a
/// pattern of those with `%`/`_` wildcards or a `/netmask`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<HostPattern> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | ':' | '/');
        if value.is_empty() || value.len() > Self::MAX_LEN || !value.chars().all(allowed) {
            return Err(AgentError::BadRequest(format!(
                "host {value:?} must be 1 to {} characters of letters, digits and . - _ % : /",
                Self::MAX_LEN
            )));
        }
        Ok(HostPattern(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `user@host` account as the server knows it. Built from validated parts for requests,
/// or from whatever the server lists (hence quoting, never trust).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub host: String,
}

impl Account {
    pub fn new(user: &UserName, host: &HostPattern) -> Account {
        Account {
            user: user.as_str().to_owned(),
            host: host.as_str().to_owned(),
        }
    }

    /// The agent's own admin account.
    pub fn admin() -> Account {
        Account {
            user: ADMIN_USER.to_owned(),
            host: "localhost".to_owned(),
        }
    }

    /// `'user'@'host'`, quoted for SQL.
    pub fn to_sql(&self) -> String {
        format!("{}@{}", quote_string(&self.user), quote_string(&self.host))
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A password from a request: not empty, no control characters (they would not survive
/// option files and client tools intact).
pub fn validate_password(field: &str, password: &Secret) -> Result<()> {
    if password.is_empty() {
        return Err(AgentError::BadRequest(format!("{field} must not be empty")));
    }
    if password.expose().chars().any(char::is_control) {
        return Err(AgentError::BadRequest(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// A GTID position: comma-separated `domain-server-seq` triples, or empty (before any
/// transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GtidPosition(String);

impl GtidPosition {
    pub fn parse(value: &str) -> Result<GtidPosition> {
        let triple_ok = |t: &str| {
            let parts: Vec<&str> = t.trim().split('-').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        if !value.is_empty() && !value.split(',').all(triple_ok) {
            return Err(AgentError::BadRequest(format!(
                "GTID position {value:?} is not a list of domain-server-sequence triples"
            )));
        }
        Ok(GtidPosition(
            value
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Quotes an identifier with backticks, doubling any backtick inside.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal with single quotes. Backslashes and quotes are escaped so the
/// literal means the same with or without `NO_BACKSLASH_ESCAPES` (without it, `\\` is one
/// backslash; with it, the value differs but can never end the literal early). NUL, CR, LF
/// and Ctrl-Z are escaped too so that a statement stays on one line.
pub fn quote_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            '\0' => quoted.push_str("\\0"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\u{1a}' => quoted.push_str("\\Z"),
            other => quoted.push(other),
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_validated() {
        assert_eq!(
            DatabaseName::parse("app_1$-x").unwrap().as_str(),
            "app_1$-x"
        );
        assert!(DatabaseName::parse(&"d".repeat(64)).is_ok());
        for bad in [
            "",
            "a b",
            "a`b",
            "a'b",
            "a.b",
            "a;b",
            "é",
            "MySQL",
            "sys",
            "information_schema",
        ] {
            assert!(
                DatabaseName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let err = DatabaseName::parse(&"d".repeat(65)).unwrap_err();
        assert!(matches!(err, AgentError::BadRequest(_)));
        assert!(err.to_string().contains("1 to 64"));
    }

    #[test]
    fn user_names_are_validated() {
        assert!(UserName::parse(&"u".repeat(80)).is_ok());
        assert!(UserName::parse(&"u".repeat(81)).is_err());
        for bad in [
            "", "root", "ROOT", "a@b", "a'b", "a\"b", "a`b", "a\\b", "a\nb",
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hosts_are_validated() {
        for good in [
            "%",
            "localhost",
            "127.0.0.1",
            "10.0.%",
            "::1",
            "db-1.example.com",
            "10.0.0.0/255.0.0.0",
        ] {
            assert!(
                HostPattern::parse(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        for bad in ["", "a b", "a'b", "a`b", "x;y"] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn passwords_are_validated_without_echo() {
        assert!(validate_password("password", &Secret::new("pw")).is_ok());
        assert!(validate_password("password", &Secret::new("")).is_err());
        let err = validate_password("password", &Secret::new("sec\nret")).unwrap_err();
        assert!(!err.to_string().contains("sec"));
    }

    #[test]
    fn gtid_positions_are_validated() {
        assert_eq!(GtidPosition::parse("").unwrap().as_str(), "");
        assert_eq!(GtidPosition::parse("0-1-27").unwrap().as_str(), "0-1-27");
        assert_eq!(
            GtidPosition::parse("0-1-27, 1-2-3").unwrap().as_str(),
            "0-1-27,1-2-3"
        );
        for bad in ["0-1", "a-b-c", "0-1-2'", "0-1-2;DROP", "0--1-2", ","] {
            assert!(
                GtidPosition::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("app"), "`app`");
        assert_eq!(quote_identifier("a`b"), "`a``b`");
    }

    #[test]
    fn strings_are_quoted() {
        assert_eq!(quote_string("pw"), "'pw'");
        assert_eq!(quote_string("it's"), "'it''s'");
        assert_eq!(quote_string(r"a\'b"), r"'a\\''b'");
        assert_eq!(quote_string("a\nb\0c\r\u{1a}"), r"'a\nb\0c\r\Z'");
    }

    #[test]
    fn accounts_are_quoted() {
        let account = Account {
            user: "o'neil".into(),
            host: "%".into(),
        };
        assert_eq!(account.to_sql(), "'o''neil'@'%'");
        assert_eq!(Account::admin().to_sql(), "'root'@'localhost'");
        assert_eq!(account.to_string(), "o'neil@%");
    }
}
