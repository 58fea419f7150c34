//! The embedded backend: a local DuckDB file that analysts open with any DuckDB client.
//! DuckDB is synchronous, so every call runs on the blocking pool under one connection.

use super::{Batch, Dialect, StoredState, StreamStatus, Turn, Value, Warehouse, WarehouseError};
use crate::schema::MIGRATIONS;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use duckdb::types::Value as DuckValue;
use duckdb::{AccessMode, Config, Connection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The oldest DuckDB release whose storage format new files use (see README: the DuckDB
/// clients that open the file).
pub const STORAGE_COMPATIBILITY: &str = "v1.0.0";

pub struct DuckDbWarehouse {
    path: PathBuf,
    schema: String,
    connection: Arc<Mutex<Connection>>,
}

impl DuckDbWarehouse {
    pub fn open(path: &Path, schema: &str) -> Result<Self, WarehouseError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| WarehouseError::Connect {
                target: describe_path(path),
                detail: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        // A new file is written in DuckDB 1.0's storage format, which DuckDB 1.1 to 2.0 read
        // (CLI and Python alike; tested with the Python clients 1.1.3 and 2.0.1); the
        // bundled engine's own default is readable by 2.0 and newer only. An existing file
        // keeps its format.
        let config = Config::default()
            .with("storage_compatibility_version", STORAGE_COMPATIBILITY)
            .map_err(|e| WarehouseError::Connect {
                target: describe_path(path),
                detail: e.to_string(),
            })?;
        Self::connect(path, schema, config)
    }

    /// Opens an existing file read-only (for `heimdallr status`): it creates nothing.
    pub fn open_read_only(path: &Path, schema: &str) -> Result<Self, WarehouseError> {
        let config = Config::default()
            .access_mode(AccessMode::ReadOnly)
            .map_err(|e| WarehouseError::Connect {
                target: describe_path(path),
                detail: e.to_string(),
            })?;
        Self::connect(path, schema, config)
    }

    fn connect(path: &Path, schema: &str, config: Config) -> Result<Self, WarehouseError> {
        let target = describe_path(path);
        let connection =
            Connection::open_with_flags(path, config).map_err(|e| open_error(&target, &e))?;
        // DuckDB names the file's catalog after its stem; a catalog and a schema of the same
        // name make `schema.table` ambiguous (a Binder Error for us and for every analyst).
        let catalog: String = connection
            .query_row("SELECT current_database()", [], |row| row.get(0))
            .map_err(|e| WarehouseError::Connect {
                target: target.clone(),
                detail: e.to_string(),
            })?;
        if catalog.eq_ignore_ascii_case(schema) {
            return Err(WarehouseError::BadUrl {
                url: path.display().to_string(),
                reason: format!(
                    "DuckDB names this file's catalog {catalog:?}, the same name as the schema {schema:?}, \
                     so `{schema}.<table>` would be ambiguous; name the file differently \
                     (the default is {}) or choose another --schema",
                    super::DEFAULT_DUCKDB_PATH
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            schema: schema.to_string(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn target(&self) -> String {
        describe_path(&self.path)
    }

    /// Runs `work` on the blocking pool with the connection.
    async fn with_connection<T: Send + 'static>(
        &self,
        context: &'static str,
        work: impl FnOnce(&mut Connection) -> Result<T, duckdb::Error> + Send + 'static,
    ) -> Result<T, WarehouseError> {
        let connection = Arc::clone(&self.connection);
        let target = self.target();
        let query_error = move |detail: String| WarehouseError::Query {
            target: target.clone(),
            context: context.to_string(),
            detail,
        };
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| duckdb::Error::InvalidParameterName("connection poisoned".into()))?;
            work(&mut guard)
        })
        .await
        .map_err(|e| query_error(format!("worker failed: {e}")))?
        .map_err(|e| query_error(e.to_string()))
    }
}

fn describe_path(path: &Path) -> String {
    format!("duckdb file {}", path.display())
}

/// A file another process holds is `Busy` (wait and retry), anything else a connect error.
fn open_error(target: &str, error: &duckdb::Error) -> WarehouseError {
    let detail = error.to_string();
    if detail.contains("Could not set lock") || detail.contains("Conflicting lock") {
        WarehouseError::Busy {
            target: target.to_string(),
            detail: "a DuckDB file has one writer at a time: another `heimdallr sync` (or a \
                     DuckDB client) has it open; try again when it is done"
                .into(),
        }
    } else {
        WarehouseError::Connect {
            target: target.to_string(),
            detail,
        }
    }
}

fn to_duck(value: &Value) -> DuckValue {
    match value {
        Value::Null => DuckValue::Null,
        Value::BigInt(v) => DuckValue::BigInt(*v),
        Value::Integer(v) => DuckValue::Int(*v),
        Value::Bool(v) => DuckValue::Boolean(*v),
        Value::Double(v) => DuckValue::Double(*v),
        Value::Text(v) => DuckValue::Text(v.clone()),
        // Bound as text and cast in SQL: explicit UTC offset, microsecond precision.
        Value::Timestamp(v) => DuckValue::Text(v.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()),
        Value::Json(v) => DuckValue::Text(v.as_str().to_string()),
    }
}

fn from_micros(micros: Option<i64>) -> Option<DateTime<Utc>> {
    micros.and_then(DateTime::from_timestamp_micros)
}

#[async_trait]
impl Warehouse for DuckDbWarehouse {
    fn describe(&self) -> String {
        format!("{} (schema {})", self.target(), self.schema)
    }

    async fn migrate(&self, _deadline: Option<Instant>) -> Result<super::Migrated, WarehouseError> {
        let schema = self.schema.clone();
        let (newly_applied, pending) = self
            .with_connection("migrate", move |conn| {
                let dialect = Dialect::DuckDb;
                let tx = conn.transaction()?;
                tx.execute_batch(&dialect.create_schema(&schema))?;
                tx.execute_batch(&dialect.create_migrations_table(&schema))?;
                let applied: Vec<i64> = {
                    let mut stmt = tx.prepare(&dialect.select_migrations(&schema))?;
                    let rows = stmt.query_map([], |row| row.get::<_, i64>(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                let mut newly_applied = Vec::new();
                for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                    for statement in super::migration_statements(dialect, &schema, migration) {
                        tx.execute_batch(&statement)?;
                    }
                    tx.execute(
                        &dialect.insert_migration(&schema),
                        duckdb::params![migration.version, migration.name],
                    )?;
                    newly_applied.push(migration.version);
                }
                tx.commit()?;
                let pending = super::views_pending(&applied, &newly_applied);
                Ok((newly_applied, pending))
            })
            .await?;
        if !pending {
            return Ok(super::Migrated::new(newly_applied, Ok(())));
        }
        let schema = self.schema.clone();
        let views = self
            .with_connection("create analyst views", move |conn| {
                let dialect = Dialect::DuckDb;
                let tx = conn.transaction()?;
                for statement in super::view_statements(dialect, &schema) {
                    tx.execute_batch(&statement)?;
                }
                tx.commit()
            })
            .await;
        Ok(super::Migrated::new(newly_applied, views))
    }

    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
        _deadline: Option<Instant>,
    ) -> Result<Option<StoredState>, WarehouseError> {
        let schema = self.schema.clone();
        let key = [source.to_string(), stream.to_string(), scope.to_string()];
        let row = self
            .with_connection("read state", move |conn| {
                let mut stmt = conn.prepare(&Dialect::DuckDb.select_state(&schema))?;
                let mut rows = stmt.query(duckdb::params![key[0], key[1], key[2]])?;
                match rows.next()? {
                    Some(row) => Ok(Some((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                    ))),
                    None => Ok(None),
                }
            })
            .await?;
        let Some((cursor, source_time, updated_at, caught_up_at, unfinished_runs)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredState {
            cursor: super::parse_cursor(cursor.as_deref(), &self.target())?,
            source_time: from_micros(source_time),
            updated_at: from_micros(updated_at),
            caught_up_at: from_micros(caught_up_at),
            unfinished_runs: super::unfinished(unfinished_runs),
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("commit batch", move |conn| {
            // Stage with the appender, then one set-based merge: far cheaper than a
            // statement per row.
            let dialect = Dialect::DuckDb;
            let tx = conn.transaction()?;
            for statement in dialect.analyst_statements(&schema, &batch) {
                tx.execute_batch(&statement)?;
            }
            for table in &batch.replace {
                tx.execute_batch(&dialect.delete_all(&schema, table))?;
            }
            for write in batch.writes.iter().filter(|w| !w.rows.is_empty()) {
                let stage = format!("_stage_{}", write.table.name);
                tx.execute_batch(&sql::create_text_stage(&schema, write.table, &stage))?;
                {
                    let mut appender = tx.appender_to_db(&stage, &schema)?;
                    for row in &write.rows {
                        appender.append_row(duckdb::appender_params_from_iter(
                            row.0.iter().map(to_duck),
                        ))?;
                    }
                    appender.flush()?;
                }
                tx.execute_batch(&sql::merge_from_text_stage(&schema, write.table, &stage))?;
                tx.execute_batch(&dialect.drop_table(&schema, &stage))?;
            }
            for beat in &batch.heartbeats {
                tx.execute(
                    &dialect.update_heartbeat(&schema),
                    duckdb::params![
                        beat.at.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string(),
                        beat.source,
                        beat.stream,
                        beat.scope
                    ],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn last_turns(
        &self,
        source: &str,
        _deadline: Option<Instant>,
    ) -> Result<Vec<Turn>, WarehouseError> {
        let schema = self.schema.clone();
        let source = source.to_string();
        self.with_connection("read last turns", move |conn| {
            let mut stmt = conn.prepare(&Dialect::DuckDb.select_last_turns(&schema))?;
            let rows = stmt.query_map(duckdb::params![source], |row| {
                Ok(Turn {
                    stream: row.get(0)?,
                    scope: row.get(1)?,
                    at: from_micros(row.get(2)?),
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("read status", move |conn| {
            let dialect = Dialect::DuckDb;
            let own_tables: i64 = conn.query_row(
                &dialect.count_status_tables(),
                duckdb::params![schema],
                |row| row.get(0),
            )?;
            if own_tables < 2 {
                return Ok(None);
            }
            let mut stmt = conn.prepare(&dialect.status(&schema))?;
            let rows = stmt.query_map([], |row| {
                Ok(StreamStatus {
                    source: row.get(0)?,
                    stream: row.get(1)?,
                    scope: row.get(2)?,
                    cursor: row.get(3)?,
                    source_time: from_micros(row.get(4)?),
                    state_updated_at: from_micros(row.get(5)?),
                    last_run_id: row.get(6)?,
                    last_run_started_at: from_micros(row.get(7)?),
                    last_run_finished_at: from_micros(row.get(8)?),
                    last_run_status: row.get(9)?,
                    last_run_rows: row.get(10)?,
                    last_run_error: row.get(11)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>().map(Some)
        })
        .await
    }

    async fn environment_map(&self) -> Result<Vec<super::MappedEnvironment>, WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("read environments", move |conn| {
            let dialect = Dialect::DuckDb;
            let exists: i64 = conn.query_row(
                &dialect.count_environment_map(),
                duckdb::params![schema],
                |row| row.get(0),
            )?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare(&dialect.select_environment_map(&schema))?;
            let rows = stmt.query_map([], |row| {
                Ok(super::MappedEnvironment {
                    heroku_app: row.get(0)?,
                    rollbar_project_id: row.get(1)?,
                    rollbar_environment: row.get(2)?,
                    origin: row.get(3)?,
                    shared_versions: row.get(4)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    async fn retention_estimated_at(&self) -> Result<Option<DateTime<Utc>>, WarehouseError> {
        let schema = self.schema.clone();
        let seconds: Option<i64> = self
            .with_connection("read the retention estimates' time", move |conn| {
                conn.query_row(&Dialect::DuckDb.select_estimated_at(&schema), [], |row| {
                    row.get(0)
                })
            })
            .await?;
        Ok(seconds.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    async fn fix_next(&self, limit: u32) -> Result<Option<Vec<super::FixNextRow>>, WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("read fix_next", move |conn| {
            let dialect = Dialect::DuckDb;
            let exists: i64 = conn.query_row(
                &dialect.count_view(crate::schema::View::FixNext),
                duckdb::params![schema],
                |row| row.get(0),
            )?;
            if exists == 0 {
                return Ok(None);
            }
            let mut stmt = conn.prepare(&dialect.select_fix_next(&schema, limit))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let width = row.as_ref().column_count();
                let cells = (0..width)
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(super::FixNextRow::from_cells(cells));
            }
            Ok(Some(out))
        })
        .await
    }
}

/// The SQL only this backend runs: the text stage the appender fills, and its merge.
mod sql {
    use crate::schema::{ColumnType, Table};
    use crate::warehouse::dialect::{column_list, key_list, qualified, quote, Dialect};

    /// DuckDB's stage: a plain table the appender fills, timestamps and JSON as text (the
    /// appender binds values, it does not cast them).
    pub(super) fn create_text_stage(schema: &str, table: &Table, stage: &str) -> String {
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    ColumnType::Timestamp | ColumnType::Json => {
                        Dialect::DuckDb.column_type(ColumnType::Text(0))
                    }
                    other => Dialect::DuckDb.column_type(other),
                };
                format!("{} {ty}", quote(c.name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE OR REPLACE TABLE {} ({columns})",
            qualified(schema, stage)
        )
    }

    /// Merges a text stage into the target, casting timestamps and JSON on the way.
    pub(super) fn merge_from_text_stage(schema: &str, table: &Table, stage: &str) -> String {
        let select: Vec<String> = table
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Timestamp => format!("CAST({} AS TIMESTAMPTZ)", quote(c.name)),
                ColumnType::Json => format!("CAST({} AS JSON)", quote(c.name)),
                _ => quote(c.name),
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY {} {}",
            qualified(schema, table.name),
            column_list(table.columns),
            select.join(", "),
            qualified(schema, stage),
            key_list(table),
            Dialect::DuckDb.on_conflict_update(table)
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::schema::ROLLBAR_OCCURRENCES;

        #[test]
        fn duckdb_stage_merge_casts_timestamps_and_json() {
            let stage = create_text_stage("h", &ROLLBAR_OCCURRENCES, "_stage");
            assert!(
                stage.contains("\"occurred_at\" VARCHAR") && stage.contains("\"data\" VARCHAR")
            );
            let sql = merge_from_text_stage("h", &ROLLBAR_OCCURRENCES, "_stage");
            assert!(sql.contains("CAST(\"occurred_at\" AS TIMESTAMPTZ)"));
            assert!(sql.contains("CAST(\"data\" AS JSON)"));
            assert!(sql.contains("ORDER BY \"id\" ON CONFLICT (\"id\") DO UPDATE"));
        }
    }
}
