//! The warehouse port: one trait, one adapter per backend, and all the SQL.
//!
//! The engine hands a backend a [`Batch`] (rows for several tables, including the stream
//! state and run record) and the backend commits it in ONE transaction, merging every row
//! on its table's natural key. That is the whole exactly-once contract.

mod dialect;
#[cfg(feature = "duckdb")]
mod duck;
mod postgres;
pub mod redshift;
mod views;

pub use dialect::Dialect;
pub use redshift::target::RedshiftTarget;

use crate::json::JsonText;
use crate::schema::{ColumnType, Table};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    BigInt(i64),
    Integer(i32),
    Bool(bool),
    Double(f64),
    Text(String),
    Timestamp(DateTime<Utc>),
    /// A whole document, as storable text.
    Json(JsonText),
}

impl Value {
    pub fn text(value: Option<impl Into<String>>) -> Self {
        value.map_or(Value::Null, |v| Value::Text(v.into()))
    }
    /// A document from a parsed value.
    pub fn json(value: &serde_json::Value) -> Self {
        Value::Json(JsonText::from_value(value))
    }
    pub fn bigint(value: Option<i64>) -> Self {
        value.map_or(Value::Null, Value::BigInt)
    }
    pub fn timestamp(value: Option<DateTime<Utc>>) -> Self {
        value.map_or(Value::Null, Value::Timestamp)
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    fn fits(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Value::Null, _)
                | (Value::BigInt(_), ColumnType::BigInt)
                | (Value::Integer(_), ColumnType::Integer)
                | (Value::Bool(_), ColumnType::Boolean)
                | (Value::Double(_), ColumnType::Double)
                | (Value::Text(_), ColumnType::Text(_))
                | (Value::Timestamp(_), ColumnType::Timestamp)
                | (Value::Json(_), ColumnType::Json)
        )
    }
    /// The value as key text, for reject records and de-duplication.
    pub fn key_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::BigInt(v) => v.to_string(),
            Value::Integer(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Double(v) => v.to_string(),
            Value::Text(v) => v.clone(),
            Value::Timestamp(v) => v.to_rfc3339(),
            Value::Json(v) => v.as_str().to_string(),
        }
    }
}

/// One row, its values in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Orders rows by their key (the columns at `key_indexes`, see [`Table::key_indexes`])
    /// as SQL orders them (numbers as numbers), so that writers lock keys in the same order.
    pub fn key_cmp(&self, other: &Row, key_indexes: &[usize]) -> std::cmp::Ordering {
        key_indexes
            .iter()
            .map(|&i| match (self.0.get(i), other.0.get(i)) {
                (Some(Value::BigInt(a)), Some(Value::BigInt(b))) => a.cmp(b),
                (Some(Value::Integer(a)), Some(Value::Integer(b))) => a.cmp(b),
                (Some(Value::Text(a)), Some(Value::Text(b))) => a.cmp(b),
                (Some(Value::Timestamp(a)), Some(Value::Timestamp(b))) => a.cmp(b),
                (a, b) => a.map(Value::key_text).cmp(&b.map(Value::key_text)),
            })
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    pub fn key_text(&self, table: &Table) -> String {
        table
            .key_indexes()
            .into_iter()
            .map(|i| self.0.get(i).map(Value::key_text).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Makes a row storable on every backend, or says why it cannot be stored.
/// Text is cut to its column's byte limit at a UTF-8 boundary; U+0000 is replaced (documents
/// are storable by construction, see [`JsonText`]).
pub fn prepare_row(table: &Table, row: Row) -> Result<Row, String> {
    check_row(table, &row)?;
    Ok(normalize_row(table, row))
}

/// Why a row cannot be stored in `table`, if it cannot.
pub fn check_row(table: &Table, row: &Row) -> Result<(), String> {
    if row.0.len() != table.columns.len() {
        return Err(format!(
            "{} values for {} columns of {}",
            row.0.len(),
            table.columns.len(),
            table.name
        ));
    }
    for (value, column) in row.0.iter().zip(table.columns) {
        if !value.fits(column.ty) {
            return Err(format!(
                "column {}: {:?} does not fit {:?}",
                column.name, value, column.ty
            ));
        }
        if value.is_null() && !column.nullable {
            return Err(format!(
                "column {} is part of the key and is missing",
                column.name
            ));
        }
        if let Value::Double(v) = value {
            if !v.is_finite() {
                return Err(format!(
                    "column {}: {v} is not a finite number",
                    column.name
                ));
            }
        }
    }
    Ok(())
}

/// Cuts text to its column's limit and replaces U+0000 in it, in place. The row must pass
/// [`check_row`].
pub fn normalize_row(table: &Table, mut row: Row) -> Row {
    for (value, column) in row.0.iter_mut().zip(table.columns) {
        if let (Value::Text(text), ColumnType::Text(max)) = (value, column.ty) {
            if text.contains('\0') {
                *text = crate::text::without_nul(text).into_owned();
            }
            let cut = crate::text::truncate_utf8(text, max as usize).len();
            text.truncate(cut);
        }
    }
    row
}

impl Row {
    /// The row as a JSON object of column name to value (kept with a reject).
    pub fn to_json(&self, table: &Table) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (i, value) in self.0.iter().enumerate() {
            let name = table
                .columns
                .get(i)
                .map_or_else(|| format!("column_{i}"), |c| c.name.to_string());
            let json = match value {
                Value::Null => serde_json::Value::Null,
                Value::BigInt(v) => (*v).into(),
                Value::Integer(v) => (*v).into(),
                Value::Bool(v) => (*v).into(),
                Value::Double(v) => serde_json::Number::from_f64(*v)
                    .map_or_else(|| v.to_string().into(), serde_json::Value::Number),
                Value::Text(v) => v.clone().into(),
                Value::Timestamp(v) => v.to_rfc3339().into(),
                Value::Json(v) => v.to_value(),
            };
            object.insert(name, json);
        }
        serde_json::Value::Object(object)
    }
}

/// Rows for one table.
#[derive(Debug, Clone)]
pub struct TableRows {
    pub table: &'static Table,
    pub rows: Vec<Row>,
}

impl TableRows {
    /// Keeps the last row for each key: a batch never touches a key twice.
    pub fn dedup_by_key(&mut self) {
        let keys = self.table.key_indexes();
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<Row> = Vec::with_capacity(self.rows.len());
        for row in std::mem::take(&mut self.rows).into_iter().rev() {
            let key: Vec<String> = keys.iter().map(|&i| row.0[i].key_text()).collect();
            if seen.insert(key) {
                kept.push(row);
            }
        }
        kept.reverse();
        self.rows = kept;
    }
}

/// What one transaction writes: rows of source tables, the stream state, the run record.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub writes: Vec<TableRows>,
    /// A backend that can cancel a running statement (Redshift) cancels it after this
    /// instant and reports the batch as not applied.
    pub cancel_after: Option<std::time::Instant>,
}

impl Batch {
    pub fn push(&mut self, table: &'static Table, row: Row) {
        match self
            .writes
            .iter_mut()
            .find(|w| std::ptr::eq(w.table, table))
        {
            Some(write) => write.rows.push(row),
            None => self.writes.push(TableRows {
                table,
                rows: vec![row],
            }),
        }
    }
}

/// A stream's state as stored.
#[derive(Debug, Clone)]
pub struct StoredState {
    pub cursor: serde_json::Value,
    pub source_time: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
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
}

/// Where to write, parsed from `--warehouse` / `HEIMDALLR_WAREHOUSE`.
#[derive(Clone, PartialEq, Eq)]
pub enum WarehouseTarget {
    DuckDb { path: std::path::PathBuf },
    Postgres { url: String },
    RedshiftData(RedshiftTarget),
}

impl std::fmt::Debug for WarehouseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The embedded file used when no warehouse is given.
/// Not `heimdallr.duckdb`: DuckDB names a file's catalog after its stem, and a catalog
/// named like the default schema makes every `heimdallr.<table>` ambiguous.
pub const DEFAULT_DUCKDB_PATH: &str = "warehouse.duckdb";

impl WarehouseTarget {
    pub fn parse(url: &str) -> Result<Self, WarehouseError> {
        let url = url.trim();
        let bad = |reason: &str| WarehouseError::BadUrl {
            url: redact_url(url),
            reason: reason.to_string(),
        };
        if url.is_empty() {
            return Ok(Self::DuckDb {
                path: DEFAULT_DUCKDB_PATH.into(),
            });
        }
        if let Some(rest) = url
            .strip_prefix("duckdb://")
            .or_else(|| url.strip_prefix("duckdb:"))
        {
            if rest.is_empty() {
                return Err(bad(
                    "no file path after duckdb:// (e.g. duckdb://./warehouse.duckdb)",
                ));
            }
            return Ok(Self::DuckDb { path: rest.into() });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            if parsed.host_str().unwrap_or_default().is_empty() {
                return Err(bad(
                    "no host (e.g. postgres://user@localhost:5432/analytics)",
                ));
            }
            return Ok(Self::Postgres {
                url: url.to_string(),
            });
        }
        if url.starts_with("redshift-data://") {
            return RedshiftTarget::parse(url)
                .map(Self::RedshiftData)
                .map_err(|reason| bad(&reason));
        }
        if url.contains("://") {
            return Err(bad(
                "unknown scheme: use a DuckDB file path, duckdb://PATH, postgres://... or redshift-data://...",
            ));
        }
        Ok(Self::DuckDb { path: url.into() })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::DuckDb { path } => format!("duckdb file {}", path.display()),
            Self::Postgres { url } => redact_url(url),
            Self::RedshiftData(target) => target.describe(),
        }
    }
}

/// Removes the password from a URL for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => match url.find('@') {
            // Unparseable: keep only what follows the credentials.
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_string(),
        },
    }
}

/// Opens the backend for `target`, writing into `schema`.
pub async fn open(
    target: &WarehouseTarget,
    schema: &str,
) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    dialect::check_identifier(schema).map_err(|reason| WarehouseError::BadUrl {
        url: format!("schema {schema:?}"),
        reason,
    })?;
    match target {
        WarehouseTarget::Postgres { url } => {
            Ok(Arc::new(postgres::PostgresWarehouse::connect(url, schema).await?))
        }
        #[cfg(feature = "duckdb")]
        WarehouseTarget::DuckDb { path } => Ok(Arc::new(duck::DuckDbWarehouse::open(path, schema)?)),
        #[cfg(not(feature = "duckdb"))]
        WarehouseTarget::DuckDb { .. } => Err(WarehouseError::Unsupported(
            "this build has no embedded DuckDB backend; pass --warehouse postgres://... or build with the duckdb feature".into(),
        )),
        #[cfg(feature = "redshift")]
        WarehouseTarget::RedshiftData(target) => Ok(Arc::new(
            redshift::RedshiftWarehouse::connect(target, schema).await,
        )),
        #[cfg(not(feature = "redshift"))]
        WarehouseTarget::RedshiftData(_) => Err(WarehouseError::Unsupported(
            "this build has no Redshift backend; build with the redshift feature".into(),
        )),
    }
}

/// Opens the backend for `target` to read only (`heimdallr status`): never creates a file,
/// a schema or a table, and a DuckDB file is opened read-only, so that it can be read
/// while nothing writes it. `None` when the DuckDB file does not exist yet.
pub async fn open_for_reading(
    target: &WarehouseTarget,
    schema: &str,
) -> Result<Option<Arc<dyn Warehouse>>, WarehouseError> {
    match target {
        #[cfg(feature = "duckdb")]
        WarehouseTarget::DuckDb { path } => {
            if !path.exists() {
                return Ok(None);
            }
            dialect::check_identifier(schema).map_err(|reason| WarehouseError::BadUrl {
                url: format!("schema {schema:?}"),
                reason,
            })?;
            Ok(Some(Arc::new(duck::DuckDbWarehouse::open_read_only(
                path, schema,
            )?)))
        }
        _ => open(target, schema).await.map(Some),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ROLLBAR_ITEMS;

    #[test]
    fn warehouse_urls_parse_and_never_show_passwords() {
        assert_eq!(
            WarehouseTarget::parse("").unwrap(),
            WarehouseTarget::DuckDb {
                path: DEFAULT_DUCKDB_PATH.into()
            }
        );
        assert_eq!(
            WarehouseTarget::parse("data/x.duckdb").unwrap(),
            WarehouseTarget::DuckDb {
                path: "data/x.duckdb".into()
            }
        );
        let pg = WarehouseTarget::parse("postgres://ann:hunter2@db:5432/analytics").unwrap();
        assert!(!format!("{pg:?}").contains("hunter2"));
        let err = WarehouseTarget::parse("mysql://x:secretpw@h/db").unwrap_err();
        assert!(err.to_string().contains("unknown scheme"));
        assert!(!err.to_string().contains("secretpw"));
        assert!(WarehouseTarget::parse("postgres:///nohost").is_err());
    }

    fn item_row(id: Value, title: Value) -> Row {
        let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
        values[0] = id;
        values[ROLLBAR_ITEMS.column_index("title").unwrap()] = title;
        Row(values)
    }

    #[test]
    fn rows_are_cut_to_fit_or_rejected_with_a_reason() {
        let long = "é".repeat(3000); // 6000 bytes > 4096
        let row = prepare_row(
            &ROLLBAR_ITEMS,
            item_row(Value::BigInt(1), Value::Text(long)),
        )
        .unwrap();
        let Value::Text(title) = &row.0[ROLLBAR_ITEMS.column_index("title").unwrap()] else {
            panic!("title is text")
        };
        assert_eq!(title.len(), 4096);

        let err = prepare_row(&ROLLBAR_ITEMS, item_row(Value::Null, Value::Null)).unwrap_err();
        assert!(err.contains("column id"), "{err}");
        let err = prepare_row(
            &ROLLBAR_ITEMS,
            item_row(Value::Text("x".into()), Value::Null),
        )
        .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(prepare_row(&ROLLBAR_ITEMS, Row(vec![])).is_err());
    }

    #[test]
    fn dedup_keeps_the_last_row_per_key() {
        let mut rows = TableRows {
            table: &ROLLBAR_ITEMS,
            rows: vec![
                item_row(Value::BigInt(1), Value::Text("old".into())),
                item_row(Value::BigInt(2), Value::Text("two".into())),
                item_row(Value::BigInt(1), Value::Text("new".into())),
            ],
        };
        rows.dedup_by_key();
        let titles: Vec<_> = rows.rows.iter().map(|r| r.0[6].key_text()).collect();
        assert_eq!(titles, vec!["two", "new"]);
    }
}
