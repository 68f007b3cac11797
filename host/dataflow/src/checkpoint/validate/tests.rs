use super::*;
use crate::checkpoint::read_manifest;
use sha2::{Digest, Sha256};

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sluice-manifest-check-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

const GOOD: &str = r#"{"version":1,"id":7,"pipeline":"p","pipeline_hash":"h","completed_ms":1,"duration_ms":2,"alignment_ms":0,"finished":false,"sources":[{"name":"s","position":{"emitted":5,"splits":{"0":5},"generator":null,"exhausted":false}}],"operators":[{"name":"count","parallelism":1,"plugin":"count.wasm","plugin_digest":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","keyed":true,"window":null,"watermarks":[0],"generators":[null]}],"sinks":[{"name":"out","precommit":7,"snapshot":null}],"state":{"files":[{"name":"CURRENT","size":16,"hash":"0123456789abcdef0123456789abcdef","shared":false},{"name":"000012.sst","size":900,"hash":"fedcba9876543210fedcba9876543210","shared":true}],"uploaded_bytes":1,"total_bytes":2}}"#;

fn write(dir: &Path, body: &str) {
    let sum = hex::encode(Sha256::digest(body.as_bytes()));
    std::fs::write(dir.join("manifest.json"), format!("{body}\n{sum}\n")).unwrap();
}

#[test]
fn a_good_manifest_reads_and_hostile_names_are_refused_with_the_entry() {
    let dir = tempdir();
    write(dir.path(), GOOD);
    let m = read_manifest(dir.path()).unwrap();
    assert_eq!(m.id, 7);
    for (from, to, words) in [
        (
            "\"CURRENT\"",
            "\"../victim\"",
            vec![
                "manifest.json",
                "state file #0",
                "\"../victim\"",
                "plain file name",
            ],
        ),
        (
            "\"000012.sst\"",
            "\"/etc/passwd\"",
            vec!["state file #1", "\"/etc/passwd\""],
        ),
        (
            "\"fedcba9876543210fedcba9876543210\"",
            "\"../../../../tmp/x\"",
            vec!["state file #1", "hash"],
        ),
        (
            "\"plugin_digest\":\"a",
            "\"plugin_digest\":\"\\u00e9",
            vec!["operator `count`", "plugin_digest", "sha256"],
        ),
        (
            "\"generators\":[null]",
            "\"generators\":[null],\"deployed\":\"../../x\"",
            vec!["operator `count`", "deployed"],
        ),
        (
            "\"count.wasm\"",
            "\"../count.wasm\"",
            vec!["operator `count`", "plugin"],
        ),
    ] {
        assert!(GOOD.contains(from), "{from}");
        write(dir.path(), &GOOD.replacen(from, to, 1));
        let err = read_manifest(dir.path()).unwrap_err().to_string();
        for w in words {
            assert!(err.contains(w), "expected `{w}` in: {err}");
        }
    }
}

#[test]
fn random_manifests_never_panic_and_never_pass_a_hostile_name() {
    // A bounded, seeded fuzz of manifest parsing: byte flips, splices of
    // hostile names into the JSON, truncations, non-UTF-8 bytes. Every
    // result is an error or a manifest whose names are all plain.
    let dir = tempdir();
    let mut state = 0x0013_5EED_0000_0003u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const HOSTILE: &[&str] = &[
        "../victim",
        "/etc/passwd",
        "..",
        "a/b",
        "\\\\x",
        "\\u0000",
        "\\u00ff\\u00fe",
        "x\\ny",
        "////",
        "CURRENT",
        "000012.sst",
        "\\ud800",
    ];
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..3000 {
        let mut bytes = GOOD.as_bytes().to_vec();
        match next() % 4 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            1 => {
                // Replace a quoted string with a hostile one.
                let quotes: Vec<usize> = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'"')
                    .map(|(i, _)| i)
                    .collect();
                let k = (next() as usize % (quotes.len() / 2)) * 2;
                let (a, b) = (quotes[k], quotes[k + 1]);
                let h = HOSTILE[next() as usize % HOSTILE.len()];
                bytes.splice(a + 1..b, h.bytes());
            }
            2 => bytes.truncate(next() as usize % bytes.len()),
            _ => {
                let at = (next() as usize) % bytes.len();
                bytes.splice(at..at, [0xff, 0xc3, 0x28]);
            }
        }
        let sum = hex::encode(Sha256::digest(&bytes));
        let mut file = bytes.clone();
        file.extend_from_slice(format!("\n{sum}\n").as_bytes());
        std::fs::write(dir.path().join("manifest.json"), &file).unwrap();
        match read_manifest(dir.path()) {
            Ok(m) => {
                accepted += 1;
                for f in m.state.iter().flat_map(|s| &s.files) {
                    assert_eq!(
                        sluice_state::restore_paths::plain_name_problem(&f.name),
                        None,
                        "round {round}: {f:?}"
                    );
                    assert_eq!(
                        sluice_state::restore_paths::hash_problem(&f.hash),
                        None,
                        "round {round}: {f:?}"
                    );
                }
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted > 50 && refused > 500,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn a_manifest_that_is_a_fifo_or_a_symlink_is_refused_without_blocking() {
    let dir = tempdir();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("manifest.json"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = read_manifest(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let other = tempdir();
    write(other.path(), GOOD);
    let dir = tempdir();
    std::os::unix::fs::symlink(
        other.path().join("manifest.json"),
        dir.path().join("manifest.json"),
    )
    .unwrap();
    let err = read_manifest(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}
