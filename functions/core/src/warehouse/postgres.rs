//! PostgreSQL backend: binary COPY into a temp stage, then INSERT .. ON CONFLICT on the key,
//! state and run record included, all in one transaction.
//!
//! Per connection, each table's stage is created once (`ON COMMIT DELETE ROWS` empties it at
//! every commit) and statements are prepared once: a temp table created and dropped in every
//! batch cost more than the rows themselves. Writes of a row or two (stream state, the run
//! record) skip the stage: one prepared upsert per row. A batch of keys the table does not
//! hold yet (new occurrences, most of the time) is copied straight into it under a savepoint;
//! if any key exists, the savepoint is rolled back and the batch goes through the stage.

use super::{Batch, Dialect, StoredState, StreamStatus, Turn, Value, Warehouse, WarehouseError};
use crate::schema::{ColumnType, Table, MIGRATIONS};
use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

/// Serialises `heimdallr migrate` runs across processes.
const MIGRATION_LOCK_ID: i64 = 0x4845_494d_4441_4c4c; // "HEIMDALL"
/// Deadlocks and serialization failures are retried this many times.
const TRANSACTION_ATTEMPTS: u32 = 5;
/// A table write of at most this many rows is one prepared upsert per row, not a stage.
const UPSERT_ROWS: usize = 4;
/// After a straight copy into a table met an existing key, that table's next batches go
/// through the stage without trying, this many of them.
const STRAIGHT_COPY_PAUSE: u32 = 16;

/// One PostgreSQL session and what it has prepared.
struct Session {
    client: Client,
    prepared: Prepared,
}

/// What a session has set up, by table.
#[derive(Default)]
struct Prepared {
    /// Stages created in this session (they live as long as it does).
    stages: HashSet<&'static str>,
    stage_copies: HashMap<&'static str, Statement>,
    straight_copies: HashMap<&'static str, Statement>,
    upserts: HashMap<&'static str, Statement>,
    /// Batches left before a straight copy is tried again.
    straight_copy_pauses: HashMap<&'static str, u32>,
}
pub struct PostgresWarehouse {
    url: String,
    schema: String,
    target: String,
    session: Mutex<Session>,
}

impl PostgresWarehouse {
    /// The analyst views (see [`super::views_pending`]): one transaction, under the
    /// migrations' lock.
    async fn create_views(&self, session: &mut Session) -> Result<(), WarehouseError> {
        let dialect = Dialect::Postgres;
        let tx = session
            .client
            .transaction()
            .await
            .map_err(|e| self.query_error("begin views", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_ID])
            .await
            .map_err(|e| self.query_error("lock migrations", &e))?;
        for statement in super::view_statements(dialect, &self.schema) {
            tx.batch_execute(&statement)
                .await
                .map_err(|e| self.query_error("create analyst views", &e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.query_error("commit analyst views", &e))
    }

    pub async fn connect(url: &str, schema: &str) -> Result<Self, WarehouseError> {
        let target = super::redact_url(url);
        let session = Self::open_session(url, &target).await?;
        Ok(Self {
            url: url.to_string(),
            schema: schema.to_string(),
            target,
            session: Mutex::new(session),
        })
    }

    async fn open_session(url: &str, target: &str) -> Result<Session, WarehouseError> {
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
        // lz4 compresses the raw documents several times faster than the default pglz (and
        // reads back faster); a server built without it keeps pglz.
        if let Err(e) = client
            .batch_execute("SET default_toast_compression = 'lz4'")
            .await
        {
            tracing::debug!(error = %describe(&e), "lz4 not available; documents use pglz");
        }
        Ok(Session {
            client,
            prepared: Prepared::default(),
        })
    }

    /// The session, reconnected if the server dropped the previous connection.
    async fn session(&self) -> Result<tokio::sync::MutexGuard<'_, Session>, WarehouseError> {
        let mut guard = self.session.lock().await;
        if guard.client.is_closed() {
            *guard = Self::open_session(&self.url, &self.target).await?;
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

    /// Merges `rows` into `table` inside `tx`: one prepared upsert per row for a handful of
    /// rows, else a straight copy if none of the keys exist yet, else through the stage.
    /// Rows go in key order (as the stage's merge orders them), so that concurrent writers
    /// lock keys in the same order.
    async fn write_table(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        prepared: &mut Prepared,
        table: &'static Table,
        rows: &[super::Row],
    ) -> Result<(), tokio_postgres::Error> {
        let types: Vec<Type> = table.columns.iter().map(|c| pg_type(c.ty)).collect();
        let mut ordered: Vec<&super::Row> = rows.iter().collect();
        let key_indexes = table.key_indexes();
        ordered.sort_by(|a, b| a.key_cmp(b, &key_indexes));
        if rows.len() <= UPSERT_ROWS {
            let upsert = match prepared.upserts.get(table.name) {
                Some(statement) => statement.clone(),
                None => {
                    let sql = sql::upsert_row(&self.schema, table);
                    let statement = tx.prepare_typed(&sql, &types).await?;
                    prepared.upserts.insert(table.name, statement.clone());
                    statement
                }
            };
            for row in ordered {
                let cells: Vec<PgValue<'_>> = row.0.iter().map(PgValue).collect();
                let params: Vec<&(dyn ToSql + Sync)> =
                    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                tx.execute(&upsert, &params).await?;
            }
            return Ok(());
        }

        let pause = prepared.straight_copy_pauses.entry(table.name).or_insert(0);
        if *pause > 0 {
            *pause -= 1;
        } else {
            let copy = match prepared.straight_copies.get(table.name) {
                Some(statement) => statement.clone(),
                None => {
                    let sql = sql::copy_into_table(&self.schema, table);
                    let statement = tx.prepare(&sql).await?;
                    prepared
                        .straight_copies
                        .insert(table.name, statement.clone());
                    statement
                }
            };
            tx.batch_execute("SAVEPOINT straight_copy").await?;
            let sink = tx.copy_in(&copy).await?;
            match copy_rows(BinaryCopyInWriter::new(sink, &types), &ordered).await {
                Ok(()) => return tx.batch_execute("RELEASE SAVEPOINT straight_copy").await,
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT straight_copy")
                        .await?;
                    prepared
                        .straight_copy_pauses
                        .insert(table.name, STRAIGHT_COPY_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }

        let stage = format!("stage_{}", table.name);
        if !prepared.stages.contains(table.name) {
            tx.batch_execute(&sql::create_session_stage(&self.schema, table, &stage))
                .await?;
            prepared.stages.insert(table.name);
        }
        let copy = match prepared.stage_copies.get(table.name) {
            Some(statement) => statement.clone(),
            None => {
                let statement = tx.prepare(&sql::copy_into_stage(table, &stage)).await?;
                prepared.stage_copies.insert(table.name, statement.clone());
                statement
            }
        };
        let sink = tx.copy_in(&copy).await?;
        copy_rows(BinaryCopyInWriter::new(sink, &types), &ordered).await?;
        tx.batch_execute(&sql::merge_from_stage(&self.schema, table, &stage))
            .await?;
        Ok(())
    }

    async fn try_commit(
        &self,
        session: &mut Session,
        batch: &Batch,
    ) -> Result<(), tokio_postgres::Error> {
        let Session { client, prepared } = session;
        let tx = client.transaction().await?;
        // The estimates' refresh can outlast a Lambda's invocation: PostgreSQL cancels it at
        // `cancel_after` (the transaction rolls back; the next run tries again).
        if let (true, Some(at)) = (batch.refresh_estimates, batch.cancel_after) {
            let left = at.saturating_duration_since(std::time::Instant::now());
            let millis = left.as_millis().clamp(1, i32::MAX as u128);
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {millis}"))
                .await?;
        }
        for statement in Dialect::Postgres.analyst_statements(&self.schema, batch) {
            tx.execute(&statement, &[]).await?;
        }
        for table in &batch.replace {
            tx.execute(&Dialect::Postgres.delete_all(&self.schema, table), &[])
                .await?;
        }
        for write in batch.writes.iter().filter(|w| !w.rows.is_empty()) {
            self.write_table(&tx, prepared, write.table, &write.rows)
                .await?;
        }
        if !batch.heartbeats.is_empty() {
            let update = Dialect::Postgres.update_heartbeat(&self.schema);
            for beat in &batch.heartbeats {
                tx.execute(
                    &update,
                    &[&beat.at, &beat.source, &beat.stream, &beat.scope],
                )
                .await?;
            }
        }
        tx.commit().await
    }
}

/// Streams the rows into an open binary COPY.
async fn copy_rows(
    writer: BinaryCopyInWriter,
    rows: &[&super::Row],
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
            Value::Json(v) => {
                // jsonb's binary form is a version byte and the document's text.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(v.as_str().as_bytes());
                Ok(IsNull::No)
            }
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

    async fn migrate(&self, _deadline: Option<Instant>) -> Result<super::Migrated, WarehouseError> {
        let dialect = Dialect::Postgres;
        let mut session = self.session().await?;
        let tx = session
            .client
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
        let views = if super::views_pending(&applied, &newly_applied) {
            self.create_views(&mut session).await
        } else {
            Ok(())
        };
        Ok(super::Migrated::new(newly_applied, views))
    }

    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
        _deadline: Option<Instant>,
    ) -> Result<Option<StoredState>, WarehouseError> {
        let session = self.session().await?;
        let row = session
            .client
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
            caught_up_at: from_micros(row.get(3)),
            unfinished_runs: super::unfinished(row.get(4)),
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        let mut session = self.session().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.try_commit(&mut session, &batch).await;
            if result.is_err() {
                // A stage created in a transaction that rolled back is gone: create it again.
                session.prepared.stages.clear();
            }
            match result {
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

    async fn last_turns(
        &self,
        source: &str,
        _deadline: Option<Instant>,
    ) -> Result<Vec<Turn>, WarehouseError> {
        let session = self.session().await?;
        let rows = session
            .client
            .query(
                &Dialect::Postgres.select_last_turns(&self.schema),
                &[&source],
            )
            .await
            .map_err(|e| self.query_error("read last turns", &e))?;
        Ok(rows
            .iter()
            .map(|row| Turn {
                stream: row.get(0),
                scope: row.get(1),
                at: from_micros(row.get(2)),
            })
            .collect())
    }

    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError> {
        let session = self.session().await?;
        let own_tables: i64 = session
            .client
            .query_one(&Dialect::Postgres.count_status_tables(), &[&self.schema])
            .await
            .map_err(|e| self.query_error("read status", &e))?
            .get(0);
        if own_tables < 2 {
            return Ok(None);
        }
        let rows = session
            .client
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
            .collect::<Vec<_>>()
            .into())
    }

    async fn environment_map(&self) -> Result<Vec<super::MappedEnvironment>, WarehouseError> {
        let session = self.session().await?;
        let exists: i64 = session
            .client
            .query_one(&Dialect::Postgres.count_environment_map(), &[&self.schema])
            .await
            .map_err(|e| self.query_error("read environments", &e))?
            .get(0);
        if exists == 0 {
            return Ok(Vec::new());
        }
        let rows = session
            .client
            .query(&Dialect::Postgres.select_environment_map(&self.schema), &[])
            .await
            .map_err(|e| self.query_error("read environments", &e))?;
        Ok(rows
            .iter()
            .map(|row| super::MappedEnvironment {
                heroku_app: row.get(0),
                rollbar_project_id: row.get(1),
                rollbar_environment: row.get(2),
                origin: row.get(3),
                shared_versions: row.get(4),
            })
            .collect())
    }

    async fn retention_estimated_at(&self) -> Result<Option<DateTime<Utc>>, WarehouseError> {
        let session = self.session().await?;
        let seconds: Option<i64> = session
            .client
            .query_one(&Dialect::Postgres.select_estimated_at(&self.schema), &[])
            .await
            .map_err(|e| self.query_error("read the retention estimates' time", &e))?
            .get(0);
        Ok(seconds.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    async fn fix_next(&self, limit: u32) -> Result<Option<Vec<super::FixNextRow>>, WarehouseError> {
        let session = self.session().await?;
        let exists: i64 = session
            .client
            .query_one(
                &Dialect::Postgres.count_view(crate::schema::View::FixNext),
                &[&self.schema],
            )
            .await
            .map_err(|e| self.query_error("read fix_next", &e))?
            .get(0);
        if exists == 0 {
            return Ok(None);
        }
        let rows = session
            .client
            .query(&Dialect::Postgres.select_fix_next(&self.schema, limit), &[])
            .await
            .map_err(|e| self.query_error("read fix_next", &e))?;
        Ok(Some(
            rows.iter()
                .map(|row| {
                    super::FixNextRow::from_cells(
                        (0..row.len())
                            .map(|i| row.try_get::<_, Option<String>>(i).ok().flatten())
                            .collect(),
                    )
                })
                .collect(),
        ))
    }
}

/// The SQL only this backend runs: session stages, binary COPY and single-row upserts.
mod sql {
    use crate::schema::Table;
    use crate::warehouse::dialect::{column_list, key_list, qualified, quote, Dialect};

    /// A session-local stage with the target's columns (PostgreSQL); it lives as long as the
    /// session and is emptied at every commit.
    pub(super) fn create_session_stage(schema: &str, table: &Table, stage: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS",
            quote(stage),
            qualified(schema, table.name)
        )
    }

    /// Upserts one row given as parameters `$1..$n`, in column order.
    pub(super) fn upsert_row(schema: &str, table: &Table) -> String {
        let placeholders: Vec<String> =
            (1..=table.columns.len()).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({}) {}",
            qualified(schema, table.name),
            column_list(table.columns),
            placeholders.join(", "),
            Dialect::Postgres.on_conflict_update(table)
        )
    }

    /// COPY straight into the target table (PostgreSQL, for batches of new keys only).
    pub(super) fn copy_into_table(schema: &str, table: &Table) -> String {
        format!(
            "COPY {} ({}) FROM STDIN BINARY",
            qualified(schema, table.name),
            column_list(table.columns)
        )
    }

    pub(super) fn copy_into_stage(table: &Table, stage: &str) -> String {
        format!(
            "COPY {} ({}) FROM STDIN BINARY",
            quote(stage),
            column_list(table.columns)
        )
    }

    /// Merges a de-duplicated stage into the target on its key. Rows go in key order so
    /// that concurrent writers lock keys in the same order and cannot deadlock.
    pub(super) fn merge_from_stage(schema: &str, table: &Table, stage: &str) -> String {
        let columns = column_list(table.columns);
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {} ORDER BY {} {}",
            qualified(schema, table.name),
            quote(stage),
            key_list(table),
            Dialect::Postgres.on_conflict_update(table)
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::schema::ROLLBAR_OCCURRENCES;

        #[test]
        fn merge_updates_every_non_key_column_in_key_order() {
            let sql = merge_from_stage("h", &ROLLBAR_OCCURRENCES, "stage");
            assert!(sql.starts_with("INSERT INTO \"h\".\"rollbar_occurrences\""));
            assert!(sql.contains("ORDER BY \"id\" ON CONFLICT (\"id\") DO UPDATE SET"));
            assert!(sql.contains("\"data\" = EXCLUDED.\"data\""));
            assert!(!sql.contains("\"id\" = EXCLUDED"));
        }
    }
}
