//! Each guest's own RabbitMQ user, made with `rabbitmqctl` on the broker's host.
//!
//! The user may consume only its own queue (made beforehand by the control plane), publish
//! only to the exchange under the routing key `conductor` (and its replies through the
//! default exchange), and declare nothing. A guest never gets the control plane's broker
//! credentials, nor `guest`.

use super::ProvisionError;
use ferrotrove_proto::{Secret, queues};
use rand::distr::{Alphanumeric, SampleString};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// The broker user of one instance's agent.
pub fn user_name(instance_id: Uuid) -> String {
    format!("ftga-{}", instance_id.simple())
}

/// Makes (or makes again) the guest's user on `vhost`, with a fresh password.
pub async fn create(
    vhost: &str,
    exchange: &str,
    instance_id: Uuid,
) -> Result<Secret, ProvisionError> {
    let user = user_name(instance_id);
    let password = Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32));
    // A user left by an interrupted attempt is replaced.
    let _ = rabbitmqctl(&["delete_user", &user], None).await;
    rabbitmqctl(&["add_user", &user], Some(&password)).await?;
    let own_queue = format!("^{}$", regex_escape(&queues::guest(instance_id)));
    let may_write = format!("^({}|amq\\.default)$", regex_escape(exchange));
    rabbitmqctl(
        &[
            "set_permissions",
            "-p",
            vhost,
            &user,
            "^$",
            &may_write,
            &own_queue,
        ],
        None,
    )
    .await?;
    let conductor = format!("^{}$", regex_escape(queues::CONDUCTOR));
    rabbitmqctl(
        &[
            "set_topic_permissions",
            "-p",
            vhost,
            &user,
            exchange,
            &conductor,
            "^$",
        ],
        None,
    )
    .await?;
    Ok(password)
}

/// Removes the guest's user; a user already gone is fine.
pub async fn delete(instance_id: Uuid) {
    if let Err(error) = rabbitmqctl(&["delete_user", &user_name(instance_id)], None).await {
        tracing::debug!(%instance_id, %error, "guest broker user not deleted");
    }
}

/// Runs `rabbitmqctl -q <args>`, giving `stdin` (a password, never an argument) if any.
async fn rabbitmqctl(args: &[&str], stdin: Option<&Secret>) -> Result<(), ProvisionError> {
    let mut child = tokio::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProvisionError::Io {
            what: "cannot run rabbitmqctl".into(),
            source,
        })?;
    if let (Some(secret), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(secret.expose().as_bytes())
            .await
            .map_err(|source| ProvisionError::Io {
                what: "rabbitmqctl stdin".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| ProvisionError::Io {
            what: "rabbitmqctl".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProvisionError::Other(format!(
            "rabbitmqctl {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// The vhost of an AMQP URL (`/` when it names none), percent-decoded.
pub fn vhost_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    percent_decode(path)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its user and password replaced.
pub fn with_user(url: &str, user: &str, password: &Secret) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.map(|p| format!("/{p}")).unwrap_or_default();
    format!("{scheme}://{user}:{}@{host}{path}", password.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_vhosts() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(
            vhost_of("amqp://guest:guest@127.0.0.1:5672/ft-test-1"),
            "ft-test-1"
        );
        assert_eq!(vhost_of("amqp://127.0.0.1:5672"), "/");
        let pw = Secret::new("pw");
        assert_eq!(
            with_user("amqp://guest:guest@h:5672/v", "ga", &pw),
            "amqp://ga:pw@h:5672/v"
        );
        assert_eq!(with_user("amqp://h:5672", "ga", &pw), "amqp://ga:pw@h:5672");
        assert_eq!(regex_escape("guestagent.ab-1"), "guestagent\\.ab-1");
    }
}
