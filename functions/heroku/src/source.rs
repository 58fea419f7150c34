//! The Heroku source as the command and its Lambda both run it: settings (flags locally,
//! the same variables in Lambda), the credential (`HEROKU_API_KEY`, or the secret's
//! `api_key`), and two streams per app.

use crate::api::HerokuClient;
use crate::config::{
    parse_apps, Apps, HerokuConfig, DEFAULT_API_URL, DEFAULT_HEADROOM, MAX_PAGE_SIZE,
};
use async_trait::async_trait;
use heimdallr_core::http::HttpStats;
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::{Common, ConfigError, Source};
use heimdallr_core::stream::{AnyStream, StreamError};
use heimdallr_core::token::Token;
use serde_json::Value;
use std::sync::Arc;

/// Heroku's settings: the command's flags and, with no arguments, the Lambda's
/// environment (same variables, same defaults).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "heroku_settings")]
pub struct Settings {
    /// Heroku Platform API base URL.
    #[arg(id = "heroku_api_url", value_name = "URL", long = "heroku-api-url", env = "HEROKU_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// App names or ids, separated by commas, or * for every app the key can see.
    #[arg(
        id = "heroku_apps",
        value_name = "APPS",
        long = "heroku-apps",
        env = "HEROKU_APPS",
        default_value = ""
    )]
    pub apps: String,
    /// Requests of the account's hourly budget to leave to other clients.
    #[arg(id = "heroku_rate_headroom", value_name = "N", long = "heroku-rate-headroom", env = "HEROKU_RATE_HEADROOM", default_value_t = DEFAULT_HEADROOM)]
    pub rate_headroom: u64,
    /// Items per Range page (1 to 1000).
    #[arg(
        id = "heroku_page_size", value_name = "N",
        long = "heroku-page-size",
        env = "HEROKU_PAGE_SIZE",
        default_value_t = MAX_PAGE_SIZE,
        value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_SIZE as i64)
    )]
    pub page_size: u32,
}

/// The Heroku source: one HTTP client (its rate-limit reading included); the key is the
/// pass's.
pub struct Heroku {
    client: HerokuClient,
    settings: Settings,
    apps: Apps,
}

#[async_trait]
impl Source for Heroku {
    const NAME: &'static str = "heroku";
    const CREDENTIAL_ENV: &'static str = "HEROKU_API_KEY";
    type Settings = Settings;
    /// An API key or OAuth token.
    type Credential = Token;

    fn new(settings: &Settings, common: &Common) -> Result<Self, ConfigError> {
        let apps = parse_apps(&settings.apps)
            .map_err(|e| ConfigError::new(format!("HEROKU_APPS: {e}")))?;
        let client = HerokuClient::new(settings.api_url.trim(), Token::new(""), &common.http)
            .map_err(|e| ConfigError::new(format!("HEROKU_API_URL: {e}")))?;
        Ok(Self {
            client,
            settings: settings.clone(),
            apps,
        })
    }

    fn credential_from_env(text: &str) -> Result<Token, ConfigError> {
        Token::from_setting(text)
            .ok_or_else(|| ConfigError::new(crate::config::ConfigError::MissingToken))
    }

    /// `{"api_key": "<Heroku API key>"}`.
    fn credential_from_secret(secret: &Value) -> Result<Token, ConfigError> {
        heimdallr_core::source::token_in_secret(secret, "api_key", "Heroku API key")
    }

    fn http(&self) -> Arc<HttpStats> {
        self.client.stats()
    }

    async fn streams(
        &self,
        key: &Token,
        pii: &PiiPolicy,
    ) -> Result<Vec<Box<dyn AnyStream>>, StreamError> {
        let config = HerokuConfig {
            apps: self.apps.clone(),
            page_size: self.settings.page_size,
            headroom: self.settings.rate_headroom,
            pii: pii.clone(),
        };
        crate::sync::streams(&self.client.with_token(key.clone()), &config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lambda reads the command's settings from the same variables, with the same
    /// defaults: one definition.
    #[test]
    fn the_lambdas_settings_are_the_commands_defaults() {
        let settings: Settings = heimdallr_core::source::settings_from_env().unwrap();
        assert_eq!(settings.api_url, crate::config::DEFAULT_API_URL);
        assert_eq!(settings.rate_headroom, crate::config::DEFAULT_HEADROOM);
        assert_eq!(settings.page_size, crate::config::MAX_PAGE_SIZE);
    }
}
