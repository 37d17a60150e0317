//! Bounded pools of threads for blocking work. Storage calls and DNS
//! lookups each get a pool of their own, so that one kind of work (a
//! nameserver that never answers) cannot hold the threads the other (a
//! store that answers in a millisecond) needs.
//!
//! Implementation note: runtime-agnostic (std threads, a bounded
//! async-channel queue, a futures-channel oneshot per job), so both
//! runtimes share it and neither runtime's own blocking pool is involved.
//! A pool starts its threads as queued jobs need them, up to its size, and
//! keeps them until every handle is dropped; then each thread finishes the
//! jobs still queued and ends.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_channel::oneshot;
use relay_core::Instant;

/// One queued job; it reports its own result.
type Job = Box<dyn FnOnce() + Send>;

/// A pool of at most `size` threads running blocking jobs in the order
/// they were queued. Cheap to clone; clones share the threads.
#[derive(Clone)]
pub(crate) struct ThreadPool {
    jobs: async_channel::Sender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The threads' name, before `-N`.
    name: &'static str,
    size: usize,
    /// Whether a job is skipped when its caller stopped waiting for it, or
    /// its deadline passed, before a thread took it.
    skip_stale: bool,
    queue: async_channel::Receiver<Job>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
}

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobError {
    /// It panicked, with this message.
    Panicked(String),
    /// It was skipped (stale), or no thread could be started for it.
    NotRun,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Panicked(message) => write!(f, "it panicked: {message}"),
            Self::NotRun => f.write_str("it was not run"),
        }
    }
}

/// A queued job's result, once a thread has run it.
#[must_use]
pub(crate) struct Pending<T> {
    result: oneshot::Receiver<Result<T, String>>,
    started: Arc<AtomicBool>,
}

impl<T> Pending<T> {
    /// Whether a thread has started the job (it then runs to its end).
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, JobError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|received| match received {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(message)) => Err(JobError::Panicked(message)),
                Err(oneshot::Canceled) => Err(JobError::NotRun),
            })
    }
}

impl ThreadPool {
    /// A pool of at most `size` threads (at least one) named `name-N`,
    /// with room for `queue` waiting jobs (at least one); every job runs.
    pub(crate) fn new(name: &'static str, size: usize, queue: usize) -> Self {
        Self::build(name, size, queue, false)
    }

    /// Like [`new`](Self::new), but a job is skipped, never run, when by
    /// the time a thread is free for it its caller dropped the
    /// [`Pending`] or its deadline passed.
    pub(crate) fn skipping_stale(name: &'static str, size: usize, queue: usize) -> Self {
        Self::build(name, size, queue, true)
    }

    fn build(name: &'static str, size: usize, queue: usize, skip_stale: bool) -> Self {
        let (jobs, receiver) = async_channel::bounded(queue.max(1));
        Self {
            jobs,
            shared: Arc::new(Shared {
                name,
                size: size.max(1),
                skip_stale,
                queue: receiver,
                state: Mutex::default(),
            }),
        }
    }

    /// Runs `f` on one of the pool's threads (waiting for room in the
    /// queue first); `Err` if it panicked or could not be run.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JobError> {
        self.submit(None, f).await.await
    }

    /// Queues `f` once the queue has room, to run before `deadline` (if
    /// any, and if the pool skips stale jobs); the [`Pending`] yields its
    /// result. Once a thread has taken it, it runs to its end.
    pub(crate) async fn submit<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        let (tx, result) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let (skip_stale, start) = (self.shared.skip_stale, started.clone());
        let job: Job = Box::new(move || {
            let stale = tx.is_canceled() || deadline.is_some_and(|d| Instant::now() >= d);
            if skip_stale && stale {
                return;
            }
            start.store(true, Ordering::Release);
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)).map_err(panic_message));
        });
        // The pool holds a receiver, so the queue never closes while a
        // handle exists; a failed send drops the job (`NotRun`).
        if self.jobs.send(job).await.is_ok() {
            self.shared.grow();
        }
        Pending { result, started }
    }

    /// Threads started so far.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.state().threads
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a thread if more jobs wait than threads are idle, up to the
    /// pool's size.
    fn grow(self: &Arc<Self>) {
        let mut state = self.state();
        if self.queue.len() <= state.idle || state.threads >= self.size {
            return;
        }
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", self.name, state.threads))
            .spawn(move || work(&shared));
        match spawned {
            Ok(_) => state.threads += 1,
            Err(e) => {
                tracing::warn!(pool = self.name, error = %e, "cannot start a thread");
                if state.threads == 0 {
                    // No thread would ever take them: their callers see
                    // them fail instead of waiting forever.
                    while self.queue.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// A pool thread: runs queued jobs until every handle is gone and the
/// queue is empty.
fn work(shared: &Arc<Shared>) {
    loop {
        shared.state().idle += 1;
        let job = shared.queue.recv_blocking();
        {
            let mut state = shared.state();
            state.idle -= 1;
            if job.is_err() {
                state.threads -= 1;
                return;
            }
        }
        // More jobs behind this one than idle threads: a sibling.
        shared.grow();
        if let Ok(job) = job {
            // A job catches its own panic; this only keeps the thread.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }
}

/// A panic's message, as `panic!` formatted it.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a blocking task panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use futures_lite::future::block_on;

    use super::*;

    #[test]
    fn results_and_panics_come_back() {
        let pool = ThreadPool::new("test", 2, 4);
        assert_eq!(block_on(pool.run(|| 6 * 7)), Ok(42));
        let panicked = block_on(pool.run(|| -> u8 { panic!("boom") }));
        assert_eq!(panicked, Err(JobError::Panicked("boom".to_owned())));
        // The thread that caught the panic still serves.
        assert_eq!(block_on(pool.run(|| 1)), Ok(1));
    }

    #[test]
    fn never_more_threads_than_its_size() {
        let pool = ThreadPool::new("test", 3, 64);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (started, starts) = mpsc::channel::<()>();
        let pending: Vec<_> = (0..10)
            .map(|_| {
                let (gate, started) = (gate.clone(), started.clone());
                block_on(pool.submit(None, move || {
                    let _ = started.send(());
                    let _ = gate.lock().map(|g| g.recv());
                }))
            })
            .collect();
        for _ in 0..3 {
            starts
                .recv_timeout(Duration::from_secs(5))
                .expect("a start");
        }
        assert_eq!(pool.threads(), 3);
        assert!(starts.recv_timeout(Duration::from_millis(100)).is_err());
        for _ in 0..10 {
            let _ = release.send(());
        }
        for p in pending {
            assert_eq!(block_on(p), Ok(()));
        }
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn stale_jobs_are_skipped() {
        let pool = ThreadPool::skipping_stale("test", 1, 8);
        let (release, gate) = mpsc::channel::<()>();
        let busy = block_on(pool.submit(None, move || gate.recv().is_ok()));
        let ran = Arc::new(Mutex::new(Vec::new()));
        let job = |n: u8| {
            let ran = ran.clone();
            move || ran.lock().map(|mut r| r.push(n)).is_ok()
        };
        let late = block_on(pool.submit(Some(Instant::now()), job(1)));
        let dropped = block_on(pool.submit(None, job(2)));
        drop(dropped);
        let kept = block_on(pool.submit(None, job(3)));
        assert!(!kept.started());
        release.send(()).expect("the busy job waits");
        assert_eq!(block_on(busy), Ok(true));
        assert_eq!(block_on(late), Err(JobError::NotRun));
        assert_eq!(block_on(kept), Ok(true));
        assert_eq!(*ran.lock().expect("lock"), [3]);
    }
}
