//! The client against tiny `std` servers.

use super::read::find_head_end;
use super::*;
use std::net::TcpListener;
use std::thread;

/// A one-shot server: accepts one connection, reads the request head
/// and `Content-Length` body, hands them to the test, and writes
/// `answer`.
fn one_shot(answer: &'static [u8]) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handle = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            let n = conn.read(&mut chunk).expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(e) = find_head_end(&buf) {
                break e;
            }
            assert!(n > 0, "client closed early");
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().expect("length"))
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = conn.read(&mut chunk).expect("read body");
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        conn.write_all(answer).expect("write");
        buf
    });
    (addr, handle)
}

#[test]
fn sends_head_and_body_and_reads_content_length_response() {
    let (addr, server) = one_shot(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    );
    let resp = send(addr, "PUT", "/a/@b:c%40", &[("X-Test", "1")], b"{\"k\":1}");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.reason, "OK");
    assert!(resp.is_json());
    assert_eq!(resp.json(), serde_json::json!({}));
    let got = String::from_utf8(server.join().expect("server")).expect("utf8");
    assert!(got.starts_with("PUT /a/@b:c%40 HTTP/1.1\r\n"), "{got}");
    assert!(got.contains("\r\nX-Test: 1\r\n"), "{got}");
    assert!(got.contains("\r\nContent-Length: 7\r\n"), "{got}");
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n{\"k\":1}"), "{got}");
}

#[test]
fn reads_chunked_and_skips_interim_responses() {
    let (addr, server) = one_shot(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    );
    let resp = send(addr, "GET", "/", &[], b"");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.body, b"abcde");
    server.join().expect("server");
}

#[test]
fn reads_to_eof_without_length() {
    let (addr, server) = one_shot(b"HTTP/1.0 500 Oops\r\ncontent-type: Application/JSON; charset=utf-8\r\n\r\n{\"errcode\":\"M_UNKNOWN\",\"error\":\"x\"}");
    let resp = send(addr, "GET", "/", &[], b"");
    resp.assert_error(500, "M_UNKNOWN");
    server.join().expect("server");
}

#[test]
fn error_assertions_fail_on_wrong_shape() {
    let resp = HttpResponse {
        status: 400,
        reason: String::new(),
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: br#"{"errcode":"M_BAD_JSON","error":"x"}"#.to_vec(),
    };
    assert!(
        std::panic::catch_unwind(|| {
            resp.assert_error(400, "M_BAD_JSON");
        })
        .is_err()
    );
    let resp = HttpResponse {
        headers: vec![("content-type".into(), "application/json".into())],
        ..resp
    };
    resp.assert_error(400, "M_BAD_JSON");
    assert!(
        std::panic::catch_unwind(|| {
            resp.assert_error(400, "M_NOT_JSON");
        })
        .is_err()
    );
    let no_error = HttpResponse {
        body: br#"{"errcode":"M_BAD_JSON"}"#.to_vec(),
        ..resp
    };
    assert!(
        std::panic::catch_unwind(|| {
            no_error.assert_error(400, "M_BAD_JSON");
        })
        .is_err()
    );
}

#[test]
fn closed_without_response_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut chunk = [0u8; 1024];
        let _ = conn.read(&mut chunk);
    });
    let err = Request::new("GET", "/")
        .try_send(addr)
        .expect_err("no response");
    assert!(err.nothing_received(), "{err}");
    server.join().expect("server");
}

#[test]
fn raw_bytes_and_half_close() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read to eof");
        conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .expect("write");
        got
    });
    let out = send_raw_then_eof(addr, b"\x00\xffGARBAGE", Duration::from_secs(5)).expect("raw");
    assert!(!out.timed_out);
    let resp = out.response().expect("some bytes").expect("a response");
    assert_eq!(resp.status, 400);
    assert_eq!(server.join().expect("server"), b"\x00\xffGARBAGE");
}

#[test]
fn partial_request_sees_continue_then_finishes() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while find_head_end(&buf).is_none() {
            let n = conn.read(&mut chunk).expect("read");
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .expect("write");
        let head_end = find_head_end(&buf).expect("head");
        while buf.len() < head_end + 10 {
            let n = conn.read(&mut chunk).expect("read");
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .expect("write");
    });
    let req = Request::new("PUT", "/x")
        .header("Expect", "100-continue")
        .body("0123456789");
    let mut partial = req.send_partially(addr, 3).expect("partial");
    assert_eq!(partial.await_interim(Duration::from_secs(5)), Some(100));
    let resp = partial.finish().expect("response");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
    server.join().expect("server");
}
