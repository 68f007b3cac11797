//! A plugin author's first hour: a plugin project outside the Sluice
//! repository builds with exactly the commands `sdk/rust/README.md` gives,
//! and the component runs in a pipeline.

use std::path::Path;
use std::process::Command;

use sluice_tests::*;

/// The hello-world filter of the SDK README, as a user would write it.
const LIB_RS: &str = r#"use sluice_sdk::{Error, Record};

#[sluice_sdk::filter]
fn mentions_sluice(record: &Record) -> Result<bool, Error> {
    Ok(record.value_str().is_some_and(|v| v.contains("sluice")))
}
"#;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_plugin_project_outside_the_repository_builds_with_the_documented_commands() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    assert!(
        !dir.starts_with(repo_root()),
        "the project is outside the repository"
    );
    let sdk = repo_root().join("sdk/rust");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"hello-filter\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\nsluice-sdk = {{ path = \"{}\" }}\n\n[profile.release]\nlto = true\ncodegen-units = 1\nstrip = true\n",
            sdk.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), LIB_RS).unwrap();
    // The documented pin: Sluice's own lock file.
    std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    // A target directory kept between runs (beside the test binaries), so
    // that only the first run compiles the SDK's dependencies.
    let target = sluice_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("outside-plugin");
    run(
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target),
        "cargo build",
    );
    let wasm = target.join("wasm32-wasip2/release/hello_filter.wasm");
    let out = sluice(&["plugin", "inspect", wasm.to_str().unwrap()], dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("process-operator"),
        "{text}"
    );

    // And it runs.
    std::fs::write(
        dir.join("in.txt"),
        "hello\nsluice streams\nbye\nmore sluice\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        format!(
            "manifest_version = 1\nname = \"hello\"\n\n[[sources]]\nname = \"in\"\ntype = \"file\"\npath = \"in.txt\"\n\n[[operators]]\nname = \"f\"\nplugin = \"{}\"\ninput = \"in\"\n\n[[sinks]]\nname = \"out\"\ntype = \"file\"\ninput = \"f\"\npath = \"out.txt\"\n",
            wasm.display()
        ),
    )
    .unwrap();
    finish_run(dir, &[]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "sluice streams\nmore sluice\n"
    );
}
