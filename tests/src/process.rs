//! Running the real `matrix-relay serve` binary.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use relay_store::testing::{POSTGRES_ENV, TempDatabase};
use tempfile::TempDir;

use crate::identity::{DEST_NAME, RELAY_NAME, Server};

/// Environment variable naming the `matrix-relay` binary to test.
pub const BIN_ENV: &str = "MATRIX_RELAY_BIN";
/// Environment variable choosing `--runtime` for every relay started
/// (unless a test passes `--runtime` itself).
pub const RUNTIME_ENV: &str = "MATRIX_RELAY_RUNTIME";
/// Environment variable choosing the database of every relay started
/// (unless a test passes its own [`RelayBuilder::database`]): `sqlite`
/// (the default: a file in the relay's temporary directory) or `postgres`
/// (a fresh database on the server `$RELAY_TEST_POSTGRES` names, dropped
/// with the relay).
pub const DATABASE_ENV: &str = "MATRIX_RELAY_TEST_DATABASE";
/// How long a relay may take to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a relay may take to exit after SIGTERM/SIGINT.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// The `matrix-relay` binary: `$MATRIX_RELAY_BIN` if set, else
/// `target/<profile>/matrix-relay` next to the running test's `deps/`.
///
/// Panics with instructions if it does not exist.
pub fn relay_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{BIN_ENV}={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut dir = exe
        .parent()
        .expect("the test binary is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("matrix-relay{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: run `cargo build -p matrix-relay` or `cargo test --workspace` \
         (or set {BIN_ENV})",
        path.display()
    );
    path
}

/// What to start: `serve` flags, database and key locations.
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    server_name: String,
    args: Vec<String>,
    database: Option<String>,
    signing_key: Option<PathBuf>,
    wrapper: Vec<OsString>,
}

impl Default for RelayBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayBuilder {
    /// A relay named `relay.example` serving nobody, trusting nobody.
    pub fn new() -> Self {
        Self {
            server_name: RELAY_NAME.to_owned(),
            args: Vec::new(),
            database: None,
            signing_key: None,
            wrapper: Vec::new(),
        }
    }

    /// `--server-name` (default `relay.example`).
    pub fn server_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.server_name);
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--serve-for NAME`.
    pub fn serve_for(self, name: &str) -> Self {
        self.arg("--serve-for").arg(name)
    }

    /// `--trusted-key` for `server`'s key.
    pub fn trust(self, server: &Server) -> Self {
        self.arg("--trusted-key").arg(server.trusted_key_arg())
    }

    /// `--open`.
    pub fn open(self) -> Self {
        self.arg("--open")
    }

    /// `--p2p-keys`.
    pub fn p2p_keys(self) -> Self {
        self.arg("--p2p-keys")
    }

    /// `--max-body-bytes N`.
    pub fn max_body_bytes(self, n: usize) -> Self {
        self.arg("--max-body-bytes").arg(n.to_string())
    }

    /// `--metrics-listen 127.0.0.1:0`: Prometheus metrics on a port of
    /// their own; [`RelayProcess::metrics_addr`] finds it.
    pub fn metrics(self) -> Self {
        self.arg("--metrics-listen").arg("127.0.0.1:0")
    }

    /// `--database URL` instead of the default (see [`DATABASE_ENV`]).
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.to_owned());
        self
    }

    /// `--signing-key PATH` instead of `<tmp>/signing.key`.
    pub fn signing_key(mut self, path: &Path) -> Self {
        self.signing_key = Some(path.to_owned());
        self
    }

    /// Runs the binary under a wrapper command: `program_and_args`, then
    /// the binary and its arguments (as `unshare …`, `env …` or
    /// `sh -c '… exec "$@"' ARG0` take them). [`RelayProcess::pid`] is the
    /// wrapper's, the relay's own when the wrapper execs it.
    pub fn wrapper<I: IntoIterator<Item = S>, S: Into<OsString>>(
        mut self,
        program_and_args: I,
    ) -> Self {
        self.wrapper = program_and_args.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the relay in a fresh temporary directory and waits for its
    /// `listening on` line; panics (with its stderr) if it does not come.
    #[track_caller]
    pub fn start(self) -> RelayProcess {
        let dir = tempfile::Builder::new()
            .prefix("relay-test-")
            .tempdir()
            .expect("create a temporary directory");
        let (database, temp_database) = match self.database.clone() {
            Some(url) => (url, None),
            None => default_database(dir.path()),
        };
        let signing_key = self
            .signing_key
            .clone()
            .unwrap_or_else(|| dir.path().join("signing.key"));
        let mut argv: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--server-name".into(),
            self.server_name.clone().into(),
            "--signing-key".into(),
            signing_key.clone().into(),
            "--database".into(),
            database.clone().into(),
        ];
        if !self.args.iter().any(|a| a == "--runtime")
            && let Some(rt) = std::env::var_os(RUNTIME_ENV)
        {
            argv.push("--runtime".into());
            argv.push(rt);
        }
        argv.extend(self.args.iter().map(OsString::from));
        let mut relay = RelayProcess {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            argv,
            wrapper: self.wrapper,
            server_name: self.server_name,
            database,
            signing_key,
            stdout: Arc::new(Mutex::new(Vec::new())),
            stderr_path: PathBuf::new(),
            generation: 0,
            dir,
            _temp_database: temp_database,
        };
        relay.spawn();
        relay
    }
}

/// The number in field `field` of `/proc/<pid>/status` (kB for the `Vm`
/// fields, a count for `Threads`); `None` once the process is gone.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A running `matrix-relay serve` child process, killed on drop.
///
/// When dropped during a panic (a failing test), it prints the relay's
/// stderr to the test's output.
#[derive(Debug)]
pub struct RelayProcess {
    child: Option<Child>,
    addr: SocketAddr,
    argv: Vec<OsString>,
    wrapper: Vec<OsString>,
    server_name: String,
    database: String,
    signing_key: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
    generation: u32,
    dir: TempDir,
    /// The PostgreSQL database made for it, dropped after the process is
    /// killed (fields drop after [`Drop::drop`]).
    _temp_database: Option<TempDatabase>,
}

/// The database a relay gets when its test names none: per
/// [`DATABASE_ENV`], an SQLite file in `dir` or a fresh PostgreSQL
/// database.
#[track_caller]
fn default_database(dir: &Path) -> (String, Option<TempDatabase>) {
    match std::env::var(DATABASE_ENV).as_deref() {
        Err(_) | Ok("" | "sqlite") => (format!("sqlite:{}", dir.join("relay.db").display()), None),
        Ok("postgres" | "postgresql") => {
            let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                panic!("{DATABASE_ENV}=postgres needs {POSTGRES_ENV}=postgres://… (or run scripts/test)")
            });
            let db = TempDatabase::create(&server)
                .unwrap_or_else(|e| panic!("{DATABASE_ENV}=postgres: {e}"));
            (db.url().to_owned(), Some(db))
        }
        Ok(other) => panic!("{DATABASE_ENV}={other:?}: expected sqlite or postgres"),
    }
}

impl RelayProcess {
    /// A builder; see [`RelayBuilder`].
    pub fn builder() -> RelayBuilder {
        RelayBuilder::new()
    }

    /// The standard relay: `relay.example` serving `dest.example`, trusting
    /// the keys of `trusted`.
    #[track_caller]
    pub fn standard(trusted: &[&Server]) -> Self {
        trusted
            .iter()
            .fold(RelayBuilder::new().serve_for(DEST_NAME), |b, s| b.trust(s))
            .start()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its server name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Its `--database` URL.
    pub fn database_url(&self) -> &str {
        &self.database
    }

    /// Its `--signing-key` path.
    pub fn signing_key_path(&self) -> &Path {
        &self.signing_key
    }

    /// Its temporary directory (working directory, logs, and the SQLite
    /// database unless [`DATABASE_ENV`] or the test chose another).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The full command line after the binary.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CPU time it has used so far (user and system, all threads),
    /// from `/proc/<pid>/stat`, to the clock tick (usually 10 ms).
    pub fn cpu_time(&self) -> Duration {
        let pid = self.pid().expect("the relay is running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read its stat");
        // Fields after the command name, which is in parentheses and may
        // hold spaces: state is field 3, utime and stime fields 14 and 15.
        let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf(3) has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second).expect("a clock tick rate");
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// Its peak resident memory (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.pid().expect("the relay is running");
        proc_status(pid, "VmHWM").expect("VmHWM in /proc/<pid>/status") * 1024
    }

    /// Lines it printed to stdout so far (since the first start).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// What the current run wrote to stderr.
    pub fn stderr_log(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.stderr_path.display()))
    }

    /// Where the current run serves metrics: the address of its `serving
    /// metrics addr=…` log line (logged before `listening on`); panics if
    /// there is none.
    #[track_caller]
    pub fn metrics_addr(&self) -> SocketAddr {
        let log = self.stderr_log();
        let addr = log
            .lines()
            .filter(|l| l.contains("serving metrics"))
            .find_map(|l| l.split("addr=").nth(1)?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `serving metrics addr=…` line in stderr:\n{log}"));
        parse_addr(addr).unwrap_or_else(|e| panic!("{e}:\n{log}"))
    }

    /// Whether the process is still running (reaping it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => false,
            },
        }
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("relay is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is
        // our own child, not yet reaped (we hold its `Child`).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => panic!("waiting for the relay failed: {e}"),
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("relay is not running");
        // Already exited is fine: wait() reports how.
        let _ = child.kill();
        child.wait().expect("reaping the killed relay")
    }

    /// SIGTERM, then waits for it to exit; returns its exit status.
    /// Panics if it is still running after [`SHUTDOWN_TIMEOUT`].
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM, "SIGTERM")
    }

    /// SIGINT (Ctrl-C), then waits for it to exit; returns its exit status.
    #[track_caller]
    pub fn interrupt(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGINT, "SIGINT")
    }

    #[track_caller]
    fn stop_with(&mut self, sig: libc::c_int, name: &str) -> ExitStatus {
        self.signal(sig);
        match self.wait_timeout(SHUTDOWN_TIMEOUT) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!(
                    "relay still running {SHUTDOWN_TIMEOUT:?} after {name}; stderr:\n{}",
                    self.stderr_log()
                );
            }
        }
    }

    /// Starts the same relay again (same flags, database and key file, a
    /// new port), killing it first with SIGKILL if it is still running.
    #[track_caller]
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.child = None;
        self.spawn();
    }

    #[track_caller]
    fn spawn(&mut self) {
        self.generation += 1;
        self.stderr_path = self
            .dir
            .path()
            .join(format!("stderr.{}.log", self.generation));
        let stderr = File::create(&self.stderr_path).expect("create the stderr log file");
        let bin = relay_binary();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(&self.argv)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::clone(&self.stdout);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let listening = line
                    .strip_prefix("listening on http://")
                    .or_else(|| line.strip_prefix("listening on https://"))
                    .map(|rest| parse_addr(rest.trim()));
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
                if let Some(addr) = listening
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err("stdout closed before a `listening on` line".to_owned()));
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(addr)) => self.addr = addr,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => format!("no `listening on` line within {STARTUP_TIMEOUT:?}"),
                };
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "matrix-relay {:?} did not start: {why} (exit: {status:?})\nstdout:\n{}\nstderr:\n{}",
                    self.argv,
                    self.stdout_lines().join("\n"),
                    self.stderr_log()
                );
            }
        }
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim_end_matches('/');
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot parse address {s:?} in the `listening on` line"))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let log = self.stderr_log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- matrix-relay ({}) stderr, last {} lines of {} ---\n{}\n--- end of stderr ---",
                self.addr,
                tail.len(),
                self.stderr_path.display(),
                tail.join("\n")
            );
        }
    }
}

/// Describes how a process ended: `exit 0`, `signal 9`…
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{status:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:8448").expect("v4"),
            SocketAddr::from(([127, 0, 0, 1], 8448))
        );
        assert_eq!(parse_addr("[::1]:9/").expect("v6").port(), 9);
        assert!(parse_addr("nonsense").is_err());
    }
}
