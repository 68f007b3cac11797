//! Generates `plugins.rs`: one constant per plugin crate under
//! `plugins/{examples,fixtures,bench}/`, so a test names a plugin by a
//! constant and one that does not exist fails to compile.

use std::fmt::Write as _;
use std::path::Path;

/// The plugin kinds, as folders under `plugins/`, with the module each gets.
const KINDS: [(&str, &str); 3] = [
    (
        "examples",
        "Example operators, used by the demo, the examples and the golden tests.",
    ),
    (
        "fixtures",
        "Test fixtures: one behaviour each, hostile ones included.",
    ),
    ("bench", "Plugins made for the benchmarks."),
];

fn main() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut out = String::new();
    let mut all = Vec::new();
    for (kind, doc) in KINDS {
        let dir = plugins.join(kind);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut crates: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        crates.sort();
        writeln!(out, "/// {doc}\npub mod {kind} {{\n    use super::Plugin;").unwrap();
        for path in crates {
            let manifest =
                std::fs::read_to_string(path.join("Cargo.toml")).expect("read Cargo.toml");
            if !manifest.contains("\"cdylib\"") {
                continue; // a library shared by plugins, not a component
            }
            let package = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{}: no package name", path.display()));
            let folder = path.file_name().unwrap().to_str().unwrap();
            let name = package.replace('-', "_");
            let constant = folder.replace('-', "_").to_uppercase();
            writeln!(out, "    /// `plugins/{kind}/{folder}`, built to `plugins/dist/{name}.wasm`.\n    pub const {constant}: Plugin = Plugin {{ name: \"{name}\", dir: \"plugins/{kind}/{folder}\" }};").unwrap();
            all.push(format!("{kind}::{constant}"));
        }
        writeln!(out, "}}\n").unwrap();
    }
    writeln!(
        out,
        "/// Every plugin, in the order above.\npub const ALL: &[Plugin] = &[{}];",
        all.join(", ")
    )
    .unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("plugins.rs");
    std::fs::write(dest, out).expect("write plugins.rs");
}
