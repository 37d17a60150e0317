//! Support for tests and benchmarks that run against a PostgreSQL server:
//! a fresh database per test, named by [`POSTGRES_ENV`].
//!
//! ```no_run
//! let Some(db) = relay_store::testing::temp_postgres_database("my test") else {
//!     return; // skipped, loudly; under CI this panicked instead
//! };
//! let store = relay_store::PostgresStore::open(db.url()).expect("open");
//! ```

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use relay_core::store::StoreError;

/// The environment variable with the URL of a PostgreSQL server to test
/// against, connected as a user that may create databases, e.g.
/// `postgres://postgres@127.0.0.1:55432/postgres`.
pub const POSTGRES_ENV: &str = "RELAY_TEST_POSTGRES";

/// `$RELAY_TEST_POSTGRES`, or `None` after a loud message on standard error
/// when it is unset (the caller skips its test).
///
/// # Panics
///
/// When it is unset and `$CI` is set (to anything but empty, `0` or
/// `false`): under CI a skipped PostgreSQL test is a failure.
pub fn postgres_server(what: &str) -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI")
                .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
            assert!(
                !ci,
                "{what}: {POSTGRES_ENV} is not set and CI is: PostgreSQL tests must run in CI \
                 (use scripts/test, which starts a throwaway server)"
            );
            // Straight to the file descriptor: the test harness captures
            // `eprintln!` of passing tests, and a skip must be seen.
            static BANNER: Once = Once::new();
            let mut err = std::io::stderr().lock();
            BANNER.call_once(|| {
                let _ = writeln!(
                    err,
                    "\n!!!!! PostgreSQL tests SKIPPED: {POSTGRES_ENV} is not set. \
                     Run scripts/test (starts a throwaway server) or set \
                     {POSTGRES_ENV}=postgres://user@host:port/postgres !!!!!"
                );
            });
            let _ = writeln!(err, "\nSKIPPED (no PostgreSQL): {what}");
            None
        }
    }
}

/// A fresh database from [`postgres_server`], or `None` (skipped).
///
/// # Panics
///
/// Under CI without a server, or when the database cannot be created.
pub fn temp_postgres_database(what: &str) -> Option<TempDatabase> {
    let server = postgres_server(what)?;
    Some(TempDatabase::create(&server).unwrap_or_else(|e| panic!("{what}: {e}")))
}

/// A uniquely named database on a test server, dropped (with whatever is
/// still connected to it) when this is dropped.
#[derive(Debug)]
pub struct TempDatabase {
    admin_url: String,
    url: String,
    name: String,
}

impl TempDatabase {
    /// Creates a database named `relay_test_<pid>_<time>_<n>` through
    /// `admin_url` (a server URL whose user may create databases).
    ///
    /// Implementation note: the blocking client runs on a thread of its
    /// own, so this works from inside an async runtime too.
    pub fn create(admin_url: &str) -> Result<Self, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "relay_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(admin_url, &name)?;
        admin(admin_url, format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url,
            name,
        })
    }

    /// The URL of the new database (the server URL with its path replaced).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.admin_url, sql) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` (one or more statements) on the database `url` names, on a
/// new connection, on a thread of its own (so it works from inside an
/// async runtime too).
pub fn execute(url: &str, sql: &str) -> Result<(), StoreError> {
    admin(url, sql.to_owned())
}

/// Runs `sql` on a new connection, on a thread of its own.
fn admin(url: &str, sql: String) -> Result<(), StoreError> {
    let url = url.to_owned();
    std::thread::spawn(move || -> Result<(), StoreError> {
        let err = |e: postgres::Error| {
            let detail = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_owned());
            StoreError(format!("PostgreSQL: {sql}: {detail}"))
        };
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(err)?;
        client.batch_execute(&sql).map_err(err)
    })
    .join()
    .map_err(|_| StoreError("the PostgreSQL admin thread panicked".into()))?
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String, StoreError> {
    let bad = || StoreError(format!("{POSTGRES_ENV} is not a postgres:// URL"));
    let scheme_end = url.find("://").ok_or_else(bad)? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Ok(format!("{}{authority}/{name}{query}", &url[..scheme_end]))
}

/// Creates the relay's tables in the (empty) database at `url` as schema
/// `version` left them, for tests of the migrations that follow.
pub fn postgres_schema_at(url: &str, version: u32) -> Result<(), StoreError> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| StoreError(format!("PostgreSQL: connect: {e}")))?;
    crate::postgres::migrate_to(&mut client, version)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database() {
        let cases = [
            ("postgres://u@h:1/postgres", "postgres://u@h:1/x"),
            ("postgres://u:p@h", "postgres://u:p@h/x"),
            (
                "postgresql://h/db?sslmode=disable",
                "postgresql://h/x?sslmode=disable",
            ),
            (
                "postgres://h?connect_timeout=3",
                "postgres://h/x?connect_timeout=3",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").ok().as_deref(), Some(want), "{url}");
        }
    }
}
