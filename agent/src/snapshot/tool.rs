//! A backup or client tool run as a child process, with its stderr collected on a thread
//! so that neither pipe can block the other.

use crate::error::{AgentError, Result};
use crate::server::last_lines;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

/// Lines of a failing tool's stderr quoted in errors.
const STDERR_TAIL_LINES: usize = 10;

pub(crate) struct ToolProcess {
    program: String,
    pub(crate) child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl ToolProcess {
    /// Runs `program --defaults-file=<client_cnf> args...` (logged in as the admin).
    pub(crate) fn spawn(
        program: &str,
        client_cnf: &Path,
        args: &[String],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<ToolProcess> {
        // --defaults-file must come first; it also keeps /etc/mysql (which may point at
        // another server) out of the picture.
        let mut all = vec![format!("--defaults-file={}", client_cnf.display())];
        all.extend_from_slice(args);
        ToolProcess::spawn_plain(program, &all, stdin, stdout)
    }

    /// Runs `program args...`.
    pub(crate) fn spawn_plain(
        program: &str,
        args: &[String],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<ToolProcess> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| AgentError::Command {
                program: program.to_owned(),
                message: format!("cannot run it: {err}"),
            })?;
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                // Whatever could be read is what we report.
                let _ = pipe.read_to_string(&mut text);
                text
            })
        });
        Ok(ToolProcess {
            program: program.to_owned(),
            child,
            stderr,
        })
    }

    fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }

    fn failure(&mut self, status: Option<ExitStatus>, reason: String) -> AgentError {
        let stderr = last_lines(&self.stderr_text(), STDERR_TAIL_LINES);
        let mut message = reason;
        if let Some(status) = status {
            message = if message.is_empty() {
                status.to_string()
            } else {
                format!("{message} ({status})")
            };
        }
        if !stderr.is_empty() {
            message = format!("{message}: {stderr}");
        }
        AgentError::Command {
            program: self.program.clone(),
            message,
        }
    }

    /// Waits for the tool; fails unless it exited with success.
    pub(crate) fn finish(self) -> Result<()> {
        self.finish_with_stderr().map(|_| ())
    }

    /// [`ToolProcess::finish`], answering with everything the tool wrote to stderr.
    pub(crate) fn finish_with_stderr(mut self) -> Result<String> {
        let status = self.child.wait().map_err(|err| AgentError::Command {
            program: self.program.clone(),
            message: format!("cannot wait for it: {err}"),
        })?;
        if status.success() {
            Ok(self.stderr_text())
        } else {
            Err(self.failure(Some(status), String::new()))
        }
    }

    /// Kills the tool after a failure on our side.
    pub(crate) fn abort(&mut self, reason: String) -> AgentError {
        // It may have exited already; either way we wait for it below.
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.failure(status, reason)
    }
}
