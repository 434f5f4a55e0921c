//! The domain's repository ports, implemented once for both backends.

mod audit;
mod bundles;
mod certificates;
mod cloud;
mod devices;
mod effects;
mod firmware;
pub(crate) mod keys;
mod models;
mod mqtt;
mod registration;
mod rotations;

/// Rows per multi-row `INSERT`: well under both backends' limits on bound
/// parameters (SQLite's 32,766, PostgreSQL's 65,535) for the widest table.
pub(crate) const ROWS_PER_STATEMENT: usize = 250;

/// Inserts `rows` (a slice of insertable rows) into `table` with one multi-row
/// `INSERT` per [`ROWS_PER_STATEMENT`]. Diesel's multi-connection cannot dispatch a
/// batch insert, so the statement runs on the backend's own connection.
macro_rules! insert_batches {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let mut outcome: diesel::QueryResult<()> = Ok(());
        for part in $rows.chunks($crate::repos::ROWS_PER_STATEMENT) {
            let done = match &mut *$conn {
                $crate::db::DbConnection::Pg(c) => {
                    diesel::insert_into($table).values(part).execute(c)
                }
                $crate::db::DbConnection::Sqlite(c) => {
                    diesel::insert_into($table).values(part).execute(c)
                }
            };
            if let Err(e) = done {
                outcome = Err(e);
                break;
            }
        }
        outcome
    }};
}
pub(crate) use insert_batches;

#[diesel::declare_sql_function]
extern "SQL" {
    /// SQL `lower()`, the same on PostgreSQL and SQLite (ASCII on SQLite).
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A `LIKE` pattern that matches `needle` anywhere, with its wildcards escaped.
pub(crate) fn contains_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Fetches one more row than the page holds, to know whether another page follows.
pub(crate) fn overfetch(limit: u32) -> i64 {
    i64::from(limit) + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::contains_pattern("A_b%"), "%a\\_b\\%%");
    }
}
