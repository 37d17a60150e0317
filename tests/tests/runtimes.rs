//! Each `--runtime` really runs on its own executor: a relay (and a `send`
//! in flight) started with `--runtime smol` has smol's worker threads and no
//! tokio runtime thread; with `--runtime tokio`, the reverse. The rest of
//! the black-box suite runs on either runtime through
//! `MATRIX_RELAY_RUNTIME`.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::time::Duration;

use relay_tests::api::markers;
use relay_tests::process::relay_binary;
use relay_tests::*;

const ALICE: &str = "@alice:dest.example";

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads");
    tasks
        .filter_map(|t| {
            let path = t.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect()
}

fn is_tokio(name: &str) -> bool {
    name.starts_with("tokio-")
}

fn is_smol(name: &str) -> bool {
    name.starts_with("smol-worker")
}

/// `argv` without any `--runtime X`, then with `--runtime runtime`.
fn with_runtime(argv: &[OsString], runtime: &str) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
        } else if a == "--runtime" {
            skip = true;
        } else {
            out.push(a.clone());
        }
    }
    out.extend(["--runtime".into(), runtime.into()]);
    out
}

fn relay_on(runtime: &str) -> (RelayProcess, Server, Server) {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .args(["--runtime", runtime])
        .start();
    (relay, origin, dest)
}

#[test]
fn a_smol_relay_runs_no_tokio_runtime() {
    let (mut relay, origin, dest) = relay_on("smol");
    store(&relay, &origin, "t1", ALICE, "smol");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["smol"]);
    let names = thread_names(relay.pid().expect("running"));
    assert!(
        !names.iter().any(|n| is_tokio(n)),
        "tokio threads: {names:?}"
    );
    assert!(
        names.iter().any(|n| is_smol(n)),
        "no smol workers: {names:?}"
    );
    let status = relay.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM on smol");
}

#[test]
fn a_tokio_relay_runs_on_tokio() {
    let (relay, origin, dest) = relay_on("tokio");
    store(&relay, &origin, "t1", ALICE, "tokio");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["tokio"]);
    let names = thread_names(relay.pid().expect("running"));
    assert!(names.iter().any(|n| is_tokio(n)), "no tokio: {names:?}");
    assert!(!names.iter().any(|n| is_smol(n)), "smol: {names:?}");
}

#[test]
fn send_on_smol_runs_no_tokio_runtime() {
    // The destination holds the request, so `send` is caught mid-flight.
    let stub = StubServer::always(Reply::Hang);
    let node = Node::new(Server::origin_example());
    let command = node
        .send(DEST_NAME, "t1", &serde_json::json!({"pdus": []}))
        .resolve(DEST_NAME, stub.addr())
        .timeout_ms(20_000);
    let mut child = Command::new(relay_binary())
        .args(with_runtime(command.argv(), "smol"))
        .current_dir(node.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start send");
    let arrived = stub.wait_for(1, Duration::from_secs(10));
    let names = thread_names(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(arrived, "send never reached the destination");
    assert!(
        !names.iter().any(|n| is_tokio(n)),
        "tokio threads: {names:?}"
    );
    assert!(
        names.iter().any(|n| is_smol(n)),
        "no smol workers: {names:?}"
    );
}

#[test]
fn pull_on_smol_drains_a_relay() {
    let (relay, origin, _dest) = relay_on("smol");
    store(&relay, &origin, "t1", ALICE, "pulled");
    let node = Node::new(Server::named(DEST_NAME));
    let command = node.pull().relay(&relay);
    let out = relay_tests::cli::run(
        with_runtime(command.argv(), "smol"),
        node.dir(),
        relay_tests::cli::COMMAND_TIMEOUT,
    );
    out.assert_code(0);
    assert_eq!(out.json_lines().len(), 1, "{out:?}");
}
