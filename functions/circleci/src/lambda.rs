//! The CircleCI Lambda's source, run by the shared frame (`heimdallr_core::lambda::function`).
//!
//! Settings (environment, set by the stack), besides the frame's `HEIMDALLR_*`:
//! `CIRCLECI_PROJECTS` (slugs separated by commas), `CIRCLECI_API_URL`, `CIRCLECI_LOOKBACK`
//! (default `1h`), `CIRCLECI_SWEEP_WINDOW` (`7d`), `CIRCLECI_SWEEP_INTERVAL` (`6h`). The
//! secret holds `{"token": "<CircleCI personal API token>"}`.

use crate::api::CircleCiClient;
use crate::config::{parse_projects, CircleCiConfig, DEFAULT_API_URL};
use async_trait::async_trait;
use heimdallr_core::engine::{RunOutcome, SyncOptions};
use heimdallr_core::lambda::function::{
    env_duration, env_var, malformed_secret, BoxError, CommonSettings, LambdaSource, SettingsError,
    SourceFunction,
};
use heimdallr_core::token::Token;
use heimdallr_core::warehouse::Warehouse;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CircleCiSettings {
    pub api_url: String,
    pub projects: Vec<String>,
    pub lookback: Duration,
    pub sweep_window: Duration,
    pub sweep_interval: Duration,
}

impl CircleCiSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let projects =
            parse_projects(&env_var("CIRCLECI_PROJECTS").unwrap_or_default()).map_err(|e| {
                SettingsError::Invalid {
                    name: "CIRCLECI_PROJECTS",
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            api_url: env_var("CIRCLECI_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into()),
            projects,
            lookback: env_duration("CIRCLECI_LOOKBACK", "1h")?,
            sweep_window: env_duration("CIRCLECI_SWEEP_WINDOW", "7d")?,
            sweep_interval: env_duration("CIRCLECI_SWEEP_INTERVAL", "6h")?,
        })
    }
}

pub struct CircleCiSource {
    settings: CircleCiSettings,
}

impl CircleCiSource {
    pub fn new(settings: CircleCiSettings) -> Self {
        Self { settings }
    }
}

pub type CircleCiFunction = SourceFunction<CircleCiSource>;

/// What a run needs: the configuration and a client carrying this secret's token.
pub struct CircleCiRun {
    config: CircleCiConfig,
    client: CircleCiClient,
}

#[async_trait]
impl LambdaSource for CircleCiSource {
    type Config = CircleCiRun;

    fn name(&self) -> &'static str {
        "circleci"
    }

    fn config(
        &self,
        secret: &Value,
        arn: &str,
        settings: &CommonSettings,
    ) -> Result<CircleCiRun, BoxError> {
        let token = secret
            .get("token")
            .and_then(Value::as_str)
            .and_then(Token::from_setting)
            .ok_or_else(|| {
                malformed_secret(arn, "expected {\"token\": \"<CircleCI API token>\"}")
            })?;
        let config = CircleCiConfig {
            api_url: self.settings.api_url.clone(),
            token,
            projects: self.settings.projects.clone(),
            lookback: self.settings.lookback,
            sweep_window: self.settings.sweep_window,
            sweep_interval: self.settings.sweep_interval,
        };
        let client = CircleCiClient::new(&config.api_url, config.token.clone(), &settings.http)?;
        Ok(CircleCiRun { config, client })
    }

    async fn sync(
        &self,
        warehouse: Arc<dyn Warehouse>,
        run: &CircleCiRun,
        options: &SyncOptions,
    ) -> Vec<RunOutcome> {
        crate::sync_all(warehouse, &run.client, &run.config, options).await
    }
}
