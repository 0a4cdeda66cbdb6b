//! Writing results to stdout. A closed pipe (`ftrove list | head -1`) ends the program
//! quietly instead of panicking as `println!` would.

use std::io::{self, Write};

use serde_json::Value;

/// Writes `text` to stdout.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    let res = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match res {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(err) => Err(anyhow::anyhow!("cannot write to stdout: {err}")),
    }
}

/// Writes `text` and a newline.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// Writes `value` as pretty JSON.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| anyhow::anyhow!("cannot format JSON: {e}"))?;
    print_line(&text)
}
