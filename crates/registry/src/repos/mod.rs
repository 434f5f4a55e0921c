//! The domain's repository ports, implemented once for both backends.

mod audit;
mod bundles;
mod certificates;
mod cloud;
mod devices;
mod effects;
mod firmware;
mod keys;
mod models;
mod mqtt;
mod rotations;

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
