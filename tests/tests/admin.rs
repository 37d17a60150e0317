//! `matrix-relay queues` and `purge` against a running relay's database
//! (SQLite, or PostgreSQL in the suite's PostgreSQL pass).

use relay_tests::api::{drain, store};
use relay_tests::*;
use serde_json::{Value, json};

const OTHER: &str = "other.example";

/// `subcommand --database <relay's>`: these take no identity, only the
/// database (`node` is only where it runs).
fn admin<'a>(node: &'a Node, subcommand: &str, relay: &RelayProcess) -> CliCommand<'a> {
    CliCommand::bare(node, subcommand)
        .arg("--database")
        .arg(relay.database_url())
}

#[test]
fn queues_lists_by_bytes_and_purge_drops_one_destination() {
    let origin = Server::named("origin.example");
    let dest = Server::named(DEST_NAME);
    let other = Server::named(OTHER);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for(OTHER)
        .trust(&origin)
        .trust(&dest)
        .trust(&other)
        .start();
    let node = Node::new(origin.clone());
    for i in 0..3 {
        store(&relay, &origin, &format!("d{i}"), &dest.user("alice"), "m");
    }
    store(&relay, &origin, "o1", &other.user("bob"), "a longer marker");

    let out = admin(&node, "queues", &relay).run();
    out.assert_code(0);
    let lines = out.json_lines();
    let names: Vec<&Value> = lines.iter().map(|l| &l["destination"]).collect();
    assert_eq!(names, [&json!(DEST_NAME), &json!(OTHER)], "{out:?}");
    assert_eq!(lines[0]["entries"], 3, "{out:?}");
    assert_eq!(lines[1]["entries"], 1, "{out:?}");
    let dest_bytes = lines[0]["bytes"].as_u64().expect("bytes");
    assert!(dest_bytes > lines[1]["bytes"].as_u64().expect("bytes"));
    let out = admin(&node, "queues", &relay).arg("--limit").arg("1").run();
    assert_eq!(out.json_lines().len(), 1, "{out:?}");

    // Purged while the relay runs: its queue is gone, the other stays.
    let out = admin(&node, "purge", &relay)
        .arg("--destination")
        .arg(DEST_NAME)
        .run();
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({"destination": DEST_NAME, "entries": 3, "bytes": dest_bytes})
    );
    assert!(drain(&relay, &dest, &dest.user("alice")).is_empty());
    assert_eq!(drain(&relay, &other, &other.user("bob")).len(), 1);
    let out = admin(&node, "queues", &relay).run();
    out.assert_code(0);
    assert!(out.lines().is_empty(), "{out:?}");

    // Not a server name: refused, nothing touched.
    let out = admin(&node, "purge", &relay)
        .arg("--destination")
        .arg("not a name")
        .run();
    out.assert_code(1);
    assert!(out.stderr.contains("--destination"), "{out:?}");

    // A mistyped SQLite path is refused, not created; another program's
    // database is refused and left as it was.
    let missing = node.dir().join("typo.db");
    let out = CliCommand::bare(&node, "queues")
        .arg("--database")
        .arg(format!("sqlite:{}", missing.display()))
        .run();
    out.assert_code(1);
    assert!(out.stderr.contains("no such file"), "{out:?}");
    assert!(!missing.exists());
    let other = node.dir().join("other.db");
    rusqlite::Connection::open(&other)
        .and_then(|c| c.execute_batch("CREATE TABLE foo (x)"))
        .expect("another program's database");
    let before = std::fs::read(&other).expect("read it");
    let out = CliCommand::bare(&node, "purge")
        .arg("--database")
        .arg(format!("sqlite:{}", other.display()))
        .arg("--destination")
        .arg(DEST_NAME)
        .run();
    out.assert_code(1);
    assert!(
        out.stderr.contains("not a matrix-relay database"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&other).expect("read it again"), before);
}

/// `sqlite://relay.db`, relative to where the command runs, names the same
/// file as `serve` reads it.
#[test]
fn a_relative_sqlite_url_names_the_file_serve_uses() {
    let origin = Server::named("origin.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .start();
    store(
        &relay,
        &origin,
        "t1",
        &Server::named(DEST_NAME).user("a"),
        "m",
    );
    let Some(path) = relay.database_url().strip_prefix("sqlite:") else {
        return; // The suite's PostgreSQL pass.
    };
    let path = std::path::Path::new(path);
    let out = std::process::Command::new(relay_tests::process::relay_binary())
        .current_dir(path.parent().expect("a directory"))
        .args(["queues", "--database"])
        .arg(format!(
            "sqlite://{}",
            path.file_name().expect("a file name").to_string_lossy()
        ))
        .output()
        .expect("run queues");
    assert!(out.status.success(), "{out:?}");
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["destination"], DEST_NAME);
    assert_eq!(line["entries"], 1);
}
