//! Small file-system helpers: atomic writes, directory sync, ownership for the server's user.

use crate::error::{AgentError, Result};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes a rename or create in `path`'s directory durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| AgentError::io("sync directory", dir, err))
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    replace(path, contents, mode, true)
}

/// Replaces `path` with `contents` atomically (temporary file, rename) but not durably:
/// for files rewritten often whose loss in a crash does not matter.
pub fn replace_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    replace(path, contents, mode, false)
}

fn replace(path: &Path, contents: &[u8], mode: u32, durable: bool) -> Result<()> {
    // `<name>.tmp`, so that files that differ only in extension never share one.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|err| AgentError::io("create", &tmp, err))?;
    file.write_all(contents)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
        .map_err(|err| AgentError::io("write", &tmp, err))?;
    fs::rename(&tmp, path).map_err(|err| AgentError::io("rename into place", path, err))?;
    if durable {
        sync_parent_dir(path)?;
    }
    Ok(())
}

/// Removes `path`; a missing file is fine.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(AgentError::io("remove", path, err)),
    }
}

/// Creates `path` (and parents) if missing and sets its mode.
pub fn create_dir_with_mode(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(|err| AgentError::io("create directory", path, err))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|err| AgentError::io("chmod", path, err))
}

/// The pipe size asked for between the agent and a backup tool: 1 MiB (Linux's default
/// `fs/pipe-max-size`, so no privilege is needed). The default 64 KiB pipe makes a 2 GB
/// stream cost the tool and the agent some 30,000 wake-ups each.
const TOOL_PIPE_BYTES: libc::c_int = 1 << 20;

/// Widens the pipe behind `fd` to [`TOOL_PIPE_BYTES`], when the kernel allows; a pipe it
/// leaves narrow is only slower, so a refusal is logged and otherwise ignored.
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ takes an int and touches nothing but the pipe; a descriptor that
    // is not a pipe makes it fail with EBADF or EINVAL, which is reported below.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, TOOL_PIPE_BYTES) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        tracing::debug!(%err, "keeping the default pipe size to the tool");
    }
}

/// Whether this process runs as root (and so must hand files to the server's user).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A system user's uid and gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemUser {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a system user by name.
pub fn lookup_user(name: &str) -> Result<SystemUser> {
    let c_name = CString::new(name)
        .map_err(|_| AgentError::BadRequest(format!("user name {name:?} contains NUL")))?;
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r writes only into `passwd`
    // and `buffer` (whose length we pass) and sets `result` to null or to `&passwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut passwd,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(AgentError::Server(format!(
            "system user {name:?} (server.mysqld_user) does not exist on this host"
        )));
    }
    Ok(SystemUser {
        uid: passwd.pw_uid,
        gid: passwd.pw_gid,
    })
}

/// Gives `path` (not recursively) to `user`.
pub fn chown(path: &Path, user: SystemUser) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|err| AgentError::io("chown", path, err))
}

/// Free and total bytes of the file system holding `path` (or its nearest existing
/// ancestor); `None` when it cannot be read.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // `c_ulong` and `fsblkcnt_t` are 32 bits wide on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let (block, available, total) = (
        stat.f_frsize as u64,
        stat.f_bavail as u64,
        stat.f_blocks as u64,
    );
    Some((available * block, total * block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("x.json.tmp").exists());
        replace_atomic(&path, b"three", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert!(!dir.path().join("x.json.tmp").exists());
        remove_if_exists(&path).unwrap();
        remove_if_exists(&path).unwrap();
    }

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup_user("root").unwrap().uid, 0);
        assert!(lookup_user("no-such-user-ferrotrove").is_err());
    }
}
