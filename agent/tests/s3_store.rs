//! The S3 snapshot store against a real S3 endpoint (Swift with s3api, see
//! `ferrotrove_tests::swift`): large objects stream both ways, unfinished objects never
//! appear, and no message carries the secret key.

use ferrotrove_agent::error::AgentError;
use ferrotrove_agent::store::{S3Settings, S3Store, SnapshotStore};
use ferrotrove_proto::Secret;
use ferrotrove_tests::swift::SwiftStore;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use std::io::{Read, Write};
use std::process::Command;

const MIB: usize = 1024 * 1024;
const PREFIX: &str = "snapshots/";

fn settings(swift: &SwiftStore, secret: &str) -> S3Settings {
    S3Settings {
        endpoint: swift.endpoint(),
        bucket: swift.bucket().to_owned(),
        region: swift.region().to_owned(),
        access_key_id: swift.access_key().to_owned(),
        secret_access_key: Secret::new(secret),
        prefix: PREFIX.to_owned(),
        allow_http: true,
        // The smallest parts, so that 40 MiB is 8 of them and more than fit in flight.
        part_size_mb: 5,
    }
}

/// A plain client on the same bucket, to look behind the store's back.
fn raw_client(swift: &SwiftStore) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(swift.endpoint())
        .with_allow_http(true)
        .with_region(swift.region())
        .with_bucket_name(swift.bucket())
        .with_access_key_id(swift.access_key())
        .with_secret_access_key(swift.secret_key())
        .with_conditional_put(S3ConditionalPut::Disabled)
        .build()
        .expect("S3 client")
}

/// Every object in the bucket, with its size.
fn list_objects(handle: &tokio::runtime::Handle, client: &AmazonS3) -> Vec<(String, u64)> {
    let mut names: Vec<_> = handle
        .block_on(client.list(None).try_collect::<Vec<_>>())
        .expect("list the bucket")
        .into_iter()
        .map(|meta| (meta.location.to_string(), meta.size))
        .collect();
    names.sort();
    names
}

/// The names in the bucket's `+segments` container (Swift's native API), where s3api keeps
/// the parts of multipart uploads, finished or not.
fn swift_segments(swift: &SwiftStore) -> Vec<String> {
    let auth = Command::new("curl")
        .args(["-fsS", "-D", "-", "-o", "/dev/null"])
        .args(["-H", &format!("X-Auth-User: {}", swift.access_key())])
        .args(["-H", &format!("X-Auth-Key: {}", swift.secret_key())])
        .arg(format!("{}/auth/v1.0", swift.endpoint()))
        .output()
        .expect("run curl");
    assert!(
        auth.status.success(),
        "{}",
        String::from_utf8_lossy(&auth.stderr)
    );
    let headers = String::from_utf8_lossy(&auth.stdout);
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {headers}"))
    };
    let (token, storage_url) = (header("X-Auth-Token"), header("X-Storage-Url"));
    let listing = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(["-H", &format!("X-Auth-Token: {token}")])
        .arg(format!("{storage_url}/{}+segments", swift.bucket()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&listing.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    match status {
        "404" => Vec::new(),
        "200" | "204" => body.lines().map(str::to_owned).collect(),
        _ => panic!("listing the segments: {status} {body}"),
    }
}

/// `len` bytes that differ from part to part (a swapped part would show).
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Reads `reader` to its end in small reads; its length and BLAKE3.
fn drain(mut reader: impl Read) -> (usize, String) {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; 100_003];
    let mut len = 0;
    loop {
        let n = reader.read(&mut buf).expect("read the object");
        if n == 0 {
            return (len, hasher.finalize().to_hex().to_string());
        }
        hasher.update(&buf[..n]);
        len += n;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_streams_objects_and_keeps_unfinished_ones_out_of_sight() {
    let swift = tokio::task::spawn_blocking(SwiftStore::start)
        .await
        .expect("start Swift");
    // As in the agent: the store is made inside the runtime, used from blocking threads.
    let store = S3Store::new(&settings(&swift, swift.secret_key())).expect("the store");
    let wrong_secret = "not-the-secret-4f9c2e";
    let impostor = S3Store::new(&settings(&swift, wrong_secret)).expect("the other store");
    let handle = tokio::runtime::Handle::current();

    tokio::task::spawn_blocking(move || {
        let client = raw_client(&swift);

        // A large object, written in many writes of odd sizes.
        let body = data(40 * MIB + 12_345);
        let mut writer = store.create("big.data").expect("create");
        let sizes = [1, 4093, 65_537, 1_048_583, 3_333_333, 7, 777_777];
        let (mut at, mut i) = (0, 0);
        while at < body.len() {
            let end = (at + sizes[i % sizes.len()]).min(body.len());
            writer.write_all(&body[at..end]).expect("write");
            (at, i) = (end, i + 1);
        }
        assert!(i > 40, "{i} writes");
        // Not there until finished.
        assert!(store.read_small("big.data").unwrap().is_none());
        assert!(matches!(
            store.open("big.data"),
            Err(AgentError::NotFound(_))
        ));
        writer.finish().expect("finish");

        let (len, digest) = drain(store.open("big.data").expect("open"));
        assert_eq!(len, body.len());
        assert_eq!(digest, blake3_hex(&body), "the object came back changed");
        assert_eq!(
            list_objects(&handle, &client),
            vec![(format!("{PREFIX}big.data"), body.len() as u64)]
        );

        // Writers that die leave nothing a reader could take, and no parts behind: one
        // that started a multipart upload, one whose bytes fit in one part.
        let mut dying = store.create("dying.data").expect("create");
        dying.write_all(&body[..12 * MIB]).expect("write");
        assert!(
            swift_segments(&swift)
                .iter()
                .any(|s| s.starts_with(&format!("{PREFIX}dying.data/"))),
            "the multipart upload has begun"
        );
        drop(dying);
        let mut small = store.create("small.data").expect("create");
        small.write_all(b"half a snapshot").expect("write");
        drop(small);
        for name in ["dying.data", "small.data"] {
            assert!(
                matches!(store.open(name), Err(AgentError::NotFound(_))),
                "{name} is readable"
            );
            assert!(store.read_small(name).unwrap().is_none(), "{name}");
        }
        let left = swift_segments(&swift);
        assert!(
            !left
                .iter()
                .any(|s| s.starts_with(&format!("{PREFIX}dying.data"))),
            "the aborted upload left {left:?}"
        );
        assert_eq!(
            list_objects(&handle, &client),
            vec![(format!("{PREFIX}big.data"), body.len() as u64)]
        );

        // A small object whole, replaced whole.
        assert!(store.read_small("info.json").unwrap().is_none());
        store
            .write_small("info.json", b"{\"a\":1}")
            .expect("write_small");
        store
            .write_small("info.json", b"{\"b\":2}")
            .expect("write_small again");
        assert_eq!(
            store.read_small("info.json").unwrap().unwrap(),
            b"{\"b\":2}"
        );
        let (len, _) = drain(store.open("info.json").expect("open a small one"));
        assert_eq!(len, 7);
        // An empty object is an object.
        store
            .create("empty.data")
            .unwrap()
            .finish()
            .expect("finish an empty object");
        assert_eq!(store.read_small("empty.data").unwrap().unwrap(), b"");

        // Deleting twice is fine; what is deleted is gone.
        for name in ["big.data", "info.json", "empty.data"] {
            store.delete(name).expect("delete");
            store.delete(name).expect("delete again");
            assert!(store.read_small(name).unwrap().is_none(), "{name}");
            assert!(matches!(store.open(name), Err(AgentError::NotFound(_))));
        }
        assert_eq!(list_objects(&handle, &client), vec![]);
        let left = swift_segments(&swift);
        assert!(left.is_empty(), "parts outlived their objects: {left:?}");
        store.delete("never-was").expect("delete what never was");

        // No description, setting or error shows a secret key.
        let description = store.describe();
        assert_eq!(
            description,
            format!("s3 bucket {} at {}", swift.bucket(), swift.endpoint())
        );
        let settings = settings(&swift, swift.secret_key());
        assert!(
            !format!("{settings:?}").contains(swift.secret_key()),
            "{settings:?}"
        );
        assert!(
            !format!("{settings:?}").contains(wrong_secret),
            "{settings:?}"
        );
        let refused = impostor
            .write_small("x.json", b"{}")
            .expect_err("a bad signature");
        let message = refused.to_string();
        assert!(
            message.contains(swift.bucket()) && message.contains("x.json"),
            "{message}"
        );
        assert!(!message.contains(wrong_secret), "{message}");
        for err in [
            impostor.read_small("x.json").map(|_| ()).unwrap_err(),
            impostor.open("x.json").map(|_| ()).unwrap_err(),
        ] {
            assert!(!err.to_string().contains(wrong_secret), "{err}");
        }
        let mut writer = impostor.create("x.data").unwrap();
        let err = writer
            .write_all(&body[..6 * MIB])
            .map(|()| writer)
            .and_then(|writer| writer.finish().map_err(std::io::Error::other))
            .expect_err("a bad signature");
        assert!(!err.to_string().contains(wrong_secret), "{err}");

        drop(swift);
    })
    .await
    .expect("the store calls");
}
