//! The warehouse port: one trait, one adapter per backend, and all the SQL.
//!
//! - `row`: the row model and the checks that make a row storable.
//! - `target`: the `--warehouse` URL and the backend it opens.
//! - `dialect`: the SQL every backend shares; backend-only SQL lives in its backend
//!   (`duck`, `postgres`, `redshift`), the analyst views in `views`.
//!
//! The engine hands a backend a [`Batch`] (rows for several tables, including the stream
//! state and run record) and the backend commits it in ONE transaction, merging every row
//! on its table's natural key. That is the whole exactly-once contract.

pub mod dialect;
#[cfg(feature = "duckdb")]
mod duck;
mod postgres;
pub mod redshift;
mod row;
mod target;
mod views;

pub use dialect::Dialect;
pub use redshift::target::RedshiftTarget;
pub use row::{check_row, normalize_row, prepare_row, Batch, Heartbeat, Row, TableRows, Value};
pub use target::{open, open_for_reading, redact_url, WarehouseTarget, DEFAULT_DUCKDB_PATH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Instant;

/// A stream's state as stored.
#[derive(Debug, Clone)]
pub struct StoredState {
    pub cursor: serde_json::Value,
    pub source_time: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When a run last reached the source's head (the heartbeat).
    pub caught_up_at: Option<DateTime<Utc>>,
}

/// One line of `heimdallr status`.
#[derive(Debug, Clone)]
pub struct StreamStatus {
    pub source: String,
    pub stream: String,
    pub scope: String,
    pub cursor: Option<String>,
    pub source_time: Option<DateTime<Utc>>,
    pub state_updated_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<String>,
    pub last_run_started_at: Option<DateTime<Utc>>,
    pub last_run_finished_at: Option<DateTime<Utc>>,
    pub last_run_status: Option<String>,
    pub last_run_rows: Option<i64>,
    pub last_run_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("invalid warehouse URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("{target}: {context}: {detail}")]
    Query {
        target: String,
        context: String,
        detail: String,
    },
    #[error("{0}")]
    Unsupported(String),
    /// Another process holds the warehouse (a DuckDB file has one writer at a time): a
    /// passing condition, not a wrong setting.
    #[error("{target} is in use by another process: {detail}")]
    Busy { target: String, detail: String },
}

impl WarehouseError {
    /// Whether waiting and trying again is the remedy (another sync holds the warehouse).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }
}

/// A warehouse backend. Every method is one transaction or one read.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Where it writes, without credentials (for logs and errors).
    fn describe(&self) -> String;
    /// Applies pending migrations; returns the versions it applied. A backend that can
    /// cancel a statement (Redshift) does so once `deadline` has passed.
    async fn migrate(&self, deadline: Option<Instant>) -> Result<Vec<i64>, WarehouseError>;
    /// A stream's stored state, cancelled like [`Warehouse::migrate`] past `deadline`.
    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<StoredState>, WarehouseError>;
    /// Writes the whole batch in one transaction, merging each table's rows on its key.
    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError>;
    /// Each stream's state and latest run; `None` while Heimdallr's tables do not exist
    /// (nothing has run yet). Reads only: it never creates or migrates anything.
    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError>;
    /// Which Heroku app runs which Rollbar environment, from the setting or inferred
    /// (`heimdallr_environment_map`); empty before migration 9. Reads only.
    async fn environment_map(&self) -> Result<Vec<MappedEnvironment>, WarehouseError> {
        Ok(Vec::new())
    }
}

/// One line of the environment map, for `heimdallr status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedEnvironment {
    pub heroku_app: String,
    pub rollbar_project_id: String,
    pub rollbar_environment: String,
    /// `setting` or `inferred`.
    pub origin: String,
    /// For an inferred line: how many code versions the app's releases share with it.
    pub shared_versions: Option<String>,
}

/// Every statement one migration runs on `dialect`.
pub fn migration_statements(
    dialect: Dialect,
    schema: &str,
    migration: &crate::schema::Migration,
) -> Vec<String> {
    migration
        .steps
        .iter()
        .flat_map(|step| match step {
            crate::schema::Step::CreateTable(table) => {
                dialect.create_table(schema, table, migration.version)
            }
            crate::schema::Step::AddColumns(table) => {
                dialect.add_columns(schema, table, migration.version)
            }
            crate::schema::Step::CreateView(view) => {
                vec![dialect.create_view(schema, *view, migration.version)]
            }
            crate::schema::Step::DropView(view) => {
                vec![format!(
                    "DROP VIEW IF EXISTS {}",
                    dialect::qualified(schema, view.name())
                )]
            }
        })
        .collect()
}

fn parse_cursor(text: Option<&str>, target: &str) -> Result<serde_json::Value, WarehouseError> {
    match text {
        None => Ok(serde_json::Value::Null),
        Some(text) => serde_json::from_str(text).map_err(|e| WarehouseError::Query {
            target: target.to_string(),
            context: "read state".into(),
            detail: format!("stored cursor is not JSON: {e}"),
        }),
    }
}
