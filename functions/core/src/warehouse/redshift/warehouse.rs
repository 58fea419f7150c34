//! The Redshift warehouse: migrations, state, status and batches as Data API transactions
//! (planned by [`super::plan`], sent by [`super::data_api`]), their large tables staged in
//! S3 for COPY first (by [`super::staging`]).

use super::data_api::{field_i64, field_text, field_time, past, DataApi, NotApplied};
use super::plan::{plan_batch_with, Bulk, Limits, Transaction};
use super::sql;
use super::staging::StagingStore;
use super::target::RedshiftTarget;
use crate::schema::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::warehouse::{
    Batch, Dialect, StoredState, StreamStatus, Turn, Warehouse, WarehouseError,
};
use async_trait::async_trait;
use aws_sdk_redshiftdata::Client;
use chrono::Utc;
use std::time::Instant;

pub struct RedshiftWarehouse {
    api: DataApi,
    schema: String,
    limits: Limits,
    /// Where bulk batches are staged; None: every batch inline.
    staging: Option<StagingStore>,
    bulk_rows: usize,
}

/// Times a transaction is submitted again after re-uploading an object that was gone
/// before its COPY ran (deleted or expired under it).
const REUPLOADS: u32 = 2;

impl RedshiftWarehouse {
    /// The analyst views (see [`crate::warehouse::views_pending`]): one transaction
    /// (Redshift refuses some view SQL that PostgreSQL takes; a refusal is reported, not
    /// fatal).
    async fn create_views(&self, deadline: Option<Instant>) -> Result<(), WarehouseError> {
        let mut statements = vec![sql::lock(&self.schema, MIGRATIONS_TABLE)];
        statements.extend(crate::warehouse::view_statements(
            Dialect::Redshift,
            &self.schema,
        ));
        let transaction = Transaction {
            statements,
            ..Transaction::default()
        };
        self.api
            .run_transaction(&transaction, deadline, "create analyst views")
            .await
    }

    /// Builds the client from the SDK's standard configuration (region, credentials chain,
    /// `AWS_ENDPOINT_URL_REDSHIFT_DATA`), with the URL's region taking precedence.
    pub async fn connect(target: &RedshiftTarget, schema: &str) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &target.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        let staging = target
            .staging
            .clone()
            .map(|staging| StagingStore::new(&config, staging));
        Self::build(Client::new(&config), staging, target.clone(), schema)
    }

    /// With a Data API client of the caller's; every batch inline.
    pub fn with_client(client: Client, target: RedshiftTarget, schema: &str) -> Self {
        Self::build(client, None, target, schema)
    }

    /// With the caller's clients: the S3 one stages bulk batches at the target's `staging`.
    pub fn with_clients(
        client: Client,
        s3: aws_sdk_s3::Client,
        target: RedshiftTarget,
        schema: &str,
    ) -> Self {
        let staging = target
            .staging
            .clone()
            .map(|staging| StagingStore::with_client(s3, staging));
        Self::build(client, staging, target, schema)
    }

    fn build(
        client: Client,
        staging: Option<StagingStore>,
        target: RedshiftTarget,
        schema: &str,
    ) -> Self {
        Self {
            limits: Limits::for_cluster(target.large_strings),
            bulk_rows: target.bulk_rows,
            staging,
            api: DataApi::new(client, target),
            schema: schema.to_string(),
        }
    }

    /// Uploads the transaction's objects and runs it. An object gone before its COPY ran is
    /// uploaded again and the transaction resubmitted; a load that fails reports the rows
    /// Redshift refused (SYS_LOAD_ERROR_DETAIL). Nothing is applied unless all of it is.
    async fn load(
        &self,
        store: &StagingStore,
        transaction: &Transaction,
        deadline: Option<std::time::Instant>,
        context: &str,
    ) -> Result<(), WarehouseError> {
        let mut resubmission = 0;
        loop {
            for upload in &transaction.uploads {
                store
                    .put(upload, deadline)
                    .await
                    .map_err(|detail| self.api.error(context, detail))?;
            }
            let not_applied = match self
                .api
                .run_transaction_detailed(transaction, deadline, resubmission)
                .await
            {
                Ok(()) => return Ok(()),
                Err(not_applied) => not_applied,
            };
            let NotApplied {
                detail,
                failed_statement: Some((index, redshift_error)),
            } = not_applied
            else {
                return Err(self.api.error(context, not_applied.detail));
            };
            let statement = transaction.statements.get(index).map_or("", String::as_str);
            let Some(upload) = transaction
                .uploads
                .iter()
                .find(|u| statement.starts_with("COPY ") && statement.contains(&u.key))
            else {
                return Err(self.api.error(context, detail));
            };
            let object = format!("s3://{}/{}", store.staging.bucket, upload.key);
            if object_missing(&redshift_error) && resubmission < REUPLOADS && !past(deadline) {
                resubmission += 1;
                tracing::warn!(%object, "a staged object was gone before its COPY; uploading it again");
                continue;
            }
            if redshift_error.contains("Load into table") {
                let reasons = self.load_errors(&object, deadline).await;
                return Err(self.api.error(
                    context,
                    format!(
                        "{detail}; Redshift refused rows of {object} ({} rows of {}): {reasons}",
                        upload.rows, upload.table,
                    ),
                ));
            }
            if redshift_error.contains("IAM Role") || redshift_error.contains("IAM role") {
                return Err(self.api.error(
                    context,
                    format!(
                        "{detail}; the cluster cannot read the staging bucket with copy_role {}: associate the role with the cluster or namespace (docs/redshift.md, \"Bulk loading\")",
                        store.staging.copy_role
                    ),
                ));
            }
            return Err(self.api.error(context, detail));
        }
    }

    /// The number a catalog count (`:schema` bound to the schema) answers.
    async fn count(&self, context: &str, sql: &str) -> Result<i64, WarehouseError> {
        let rows = self
            .api
            .query(context, sql, &[("schema", &self.schema)], None)
            .await?;
        Ok(rows
            .first()
            .and_then(|row| field_i64(row.first()))
            .unwrap_or(0))
    }

    /// Why COPY refused rows of `object`, from SYS_LOAD_ERROR_DETAIL (best effort).
    async fn load_errors(&self, object: &str, deadline: Option<std::time::Instant>) -> String {
        match self
            .api
            .query(
                "read load errors",
                super::bulk::load_errors_query(),
                &[("file", object)],
                deadline,
            )
            .await
        {
            Ok(rows) if !rows.is_empty() => rows
                .iter()
                .map(|row| {
                    format!(
                        "line {}, column {} ({}): error {} {}",
                        field_i64(row.get(1)).unwrap_or_default(),
                        field_text(row.get(2)).unwrap_or_default(),
                        field_text(row.get(3)).unwrap_or_default(),
                        field_i64(row.get(4)).unwrap_or_default(),
                        without_values(&field_text(row.get(5)).unwrap_or_default()),
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Ok(_) => "SYS_LOAD_ERROR_DETAIL has no row for it".into(),
            Err(error) => format!("SYS_LOAD_ERROR_DETAIL could not be read ({error})"),
        }
    }

    /// The migrations the warehouse has recorded.
    async fn applied_migrations(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Vec<i64>, WarehouseError> {
        Ok(self
            .api
            .query(
                "read migrations",
                &Dialect::Redshift.select_migrations(&self.schema),
                &[],
                deadline,
            )
            .await?
            .iter()
            .filter_map(|row| field_i64(row.first()))
            .collect())
    }
}

#[async_trait]
impl Warehouse for RedshiftWarehouse {
    fn describe(&self) -> String {
        match &self.staging {
            Some(store) => format!(
                "{} (schema {}, bulk loads through {})",
                self.api.target.describe(),
                self.schema,
                store.staging.describe()
            ),
            None => format!("{} (schema {})", self.api.target.describe(), self.schema),
        }
    }

    async fn migrate(
        &self,
        deadline: Option<Instant>,
    ) -> Result<crate::warehouse::Migrated, WarehouseError> {
        let dialect = Dialect::Redshift;
        let setup = Transaction {
            statements: vec![
                dialect.create_schema(&self.schema),
                dialect.create_migrations_table(&self.schema),
            ],
            ..Transaction::default()
        };
        self.api
            .run_transaction(&setup, deadline, "create schema")
            .await?;
        let applied = self.applied_migrations(deadline).await?;
        let mut newly_applied = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            // The lock serialises concurrent migrators; every step is idempotent and the
            // record is written only once, so a migrator that lost the race changes nothing.
            let mut statements = vec![sql::lock(&self.schema, MIGRATIONS_TABLE)];
            statements.extend(crate::warehouse::migration_statements(
                dialect,
                &self.schema,
                migration,
            ));
            statements.push(sql::record_migration(
                &self.schema,
                migration.version,
                migration.name,
                &Utc::now(),
            ));
            let mut outcome = Ok(());
            for chunk in statements.chunks(super::plan::MAX_BATCH_STATEMENTS) {
                let transaction = Transaction {
                    statements: chunk.to_vec(),
                    ..Transaction::default()
                };
                outcome = self
                    .api
                    .run_transaction(
                        &transaction,
                        deadline,
                        &format!("migration {}", migration.version),
                    )
                    .await;
                if outcome.is_err() {
                    break;
                }
            }
            if let Err(error) = outcome {
                // Another migrator (a second function's cold start) may have applied it
                // while this one waited for the lock: a step that is not idempotent on
                // Redshift (ADD COLUMN) then fails here, and the record says it is done.
                let now_applied = self.applied_migrations(deadline).await?;
                if now_applied.contains(&migration.version) {
                    tracing::info!(
                        version = migration.version,
                        "migration applied by another migrator"
                    );
                    continue;
                }
                return Err(error);
            }
            newly_applied.push(migration.version);
        }
        let views = if crate::warehouse::views_pending(&applied, &newly_applied) {
            self.create_views(deadline).await
        } else {
            Ok(())
        };
        Ok(crate::warehouse::Migrated::new(newly_applied, views))
    }

    async fn read_state(
        &self,
        source: &str,
        stream: &str,
        scope: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<StoredState>, WarehouseError> {
        let rows = self
            .api
            .query(
                "read state",
                &Dialect::Redshift.select_state(&self.schema),
                &[("source", source), ("stream", stream), ("scope", scope)],
                deadline,
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let cursor = field_text(row.first());
        Ok(Some(StoredState {
            cursor: crate::warehouse::parse_cursor(cursor.as_deref(), &self.api.target.describe())?,
            source_time: field_time(row.get(1)),
            updated_at: field_time(row.get(2)),
            caught_up_at: field_time(row.get(3)),
            unfinished_runs: crate::warehouse::unfinished(field_i64(row.get(4))),
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        // A key prefix of its own per batch: no COPY can pick up another batch's object.
        let bulk = self.staging.as_ref().map(|store| Bulk {
            bucket: store.staging.bucket.clone(),
            key_prefix: format!("{}{}/", store.staging.prefix, uuid::Uuid::new_v4()),
            copy_role: store.staging.copy_role.clone(),
            rows: self.bulk_rows,
        });
        let plan = plan_batch_with(&self.schema, &batch, Utc::now(), self.limits, bulk.as_ref());
        let parts = plan.len();
        for (index, transaction) in plan.iter().enumerate() {
            let context = if parts == 1 {
                "commit batch".to_string()
            } else {
                format!("commit batch (part {} of {parts})", index + 1)
            };
            match (&self.staging, transaction.uploads.is_empty()) {
                (Some(store), false) => {
                    let outcome = self
                        .load(store, transaction, batch.cancel_after, &context)
                        .await;
                    // Committed or not, the objects are done with (a retry uploads anew);
                    // past the budget they are left to the bucket's lifecycle rule.
                    if !past(batch.cancel_after) {
                        for upload in &transaction.uploads {
                            store.delete(&upload.key).await;
                        }
                    }
                    outcome?;
                }
                _ => {
                    self.api
                        .run_transaction(transaction, batch.cancel_after, &context)
                        .await?
                }
            }
        }
        Ok(())
    }

    async fn last_turns(
        &self,
        source: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<Turn>, WarehouseError> {
        let rows = self
            .api
            .query(
                "read last turns",
                &Dialect::Redshift.select_last_turns(&self.schema),
                &[("source", source)],
                deadline,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Turn {
                stream: field_text(row.first()).unwrap_or_default(),
                scope: field_text(row.get(1)).unwrap_or_default(),
                at: field_time(row.get(2)),
            })
            .collect())
    }

    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError> {
        let own_tables = self
            .count("read status", &Dialect::Redshift.count_status_tables())
            .await?;
        if own_tables < 2 {
            return Ok(None);
        }
        let rows = self
            .api
            .query(
                "read status",
                &Dialect::Redshift.status(&self.schema),
                &[],
                None,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| StreamStatus {
                source: field_text(row.first()).unwrap_or_default(),
                stream: field_text(row.get(1)).unwrap_or_default(),
                scope: field_text(row.get(2)).unwrap_or_default(),
                cursor: field_text(row.get(3)),
                source_time: field_time(row.get(4)),
                state_updated_at: field_time(row.get(5)),
                last_run_id: field_text(row.get(6)),
                last_run_started_at: field_time(row.get(7)),
                last_run_finished_at: field_time(row.get(8)),
                last_run_status: field_text(row.get(9)),
                last_run_rows: field_i64(row.get(10)),
                last_run_error: field_text(row.get(11)),
            })
            .collect::<Vec<_>>()
            .into())
    }

    async fn environment_map(
        &self,
    ) -> Result<Vec<crate::warehouse::MappedEnvironment>, WarehouseError> {
        let exists = self
            .count(
                "read environments",
                &Dialect::Redshift.count_environment_map(),
            )
            .await?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .api
            .query(
                "read environments",
                &Dialect::Redshift.select_environment_map(&self.schema),
                &[],
                None,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| crate::warehouse::MappedEnvironment {
                heroku_app: field_text(row.first()).unwrap_or_default(),
                rollbar_project_id: field_text(row.get(1)).unwrap_or_default(),
                rollbar_environment: field_text(row.get(2)).unwrap_or_default(),
                origin: field_text(row.get(3)).unwrap_or_default(),
                shared_versions: field_text(row.get(4)),
            })
            .collect())
    }

    async fn retention_estimated_at(
        &self,
    ) -> Result<Option<chrono::DateTime<Utc>>, WarehouseError> {
        let rows = self
            .api
            .query(
                "read the retention estimates' time",
                &Dialect::Redshift.select_estimated_at(&self.schema),
                &[],
                None,
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|row| field_i64(row.first()))
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0)))
    }

    async fn fix_next(
        &self,
        limit: u32,
    ) -> Result<Option<Vec<crate::warehouse::FixNextRow>>, WarehouseError> {
        let exists = self
            .count(
                "read fix_next",
                &Dialect::Redshift.count_view(crate::schema::View::FixNext),
            )
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        let rows = self
            .api
            .query(
                "read fix_next",
                &Dialect::Redshift.select_fix_next(&self.schema, limit),
                &[],
                None,
            )
            .await?;
        Ok(Some(
            rows.iter()
                .map(|row| {
                    crate::warehouse::FixNextRow::from_cells(
                        row.iter().map(|field| field_text(Some(field))).collect(),
                    )
                })
                .collect(),
        ))
    }
}

/// Redshift's words for a FROM path with no object (COPY error 8001) or a key gone.
fn object_missing(redshift_error: &str) -> bool {
    redshift_error.contains("S3 prefix") && redshift_error.contains("does not exist")
        || redshift_error.contains("The specified key does not exist")
}

/// A load error's message without the values it quotes (`Invalid digit, Value '…'`): errors
/// and logs never carry data. At most 300 bytes.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(300));
    for (i, part) in message.split('\'').enumerate() {
        out.push_str(if i % 2 == 1 { "'…'" } else { part });
    }
    crate::text::truncate_utf8(&out, 300).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn load_error_messages_lose_the_values_they_quote() {
        assert_eq!(
            super::without_values("Invalid digit, Value 'alice@example.com', Pos 0, Type: Long"),
            "Invalid digit, Value '…', Pos 0, Type: Long"
        );
        assert_eq!(
            super::without_values("String length exceeds DDL length"),
            "String length exceeds DDL length"
        );
    }
}
