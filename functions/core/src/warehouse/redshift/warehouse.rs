//! The Redshift warehouse: migrations, state, status and batches as Data API transactions
//! (planned by [`super::plan`], sent by [`super::data_api`]).

use super::data_api::{field_i64, field_text, field_time, DataApi};
use super::plan::{plan_batch, Limits, Transaction};
use super::sql;
use super::target::RedshiftTarget;
use crate::schema::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::warehouse::{Batch, Dialect, StoredState, StreamStatus, Warehouse, WarehouseError};
use async_trait::async_trait;
use aws_sdk_redshiftdata::Client;
use chrono::Utc;
use std::time::Instant;

pub struct RedshiftWarehouse {
    api: DataApi,
    schema: String,
    limits: Limits,
}

impl RedshiftWarehouse {
    /// Builds the client from the SDK's standard configuration (region, credentials chain,
    /// `AWS_ENDPOINT_URL_REDSHIFT_DATA`), with the URL's region taking precedence.
    pub async fn connect(target: &RedshiftTarget, schema: &str) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &target.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        Self::with_client(Client::new(&config), target.clone(), schema)
    }

    pub fn with_client(client: Client, target: RedshiftTarget, schema: &str) -> Self {
        Self {
            limits: Limits::for_cluster(target.large_strings),
            api: DataApi::new(client, target),
            schema: schema.to_string(),
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
        format!("{} (schema {})", self.api.target.describe(), self.schema)
    }

    async fn migrate(&self, deadline: Option<Instant>) -> Result<Vec<i64>, WarehouseError> {
        let dialect = Dialect::Redshift;
        let setup = Transaction {
            statements: vec![
                dialect.create_schema(&self.schema),
                dialect.create_migrations_table(&self.schema),
            ],
            rows: 0,
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
                    rows: 0,
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
        Ok(newly_applied)
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
        }))
    }

    async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
        let plan = plan_batch(&self.schema, &batch, Utc::now(), self.limits);
        let parts = plan.len();
        for (index, transaction) in plan.iter().enumerate() {
            let context = if parts == 1 {
                "commit batch".to_string()
            } else {
                format!("commit batch (part {} of {parts})", index + 1)
            };
            self.api
                .run_transaction(transaction, batch.cancel_after, &context)
                .await?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError> {
        let own_tables = self
            .api
            .query(
                "read status",
                &Dialect::Redshift.count_status_tables(),
                &[("schema", &self.schema)],
                None,
            )
            .await?;
        if own_tables
            .first()
            .and_then(|row| field_i64(row.first()))
            .unwrap_or(0)
            < 2
        {
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
            .api
            .query(
                "read environments",
                &Dialect::Redshift.count_environment_map(),
                &[("schema", &self.schema)],
                None,
            )
            .await?;
        if exists
            .first()
            .and_then(|row| field_i64(row.first()))
            .unwrap_or(0)
            == 0
        {
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
}
