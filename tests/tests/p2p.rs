//! Peer-to-peer server names (PROTOCOL §3 item 2): with `--p2p-keys` a
//! 64-lower-hex server name is its own ed25519 key, no pinned key needed.

use relay_core::KeyId;
use relay_core::signing::SigningKey;
use relay_tests::api::markers;
use relay_tests::*;

fn nodes() -> (Server, Server) {
    (Server::p2p([1; 32]), Server::p2p([2; 32]))
}

#[test]
fn p2p_nodes_store_and_pull_without_pinned_keys() {
    let (a, b) = nodes();
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(b.name())
        .start();
    let bob = b.user("bob");
    for form in [bob.clone(), percent_encode(&bob)] {
        store(&relay, &a, &format!("txn-{}", form.len()), &form, &form);
    }
    // B pulls its own queue as @user:<hex>, raw and encoded.
    let first = pull_one(&relay, &b, &bob, 0).expect("first");
    assert_eq!(first.origin(), a.name(), "origin is A's hex name");
    let rest = {
        let mut out = vec![first.clone()];
        let mut ack = first.entry_id;
        while let Some(p) = pull_one(&relay, &b, &percent_encode(&b.user("anyone")), ack) {
            ack = p.entry_id;
            out.push(p);
        }
        out
    };
    assert_eq!(markers(&rest), [bob.clone(), percent_encode(&bob)]);
}

#[test]
fn p2p_names_accept_any_ed25519_key_id() {
    let (a, b) = nodes();
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(b.name())
        .start();
    // Same key, another key ID: the name binds the key, not the ID.
    let other_id = Server::new(
        a.name(),
        SigningKey::from_seed(KeyId::ed25519("other").expect("key id"), [1; 32]),
    );
    store(&relay, &other_id, "t1", &b.user("bob"), "other-key-id");
    assert_eq!(
        markers(&drain(&relay, &b, &b.user("bob"))),
        ["other-key-id"]
    );
}

#[test]
fn p2p_names_that_do_not_match_the_key_are_401() {
    let (a, b) = nodes();
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(b.name())
        .start();
    let bob = b.user("bob");
    let body = txn_body(a.name(), "x");
    // A's name, another key.
    put_txn(&relay, &a.impostor([3; 32]), "t1", &bob, &body).assert_error(401, "M_UNAUTHORIZED");
    // A's key under an upper-case hex name: not a P2P name, and not pinned.
    let upper = Server::new(&a.name().to_ascii_uppercase(), a.key().clone());
    put_txn(&relay, &upper, "t2", &bob, &body).assert_error(401, "M_UNAUTHORIZED");
    // 63 hex characters.
    let short = Server::new(&a.name()[1..], a.key().clone());
    put_txn(&relay, &short, "t3", &bob, &body).assert_error(401, "M_UNAUTHORIZED");
    // B's queue asked for by someone else's hex name with its own valid key: 403.
    relay_txn(&relay, &a, &bob, Some(0)).assert_error(403, "M_FORBIDDEN");
    assert!(drain(&relay, &b, &bob).is_empty());
}

#[test]
fn without_p2p_keys_hex_names_are_401() {
    let (a, b) = nodes();
    let relay = RelayProcess::builder().serve_for(b.name()).start();
    let bob = b.user("bob");
    put_txn(&relay, &a, "t1", &bob, &txn_body(a.name(), "x")).assert_error(401, "M_UNAUTHORIZED");
    relay_txn(&relay, &b, &bob, Some(0)).assert_error(401, "M_UNAUTHORIZED");
    relay_txn(&relay, &b, &bob, None).assert_error(401, "M_UNAUTHORIZED");
}

#[test]
fn pinned_keys_and_p2p_names_work_side_by_side() {
    let (a, b) = nodes();
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(b.name())
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .start();
    store(&relay, &origin, "t1", &b.user("bob"), "classic-to-p2p");
    store(&relay, &a, "t1", "@alice:dest.example", "p2p-to-classic");
    assert_eq!(
        markers(&drain(&relay, &b, &b.user("bob"))),
        ["classic-to-p2p"]
    );
    let pulled = drain(&relay, &dest, "@alice:dest.example");
    assert_eq!(markers(&pulled), ["p2p-to-classic"]);
    assert_eq!(pulled[0].origin(), a.name());
}
