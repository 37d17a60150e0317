//! The smol adapter's dependency tree has no tokio runtime glue.
//!
//! Two crates bring `tokio` itself in, and only these are allowed:
//! - `hyper` 1.x depends on tokio unconditionally, for its `sync` channels
//!   (no runtime, no I/O). Every hyper-based adapter has this.
//! - `relay-store`'s PostgreSQL backend uses the sync `postgres` client,
//!   which wraps `tokio-postgres` (and `tokio-util`) and runs its own small
//!   tokio runtime while a PostgreSQL store is in use.
//!
//! With `postgres` pruned, `tokio` (from hyper) is the only tokio crate;
//! no `tokio-*`, `hyper-util`, `hyper-rustls` or `async-compat` at all.

use std::collections::BTreeSet;
use std::process::Command;

/// Crate names of `cargo tree -p <package> -e normal <extra>`.
fn tree(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(["--offline"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn tokio_like(name: &str) -> bool {
    name.contains("tokio") || ["hyper-util", "hyper-rustls", "async-compat"].contains(&name)
}

#[test]
fn the_smol_tree_has_only_the_allowed_tokio_crates() {
    for package in ["adapter-smol", "adapter-http"] {
        let all = tree(package, &[]);
        assert!(all.contains("hyper"), "unexpected tree: {all:?}");
        let found: BTreeSet<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|n| tokio_like(n))
            .collect();
        let allowed = BTreeSet::from(["tokio", "tokio-postgres", "tokio-util"]);
        assert!(
            found.is_subset(&allowed),
            "{package} depends on {:?}",
            found.difference(&allowed).collect::<Vec<_>>()
        );

        let without_postgres = tree(package, &["--prune", "postgres"]);
        let found: Vec<&str> = without_postgres
            .iter()
            .map(String::as_str)
            .filter(|n| tokio_like(n))
            .collect();
        assert_eq!(found, ["tokio"], "{package} without postgres");
    }
}

#[test]
fn only_hyper_and_postgres_bring_tokio_in() {
    let dependents = tree("adapter-smol", &["-i", "tokio", "--depth", "1"]);
    let allowed = BTreeSet::from(["tokio", "hyper", "postgres", "tokio-postgres", "tokio-util"]);
    let extra: Vec<&String> = dependents
        .iter()
        .filter(|n| !allowed.contains(n.as_str()))
        .collect();
    assert!(extra.is_empty(), "tokio is also used by {extra:?}");
}
