//! The official PAPI release files, pinned by size and SHA-256, and their download: each
//! file is fetched to a temporary name, checked, and renamed into place, so a folder never
//! holds a half-written or unchecked file; files already there and intact are not fetched
//! again.
//!
//! # Example
//!
//! ```no_run
//! use papi_data::release::{DEFAULT_BASE, RELEASE, fetch};
//!
//! let fetched = fetch(DEFAULT_BASE, ".cache/papi-release".as_ref(), &RELEASE, |_| {})?;
//! assert_eq!(fetched.len(), RELEASE.len());
//! # Ok::<(), papi_data::Error>(())
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file of the release: its name, size in bytes and SHA-256 (lowercase hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// The file name (also its name under the base URL).
    pub name: &'static str,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// Where the release is served: the paper's repository at a pinned commit.
pub const DEFAULT_BASE: &str = "https://raw.githubusercontent.com/zhu-minjun/PAlign/18e1e3404951acc864f30f323a0e47a0840b474a/PAPI";

/// The release files (test set, split, item key, P² prompts, item texts).
pub const RELEASE: [Pinned; 5] = [
    Pinned { name: "Test-set.json", bytes: 1_649_953, sha256: "5e46c6cf2b0d72762cce69fe455ae827f2c4cdc27a0979dc9b1e58d09b9ae4c6" },
    Pinned { name: "mpi_300_split.json", bytes: 1_425, sha256: "85c761554504dd1b086de98e13fe84fb6e02915ad7bf2e234bb32428894a52c6" },
    Pinned { name: "IPIP-NEO-ItemKey.xls", bytes: 54_784, sha256: "586e92af319bdea185e18a56894191504336e067d0454522da345c43688ce158" },
    Pinned { name: "personality_prompt.json", bytes: 2_421_873, sha256: "400a5d941d77caf04e5450f887f64e5a96e7906f420e0b12c3690f39734af008" },
    Pinned { name: "mpi_300.csv", bytes: 14_625, sha256: "a26d47a419117aa838fa720ebecd72d1c61f19fe58d96c5e4680666b027053a2" },
];

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// Whether it was downloaded now (false: it was there and intact).
    pub downloaded: bool,
}

/// SHA-256 and size of a file, if it can be read.
fn digest_of(path: &Path) -> Option<(String, u64)> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let n = std::io::copy(&mut file, &mut hasher).ok()?;
    Some((hex(&hasher.finalize()), n))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the `files` under `base` into `out` (created if needed), each checked against its
/// pin; `on_file` hears each file's name before it is fetched. A wrong checksum, a short file
/// or an HTTP error leaves nothing of that file behind and is an error naming the URL.
pub fn fetch(base: &str, out: &Path, files: &[Pinned], mut on_file: impl FnMut(&str)) -> Result<Vec<Fetched>> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.to_owned(), source: e })?;
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(30)).timeout_read(Duration::from_secs(60)).build();
    let mut done = Vec::with_capacity(files.len());
    for f in files {
        let path = out.join(f.name);
        if digest_of(&path).is_some_and(|(sha, n)| sha == f.sha256 && n == f.bytes) {
            done.push(Fetched { path, downloaded: false });
            continue;
        }
        on_file(f.name);
        let url = format!("{}/{}", base.trim_end_matches('/'), f.name);
        let partial = out.join(format!(".{}.partial", f.name));
        let result = download(&agent, &url, &partial, f);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
        done.push(Fetched { path, downloaded: true });
    }
    Ok(done)
}

/// One file to `partial`, checked against its pin.
fn download(agent: &ureq::Agent, url: &str, partial: &Path, f: &Pinned) -> Result<()> {
    let fail = |message: String| Error::Download { url: url.to_owned(), message };
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => return Err(fail(format!("HTTP {code} {}", r.status_text()))),
        Err(e) => return Err(fail(e.to_string())),
    };
    let mut reader = response.into_reader().take(f.bytes + 1);
    let mut file = std::fs::File::create(partial).map_err(|e| Error::Io { path: partial.to_owned(), source: e })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = reader.read(&mut buf).map_err(|e| fail(format!("after {n} of {} bytes: {e}", f.bytes)))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        file.write_all(&buf[..k]).map_err(|e| Error::Io { path: partial.to_owned(), source: e })?;
        n += k as u64;
    }
    file.sync_all().map_err(|e| Error::Io { path: partial.to_owned(), source: e })?;
    if n != f.bytes {
        return Err(fail(format!("received {n} bytes, expected {} (truncated or not the pinned file)", f.bytes)));
    }
    let sha = hex(&hasher.finalize());
    if sha != f.sha256 {
        return Err(fail(format!("SHA-256 {sha}, expected {} (not the pinned file)", f.sha256)));
    }
    Ok(())
}
