//! The command line itself: flags, `keygen`, start-up errors. (The relay's
//! behaviour over HTTP is tested black-box in the `relay-tests` package.)

use std::process::Command;

use relay_core::signing::SigningKey;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_matrix-relay"))
}

/// `serve --help` is checked with the black-box tests; these are the
/// client commands' flags (PROTOCOL §4).
#[test]
fn send_and_pull_help_list_every_protocol_flag() {
    for (command, flags) in [
        (
            "send",
            &[
                "--server-name",
                "--signing-key",
                "--destination",
                "--txn-id",
                "--file",
                "--relay",
                "--resolve",
                "--attempts",
            ][..],
        ),
        (
            "pull",
            &["--server-name", "--signing-key", "--relay", "--resolve"][..],
        ),
    ] {
        let out = bin().args([command, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags {
            assert!(
                help.contains(flag),
                "{command} --help lacks {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn keygen_writes_a_synapse_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let out = bin()
        .args(["keygen", "--out"])
        .arg(&path)
        .args(["--key-id", "ed25519:abc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("ed25519 abc "), "{text}");
    let key = SigningKey::parse_synapse(&text).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&key.verify_key().to_base64()), "{stdout}");
    assert!(stdout.contains(&key.verify_key().to_hex()), "{stdout}");

    let again = bin().args(["keygen", "--out"]).arg(&path).output().unwrap();
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "key file untouched"
    );
}

#[test]
fn keygen_default_key_id_comes_from_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    assert!(
        bin()
            .args(["keygen", "--out"])
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    let key = SigningKey::parse_synapse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(key.key_id().version(), &key.verify_key().to_hex()[..8]);
}

#[test]
fn serve_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let zero_connections = dir.path().join("zero.toml");
    std::fs::write(
        &zero_connections,
        format!(
            "server-name = \"r.example\"\nsigning-key = {:?}\ndatabase-max-connections = 0\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    for (args, expect) in [
        (vec!["serve"], "--server-name"),
        (vec!["serve", "--server-name", "bad_name"], "server name"),
        (vec!["serve", "--server-name", "r.example"], "--signing-key"),
        (
            vec![
                "serve",
                "--server-name",
                "r.example",
                "--signing-key",
                key.to_str().unwrap(),
                "--trusted-key",
                "nope",
            ],
            "--trusted-key",
        ),
        (
            vec![
                "serve",
                "--server-name",
                "r.example",
                "--signing-key",
                key.to_str().unwrap(),
                "--database",
                "mysql://x",
            ],
            "--database",
        ),
        (
            vec![
                "serve",
                "--server-name",
                "r.example",
                "--signing-key",
                key.to_str().unwrap(),
                "--database-max-connections",
                "0",
            ],
            "--database-max-connections",
        ),
        (
            vec!["serve", "--config", zero_connections.to_str().unwrap()],
            "--database-max-connections must be at least 1",
        ),
    ] {
        let out = bin()
            .args(&args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_help_documents_metrics_listen() {
    let out = bin().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--metrics-listen <ADDR>"), "{help}");
    assert!(help.contains("/metrics"), "{help}");
}

#[test]
fn serve_fails_before_listening_when_the_metrics_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["serve", "--server-name", "r.example", "--signing-key", "k"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing announced: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics listener"), "{stderr}");
}
