//! Running the node-side commands, `matrix-relay send` and `matrix-relay
//! pull`, as child processes with a time limit.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::identity::Server;
use crate::process::{RUNTIME_ENV, RelayProcess, describe_exit, relay_binary};

/// How long a command may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How a command ended and what it printed.
#[derive(Clone)]
pub struct CliOutput {
    /// The command line after the binary.
    pub argv: Vec<OsString>,
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl std::fmt::Debug for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matrix-relay {:?}\n=> {} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.argv,
            describe_exit(self.status),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

impl CliOutput {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The non-empty lines of standard output.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Every line of standard output as JSON; panics (showing the run) if
    /// one is not.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON ({e}):\n{self:?}"))
            })
            .collect()
    }

    /// The one JSON line of standard output; panics if there is not
    /// exactly one.
    #[track_caller]
    pub fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one JSON line:\n{self:?}");
        lines.remove(0)
    }

    /// Asserts the exit code, showing the whole run when it differs.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit {code}:\n{self:?}");
        self
    }
}

/// Runs `matrix-relay <argv>` in `dir`; kills it and panics after
/// `timeout`.
#[track_caller]
pub fn run(argv: Vec<OsString>, dir: &Path, timeout: Duration) -> CliOutput {
    run_to(argv, dir, timeout, None)
}

/// Like [`run`]; with `stdout_file`, standard output goes straight to that
/// file (so others can watch it while the command runs) and is read from it
/// at the end.
#[track_caller]
pub fn run_to(
    argv: Vec<OsString>,
    dir: &Path,
    timeout: Duration,
    stdout_file: Option<&Path>,
) -> CliOutput {
    let bin = relay_binary();
    let started = Instant::now();
    let stdout_to = match stdout_file {
        Some(path) => Stdio::from(File::create(path).expect("create the stdout file")),
        None => Stdio::piped(),
    };
    let mut child = Command::new(&bin)
        .args(&argv)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout_to)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => panic!("waiting for matrix-relay failed: {e}"),
        }
    };
    let elapsed = started.elapsed();
    let mut stdout = stdout.join().unwrap_or_default();
    if let Some(path) = stdout_file {
        stdout = std::fs::read_to_string(path).unwrap_or_default();
    }
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => CliOutput {
            argv,
            status,
            stdout,
            stderr,
            elapsed,
        },
        None => panic!(
            "matrix-relay {argv:?} still running after {timeout:?}; killed.\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        ),
    }
}

/// `NAME=http://ADDR`, a `--resolve` value.
pub fn resolve_arg(name: &str, addr: SocketAddr) -> String {
    format!("{name}=http://{addr}")
}

/// A node: a [`Server`] identity with its key file (Synapse format) in a
/// temporary directory, which is also where its commands run.
#[derive(Debug)]
pub struct Node {
    server: Server,
    dir: TempDir,
    key_path: PathBuf,
    files: AtomicUsize,
}

impl Node {
    /// Writes `server`'s key to `<tmp>/signing.key`.
    pub fn new(server: Server) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("relay-node-")
            .tempdir()
            .expect("create a temporary directory");
        let key_path = dir.path().join("signing.key");
        std::fs::write(&key_path, server.key().to_synapse_line()).expect("write the key file");
        Self {
            server,
            dir,
            key_path,
            files: AtomicUsize::new(0),
        }
    }

    /// Its identity.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Its server name.
    pub fn name(&self) -> &str {
        self.server.name()
    }

    /// Its key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to a new file in its directory and returns the
    /// path.
    pub fn write_file(&self, contents: impl AsRef<[u8]>) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("file-{n}"));
        std::fs::write(&path, contents).expect("write a file");
        path
    }

    /// `matrix-relay send` from this node: `--server-name`,
    /// `--signing-key`, `--destination`, `--txn-id`, and `--file` holding
    /// `transaction` (serialised compactly).
    pub fn send(&self, destination: &str, txn_id: &str, transaction: &Value) -> CliCommand<'_> {
        let file = self.write_file(serde_json::to_vec(transaction).expect("serialise"));
        self.send_file(destination, txn_id, &file)
    }

    /// Like [`Node::send`] with `--file` as given.
    pub fn send_file(&self, destination: &str, txn_id: &str, file: &Path) -> CliCommand<'_> {
        CliCommand::new(self, "send")
            .arg("--destination")
            .arg(destination)
            .arg("--txn-id")
            .arg(txn_id)
            .arg("--file")
            .arg(file.as_os_str())
    }

    /// `matrix-relay pull` as this node (add relays with
    /// [`CliCommand::relay`]).
    pub fn pull(&self) -> CliCommand<'_> {
        CliCommand::new(self, "pull")
    }
}

/// A `send` or `pull` command line being built; [`CliCommand::run`] runs it.
#[derive(Debug, Clone)]
pub struct CliCommand<'a> {
    node: &'a Node,
    argv: Vec<OsString>,
    timeout: Duration,
    stdout_file: Option<PathBuf>,
}

impl<'a> CliCommand<'a> {
    /// `subcommand` as `node`, with `--runtime $MATRIX_RELAY_RUNTIME` when
    /// that is set (see [`RUNTIME_ENV`]).
    fn new(node: &'a Node, subcommand: &str) -> Self {
        let mut argv: Vec<OsString> = vec![
            subcommand.into(),
            "--server-name".into(),
            node.name().into(),
            "--signing-key".into(),
            node.key_path().into(),
        ];
        if let Some(runtime) = std::env::var_os(RUNTIME_ENV) {
            argv.push("--runtime".into());
            argv.push(runtime);
        }
        Self {
            node,
            argv,
            timeout: COMMAND_TIMEOUT,
            stdout_file: None,
        }
    }

    /// A command line with only `subcommand` and the given arguments (to
    /// test what missing flags do).
    pub fn bare(node: &'a Node, subcommand: &str) -> Self {
        Self {
            node,
            argv: vec![subcommand.into()],
            timeout: COMMAND_TIMEOUT,
            stdout_file: None,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// `--resolve NAME=http://ADDR`.
    pub fn resolve(self, name: &str, addr: SocketAddr) -> Self {
        self.arg("--resolve").arg(resolve_arg(name, addr))
    }

    /// `--relay NAME --resolve NAME=http://ADDR`.
    pub fn relay_at(self, name: &str, addr: SocketAddr) -> Self {
        self.arg("--relay").arg(name).resolve(name, addr)
    }

    /// `--relay` for a running relay, resolved to its address.
    pub fn relay(self, relay: &RelayProcess) -> Self {
        self.relay_at(relay.server_name(), relay.addr())
    }

    /// `--attempts N`.
    pub fn attempts(self, n: u32) -> Self {
        self.arg("--attempts").arg(n.to_string())
    }

    /// `--timeout-ms N`.
    pub fn timeout_ms(self, ms: u64) -> Self {
        self.arg("--timeout-ms").arg(ms.to_string())
    }

    /// `--backoff-ms N`.
    pub fn backoff_ms(self, ms: u64) -> Self {
        self.arg("--backoff-ms").arg(ms.to_string())
    }

    /// How long the harness lets it run (default [`COMMAND_TIMEOUT`]).
    pub fn time_limit(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends standard output to `path` (see [`run_to`]).
    pub fn stdout_to(mut self, path: &Path) -> Self {
        self.stdout_file = Some(path.to_owned());
        self
    }

    /// The command line after the binary.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Runs it in the node's directory and waits for it.
    #[track_caller]
    pub fn run(self) -> CliOutput {
        run_to(
            self.argv,
            self.node.dir(),
            self.timeout,
            self.stdout_file.as_deref(),
        )
    }
}
