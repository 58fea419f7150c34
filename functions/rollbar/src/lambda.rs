//! The Rollbar Lambda's source, run by the shared frame (`heimdallr_core::lambda::function`):
//! one EventBridge tick = one sync pass of every configured project, stopping a margin
//! before the invocation deadline (the next tick resumes).
//!
//! Settings (environment, set by the stack), besides the frame's `HEIMDALLR_*`:
//! `ROLLBAR_API_URL`, `ROLLBAR_PAGE_LIMIT`, `ROLLBAR_ITEMS_SWEEP_INTERVAL`, `ROLLBAR_OVERLAP`.
//! The secret holds `{"tokens": {"web": "<read token>", "worker": "<read token>"}}` (or
//! `{"token": "..."}` for one project), optionally with `"pii_salt": "..."`.

use crate::api::RollbarClient;
use crate::config::{parse_projects, RollbarConfig};
use async_trait::async_trait;
use heimdallr_core::engine::{RunOutcome, SyncOptions};
use heimdallr_core::http::HttpSettings;
use heimdallr_core::lambda::function::{
    env_duration, env_var, http_settings_from_env, malformed_secret, BoxError, CommonSettings,
    LambdaSource, SettingsError, SourceFunction,
};
use heimdallr_core::warehouse::Warehouse;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Rollbar's own settings.
#[derive(Debug, Clone)]
pub struct RollbarSettings {
    pub api_url: Option<String>,
    pub page_limit: u32,
    pub items_sweep_interval: Duration,
    pub overlap: usize,
    pub http: HttpSettings,
}

impl RollbarSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            api_url: env_var("ROLLBAR_API_URL"),
            page_limit: env_var("ROLLBAR_PAGE_LIMIT")
                .map(|v| v.parse())
                .transpose()
                .map_err(|e: std::num::ParseIntError| SettingsError::Invalid {
                    name: "ROLLBAR_PAGE_LIMIT",
                    reason: e.to_string(),
                })?
                .unwrap_or(crate::config::DEFAULT_PAGE_LIMIT),
            items_sweep_interval: env_duration("ROLLBAR_ITEMS_SWEEP_INTERVAL", "1h")?,
            overlap: env_var("ROLLBAR_OVERLAP")
                .map(|v| v.parse())
                .transpose()
                .map_err(|e: std::num::ParseIntError| SettingsError::Invalid {
                    name: "ROLLBAR_OVERLAP",
                    reason: e.to_string(),
                })?
                .unwrap_or(crate::config::DEFAULT_OVERLAP),
            http: http_settings_from_env()?,
        })
    }
}

/// The Rollbar source as the Lambda frame runs it.
pub struct RollbarSource {
    settings: RollbarSettings,
    client: RollbarClient,
}

impl RollbarSource {
    pub fn new(settings: RollbarSettings) -> Result<Self, BoxError> {
        let api_url = settings
            .api_url
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_API_URL.to_string());
        Ok(Self {
            client: RollbarClient::new(&api_url, &settings.http)?,
            settings,
        })
    }
}

/// The function a bootstrap serves.
pub type RollbarFunction = SourceFunction<RollbarSource>;

#[async_trait]
impl LambdaSource for RollbarSource {
    type Config = RollbarConfig;

    fn name(&self) -> &'static str {
        "rollbar"
    }

    fn config(
        &self,
        secret: &Value,
        arn: &str,
        settings: &CommonSettings,
    ) -> Result<RollbarConfig, BoxError> {
        let tokens = match (secret.get("tokens"), secret.get("token")) {
            (Some(Value::Object(map)), _) if !map.is_empty() => map
                .iter()
                .map(|(label, token)| {
                    token
                        .as_str()
                        .map(|t| format!("{label}={t}"))
                        .ok_or_else(|| {
                            malformed_secret(arn, format!("tokens.{label} is not a string"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (_, Some(Value::String(token))) if !token.trim().is_empty() => token.clone(),
            _ => {
                return Err(malformed_secret(
                    arn,
                    "expected {\"tokens\": {\"label\": \"token\"}} or {\"token\": \"...\"}",
                ))
            }
        };
        // The parse error names positions and labels, never token values.
        let projects = parse_projects(&tokens).map_err(|e| malformed_secret(arn, e.to_string()))?;
        let mut config = RollbarConfig::for_projects(self.settings.api_url.as_deref(), projects)
            .with_page_limit(self.settings.page_limit)?;
        config.items_sweep_interval = self.settings.items_sweep_interval;
        config.overlap = self.settings.overlap;
        config.pii = settings.pii_policy(secret)?;
        Ok(config)
    }

    async fn sync(
        &self,
        warehouse: Arc<dyn Warehouse>,
        config: &RollbarConfig,
        options: &SyncOptions,
    ) -> Vec<RunOutcome> {
        crate::sync_all(warehouse, &self.client, config, options).await
    }
}
