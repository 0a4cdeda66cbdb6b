//! Snapshots in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Swift's s3api), for
//! hosts that share no disk.
//!
//! Objects live under `<prefix><name>` in one bucket, which must exist. An object is
//! written as one plain PUT when it fits in one part, otherwise as a multipart upload
//! whose parts go up while the writer fills the next one; it becomes visible when the
//! upload is completed ([`ObjectWriter::finish`]). A writer dropped unfinished aborts its
//! upload, so the object never appears and the parts are freed. An agent that dies in the
//! middle cannot abort: give the bucket a lifecycle rule that aborts incomplete multipart
//! uploads after a day or so.
//!
//! Memory per writer is at most `(MAX_PARTS_IN_FLIGHT + 1) × part_size_mb`: the parts being
//! uploaded plus the one being filled. Reads are streamed chunk by chunk as they arrive.
//!
//! # Threads
//! The store speaks the blocking [`std::io`] interface of [`SnapshotStore`] and does its
//! I/O on the tokio runtime that was current when [`S3Store::new`] ran, by blocking the
//! calling thread until each request is done. Call it (and drop its writers and readers)
//! from blocking threads (`tokio::task::spawn_blocking`, or threads outside the runtime),
//! never from async code: from a multi-thread runtime's worker it still works (through
//! `block_in_place`) but stalls that worker, and on a current-thread runtime it panics.

use super::{ObjectWriter, SnapshotStore};
use crate::error::{AgentError, Result};
use ferrotrove_proto::Secret;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, MultipartUpload, ObjectStore, PutPayload};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinSet;

/// Parts of one object being uploaded at once.
const MAX_PARTS_IN_FLIGHT: usize = 4;
/// S3's smallest part (all but the last), in MiB.
const MIN_PART_SIZE_MB: u32 = 5;
/// S3's largest part, in MiB.
const MAX_PART_SIZE_MB: u32 = 5 * 1024;
/// A request other than a streamed read (a part, a small object) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A streamed read fails when no bytes arrive for this long. Reads have no overall limit:
/// a snapshot may take hours to restore.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How long dropping an unfinished writer waits for its upload to be aborted.
const ABORT_TIMEOUT: Duration = Duration::from_secs(30);

/// `[snapshots.s3]`: where the bucket is and how to sign in. `Debug` never shows the secret.
///
/// ```toml
/// [snapshots.s3]
/// endpoint = "https://s3.eu-west-1.amazonaws.com"   # required
/// bucket = "ferrotrove-snapshots"                    # required; must exist
/// region = "us-east-1"
/// access_key_id = "AKIA..."                          # required
/// secret_access_key = "..."                          # required; a secret, never logged
/// prefix = ""
/// allow_http = false
/// part_size_mb = 16
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
pub struct S3Settings {
    /// The S3 endpoint URL, e.g. `http://127.0.0.1:8080`. Requests are path-style
    /// (`<endpoint>/<bucket>/<key>`). Required.
    pub endpoint: String,
    /// The bucket; it must exist (the agent never creates one). Required.
    pub bucket: String,
    /// The region requests are signed for. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id. Required.
    pub access_key_id: String,
    /// The secret access key. Required. A secret: `Debug` prints `***`.
    pub secret_access_key: Secret,
    /// Objects are stored under `<prefix><name>`; end it with `/` to keep them in a
    /// "folder" (`snapshots/`). Default: empty.
    #[serde(default)]
    pub prefix: String,
    /// Allow an `http://` endpoint (unencrypted: for a store on this host or in tests).
    /// Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Size of the parts of a multipart upload, in MiB: at least 5, at most 5120. Default
    /// 16. An object has at most 10000 parts on AWS and 1000 on Swift (so 16 MiB parts cap
    /// an object at 16 GiB there); each writer holds up to 5 parts in memory.
    #[serde(default = "default_part_size_mb")]
    pub part_size_mb: u32,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_part_size_mb() -> u32 {
    16
}

impl S3Settings {
    /// Checks what serde cannot; the message names the key at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let endpoint = self.endpoint.trim();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "snapshots.s3.endpoint must be an http:// or https:// URL, not {:?}",
                redact_userinfo(endpoint)
            ));
        }
        if endpoint.starts_with("http://") && !self.allow_http {
            return Err(format!(
                "snapshots.s3.endpoint {} is plain http: set snapshots.s3.allow_http = true \
                 to allow it",
                redact_userinfo(endpoint)
            ));
        }
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(format!(
                "snapshots.s3.bucket must be a bucket name, not {:?}",
                self.bucket
            ));
        }
        if self.region.is_empty() {
            return Err("snapshots.s3.region must not be empty".to_owned());
        }
        if self.access_key_id.is_empty() {
            return Err("snapshots.s3.access_key_id must not be empty".to_owned());
        }
        if self.secret_access_key.is_empty() {
            return Err("snapshots.s3.secret_access_key must not be empty".to_owned());
        }
        if !(MIN_PART_SIZE_MB..=MAX_PART_SIZE_MB).contains(&self.part_size_mb) {
            return Err(format!(
                "snapshots.s3.part_size_mb must be from {MIN_PART_SIZE_MB} to \
                 {MAX_PART_SIZE_MB}, not {}",
                self.part_size_mb
            ));
        }
        if let Err(err) = ObjectPath::parse(format!("{}x", self.prefix)) {
            return Err(format!(
                "snapshots.s3.prefix {:?} cannot start an object name: {err}",
                self.prefix
            ));
        }
        Ok(())
    }
}

/// Snapshot objects in an S3 bucket. See the module documentation for the threads it may
/// be called from.
pub struct S3Store {
    inner: Arc<Inner>,
}

/// What the store, its writers and its readers share.
struct Inner {
    /// Requests with an overall time limit.
    client: AmazonS3,
    /// Streamed reads: no overall limit, an idle limit instead (see [`ObjectReader`]).
    reader: AmazonS3,
    handle: Handle,
    /// The endpoint without any user info, for messages.
    endpoint: String,
    bucket: String,
    prefix: String,
    part_size: usize,
    /// Never printed; scrubbed from error messages, should a server echo it.
    secret: Secret,
}

impl S3Store {
    /// Checks the settings and builds the clients; sends no request. Must run inside a
    /// tokio runtime (multi-thread), which then does the store's I/O.
    pub fn new(settings: &S3Settings) -> Result<S3Store> {
        settings.validate().map_err(AgentError::BadRequest)?;
        let handle = Handle::try_current().map_err(|_| {
            AgentError::Internal(
                "the S3 snapshot store must be created inside the tokio runtime".into(),
            )
        })?;
        let build = |options: ClientOptions| {
            AmazonS3Builder::new()
                .with_endpoint(settings.endpoint.trim())
                .with_region(&settings.region)
                .with_bucket_name(&settings.bucket)
                .with_access_key_id(&settings.access_key_id)
                .with_secret_access_key(settings.secret_access_key.expose())
                // Nothing here needs it, and some servers (Swift 2.30) refuse it.
                .with_conditional_put(S3ConditionalPut::Disabled)
                .with_client_options(options.with_allow_http(settings.allow_http))
                .build()
                .map_err(|err| {
                    AgentError::BadRequest(scrub(
                        &format!(
                            "cannot use the S3 snapshot store (bucket {} at {}): {err}",
                            settings.bucket,
                            redact_userinfo(&settings.endpoint)
                        ),
                        &settings.secret_access_key,
                    ))
                })
        };
        let client = build(ClientOptions::new().with_timeout(REQUEST_TIMEOUT))?;
        let reader = build(ClientOptions::new().with_timeout_disabled())?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                client,
                reader,
                handle,
                endpoint: redact_userinfo(settings.endpoint.trim().trim_end_matches('/')),
                bucket: settings.bucket.clone(),
                prefix: settings.prefix.clone(),
                part_size: settings.part_size_mb as usize * 1024 * 1024,
                secret: settings.secret_access_key.clone(),
            }),
        })
    }
}

impl Inner {
    /// Runs `future` on the store's runtime and waits for it (see the module docs).
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        tokio::task::block_in_place(|| self.handle.block_on(future))
    }

    /// The key of object `name`.
    fn location(&self, name: &str) -> Result<ObjectPath> {
        ObjectPath::parse(format!("{}{name}", self.prefix)).map_err(|err| {
            AgentError::BadRequest(format!("{name:?} cannot name an S3 object: {err}"))
        })
    }

    /// The object's URL, for messages (path-style, as requested).
    fn url(&self, location: &ObjectPath) -> String {
        format!("{}/{}/{location}", self.endpoint, self.bucket)
    }

    /// An error message that never carries the secret key.
    fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secret)
    }

    /// An object store error as the agent reports it: what, and which object.
    fn error(
        &self,
        what: &'static str,
        location: &ObjectPath,
        err: object_store::Error,
    ) -> AgentError {
        match err {
            object_store::Error::NotFound { .. } => AgentError::NotFound(format!(
                "snapshot object {} is not in the store",
                self.url(location)
            )),
            err => AgentError::io(
                what,
                Path::new(&self.url(location)),
                io::Error::other(self.scrub(&err.to_string())),
            ),
        }
    }
}

impl SnapshotStore for S3Store {
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let location = self.inner.location(name)?;
        Ok(Box::new(S3Writer {
            buffer: Vec::with_capacity(self.inner.part_size),
            inner: Arc::clone(&self.inner),
            location,
            upload: None,
            parts: JoinSet::new(),
            parts_sent: 0,
            failed: None,
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let inner = &self.inner;
        let location = inner.location(name)?;
        let got = inner.block_on(async {
            tokio::time::timeout(READ_IDLE_TIMEOUT, inner.reader.get(&location)).await
        });
        let result = match got {
            Ok(result) => result.map_err(|err| inner.error("read", &location, err))?,
            Err(_) => {
                return Err(AgentError::io(
                    "read",
                    Path::new(&inner.url(&location)),
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {READ_IDLE_TIMEOUT:?}"),
                    ),
                ));
            }
        };
        Ok(Box::new(ObjectReader {
            stream: result.into_stream(),
            chunk: None,
            pos: 0,
            done: false,
            inner: Arc::clone(inner),
            location,
        }))
    }

    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        let location = inner.location(name)?;
        let got = inner.block_on(async {
            let result = inner.client.get(&location).await?;
            result.bytes().await
        });
        match got {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(inner.error("read", &location, err)),
        }
    }

    fn write_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let location = inner.location(name)?;
        let payload = PutPayload::from(bytes.to_vec());
        inner
            .block_on(inner.client.put(&location, payload))
            .map(|_| ())
            .map_err(|err| inner.error("write", &location, err))
    }

    /// Removes the object. An unfinished upload of it is aborted by its writer (or, if the
    /// agent died, by the bucket's lifecycle rule): S3 names uploads by id, not by key.
    fn delete(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        let location = inner.location(name)?;
        match inner.block_on(inner.client.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(inner.error("delete", &location, err)),
        }
    }

    fn describe(&self) -> String {
        format!("s3 bucket {} at {}", self.inner.bucket, self.inner.endpoint)
    }
}

/// Writes one object: buffers a part, hands full parts to a multipart upload started with
/// the first of them, and at most [`MAX_PARTS_IN_FLIGHT`] parts are being uploaded at once.
struct S3Writer {
    inner: Arc<Inner>,
    location: ObjectPath,
    /// The part being filled (up to `part_size` bytes).
    buffer: Vec<u8>,
    /// The multipart upload, once a part has filled up; `None` again once completed.
    upload: Option<Box<dyn MultipartUpload>>,
    parts: JoinSet<object_store::Result<()>>,
    parts_sent: usize,
    /// Why an earlier write failed: the object can no longer be finished.
    failed: Option<String>,
}

impl S3Writer {
    /// Hands the full buffer to the upload, starting it with the first part and waiting
    /// while `MAX_PARTS_IN_FLIGHT` parts are on their way.
    fn send_part(&mut self) -> std::result::Result<(), String> {
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.inner.part_size));
        let inner = Arc::clone(&self.inner);
        let (location, upload, parts) = (&self.location, &mut self.upload, &mut self.parts);
        inner.block_on(async {
            if upload.is_none() {
                let started = inner
                    .client
                    .put_multipart(location)
                    .await
                    .map_err(|err| format!("cannot start the upload: {err}"))?;
                *upload = Some(started);
            }
            while parts.len() >= MAX_PARTS_IN_FLIGHT {
                join_part(parts).await?;
            }
            let upload = upload.as_mut().expect("the upload was started above");
            parts.spawn(upload.put_part(PutPayload::from(part)));
            Ok::<(), String>(())
        })?;
        self.parts_sent += 1;
        Ok(())
    }

    /// The error a write or finish reports (and remembers) for `message`.
    fn fail(&mut self, message: String) -> io::Error {
        let message = self.inner.scrub(&format!(
            "cannot write {}: {message}",
            self.inner.url(&self.location)
        ));
        self.failed = Some(message.clone());
        io::Error::other(message)
    }
}

/// Waits for one part in flight; its error, if it failed.
async fn join_part(
    parts: &mut JoinSet<object_store::Result<()>>,
) -> std::result::Result<(), String> {
    match parts.join_next().await {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(err))) => Err(format!("a part failed: {err}")),
        Some(Err(err)) => Err(format!("a part upload died: {err}")),
    }
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(message) = &self.failed {
            return Err(io::Error::other(message.clone()));
        }
        let n = buf.len().min(self.inner.part_size - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == self.inner.part_size
            && let Err(message) = self.send_part()
        {
            return Err(self.fail(message));
        }
        Ok(n)
    }

    /// Nothing to do: bytes are uploaded a part at a time, and are durable only once the
    /// writer is finished.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<()> {
        let url = self.inner.url(&self.location);
        let failed =
            |message: String| AgentError::io("write", Path::new(&url), io::Error::other(message));
        if let Some(message) = self.failed.take() {
            // Dropping `self` aborts the upload.
            return Err(failed(message));
        }
        let inner = Arc::clone(&self.inner);
        if self.upload.is_none() {
            // It fits in one part: one plain PUT.
            let payload = PutPayload::from(std::mem::take(&mut self.buffer));
            return inner
                .block_on(inner.client.put(&self.location, payload))
                .map(|_| ())
                .map_err(|err| inner.error("write", &self.location, err));
        }
        if !self.buffer.is_empty()
            && let Err(message) = self.send_part()
        {
            return Err(failed(inner.scrub(&message)));
        }
        let (upload, parts) = (&mut self.upload, &mut self.parts);
        let completed = inner.block_on(async {
            while !parts.is_empty() {
                join_part(parts).await?;
            }
            let upload = upload.as_mut().expect("the upload was started");
            upload
                .complete()
                .await
                .map_err(|err| format!("cannot complete the upload: {err}"))
        });
        match completed {
            Ok(_) => {
                self.upload = None;
                Ok(())
            }
            // Dropping `self` aborts the upload.
            Err(message) => Err(failed(inner.scrub(&message))),
        }
    }
}

impl Drop for S3Writer {
    /// Aborts the upload of an unfinished object, so it never appears and its parts are
    /// freed.
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let mut parts = std::mem::take(&mut self.parts);
        let url = self.inner.url(&self.location);
        let abort = async move {
            parts.shutdown().await;
            match tokio::time::timeout(ABORT_TIMEOUT, upload.abort()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {ABORT_TIMEOUT:?}")),
            }
        };
        // Blocking is impossible while unwinding a panic (it could panic again) or on a
        // current-thread runtime's own thread: abort in the background there.
        let on_current_thread_runtime = Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if std::thread::panicking() || on_current_thread_runtime {
            let secret = self.inner.secret.clone();
            self.inner.handle.spawn(async move {
                if let Err(message) = abort.await {
                    warn_abort_failed(&url, &scrub(&message, &secret));
                }
            });
        } else if let Err(message) = self.inner.block_on(abort) {
            warn_abort_failed(&url, &self.inner.scrub(&message));
        }
    }
}

fn warn_abort_failed(url: &str, message: &str) {
    tracing::warn!(
        object = url,
        error = message,
        "cannot abort the upload of an unfinished snapshot object; its parts stay until \
         the bucket's lifecycle rule removes them"
    );
}

/// Streams an object: one chunk of the response at a time, as it arrives.
struct ObjectReader<S, B> {
    stream: S,
    /// The chunk being handed out, and how much of it is.
    chunk: Option<B>,
    pos: usize,
    done: bool,
    inner: Arc<Inner>,
    location: ObjectPath,
}

impl<S, B> Read for ObjectReader<S, B>
where
    S: futures::Stream<Item = object_store::Result<B>> + Unpin + Send,
    B: AsRef<[u8]> + Send,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(chunk) = &self.chunk {
                let rest = &chunk.as_ref()[self.pos..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if self.done {
                return Ok(0);
            }
            let stream = &mut self.stream;
            let next = self
                .inner
                .block_on(async { tokio::time::timeout(READ_IDLE_TIMEOUT, stream.next()).await });
            match next {
                Ok(Some(Ok(chunk))) => {
                    self.chunk = Some(chunk);
                    self.pos = 0;
                }
                Ok(None) => {
                    self.chunk = None;
                    self.done = true;
                }
                Ok(Some(Err(err))) => {
                    let message = self.inner.scrub(&format!(
                        "cannot read {}: {err}",
                        self.inner.url(&self.location)
                    ));
                    return Err(io::Error::other(message));
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "cannot read {}: no bytes for {READ_IDLE_TIMEOUT:?}",
                            self.inner.url(&self.location)
                        ),
                    ));
                }
            }
        }
    }
}

/// `message` with every occurrence of the secret replaced by `***`.
fn scrub(message: &str, secret: &Secret) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret.expose(), "***")
    }
}

/// The URL without `user:password@`, should one be given.
fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***@{}", &rest[at + 1..]),
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    const AGENT: &str = r#"
        instance_id = "0192f0c4-7a1e-7cc0-8000-000000000001"
        [bus]
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        [server]
        base_dir = "/var/lib/ferrotrove/i1"
        port = 3311
        [snapshots]
        dir = "/var/lib/ferrotrove/snapshots"
        [snapshots.s3]
        endpoint = "https://s3.example.com"
        bucket = "snaps"
        access_key_id = "AKIDEXAMPLE"
        secret_access_key = "wJalrXUtnFEMI-very-secret"
    "#;

    fn settings(extra: &str) -> S3Settings {
        AgentConfig::from_toml(&format!("{AGENT}{extra}"))
            .unwrap()
            .snapshots
            .s3
            .expect("[snapshots.s3]")
    }

    #[test]
    fn store_settings_have_defaults_and_hide_the_secret() {
        let s3 = settings("");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.prefix, "");
        assert!(!s3.allow_http);
        assert_eq!(s3.part_size_mb, 16);
        assert_eq!(s3.secret_access_key.expose(), "wJalrXUtnFEMI-very-secret");
        assert!(!format!("{s3:?}").contains("very-secret"), "{s3:?}");
        s3.validate().unwrap();
    }

    #[test]
    fn store_settings_are_validated() {
        let mut s3 = settings("part_size_mb = 4\n");
        assert!(s3.validate().unwrap_err().contains("part_size_mb"));
        s3.part_size_mb = 5;
        s3.validate().unwrap();
        s3.endpoint = "http://127.0.0.1:8080".into();
        assert!(s3.validate().unwrap_err().contains("allow_http"));
        s3.allow_http = true;
        s3.validate().unwrap();
        s3.prefix = "a//".into();
        assert!(s3.validate().unwrap_err().contains("prefix"));
        s3.prefix = "snapshots/".into();
        s3.validate().unwrap();
        s3.endpoint = "s3.example.com".into();
        assert!(s3.validate().unwrap_err().contains("endpoint"));
    }

    #[test]
    fn store_outside_a_runtime_is_an_error() {
        let err = S3Store::new(&settings("")).err().expect("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[test]
    fn store_description_names_the_bucket_only() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut s3 = settings("");
        s3.endpoint = "https://user:pw@s3.example.com/".into();
        let store = runtime.block_on(async { S3Store::new(&s3) }).unwrap();
        assert_eq!(
            store.describe(),
            "s3 bucket snaps at https://***@s3.example.com"
        );
        assert_eq!(
            store.inner.url(&store.inner.location("a.data").unwrap()),
            "https://***@s3.example.com/snaps/a.data"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let secret = Secret::new("k3y");
        assert_eq!(scrub("bad k3y, k3y!", &secret), "bad ***, ***!");
        assert_eq!(redact_userinfo("http://h:1/x@y"), "http://h:1/x@y");
        assert_eq!(redact_userinfo("http://a:b@h:1"), "http://***@h:1");
    }
}
