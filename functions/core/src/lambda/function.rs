//! The frame every source's Lambda runs in: any [`Source`] (its crate's descriptor) is
//! served the same way. Settings from the environment (the frame's `HEIMDALLR_*` and the
//! source's own, the same variables and defaults as the command's flags), the source and
//! its HTTP client built once per cold start, the secret cached per cold start (and
//! dropped after an authentication failure so a rotated token is read again), the
//! warehouse opened and migrated once, the time budget from the invocation deadline, one
//! EMF line per stream, and a typed error result when a stream failed.

use super::{emf_line, required_env, stop_at, views_emf_line, SecretCache, SecretError};
use crate::engine::{RunOutcome, RunStatus, SyncOptions, COMMIT_GRACE};
use crate::http::HttpSettings;
use crate::pii::PiiPolicy;
use crate::source::{
    settings_from_env, sync_source, Common, EngineSettings, Source, DEFAULT_SCHEMA,
};
use crate::stream::ErrorKind;
use crate::time::parse_duration;
use crate::warehouse::{self, Warehouse, WarehouseTarget};
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::Instrument;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings every source's function reads from its environment (set by the stack).
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub function_name: String,
    /// `HEIMDALLR_SECRET_ARN`: the source's credentials.
    pub secret_arn: String,
    /// `HEIMDALLR_WAREHOUSE`, `HEIMDALLR_SCHEMA` (default `heimdallr`).
    pub warehouse: WarehouseTarget,
    pub schema: String,
    /// `HEIMDALLR_TIME_MARGIN` (default 15s): stop starting batches this long before the deadline.
    pub time_margin: Duration,
    /// `HEIMDALLR_PII` (default `drop`).
    pub pii: String,
    /// `HEIMDALLR_BATCH_ROWS` (default [`crate::engine::DEFAULT_BATCH_ROWS`]).
    pub batch_rows: usize,
    /// `HEIMDALLR_BATCH_BYTES` (default [`crate::engine::DEFAULT_BATCH_BYTES`]).
    pub batch_bytes: usize,
    /// `HEIMDALLR_HTTP_TIMEOUT` (default 60s) and `HEIMDALLR_HTTP_RETRY_BUDGET` (200).
    pub http: HttpSettings,
    /// `HEIMDALLR_ENVIRONMENTS` and `HEIMDALLR_ACTIVITY_TABLE`: stored once per cold
    /// start, after the migrations.
    pub environments: Option<crate::environments::Environments>,
    pub activity_table: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Missing(#[from] SecretError),
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// A setting the clap arguments refused; the message names its variable.
    #[error(transparent)]
    Setting(#[from] crate::source::ConfigError),
}

/// An environment variable, unless unset or blank.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A duration setting (`90s`, `5m`, `1h`), or its default.
pub fn env_duration(name: &'static str, default: &str) -> Result<Duration, SettingsError> {
    parse_duration(&env_var(name).unwrap_or_else(|| default.into()))
        .map_err(|reason| SettingsError::Invalid { name, reason })
}

impl CommonSettings {
    pub fn from_env(source: &str) -> Result<Self, SettingsError> {
        let warehouse =
            WarehouseTarget::parse(&required_env("HEIMDALLR_WAREHOUSE")?).map_err(|e| {
                SettingsError::Invalid {
                    name: "HEIMDALLR_WAREHOUSE",
                    reason: e.to_string(),
                }
            })?;
        let engine: EngineSettings = settings_from_env()?;
        Ok(Self {
            function_name: env_var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| format!("heimdallr-{source}")),
            secret_arn: required_env("HEIMDALLR_SECRET_ARN")?,
            warehouse,
            schema: env_var("HEIMDALLR_SCHEMA").unwrap_or_else(|| DEFAULT_SCHEMA.into()),
            time_margin: env_duration("HEIMDALLR_TIME_MARGIN", "15s")?,
            pii: engine.pii.clone(),
            batch_rows: engine.batch_rows as usize,
            batch_bytes: engine.batch_bytes,
            http: engine.http(),
            environments: engine.environments.clone(),
            activity_table: engine.activity_table.clone(),
        })
    }

    /// The PII policy, its salt (for `hash`) read from the secret's `pii_salt`.
    pub fn pii_policy(&self, secret: &Value) -> Result<PiiPolicy, BoxError> {
        Ok(PiiPolicy::from_config(
            &self.pii,
            secret.get("pii_salt").and_then(Value::as_str),
        )?)
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

/// Lambda's `errorType` for settings, secret or warehouse errors (init or invocation).
pub const CONFIGURATION_ERROR: &str = "Heimdallr.Configuration";

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match error {
            HandlerError::Configuration(_) => CONFIGURATION_ERROR,
            HandlerError::SyncFailed(_) => "Heimdallr.SyncFailed",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// A malformed-secret error naming the secret and what is wrong with its shape.
pub fn malformed_secret(arn: &str, detail: impl Into<String>) -> BoxError {
    Box::new(SecretError::Malformed {
        arn: arn.to_string(),
        detail: detail.into(),
    })
}

/// Everything built once per cold start and shared by invocations.
pub struct SourceFunction<S: Source> {
    settings: CommonSettings,
    secret: SecretCache,
    source: S,
    /// The warehouse, and whether its analyst views failed at this container's start.
    warehouse: OnceCell<(Arc<dyn Warehouse>, bool)>,
}

impl<S: Source> SourceFunction<S> {
    pub fn new(
        settings: CommonSettings,
        secrets: aws_sdk_secretsmanager::Client,
        source: S,
    ) -> Self {
        Self {
            secret: SecretCache::new(secrets, settings.secret_arn.clone()),
            settings,
            source,
            warehouse: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &CommonSettings {
        &self.settings
    }

    /// The warehouse connection, opened and migrated on first use (cancelled past
    /// `deadline`), then reused; and whether the analyst views could not be created then
    /// (not fatal: the rows sync, the metric says so, the next cold start tries again).
    async fn warehouse(&self, deadline: Instant) -> Result<(Arc<dyn Warehouse>, bool), BoxError> {
        let (warehouse, views_failed) = self
            .warehouse
            .get_or_try_init(|| async {
                let warehouse =
                    warehouse::open(&self.settings.warehouse, &self.settings.schema).await?;
                let migrated = warehouse.migrate(Some(deadline)).await?;
                crate::environments::apply_analyst_settings(
                    warehouse.as_ref(),
                    self.settings.environments.as_ref(),
                    self.settings.activity_table.as_deref(),
                )
                .await;
                Ok::<_, BoxError>((warehouse, migrated.views_failed.is_some()))
            })
            .await?;
        Ok((Arc::clone(warehouse), *views_failed))
    }

    /// This invocation's credential and PII policy, from the (cached) secret.
    async fn credential(&self) -> Result<(S::Credential, PiiPolicy), BoxError> {
        let secret = self.secret.get().await?;
        let arn = self.secret.arn();
        let credential =
            S::credential_from_secret(&secret).map_err(|e| malformed_secret(arn, e.0))?;
        Ok((credential, self.settings.pii_policy(&secret)?))
    }

    /// Handles one scheduled event. Errors (returned after the runs are recorded) make
    /// Lambda count the invocation as failed; a partial run is not an error.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
        let run_span = tracing::info_span!(
            "run",
            run_id = %event.context.request_id,
            source = S::NAME
        );
        self.run(event.context).instrument(run_span).await
    }

    async fn run(&self, context: lambda_runtime::Context) -> Result<Value, HandlerError> {
        let configuration_failed = |e: BoxError| {
            tracing::error!(error = %e, "configuration failed");
            HandlerError::Configuration(e.to_string())
        };
        let (credential, pii) = self.credential().await.map_err(configuration_failed)?;
        let stop = stop_at(context.deadline, self.settings.time_margin);
        let (warehouse, views_failed) = self
            .warehouse(stop + COMMIT_GRACE)
            .await
            .map_err(configuration_failed)?;
        println!(
            "{}",
            views_emf_line(&self.settings.function_name, views_failed)
        );
        let mut options = SyncOptions::new(Some(stop));
        options.run_id = context.request_id.clone();
        options.batch_rows = self.settings.batch_rows;
        options.batch_bytes = self.settings.batch_bytes;
        let outcomes = sync_source(&self.source, &credential, &pii, &warehouse, &options).await;
        for outcome in &outcomes {
            // EMF goes to stdout as its own line; CloudWatch extracts the metrics from it.
            println!("{}", emf_line(&self.settings.function_name, outcome));
        }
        // What fix_next ranks by (when due), after the metrics and within what is left of
        // the invocation: Redshift and PostgreSQL cancel it at the stop, and the next
        // invocation tries again.
        if Instant::now() < stop {
            crate::environments::refresh_estimates(
                warehouse.as_ref(),
                self.settings.activity_table.as_deref(),
                Some(stop),
            )
            .await;
        }
        let failed: Vec<&RunOutcome> = outcomes
            .iter()
            .filter(|o| o.status == RunStatus::Failed)
            .collect();
        if failed.iter().any(|o| {
            matches!(
                o.error_kind,
                Some(ErrorKind::Authentication | ErrorKind::Forbidden)
            )
        }) {
            // The token may have been rotated (or its scopes changed): read the secret
            // again next time.
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

/// A bootstrap's whole `main`: JSON logs, the frame's and the source's settings from the
/// environment, the source and the SDK clients built once, then every scheduled event to
/// the handler. A setting that cannot be used is an init error (below).
pub async fn serve<S: Source>() -> Result<(), lambda_runtime::Error> {
    super::init_json_logging();
    let built = CommonSettings::from_env(S::NAME)
        .map_err(BoxError::from)
        .and_then(|settings| {
            let own: S::Settings = settings_from_env()?;
            let source = S::new(
                &own,
                &Common {
                    http: settings.http,
                },
            )?;
            Ok((settings, source))
        });
    let (settings, source) = match built {
        Ok(built) => built,
        Err(error) => {
            // Before the runtime loop: tell Lambda through the Runtime API's init error,
            // as JSON, and leave (Lambda starts a fresh sandbox for the next event).
            tracing::error!(error_type = CONFIGURATION_ERROR, error = %error, "the function cannot start");
            super::report_init_error(CONFIGURATION_ERROR, &error.to_string()).await;
            std::process::exit(1);
        }
    };
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let function = SourceFunction::new(settings, aws_sdk_secretsmanager::Client::new(&aws), source);
    let function = &function;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| async move { function.handle(event).await },
    ))
    .await
}
