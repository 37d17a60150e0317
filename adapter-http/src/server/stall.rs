//! Connections whose client stops taking the response: hyper holds a
//! response until it is written, and has no time limit for that, so a
//! client that asks and never reads would hold it (up to a whole stored
//! transaction) for as long as it keeps the connection open.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::ReadBufCursor;
use relay_core::Instant;

use crate::Runtime;

/// How long a response may wait for its client to take any of it.
pub(super) const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An accepted connection's I/O, noting since when a write has waited for
/// the client to read.
pub(super) struct StallWatch<I> {
    io: I,
    stalled_since: Arc<Mutex<Option<Instant>>>,
}

/// Completes once [`StallWatch`]'s writes have made no progress for
/// [`SEND_STALL_TIMEOUT`].
pub(super) struct Stalled(Arc<Mutex<Option<Instant>>>);

impl<I> StallWatch<I> {
    /// `io`, watched, and what tells when it stalled.
    pub(super) fn new(io: I) -> (Self, Stalled) {
        let stalled_since = Arc::new(Mutex::new(None));
        let watch = Self {
            io,
            stalled_since: stalled_since.clone(),
        };
        (watch, Stalled(stalled_since))
    }

    fn note<T>(&self, poll: &Poll<io::Result<T>>) {
        let mut since = lock(&self.stalled_since);
        match poll {
            Poll::Pending => {
                since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => *since = None,
        }
    }
}

impl Stalled {
    /// Completes when writes have been waiting for [`SEND_STALL_TIMEOUT`].
    pub(super) async fn wait<R: Runtime>(&self, rt: &R) {
        loop {
            let now = Instant::now();
            let deadline = match *lock(&self.0) {
                Some(since) if now.duration_since(since) >= SEND_STALL_TIMEOUT => return,
                Some(since) => since + SEND_STALL_TIMEOUT,
                None => now + SEND_STALL_TIMEOUT,
            };
            rt.sleep_until(deadline).await;
        }
    }
}

fn lock(since: &Mutex<Option<Instant>>) -> MutexGuard<'_, Option<Instant>> {
    since.lock().unwrap_or_else(|e| e.into_inner())
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for StallWatch<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for StallWatch<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(&poll);
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.note(&poll);
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(&poll);
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use hyper::rt::Write;

    use super::*;

    /// A socket whose send buffer is full until the test empties it.
    struct Socket {
        full: bool,
    }

    impl hyper::rt::Write for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.full {
                Poll::Pending
            } else {
                Poll::Ready(Ok(buf.len()))
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_write_that_waits_is_timed_until_one_goes_through() {
        let (mut watch, stalled) = StallWatch::new(Socket { full: true });
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(*lock(&stalled.0), None);
        assert!(Pin::new(&mut watch).poll_write(&mut cx, b"x").is_pending());
        let since = lock(&stalled.0).expect("timed");
        // Waiting again does not restart the clock.
        assert!(Pin::new(&mut watch).poll_write(&mut cx, b"x").is_pending());
        assert_eq!(*lock(&stalled.0), Some(since));
        watch.io.full = false;
        assert!(Pin::new(&mut watch).poll_write(&mut cx, b"x").is_ready());
        assert_eq!(*lock(&stalled.0), None);
    }
}
