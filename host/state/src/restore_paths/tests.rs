use super::*;
use crate::checkpoint::{restore_snapshot, verify_snapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn file(name: &str, hash: &str) -> SnapshotFile {
    SnapshotFile {
        name: name.to_string(),
        size: 4,
        hash: hash.to_string(),
        shared: false,
    }
}

const HASH: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn rocksdb_names_are_plain_and_hostile_ones_are_not() {
    for ok in [
        "000012.sst",
        "MANIFEST-000005",
        "CURRENT",
        "OPTIONS-000007",
        "000004.log",
        "a_b",
    ] {
        assert_eq!(plain_name_problem(ok), None, "{ok}");
    }
    let long = "a".repeat(256);
    for bad in [
        "",
        ".",
        "..",
        "../victim",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "x\0y",
        ".hidden",
        "é",
        "a b",
        "a\nb",
        long.as_str(),
        "db/../../x",
        "~root",
    ] {
        assert!(plain_name_problem(bad).is_some(), "{bad:?} accepted");
    }
    assert_eq!(hash_problem(HASH), None);
    let bad_hashes = [
        "".to_string(),
        "../../etc/passwd".into(),
        HASH.to_uppercase(),
        HASH[..31].into(),
        format!("{HASH}0"),
        "0123456789abcdef0123456789abcde/".into(),
    ];
    for bad in &bad_hashes {
        assert!(hash_problem(bad).is_some(), "{bad:?} accepted");
    }
    let err = check_snapshot_files(&[file("CURRENT", HASH), file("../victim", HASH)]).unwrap_err();
    assert!(
        err.contains("state file #1")
            && err.contains("\"../victim\"")
            && err.contains("plain file name"),
        "{err}"
    );
    let err = check_snapshot_files(&[file("CURRENT", HASH), file("CURRENT", HASH)]).unwrap_err();
    assert!(err.contains("listed twice"), "{err}");
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A hostile or harmless name, built from the pieces attackers use.
fn hostile_name(rng: &mut Rng, victim: &Path) -> String {
    const PIECES: &[&str] = &[
        "..",
        "../",
        "/",
        "\\",
        ".",
        "\0",
        "victim",
        "000012.sst",
        "CURRENT",
        "db",
        "shared",
        "~",
        "\n",
        "é",
        "%2e%2e",
        "link -> ",
        "//",
        " ",
        "-",
        "_",
    ];
    match rng.below(8) {
        0 => victim.display().to_string(),
        1 => format!("{}{}", "../".repeat(1 + rng.below(6)), "victim"),
        2 => "x".repeat(200 + rng.below(5000)),
        // Bytes that are not UTF-8 cannot reach a `String`: the JSON
        // decoder of a manifest refuses them, so lossy replacements stand in.
        3 => String::from_utf8_lossy(
            &(0..1 + rng.below(40))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>(),
        )
        .into_owned(),
        _ => (0..1 + rng.below(6))
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect(),
    }
}

/// Every file under `dir` with its content (symlinks as their target).
fn tree(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_symlink() {
                out.insert(
                    p.clone(),
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn hostile_snapshot_names_never_write_outside_the_state_dir() {
    // A sandbox: a checkpoint (own files and shared SSTs), a victim file
    // next to it, and the state directory a restore rebuilds.
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path();
    let (own, shared, db) = (
        root.join("chk/db"),
        root.join("shared"),
        root.join("state/db"),
    );
    std::fs::create_dir_all(&own).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let victim = root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::write(own.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    let current_hash = crate::checkpoint::hash_file(&own.join("CURRENT")).unwrap();
    std::fs::write(
        shared.join(format!("{current_hash}.sst")),
        b"MANIFEST-000001\n",
    )
    .unwrap();
    // A symlink in the checkpoint that points at the victim: never followed.
    std::os::unix::fs::symlink(&victim, own.join("000009.sst")).unwrap();
    let before = tree(root, &db);

    let mut rng = Rng(0x5EED_0013_0003_0001);
    let (mut refused, mut restored) = (0, 0);
    for round in 0..2000 {
        let n = 1 + rng.below(4);
        let files: Vec<SnapshotFile> = (0..n)
            .map(|_| {
                let name = if rng.below(3) == 0 {
                    "CURRENT".to_string()
                } else {
                    hostile_name(&mut rng, &victim)
                };
                let hash = match rng.below(4) {
                    0 => hostile_name(&mut rng, &victim),
                    _ => current_hash.clone(),
                };
                SnapshotFile {
                    name,
                    size: 16,
                    hash,
                    shared: rng.below(2) == 0,
                }
            })
            .collect();
        let checked = check_snapshot_files(&files);
        let verified = verify_snapshot(&files, &own, &shared);
        let result = restore_snapshot(&files, &own, &shared, &db);
        if checked.is_err() {
            assert!(
                result.is_err() && verified.is_err(),
                "round {round}: {files:?} was restored although refused"
            );
            refused += 1;
        } else if result.is_ok() {
            restored += 1;
            for f in &files {
                assert_eq!(plain_name_problem(&f.name), None);
            }
        }
        // Nothing outside the state's db directory changed, and the db
        // directory holds only plain names.
        assert_eq!(
            tree(root, &db),
            before,
            "round {round}: {files:?} wrote outside the state directory"
        );
        if db.exists() {
            for e in std::fs::read_dir(&db).unwrap().flatten() {
                let name = e.file_name().into_string().unwrap();
                assert_eq!(
                    plain_name_problem(&name),
                    None,
                    "round {round}: {name:?} in the state directory"
                );
                assert!(
                    !e.file_type().unwrap().is_symlink(),
                    "round {round}: a symlink in the state directory"
                );
            }
        }
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        refused > 1000 && restored > 10,
        "{refused} refused, {restored} restored: the generator lost its edge"
    );
}

#[test]
fn a_checkpoint_file_that_is_a_symlink_or_a_fifo_is_refused() {
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path();
    let (own, shared, db) = (
        root.join("chk/db"),
        root.join("shared"),
        root.join("state/db"),
    );
    std::fs::create_dir_all(&own).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(root.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(root.join("secret"), own.join("CURRENT")).unwrap();
    let hash = crate::checkpoint::hash_file(&root.join("secret")).unwrap();
    let files = [SnapshotFile {
        name: "CURRENT".into(),
        size: 6,
        hash,
        shared: false,
    }];
    let err = verify_snapshot(&files, &own, &shared).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let err = restore_snapshot(&files, &own, &shared, &db)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    // A FIFO would block a reader forever.
    let fifo = own.join("MANIFEST-000001");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let files = [SnapshotFile {
        name: "MANIFEST-000001".into(),
        size: 0,
        hash: HASH.into(),
        shared: false,
    }];
    let err = verify_snapshot(&files, &own, &shared).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
}
