//! `SELECT ... FROM v [WHERE ...] [ORDER BY ...] [LIMIT n]` over
//! materialized views: answered at once by DataFusion in batch mode over
//! each view's current rows, not by a new job.

use std::sync::Arc;

use axum::http::StatusCode;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};

use super::api::ApiError;
use super::views::{Views, json_rows};

/// The answer of `sql` if it names a materialized view; `None` if it
/// names none (it is then a continuous query, planned as one).
pub fn over_views(views: &Views, sql: &str) -> Option<Result<Value, ApiError>> {
    let named: Vec<_> = views
        .names()
        .into_iter()
        .filter(|name| mentions(sql, name))
        .filter_map(|name| views.get(&name))
        .collect();
    if named.is_empty() {
        return None;
    }
    let ctx = SessionContext::new();
    for view in &named {
        let registered = view
            .snapshot()
            .map_err(|e| e.to_string())
            .and_then(|(rows, _)| {
                let table = MemTable::try_new(view.schema.clone(), vec![vec![rows]])
                    .map_err(|e| e.to_string())?;
                ctx.register_table(view.name.as_str(), Arc::new(table))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = registered {
            return Some(Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)));
        }
    }
    // Called on a blocking thread of the server's runtime.
    let handle = tokio::runtime::Handle::current();
    let answer = handle.block_on(async {
        // A query, nothing else: no DDL, no DML, no SET.
        let only_queries = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx.sql_with_options(sql, only_queries).await?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    });
    Some(match answer {
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e)),
        Ok((schema, batches)) => {
            let mut rows = Vec::new();
            for batch in &batches {
                match json_rows(batch) {
                    Ok(r) => rows.extend(r),
                    Err(e) => {
                        return Some(Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)));
                    }
                }
            }
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            Ok(json!({"kind": "rows", "columns": columns, "rows": rows}))
        }
    })
}

/// Whether `sql` has `name` as a word (case-insensitive).
fn mentions(sql: &str, name: &str) -> bool {
    let (sql, name) = (sql.to_lowercase(), name.to_lowercase());
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    sql.match_indices(&name).any(|(at, _)| {
        !word(sql[..at].chars().next_back()) && !word(sql[at + name.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_view_is_named_as_a_whole_word() {
        assert!(mentions("SELECT * FROM Busiest WHERE n > 1", "busiest"));
        assert!(mentions("select * from \"busiest\"", "busiest"));
        assert!(!mentions("SELECT * FROM busiest_2", "busiest"));
        assert!(!mentions("SELECT * FROM not_busiest", "busiest"));
    }
}
