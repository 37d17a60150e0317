//! Reading an HTTP/1.x response: head, then a body framed by
//! `Content-Length`, chunks, or the end of the stream.

use std::io::{self, Read};

use super::{HttpError, HttpResponse};

/// Longest response head the client accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub(super) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

pub(super) fn parse_status_line(head: &[u8]) -> Result<(u16, String), String> {
    let head = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("bad status in {line:?}"))?;
    Ok((status, parts.next().unwrap_or_default().to_owned()))
}

fn parse_headers(head: &[u8]) -> Result<Vec<(String, String)>, String> {
    let head = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Reads one complete response (skipping 1xx) from `stream`, starting with
/// the bytes already in `buf`.
pub(super) fn read_response(
    stream: &mut impl Read,
    mut buf: Vec<u8>,
    head_request: bool,
) -> Result<HttpResponse, HttpError> {
    let mut reader = Reader {
        stream,
        buf: &mut buf,
        pos: 0,
    };
    loop {
        let end = loop {
            if let Some(end) = find_head_end(&reader.buf[reader.pos..]) {
                break reader.pos + end;
            }
            if reader.buf.len() - reader.pos > MAX_HEAD_BYTES {
                return Err(reader.malformed("response head too long"));
            }
            reader.fill()?;
        };
        let head = reader.buf[reader.pos..end].to_vec();
        let (status, reason) = parse_status_line(&head).map_err(|r| reader.malformed(&r))?;
        let headers = parse_headers(&head).map_err(|r| reader.malformed(&r))?;
        reader.pos = end;
        if (100..200).contains(&status) {
            continue;
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if find("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            reader.chunked()?
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| reader.malformed("bad Content-Length"))?;
            reader.exactly(len)?
        } else {
            reader.until_eof()?
        };
        return Ok(HttpResponse {
            status,
            reason,
            headers,
            body,
        });
    }
}

struct Reader<'a, R> {
    stream: &'a mut R,
    buf: &'a mut Vec<u8>,
    pos: usize,
}

impl<R: Read> Reader<'_, R> {
    fn malformed(&self, reason: &str) -> HttpError {
        HttpError::Malformed {
            reason: reason.to_owned(),
            received: self.buf.clone(),
        }
    }

    /// Reads more; `Closed` at end of stream.
    fn fill(&mut self) -> Result<(), HttpError> {
        if self.try_fill()? == 0 {
            return Err(HttpError::Closed {
                received: self.buf.clone(),
            });
        }
        Ok(())
    }

    fn try_fill(&mut self) -> Result<usize, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(HttpError::Read {
                        error,
                        received: self.buf.clone(),
                    });
                }
            }
        }
    }

    fn exactly(&mut self, len: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() - self.pos < len {
            self.fill()?;
        }
        let out = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(out)
    }

    fn line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(p) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + p]).into_owned();
                self.pos += p + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| self.malformed("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size)?);
            if !self.line()?.is_empty() {
                return Err(self.malformed("chunk not followed by CRLF"));
            }
        }
    }

    fn until_eof(&mut self) -> Result<Vec<u8>, HttpError> {
        while self.try_fill()? > 0 {}
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}
