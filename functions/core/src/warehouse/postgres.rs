//! PostgreSQL backend: binary COPY into a temp stage, then INSERT .. ON CONFLICT on the key,
//! state and run record included, all in one transaction.

use super::{Batch, Dialect, StoredState, StreamStatus, Value, Warehouse, WarehouseError};
use crate::schema::{ColumnType, Table, MIGRATIONS};
use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Serialises `heimdallr migrate` runs across processes.
const MIGRATION_LOCK_ID: i64 = 0x4845_494d_4441_4c4c; // "HEIMDALL"
/// Deadlocks and serialization failures are retried this many times.
const TRANSACTION_ATTEMPTS: u32 = 5;

pub struct PostgresWarehouse {
    url: String,
    schema: String,
    target: String,
    client: Mutex<Client>,
}

impl PostgresWarehouse {
    pub async fn connect(url: &str, schema: &str) -> Result<Self, WarehouseError> {
        let target = super::redact_url(url);
        let client = Self::open_client(url, &target).await?;
        Ok(Self {
            url: url.to_string(),
            schema: schema.to_string(),
            target,
            client: Mutex::new(client),
        })
    }

    async fn open_client(url: &str, target: &str) -> Result<Client, WarehouseError> {
        let (client, connection) =
            tokio_postgres::connect(url, NoTls)
                .await
                .map_err(|e| WarehouseError::Connect {
                    target: target.to_string(),
                    detail: describe(&e),
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %describe(&e), "postgres connection closed");
            }
        });
        Ok(client)
    }

    /// The client, reconnected if the server dropped the previous connection.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, WarehouseError> {
        let mut guard = self.client.lock().await;
        if guard.is_closed() {
            *guard = Self::open_client(&self.url, &self.target).await?;
        }
        Ok(guard)
    }

    fn query_error(&self, context: &str, error: &tokio_postgres::Error) -> WarehouseError {
        WarehouseError::Query {
            target: self.target.clone(),
            context: context.to_string(),
            detail: describe(error),
        }
    }

    async fn write_table(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &'static Table,
        rows: &[super::Row],
    ) -> Result<(), tokio_postgres::Error> {
        let dialect = Dialect::Postgres;
        let stage = format!("stage_{}", table.name);
        tx.batch_execute(&dialect.create_stage(&self.schema, table, &stage))
            .await?;
        let types: Vec<Type> = table.columns.iter().map(|c| pg_type(c.ty)).collect();
        let sink = tx.copy_in(&dialect.copy_into_stage(table, &stage)).await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        copy_rows(writer, rows).await?;
        tx.execute(&dialect.merge_from_stage(&self.schema, table, &stage), &[])
            .await?;
        Ok(())
    }

    async fn try_commit(
        &self,
        client: &mut Client,
        batch: &Batch,
    ) -> Result<(), tokio_postgres::Error> {
        let tx = client.transaction().await?;
        for write in batch.writes.iter().filter(|w| !w.rows.is_empty()) {
            self.write_table(&tx, write.table, &write.rows).await?;
        }
        tx.commit().await
    }
}

/// Streams the rows into an open binary COPY.
async fn copy_rows(
    writer: BinaryCopyInWriter,
    rows: &[super::Row],
) -> Result<(), tokio_postgres::Error> {
    let mut writer = std::pin::pin!(writer);
    let mut cells: Vec<PgValue<'_>> = Vec::new();
    for row in rows {
        cells.clear();
        cells.extend(row.0.iter().map(PgValue));
        let refs: Vec<&(dyn ToSql + Sync)> =
            cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}

fn pg_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::BigInt => Type::INT8,
        ColumnType::Integer => Type::INT4,
        ColumnType::Boolean => Type::BOOL,
        ColumnType::Double => Type::FLOAT8,
        ColumnType::Text(_) => Type::TEXT,
        ColumnType::Timestamp => Type::TIMESTAMPTZ,
        ColumnType::Json => Type::JSONB,
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}

fn is_retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn from_micros(micros: Option<i64>) -> Option<DateTime<Utc>> {
    micros.and_then(DateTime::from_timestamp_micros)
}

#[derive(Debug)]
struct PgValue<'a>(&'a Value);

impl ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::BigInt(v) => v.to_sql(ty, out),
            Value::Integer(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Double(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Timestamp(v) => v.to_sql(ty, out),
            Value::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Column types come from the table description; prepare_row checked each value.
        true
    }

    to_sql_checked!();
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    fn describe(&self) -> String {
        format!("{} (schema {})", self.target, self.schema)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn migrate(&self) -> Result<Vec<i64>, WarehouseError> {
        let dialect = Dialect::Postgres;
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.query_error("begin migration", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_ID])
            .await
            .map_err(|e| self.query_error("lock migrations", &e))?;
        tx.batch_execute(&format!(
            "{}; {}",
            dialect.create_schema(&self.schema),
            dialect.create_migrations_table(&self.schema)
        ))
        .await
        .map_err(|e| self.query_error("create schema", &e))?;
        let applied: Vec<i64> = tx
            .query(&dialect.select_migrations(&self.schema), &[])
            .await
            .map_err(|e| self.query_error("read migrations", &e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut newly_applied = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            for statement in super::migration_statements(dialect, &self.schema, migration) {
                tx.batch_execute(&statement).await.map_err(|e| {
                    self.query_error(&format!("migration {}", migration.version), &e)
                })?;
            }
            tx.execute(
                &dialect.insert_migration(&self.schema),
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(|e| self.query_error("record migration", &e))?;
            newly_applied.push(migration.version);
        }
        tx.commit()
            .await
            .map_err(|e| self.query_error("commit migrations", &e))?;
        Ok(newly_applied)
    }

    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
    ) -> Result<Option<StoredState>, WarehouseError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &Dialect::Postgres.select_state(&self.schema),
                &[&source, &stream, &scope],
            )
            .await
            .map_err(|e| self.query_error("read state", &e))?;
        let Some(row) = row else { return Ok(None) };
        let cursor: Option<String> = row.get(0);
        Ok(Some(StoredState {
            cursor: super::parse_cursor(cursor.as_deref(), &self.target)?,
            source_time: from_micros(row.get(1)),
            updated_at: from_micros(row.get(2)),
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_commit(&mut client, &batch).await {
                Ok(()) => return Ok(()),
                Err(e) if is_retryable(&e) && attempt < TRANSACTION_ATTEMPTS => {
                    tracing::warn!(attempt, error = %describe(&e), "transaction conflict; retrying batch");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)))
                        .await;
                }
                Err(e) => return Err(self.query_error("commit batch", &e)),
            }
        }
    }

    async fn status(&self) -> Result<Vec<StreamStatus>, WarehouseError> {
        let client = self.client().await?;
        let rows = client
            .query(&Dialect::Postgres.status(&self.schema), &[])
            .await
            .map_err(|e| self.query_error("read status", &e))?;
        Ok(rows
            .iter()
            .map(|row| StreamStatus {
                source: row.get(0),
                stream: row.get(1),
                scope: row.get(2),
                cursor: row.get(3),
                source_time: from_micros(row.get(4)),
                state_updated_at: from_micros(row.get(5)),
                last_run_id: row.get(6),
                last_run_started_at: from_micros(row.get(7)),
                last_run_finished_at: from_micros(row.get(8)),
                last_run_status: row.get(9),
                last_run_rows: row.get(10),
                last_run_error: row.get(11),
            })
            .collect())
    }
}
