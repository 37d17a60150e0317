//! `ServerTls` picks up renewed certificate files: real PEM files, real
//! TLS handshakes over loopback TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use adapter_http::{ServerTls, TlsFiles};
use relay_tests::TestCa;
use rustls::pki_types::ServerName;

const NAME: &str = "relay.test";

/// Writes a chain and key for [`NAME`] from `ca`, with modification time
/// `mtime` (so a rewrite within the file system's time granularity still
/// shows).
fn write(ca: &TestCa, files: &TlsFiles, mtime: SystemTime) {
    let (chain, key) = ca.server_pem(&[NAME]);
    for (path, text) in [(&files.cert, chain), (&files.key, key)] {
        std::fs::write(path, text).expect("write a PEM file");
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open the file");
        file.set_modified(mtime).expect("set the modification time");
    }
}

/// Serves TLS handshakes with `tls`'s current configuration; each
/// connection gets `ok` after the handshake.
fn server(tls: &Arc<ServerTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = tls.config();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).expect("a server connection");
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let _ = tls.write_all(b"ok");
                let _ = tls.flush();
            });
        }
    });
    addr
}

/// Connects trusting only `ca`; `Ok` if the handshake succeeded and the
/// server's `ok` came through.
fn connect(addr: std::net::SocketAddr, ca: &TestCa) -> Result<(), String> {
    let conn = rustls::ClientConnection::new(
        ca.client_config(),
        ServerName::try_from(NAME).expect("a DNS name"),
    )
    .expect("a client connection");
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut got = Vec::new();
    match tls.read_to_end(&mut got) {
        Ok(_) | Err(_) if got == b"ok" => Ok(()),
        Ok(_) => Err(format!("got {got:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn files(dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join("fullchain.pem"),
        key: dir.join("privkey.pem"),
    }
}

#[test]
fn a_renewed_certificate_is_served_after_reload_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().expect("a directory");
    let files = files(dir.path());
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    write(&old_ca, &files, t0);
    let tls = Arc::new(ServerTls::load(files.clone()).expect("load the files"));
    let addr = server(&tls);

    connect(addr, &old_ca).expect("the first certificate");
    assert_eq!(tls.reload_if_changed(), Ok(false), "nothing changed yet");

    // Renewed: the next handshake presents the new certificate.
    write(&new_ca, &files, t0 + Duration::from_secs(60));
    assert_eq!(tls.reload_if_changed(), Ok(true));
    connect(addr, &new_ca).expect("the renewed certificate");
    assert!(connect(addr, &old_ca).is_err(), "the old one is gone");
    assert_eq!(tls.reload_if_changed(), Ok(false));

    // Caught half-written: an error, and the renewed certificate stays.
    std::fs::write(&files.key, "").expect("truncate the key");
    let err = tls.reload_if_changed().expect_err("an empty key");
    assert!(err.contains("privkey.pem"), "{err}");
    connect(addr, &new_ca).expect("still the renewed certificate");

    // A key that does not go with the certificate is refused too.
    let (_, other_key) = new_ca.server_pem(&[NAME]);
    std::fs::write(&files.key, other_key).expect("write another key");
    let err = tls.reload_if_changed().expect_err("a mismatched key");
    assert!(err.contains("does not go with the certificate"), "{err}");
    connect(addr, &new_ca).expect("still the renewed certificate");
}
