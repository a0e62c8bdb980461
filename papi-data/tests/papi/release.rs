//! Fetching the release against a real HTTP server on 127.0.0.1 serving fixture copies: good
//! files land and are not fetched twice; a wrong checksum, a truncated body and a 404 each
//! give a clear error and leave nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use papi_data::release::{Pinned, fetch};
use sha2::{Digest, Sha256};

/// Serves `/ok/<name>` (the content), `/bad/<name>` (other bytes of the same length),
/// `/short/<name>` (announces the full length, sends half and closes); 404 otherwise.
/// Returns the base URL and a request counter.
fn serve(name: &'static str, content: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let head = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            if path == format!("/ok/{name}") {
                let _ = stream.write_all(head(content.len()).as_bytes()).and_then(|()| stream.write_all(&content));
            } else if path == format!("/bad/{name}") {
                let other: Vec<u8> = content.iter().map(|b| b.wrapping_add(1)).collect();
                let _ = stream.write_all(head(other.len()).as_bytes()).and_then(|()| stream.write_all(&other));
            } else if path == format!("/short/{name}") {
                let _ = stream.write_all(head(content.len()).as_bytes()).and_then(|()| stream.write_all(&content[..content.len() / 2]));
            } else {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
            }
        }
    });
    (format!("http://{addr}"), hits)
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

#[test]
fn the_release_is_fetched_checked_and_written_atomically() {
    let content = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/papi/mpi_300_split.json")).unwrap();
    let sha: String = Sha256::digest(&content).iter().map(|b| format!("{b:02x}")).collect();
    const NAME: &str = "mpi_300_split.json";
    let pin = [Pinned { name: NAME, bytes: content.len() as u64, sha256: Box::leak(sha.into_boxed_str()) }];
    // The embedded split is the release's, byte for byte.
    assert_eq!(pin[0].sha256, papi_data::release::RELEASE[1].sha256);
    let (base, hits) = serve(NAME, content.clone());

    let out = tempfile::tempdir().unwrap();
    let mut heard = Vec::new();
    let got = fetch(&format!("{base}/ok"), out.path(), &pin, |n| heard.push(n.to_owned())).unwrap();
    assert!(got[0].downloaded && heard == [NAME]);
    assert_eq!(std::fs::read(out.path().join(NAME)).unwrap(), content);
    assert_eq!(leftovers(out.path()), vec![NAME.to_owned()]);
    // Present and intact: no request at all.
    let before = hits.load(Ordering::SeqCst);
    let again = fetch(&format!("{base}/ok"), out.path(), &pin, |_| panic!("fetched again")).unwrap();
    assert!(!again[0].downloaded && hits.load(Ordering::SeqCst) == before);

    for (route, expect) in [("bad", "SHA-256"), ("short", "bytes"), ("missing", "404")] {
        let out = tempfile::tempdir().unwrap();
        let err = fetch(&format!("{base}/{route}"), out.path(), &pin, |_| {}).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains(&format!("{base}/{route}/{NAME}")), "{route}: {err}");
        assert!(leftovers(out.path()).is_empty(), "{route} left {:?}", leftovers(out.path()));
    }
    // A corrupted file in place is fetched again.
    std::fs::write(out.path().join(NAME), b"garbage").unwrap();
    assert!(fetch(&format!("{base}/ok"), out.path(), &pin, |_| {}).unwrap()[0].downloaded);
    assert_eq!(std::fs::read(out.path().join(NAME)).unwrap(), content);
}
