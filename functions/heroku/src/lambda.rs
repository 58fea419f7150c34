//! The Heroku Lambda's source, run by the shared frame (`heimdallr_core::lambda::function`).
//!
//! Settings (environment, set by the stack), besides the frame's `HEIMDALLR_*`:
//! `HEROKU_APPS` (names or ids separated by commas, or `*`), `HEROKU_API_URL`,
//! `HEROKU_RATE_HEADROOM` (default 1000). The secret holds `{"api_key": "<key>"}`,
//! optionally with `"pii_salt"` for `HEIMDALLR_PII=hash`.

use crate::api::HerokuClient;
use crate::config::{
    parse_apps, Apps, HerokuConfig, DEFAULT_API_URL, DEFAULT_HEADROOM, MAX_PAGE_SIZE,
};
use async_trait::async_trait;
use heimdallr_core::engine::{RunOutcome, SyncOptions};
use heimdallr_core::lambda::function::{
    env_count, env_var, malformed_secret, BoxError, CommonSettings, LambdaSource, SettingsError,
    SourceFunction,
};
use heimdallr_core::token::Token;
use heimdallr_core::warehouse::Warehouse;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct HerokuSettings {
    pub api_url: String,
    pub apps: Apps,
    pub headroom: u64,
}

impl HerokuSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let apps = parse_apps(&env_var("HEROKU_APPS").unwrap_or_default()).map_err(|e| {
            SettingsError::Invalid {
                name: "HEROKU_APPS",
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            api_url: env_var("HEROKU_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into()),
            apps,
            headroom: env_count("HEROKU_RATE_HEADROOM", DEFAULT_HEADROOM as usize)? as u64,
        })
    }
}

pub struct HerokuSource {
    settings: HerokuSettings,
}

impl HerokuSource {
    pub fn new(settings: HerokuSettings) -> Self {
        Self { settings }
    }
}

pub type HerokuFunction = SourceFunction<HerokuSource>;

pub struct HerokuRun {
    config: HerokuConfig,
    client: HerokuClient,
}

#[async_trait]
impl LambdaSource for HerokuSource {
    type Config = HerokuRun;

    fn name(&self) -> &'static str {
        "heroku"
    }

    fn config(
        &self,
        secret: &Value,
        arn: &str,
        settings: &CommonSettings,
    ) -> Result<HerokuRun, BoxError> {
        let key = secret
            .get("api_key")
            .and_then(Value::as_str)
            .and_then(Token::from_setting)
            .ok_or_else(|| malformed_secret(arn, "expected {\"api_key\": \"<Heroku API key>\"}"))?;
        let config = HerokuConfig {
            api_url: self.settings.api_url.clone(),
            token: key,
            apps: self.settings.apps.clone(),
            page_size: MAX_PAGE_SIZE,
            headroom: self.settings.headroom,
            pii: settings.pii_policy(secret)?,
        };
        let client = HerokuClient::new(&config.api_url, config.token.clone(), &settings.http)?;
        Ok(HerokuRun { config, client })
    }

    async fn sync(
        &self,
        warehouse: Arc<dyn Warehouse>,
        run: &HerokuRun,
        options: &SyncOptions,
    ) -> Vec<RunOutcome> {
        crate::sync_all(warehouse, &run.client, &run.config, options).await
    }
}
