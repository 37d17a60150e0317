//! Running statements and decoding rows, shared by the SQL modules.

use rusqlite::{Connection, Row};

use relay_core::store::StoreError;

use super::db_err;

/// Runs one cached statement that returns no rows.
pub(super) fn execute(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    what: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(args))
        .map(drop)
        .map_err(db_err(what))
}

/// Calls `f` on every row of `sql`; errors of the query, of reading a
/// column and of `f` end it.
pub(super) fn for_each_row(
    conn: &Connection,
    sql: &str,
    what: &str,
    mut f: impl FnMut(&Row<'_>) -> Result<(), LoadError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err(what))?;
    let mut rows = stmt.query([]).map_err(db_err(what))?;
    while let Some(row) = rows.next().map_err(db_err(what))? {
        f(row).map_err(|e| match e {
            LoadError::Sql(e) => db_err(what)(e),
            LoadError::Bad(e) => e,
        })?;
    }
    Ok(())
}

/// A row that could not be read (a column of the wrong type) or decoded.
pub(super) enum LoadError {
    Sql(rusqlite::Error),
    Bad(StoreError),
}

impl From<rusqlite::Error> for LoadError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for LoadError {
    fn from(e: StoreError) -> Self {
        Self::Bad(e)
    }
}

/// The error for `row` (described for a reader) whose `what` does not
/// decode.
pub(super) fn bad_row(row: String, what: &str) -> StoreError {
    StoreError(format!("{row} in the database has an invalid {what}"))
}
