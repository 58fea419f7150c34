//! The embedded backend: a local DuckDB file that analysts open with any DuckDB client.
//! DuckDB is synchronous, so every call runs on the blocking pool under one connection.

use super::{Batch, Dialect, StoredState, StreamStatus, Value, Warehouse, WarehouseError};
use crate::schema::MIGRATIONS;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use duckdb::types::Value as DuckValue;
use duckdb::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct DuckDbWarehouse {
    path: PathBuf,
    schema: String,
    connection: Arc<Mutex<Connection>>,
}

impl DuckDbWarehouse {
    pub fn open(path: &Path, schema: &str) -> Result<Self, WarehouseError> {
        let target = format!("duckdb file {}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| WarehouseError::Connect {
                target: target.clone(),
                detail: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        let connection = Connection::open(path).map_err(|e| WarehouseError::Connect {
            target,
            detail: format!(
                "{e} (only one process can write a DuckDB file at a time: is another heimdallr or DuckDB client holding it?)"
            ),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            schema: schema.to_string(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn target(&self) -> String {
        format!("duckdb file {}", self.path.display())
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

    fn dialect(&self) -> Dialect {
        Dialect::DuckDb
    }

    async fn migrate(&self) -> Result<Vec<i64>, WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("migrate", move |conn| {
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
            Ok(newly_applied)
        })
        .await
    }

    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
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
                    ))),
                    None => Ok(None),
                }
            })
            .await?;
        let Some((cursor, source_time, updated_at)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredState {
            cursor: super::parse_cursor(cursor.as_deref(), &self.target())?,
            source_time: from_micros(source_time),
            updated_at: from_micros(updated_at),
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("commit batch", move |conn| {
            // Stage with the appender, then one set-based merge: far cheaper than a
            // statement per row.
            let dialect = Dialect::DuckDb;
            let tx = conn.transaction()?;
            for write in batch.writes.iter().filter(|w| !w.rows.is_empty()) {
                let stage = format!("_stage_{}", write.table.name);
                tx.execute_batch(&dialect.create_text_stage(&schema, write.table, &stage))?;
                {
                    let mut appender = tx.appender_to_db(&stage, &schema)?;
                    for row in &write.rows {
                        appender.append_row(duckdb::appender_params_from_iter(
                            row.0.iter().map(to_duck),
                        ))?;
                    }
                    appender.flush()?;
                }
                tx.execute_batch(&dialect.merge_from_text_stage(&schema, write.table, &stage))?;
                tx.execute_batch(&dialect.drop_table(&schema, &stage))?;
            }
            tx.commit()
        })
        .await
    }

    async fn status(&self) -> Result<Vec<StreamStatus>, WarehouseError> {
        let schema = self.schema.clone();
        self.with_connection("read status", move |conn| {
            let mut stmt = conn.prepare(&Dialect::DuckDb.status(&schema))?;
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
            rows.collect()
        })
        .await
    }
}
