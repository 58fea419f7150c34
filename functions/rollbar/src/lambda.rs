//! The Rollbar Lambda's handler: one EventBridge tick = one sync pass of every configured
//! project, stopping a margin before the invocation deadline (the next tick resumes).
//!
//! Settings (environment, set by the stack):
//! - `HEIMDALLR_SECRET_ARN`: the secret holding the tokens, as JSON:
//!   `{"tokens": {"web": "<read token>", "worker": "<read token>"}}` (or `{"token": "..."}`
//!   for one project), optionally with `"pii_salt": "..."` for `HEIMDALLR_PII=hash`.
//! - `HEIMDALLR_WAREHOUSE`, `HEIMDALLR_SCHEMA` (default `heimdallr`).
//! - `HEIMDALLR_TIME_MARGIN` (default `15s`), `HEIMDALLR_PII` (default `drop`),
//!   `ROLLBAR_API_URL`, `ROLLBAR_PAGE_LIMIT`, `ROLLBAR_ITEMS_SWEEP_INTERVAL`.

use crate::api::RollbarClient;
use crate::config::{parse_projects, RollbarConfig};
use heimdallr_core::engine::{RunOutcome, RunStatus, SyncOptions};
use heimdallr_core::lambda::{emf_line, required_env, stop_at, SecretCache, SecretError};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::time::parse_duration;
use heimdallr_core::warehouse::{self, Warehouse, WarehouseTarget};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::Instrument;

/// Settings read once per cold start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub function_name: String,
    pub secret_arn: String,
    pub warehouse: WarehouseTarget,
    pub schema: String,
    pub time_margin: Duration,
    pub pii: String,
    pub api_url: Option<String>,
    pub page_limit: u32,
    pub items_sweep_interval: Duration,
    /// Source rows per transaction (`HEIMDALLR_BATCH_ROWS`).
    pub batch_rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Missing(#[from] SecretError),
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let duration = |name: &'static str, default: &str| {
            parse_duration(&var(name).unwrap_or_else(|| default.into()))
                .map_err(|reason| SettingsError::Invalid { name, reason })
        };
        let warehouse =
            WarehouseTarget::parse(&required_env("HEIMDALLR_WAREHOUSE")?).map_err(|e| {
                SettingsError::Invalid {
                    name: "HEIMDALLR_WAREHOUSE",
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            function_name: var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "heimdallr-rollbar".into()),
            secret_arn: required_env("HEIMDALLR_SECRET_ARN")?,
            warehouse,
            schema: var("HEIMDALLR_SCHEMA").unwrap_or_else(|| "heimdallr".into()),
            time_margin: duration("HEIMDALLR_TIME_MARGIN", "15s")?,
            pii: var("HEIMDALLR_PII").unwrap_or_else(|| "drop".into()),
            api_url: var("ROLLBAR_API_URL"),
            page_limit: var("ROLLBAR_PAGE_LIMIT")
                .map(|v| v.parse())
                .transpose()
                .map_err(|e: std::num::ParseIntError| SettingsError::Invalid {
                    name: "ROLLBAR_PAGE_LIMIT",
                    reason: e.to_string(),
                })?
                .unwrap_or(crate::config::DEFAULT_PAGE_LIMIT),
            items_sweep_interval: duration("ROLLBAR_ITEMS_SWEEP_INTERVAL", "1h")?,
            batch_rows: match var("HEIMDALLR_BATCH_ROWS") {
                None => SyncOptions::new(None).batch_rows,
                Some(v) => {
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| SettingsError::Invalid {
                            name: "HEIMDALLR_BATCH_ROWS",
                            reason: format!("{v:?} is not a positive whole number"),
                        })?
                }
            },
        })
    }
}

/// Why an invocation failed, as Lambda reports it (`errorType` / `errorMessage`).
#[derive(Debug)]
pub enum HandlerError {
    /// Settings, secret or warehouse: nothing was synced.
    Configuration(String),
    /// At least one stream failed; its run is recorded in `_heimdallr_runs`.
    SyncFailed(String),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Configuration(m) | Self::SyncFailed(m) => f.write_str(m),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match error {
            HandlerError::Configuration(_) => "Heimdallr.Configuration",
            HandlerError::SyncFailed(_) => "Heimdallr.SyncFailed",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// Everything built once per cold start and shared by invocations.
pub struct RollbarFunction {
    settings: Settings,
    secret: SecretCache,
    client: RollbarClient,
    warehouse: OnceCell<Arc<dyn Warehouse>>,
}

impl RollbarFunction {
    pub fn new(settings: Settings, secrets: aws_sdk_secretsmanager::Client) -> Result<Self, Error> {
        let api_url = settings
            .api_url
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_API_URL.to_string());
        let client = RollbarClient::new(&api_url)?;
        Ok(Self {
            secret: SecretCache::new(secrets, settings.secret_arn.clone()),
            settings,
            client,
            warehouse: OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The warehouse connection, opened and migrated on first use, then reused.
    async fn warehouse(&self) -> Result<Arc<dyn Warehouse>, Error> {
        let warehouse = self
            .warehouse
            .get_or_try_init(|| async {
                let warehouse =
                    warehouse::open(&self.settings.warehouse, &self.settings.schema).await?;
                warehouse.migrate().await?;
                Ok::<_, Error>(warehouse)
            })
            .await?;
        Ok(Arc::clone(warehouse))
    }

    async fn config(&self) -> Result<RollbarConfig, Error> {
        let secret = self.secret.get().await?;
        let malformed = |detail: &str| SecretError::Malformed {
            arn: self.secret.arn().to_string(),
            detail: detail.to_string(),
        };
        let tokens = match (secret.get("tokens"), secret.get("token")) {
            (Some(Value::Object(map)), _) if !map.is_empty() => map
                .iter()
                .map(|(label, token)| {
                    token
                        .as_str()
                        .map(|t| format!("{label}={t}"))
                        .ok_or_else(|| malformed(&format!("tokens.{label} is not a string")))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (_, Some(Value::String(token))) if !token.trim().is_empty() => token.clone(),
            _ => {
                return Err(malformed(
                    "expected {\"tokens\": {\"label\": \"token\"}} or {\"token\": \"...\"}",
                )
                .into())
            }
        };
        let projects = parse_projects(&tokens).map_err(|e| {
            // The parse error names positions and labels, never token values.
            malformed(&e.to_string())
        })?;
        let mut config = RollbarConfig::for_projects(self.settings.api_url.as_deref(), projects)
            .with_page_limit(self.settings.page_limit)?;
        config.items_sweep_interval = self.settings.items_sweep_interval;
        config.pii = PiiPolicy::from_config(
            &self.settings.pii,
            secret.get("pii_salt").and_then(Value::as_str),
        )?;
        Ok(config)
    }

    /// Handles one scheduled event. Errors (returned after the runs are recorded) make
    /// Lambda count the invocation as failed; a partial run is not an error.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
        let run_span =
            tracing::info_span!("run", run_id = %event.context.request_id, source = "rollbar");
        self.run(event.context).instrument(run_span).await
    }

    async fn run(&self, context: lambda_runtime::Context) -> Result<Value, HandlerError> {
        let configuration_failed = |e: Error| {
            tracing::error!(error = %e, "configuration failed");
            HandlerError::Configuration(e.to_string())
        };
        let config = self.config().await.map_err(configuration_failed)?;
        let warehouse = self.warehouse().await.map_err(configuration_failed)?;
        let mut options =
            SyncOptions::new(Some(stop_at(context.deadline, self.settings.time_margin)));
        options.run_id = context.request_id.clone();
        options.batch_rows = self.settings.batch_rows;
        let outcomes = crate::sync_all(warehouse, &self.client, &config, &options).await;
        report(&self.settings.function_name, &options.run_id, &outcomes);
        let failed: Vec<&RunOutcome> = outcomes
            .iter()
            .filter(|o| o.status == RunStatus::Failed)
            .collect();
        if failed.iter().any(|o| {
            o.error
                .as_deref()
                .is_some_and(|e| e.contains("HTTP 401") || e.contains("HTTP 403"))
        }) {
            // The token may have been rotated: read the secret again next time.
            self.secret.invalidate().await;
        }
        if !failed.is_empty() {
            let summary: Vec<String> = failed
                .iter()
                .map(|o| format!("{}: {}", o.key, o.error.as_deref().unwrap_or("failed")))
                .collect();
            return Err(HandlerError::SyncFailed(summary.join("; ")));
        }
        Ok(json!({
            "run_id": options.run_id,
            "streams": outcomes.iter().map(|o| json!({
                "stream": o.key.to_string(),
                "status": o.status.as_str(),
                "rows": o.rows_written,
                "pages": o.pages_fetched,
                "retries": o.api_retries,
                "rejects": o.rejects,
            })).collect::<Vec<_>>(),
        }))
    }
}

fn report(function: &str, run_id: &str, outcomes: &[RunOutcome]) {
    for outcome in outcomes {
        // EMF goes to stdout as its own line; CloudWatch extracts the metrics from it.
        println!("{}", emf_line(function, outcome));
        outcome.log(run_id);
    }
}
