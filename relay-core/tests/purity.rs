//! relay-core stays pure: no runtime, HTTP or database crate in its normal
//! dependency tree.

use std::process::Command;

const FORBIDDEN: &[&str] = &["tokio", "hyper", "smol", "async-io", "rusqlite", "postgres"];

#[test]
fn dependency_tree_has_no_io_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "relay-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"relay-core") && crates.contains(&"serde_json"),
        "unexpected tree:\n{stdout}"
    );
    for name in crates {
        for bad in FORBIDDEN {
            let hit =
                name == *bad || name.starts_with(&format!("{bad}-")) || name.contains("postgres");
            assert!(!hit, "relay-core depends on {name} (forbidden: {bad})");
        }
    }
}
