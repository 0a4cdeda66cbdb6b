//! The admin password: generated once, kept only in `client.cnf`.
//!
//! `client.cnf` is an option file (`[client] user=... password=... socket=...`) that the
//! agent reads to log in and that the client tools get as `--defaults-file`. It is created
//! with mode 0600 (never world-readable, not even between create and chmod) and replaced
//! atomically, so a crash leaves either the old or the new file.

use crate::error::{AgentError, Result};
use crate::names::ADMIN_USER;
use ferrotrove_proto::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Length of generated admin passwords (alphanumeric: ~190 bits).
pub const GENERATED_PASSWORD_LEN: usize = 32;

/// How the agent logs in as admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCredentials {
    pub user: String,
    pub password: Secret,
}

impl AdminCredentials {
    /// The admin of a freshly initialised data dir: `root` with no password (reachable only
    /// over the socket, and only until Prepare secures it).
    pub fn fresh_install() -> AdminCredentials {
        AdminCredentials {
            user: ADMIN_USER.to_owned(),
            password: Secret::default(),
        }
    }

    /// A new admin login with a random password from the operating system's CSPRNG
    /// (`rand`'s thread RNG is a CSPRNG seeded from the OS).
    pub fn generate() -> AdminCredentials {
        let password: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(GENERATED_PASSWORD_LEN)
            .map(char::from)
            .collect();
        AdminCredentials {
            user: ADMIN_USER.to_owned(),
            password: Secret::new(password),
        }
    }
}

/// The text of a client option file. Values are written bare: the user is ours and the
/// password alphanumeric, so neither needs quoting in an option file.
fn render_client_cnf(credentials: &AdminCredentials, socket: &Path) -> String {
    format!(
        "[client]\nuser={}\npassword={}\nsocket={}\n",
        credentials.user,
        credentials.password.expose(),
        socket.display()
    )
}

/// Writes `path` (mode 0600) atomically: a temporary file created 0600, synced, renamed.
pub fn write_client_cnf(path: &Path, credentials: &AdminCredentials, socket: &Path) -> Result<()> {
    if credentials
        .password
        .expose()
        .chars()
        .any(|c| !c.is_ascii_alphanumeric())
    {
        return Err(AgentError::Internal(
            "admin passwords must be alphanumeric".to_owned(),
        ));
    }
    let tmp = path.with_extension("cnf.tmp");
    // A leftover from a crash may have other permissions; never reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(AgentError::io("remove", &tmp, err)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|err| AgentError::io("create", &tmp, err))?;
    file.write_all(render_client_cnf(credentials, socket).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| AgentError::io("write", &tmp, err))?;
    fs::rename(&tmp, path).map_err(|err| AgentError::io("rename into place", path, err))?;
    crate::fsutil::sync_parent_dir(path)
}

/// Reads the login from `path`; `None` when the file does not exist (not yet secured).
pub fn read_client_cnf(path: &Path) -> Result<Option<AdminCredentials>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(AgentError::io("read", path, err)),
    };
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
    };
    match (value("user"), value("password")) {
        (Some(user), Some(password)) => Ok(Some(AdminCredentials {
            user,
            password: Secret::new(password),
        })),
        _ => Err(AgentError::Internal(format!(
            "{} has no user or password line",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_distinct() {
        let a = AdminCredentials::generate();
        let b = AdminCredentials::generate();
        assert_eq!(a.password.expose().len(), GENERATED_PASSWORD_LEN);
        assert!(
            a.password
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
        assert_ne!(a.password, b.password);
        assert_eq!(a.user, "root");
    }

    #[test]
    fn client_cnf_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.cnf");
        assert_eq!(read_client_cnf(&path).unwrap(), None);
        let credentials = AdminCredentials::generate();
        write_client_cnf(&path, &credentials, Path::new("/srv/i1/run/mysqld.sock")).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_client_cnf(&path).unwrap(), Some(credentials.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[client]\nuser=root\npassword="));
        assert!(text.contains("socket=/srv/i1/run/mysqld.sock"));
        // Replacing keeps the mode.
        write_client_cnf(&path, &AdminCredentials::generate(), Path::new("/s")).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
