//! The brain is pure: the crates that decide (types, state, core, sim, kv, fleet) must not depend on an
//! async runtime, consensus, storage or OS randomness, and their code must not read clocks,
//! touch files or the network, or iterate in hash order. This test enforces both.

use std::path::{Path, PathBuf};
use std::process::Command;

const PURE_CRATES: [&str; 6] =
    ["shoal-types", "shoal-state", "shoal-core", "shoal-sim", "shoal-kv", "shoal-fleet"];

const FORBIDDEN_DEPS: [&str; 10] =
    ["tokio", "openraft", "redb", "mio", "async-std", "hyper", "axum", "getrandom", "rand", "reqwest"];

const FORBIDDEN_CODE: [&str; 11] = [
    "SystemTime::now",
    "Instant::now",
    "HashMap",
    "HashSet",
    "std::fs",
    "std::net",
    "std::thread",
    "std::process",
    "thread_rng",
    "from_entropy",
    "OsRng",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

#[test]
fn cargo_tree_of_pure_crates_has_no_runtime_or_io_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in PURE_CRATES {
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .args(["tree", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", krate])
            .output()
            .expect("run cargo tree");
        assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        assert!(names.contains(&krate), "cargo tree output looks wrong:\n{text}");
        for bad in FORBIDDEN_DEPS {
            assert!(!names.contains(&bad), "{krate} depends on {bad}:\n{text}");
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn pure_crates_do_not_read_clocks_do_io_or_use_hash_order() {
    let root = workspace_root();
    let mut checked = 0;
    for krate in PURE_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join("crates").join(krate).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            for (no, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for bad in FORBIDDEN_CODE {
                    assert!(!code.contains(bad), "{}:{}: uses {bad}: {line}", f.display(), no + 1);
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} files checked");
}

#[test]
fn only_the_raft_crate_names_openraft() {
    let root = workspace_root();
    let mut names = Vec::new();
    for e in std::fs::read_dir(root.join("crates")).expect("crates dir").flatten() {
        let manifest = e.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        if text.lines().any(|l| l.trim_start().starts_with("openraft")) {
            names.push(e.file_name().to_string_lossy().to_string());
        }
    }
    assert_eq!(names, vec!["shoal-raft".to_string()], "crates that depend on openraft");
}
