//! The release binary carries no test support: neither relay-core's
//! `fuzzing` nor relay-store's `conformance` feature is on in its normal
//! build (as `cargo build --release -p matrix-relay` resolves features).

use std::process::Command;

/// Features that only tests, benchmarks and the fuzz crate turn on.
const TEST_ONLY: &[&str] = &[
    r#"relay-core feature "fuzzing""#,
    r#"relay-store feature "conformance""#,
];

/// `cargo tree` of `package`'s normal and build dependencies, with the
/// features they are built with, one node per line.
fn feature_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal,build,features",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn release_build_has_no_test_support() {
    let tree = feature_tree("matrix-relay");
    assert!(
        tree.contains("relay-core v") && tree.contains("relay-store v"),
        "unexpected tree:\n{tree}"
    );
    for feature in TEST_ONLY {
        assert!(
            !tree.lines().any(|l| l.starts_with(feature)),
            "matrix-relay is built with {feature}:\n{tree}"
        );
    }
}

/// The check above would see the feature: the test harness, whose normal
/// dependencies include the conformance support, shows it in the same form.
#[test]
fn feature_tree_names_features_as_expected() {
    let tree = feature_tree("relay-tests");
    assert!(
        tree.lines().any(|l| l.starts_with(TEST_ONLY[1])),
        "no {} in:\n{tree}",
        TEST_ONLY[1]
    );
}
