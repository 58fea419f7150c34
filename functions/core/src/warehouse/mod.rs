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
mod fix_next;
mod postgres;
pub mod redshift;
mod retention;
mod row;
mod target;
mod views;

pub use fix_next::FIX_NEXT_COLUMNS;
pub use retention::{RELEASE_HEALTH_VIEW, RETENTION_IMPACT_VIEW};

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
    /// Runs of the stream that started after its last finished run and never finished
    /// themselves: killed (out of memory, or past the function's time).
    pub unfinished_runs: u32,
}

/// A stream's last turn ([`Warehouse::last_turns`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub stream: String,
    pub scope: String,
    pub at: Option<DateTime<Utc>>,
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
    /// Applies pending migrations, then creates the analyst views when a migration left
    /// them pending ([`VIEWS_PENDING`]); returns the versions it applied and whether the
    /// views failed (which is not an error: the rows sync without them). A backend that
    /// can cancel a statement (Redshift) does so once `deadline` has passed.
    async fn migrate(&self, deadline: Option<Instant>) -> Result<Migrated, WarehouseError>;
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
    /// When each stream of `source` last had a turn (the start of its latest run that
    /// made a request, in the last 7 days): what orders a pass so that the streams that
    /// waited longest go first. Cancelled like [`Warehouse::migrate`] past `deadline`.
    async fn last_turns(
        &self,
        source: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<Turn>, WarehouseError>;
    /// Each stream's state and latest run; `None` while Heimdallr's tables do not exist
    /// (nothing has run yet). Reads only: it never creates or migrates anything.
    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError>;
    /// Which Heroku app runs which Rollbar environment, from the setting or inferred
    /// (`heimdallr_environment_map`); empty before migration 9. Reads only.
    async fn environment_map(&self) -> Result<Vec<MappedEnvironment>, WarehouseError> {
        Ok(Vec::new())
    }
    /// The first `limit` rows of `fix_next`, in rank order; `None` while the view does not
    /// exist (nothing has been migrated yet). Reads only.
    async fn fix_next(&self, limit: u32) -> Result<Option<Vec<FixNextRow>>, WarehouseError>;
    /// When `heimdallr_retention_estimates` was last refreshed (`None`: never). Reads only.
    async fn retention_estimated_at(&self) -> Result<Option<DateTime<Utc>>, WarehouseError>;
}

/// One row of `fix_next` as `heimdallr top` prints it (text as the warehouse gave it;
/// users lost and people as whole numbers, times as UTC days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixNextRow {
    pub rank: String,
    pub item_id: String,
    pub environment: Option<String>,
    pub title: Option<String>,
    pub level: Option<String>,
    pub trend: String,
    pub people_7d: String,
    pub people_30d: String,
    pub people_all: String,
    pub users_lost_d7: Option<String>,
    pub users_lost_d7_low: Option<String>,
    pub users_lost_d7_high: Option<String>,
    pub estimate_note: Option<String>,
    pub suspect_source: Option<String>,
    pub suspect_target: Option<String>,
    pub suspect_sha: Option<String>,
    pub suspect_deployed_on: Option<String>,
    pub suspect_actor: Option<String>,
    pub first_seen_on: Option<String>,
    pub last_seen_on: Option<String>,
    pub reactivated: bool,
    pub reactivation_sha: Option<String>,
    pub rollbar_url: Option<String>,
}

impl FixNextRow {
    /// From the cells of [`Dialect::select_fix_next`], in its order.
    pub fn from_cells(cells: Vec<Option<String>>) -> Self {
        let mut cells = cells.into_iter();
        let mut next = || cells.next().flatten();
        Self {
            rank: next().unwrap_or_default(),
            item_id: next().unwrap_or_default(),
            environment: next(),
            title: next(),
            level: next(),
            trend: next().unwrap_or_default(),
            people_7d: next().unwrap_or_default(),
            people_30d: next().unwrap_or_default(),
            people_all: next().unwrap_or_default(),
            users_lost_d7: next(),
            users_lost_d7_low: next(),
            users_lost_d7_high: next(),
            estimate_note: next(),
            suspect_source: next(),
            suspect_target: next(),
            suspect_sha: next(),
            suspect_deployed_on: next(),
            suspect_actor: next(),
            first_seen_on: next(),
            last_seen_on: next(),
            reactivated: next().as_deref() == Some("yes"),
            reactivation_sha: next(),
            rollbar_url: next(),
        }
    }
}

/// One line of the environment map, for `heimdallr status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedEnvironment {
    pub heroku_app: String,
    pub rollbar_project_id: String,
    pub rollbar_environment: String,
    /// `setting`, `pipeline stage <stage>` (the app's Heroku pipeline stage named the
    /// environment) or `inferred` (from shared shas alone).
    pub origin: String,
    /// For an inferred line: how many code versions the app's releases share with it.
    pub shared_versions: Option<String>,
}

/// The row a migration that (re)defines analyst views leaves in the migrations table,
/// written in the migration's own transaction and removed with the views' creation: a
/// start that finds it creates the views (again). So a view the warehouse refuses never
/// stops the tables from migrating or the rows from syncing, and it is retried at every
/// start until it is created.
pub const VIEWS_PENDING: i64 = -1;

/// What [`Warehouse::migrate`] did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Migrations this call applied.
    pub applied: Vec<i64>,
    /// Why the analyst views could not be created, when they could not: the tables are
    /// migrated and syncing goes on; the next start tries again.
    pub views_failed: Option<String>,
}

impl Migrated {
    /// The outcome of creating the views after `applied`: a failure is logged at error level.
    pub fn new(applied: Vec<i64>, views: Result<(), WarehouseError>) -> Self {
        let views_failed = views.err().map(|e| {
            tracing::error!(error = %e, "the analyst views could not be created: the tables are migrated and syncing goes on; the views are tried again at the next start");
            e.to_string()
        });
        Self {
            applied,
            views_failed,
        }
    }
}

/// Every statement one migration runs on `dialect` for its tables, and, when it
/// (re)defines views, the [`VIEWS_PENDING`] marker; the views themselves are created
/// after the migrations commit ([`view_statements`]).
pub fn migration_statements(
    dialect: Dialect,
    schema: &str,
    migration: &crate::schema::Migration,
) -> Vec<String> {
    use crate::schema::Step;
    let mut statements: Vec<String> = migration
        .steps
        .iter()
        .flat_map(|step| match step {
            Step::CreateTable(table) => dialect.create_table(schema, table, migration.version),
            Step::AddColumns(table) => dialect.add_columns(schema, table, migration.version),
            Step::CreateView(_) | Step::DropView(_) => Vec::new(),
        })
        .collect();
    if defines_views(migration) {
        statements.push(dialect.delete_migration_literal(schema, VIEWS_PENDING));
        statements.push(dialect.insert_migration_literal(
            schema,
            VIEWS_PENDING,
            "analyst views pending",
        ));
    }
    statements
}

/// Whether the analyst views are to be (re)created after this start's migrations: one
/// that defines them was applied now, or an earlier start left them pending. Decided from
/// the migration list the start read already: no second read.
pub fn views_pending(applied_before: &[i64], newly_applied: &[i64]) -> bool {
    applied_before.contains(&VIEWS_PENDING)
        || crate::schema::MIGRATIONS
            .iter()
            .any(|m| newly_applied.contains(&m.version) && defines_views(m))
}

/// Whether a migration creates or drops views.
fn defines_views(migration: &crate::schema::Migration) -> bool {
    migration.steps.iter().any(|step| {
        matches!(
            step,
            crate::schema::Step::CreateView(_) | crate::schema::Step::DropView(_)
        )
    })
}

/// The analyst views at their latest definitions, as one transaction: every view dropped
/// (the activity views, then dependents before what they read), then each created after
/// what it reads ([`crate::schema::View::ALL`]), and the [`VIEWS_PENDING`] marker removed. A
/// view of yours that reads one of them makes the drop fail: logged, retried at every
/// start (drop yours first, re-create it after).
pub fn view_statements(dialect: Dialect, schema: &str) -> Vec<String> {
    use crate::schema::{Step, View, MIGRATIONS};
    // Each view at the version of the latest migration that defines it, in the order
    // they read each other.
    let latest: Vec<(View, i64)> = View::ALL
        .iter()
        .filter_map(|view| {
            MIGRATIONS
                .iter()
                .filter(|m| {
                    m.steps
                        .iter()
                        .any(|s| matches!(s, Step::CreateView(v) if v == view))
                })
                .map(|m| m.version)
                .max()
                .map(|version| (*view, version))
        })
        .collect();
    // The activity views' fix_next reads the retention view: it goes first.
    let mut statements: Vec<String> = [
        View::FixNext.name(),
        retention::RELEASE_HEALTH_VIEW,
        retention::RETENTION_IMPACT_VIEW,
    ]
    .iter()
    .map(|name| format!("DROP VIEW IF EXISTS {}", dialect::qualified(schema, name)))
    .collect();
    statements.extend(latest.iter().rev().map(|(view, _)| {
        format!(
            "DROP VIEW IF EXISTS {}",
            dialect::qualified(schema, view.name())
        )
    }));
    statements.extend(
        latest
            .iter()
            .map(|(view, version)| dialect.create_view(schema, *view, *version)),
    );
    statements.push(dialect.delete_migration_literal(schema, VIEWS_PENDING));
    statements
}

/// A count of unfinished runs as read (NULL or negative reads as none).
fn unfinished(count: Option<i64>) -> u32 {
    count.map_or(0, |n| {
        u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX })
    })
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
