//! One request's way through its server's endpoints: which to try next,
//! how long its connection may take, and when the request is over.

use std::time::Duration;

use super::Endpoint;

/// How long a connection to one of several targets may take before the
/// next is tried (the last one has the rest of the request's time).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do next for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStep {
    /// Connect to `endpoint` (or reuse a connection to it), send the
    /// request, read the answer, and report how it went with
    /// [`Resolver::handle_tried`](super::Resolver::handle_tried).
    Try {
        /// Where to.
        endpoint: Endpoint,
        /// How long a new connection may take; `None`: the rest of the
        /// request's time.
        connect_within: Option<Duration>,
    },
    /// The last endpoint tried answered: that answer is the outcome.
    Answered,
    /// No endpoint answered: the request failed, for these reasons (one
    /// per endpoint tried, in order).
    Failed(String),
}

/// How trying one endpoint went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tried {
    /// An HTTP answer came, of any status.
    Answered,
    /// No connection could be made (TCP connect, TLS handshake): another
    /// target may do better.
    Unreachable(String),
    /// The connection was made but no whole answer came, or the request
    /// could not be sent at all.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the report on `endpoints[next - 1]`, or to hand out
    /// `endpoints[next]`.
    Trying,
    Answered,
    Failed,
}

/// One request's attempt at its server's endpoints, in the order
/// discovery gave them. Drive it with [`Attempt::poll`] and
/// [`Resolver::handle_tried`](super::Resolver::handle_tried).
///
/// Implementation note: discovery may end in several SRV targets. When the
/// connection to one cannot be made (TCP connect or TLS handshake, each
/// bounded by [`CONNECT_TIMEOUT`] while another target is left), the next
/// is tried, all within the request's timeout, and the one that failed is
/// tried after the others for [`UNREACHABLE_FOR`](super::UNREACHABLE_FOR).
/// An answer, whatever its status, ends the request: failing over is for
/// unreachable targets only. So does a failure after the connection was
/// made, as the server may have acted on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    endpoints: Vec<Endpoint>,
    /// The next endpoint to hand out.
    next: usize,
    /// Whether the endpoint handed out last is still to be reported.
    awaiting: bool,
    failures: Vec<String>,
    state: State,
}

impl Attempt {
    /// An attempt at `endpoints`, first to last (as
    /// [`Step::Done`](super::Step::Done) gives them).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            next: 0,
            awaiting: false,
            failures: Vec::new(),
            state: State::Trying,
        }
    }

    /// The next step. While an endpoint handed out is not reported yet,
    /// it is handed out again.
    pub fn poll(&mut self) -> AttemptStep {
        match self.state {
            State::Answered => return AttemptStep::Answered,
            State::Failed => return AttemptStep::Failed(self.reason()),
            State::Trying => {}
        }
        let index = if self.awaiting {
            self.next - 1
        } else {
            self.next
        };
        let Some(endpoint) = self.endpoints.get(index) else {
            self.state = State::Failed;
            return AttemptStep::Failed(self.reason());
        };
        let another_left = index + 1 < self.endpoints.len();
        let step = AttemptStep::Try {
            endpoint: endpoint.clone(),
            connect_within: another_left.then_some(CONNECT_TIMEOUT),
        };
        if !self.awaiting {
            self.awaiting = true;
            self.next += 1;
        }
        step
    }

    /// Records how the endpoint handed out last went; `Some` with that
    /// endpoint if it should be marked unreachable. Without an endpoint
    /// awaiting its report, nothing happens.
    pub(crate) fn handle_tried(&mut self, tried: Tried) -> Option<&Endpoint> {
        if self.state != State::Trying || !self.awaiting {
            return None;
        }
        self.awaiting = false;
        let endpoint = self.endpoints.get(self.next - 1)?;
        match tried {
            Tried::Answered => {
                self.state = State::Answered;
                None
            }
            Tried::Unreachable(e) => {
                self.failures.push(e);
                if self.next == self.endpoints.len() {
                    self.state = State::Failed;
                }
                // With one target there is nothing to try first instead.
                (self.endpoints.len() > 1).then_some(endpoint)
            }
            Tried::Failed(e) => {
                self.failures.push(e);
                self.state = State::Failed;
                None
            }
        }
    }

    fn reason(&self) -> String {
        if self.failures.is_empty() {
            "no endpoint to try".to_owned()
        } else {
            self.failures.join("; ")
        }
    }
}
