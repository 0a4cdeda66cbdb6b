//! The test object store (Swift with s3api, see `ferrotrove_tests::swift`) works as an S3
//! backend for the `object_store` crate, and instances run side by side.

use std::io::Write;
use std::process::{Command, Stdio};

use ferrotrove_tests::process_alive;
use ferrotrove_tests::swift::SwiftStore;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};

const MIB: usize = 1024 * 1024;

fn s3(swift: &SwiftStore) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(swift.endpoint())
        .with_allow_http(true)
        .with_region(swift.region())
        .with_bucket_name(swift.bucket())
        .with_access_key_id(swift.access_key())
        .with_secret_access_key(swift.secret_key())
        // Swift 2.30 answers conditional PUTs with 501.
        .with_conditional_put(S3ConditionalPut::Disabled)
        .build()
        .expect("S3 client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
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

/// SHA-256 in hex, by coreutils' `sha256sum`.
fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Asserts that nothing the store started is alive any more, nor anything under its dir.
fn assert_stopped(pids: &[i32], base: &std::path::Path) {
    assert_eq!(pids.len(), 5, "memcached and four servers: {pids:?}");
    for &pid in pids {
        assert!(!process_alive(pid), "pid {pid} outlived its SwiftStore");
    }
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(base)
        .output()
        .expect("run pgrep");
    assert!(
        out.stdout.is_empty(),
        "processes left under {}: {}",
        base.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!base.exists(), "{} not removed", base.display());
}

#[test]
fn multipart_put_get_list_head_delete() {
    let swift = SwiftStore::start();
    let (pids, base) = (swift.pids(), swift.base().to_owned());
    let store = s3(&swift);
    let body = data(20 * MIB + 12_345);
    let digest = sha256(&body);

    runtime().block_on(async {
        let path = Path::from("snapshots/s1/base.xb.zst");

        let upload = store.put_multipart(&path).await.expect("start upload");
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
        for chunk in body.chunks(MIB) {
            writer.wait_for_capacity(2).await.expect("upload a part");
            writer.write(chunk);
        }
        writer.finish().await.expect("complete the upload");

        let got = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("read body");
        assert_eq!(got.len(), body.len());
        assert_eq!(sha256(&got), digest, "the object came back changed");

        let small = Path::from("snapshots/s1/meta.json");
        store
            .put(&small, b"{\"ok\":true}".to_vec().into())
            .await
            .expect("plain put");

        let listed = store
            .list_with_delimiter(Some(&Path::from("snapshots/s1")))
            .await
            .expect("list");
        let mut names: Vec<_> = listed
            .objects
            .iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("snapshots/s1/base.xb.zst".to_owned(), body.len() as u64),
                ("snapshots/s1/meta.json".to_owned(), 11),
            ]
        );

        let meta = store.head(&path).await.expect("head");
        assert_eq!(meta.size, body.len() as u64);
        assert!(meta.e_tag.is_some(), "{meta:?}");

        store.delete(&path).await.expect("delete");
        store.delete(&small).await.expect("delete the small one");
        assert!(
            matches!(
                store.head(&path).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "head after delete"
        );
        assert!(
            matches!(
                store.get(&path).await,
                Err(object_store::Error::NotFound { .. })
            ),
            "get after delete"
        );
        let left = store
            .list_with_delimiter(Some(&Path::from("snapshots")))
            .await
            .expect("list after delete");
        assert!(
            left.objects.is_empty() && left.common_prefixes.is_empty(),
            "{left:?}"
        );
    });

    drop(swift);
    assert_stopped(&pids, &base);
}

#[test]
fn two_instances_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(SwiftStore::start);
        let b = s.spawn(SwiftStore::start);
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.base(), b.base());
    let (sa, sb) = (s3(&a), s3(&b));
    let path = Path::from("which");

    runtime().block_on(async {
        sa.put(&path, b"a".to_vec().into()).await.expect("put to a");
        sb.put(&path, b"b".to_vec().into()).await.expect("put to b");
        let got_a = sa.get(&path).await.unwrap().bytes().await.unwrap();
        let got_b = sb.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!((&got_a[..], &got_b[..]), (&b"a"[..], &b"b"[..]));
    });

    let (pids_a, base_a) = (a.pids(), a.base().to_owned());
    drop(a);
    assert_stopped(&pids_a, &base_a);
    // b is unaffected by a's stop.
    runtime().block_on(async {
        let got = sb.get(&path).await.expect("b after a stopped");
        assert_eq!(&got.bytes().await.unwrap()[..], b"b");
    });
    let (pids_b, base_b) = (b.pids(), b.base().to_owned());
    drop(b);
    assert_stopped(&pids_b, &base_b);
}
