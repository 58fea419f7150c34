//! The CircleCI source as the command and its Lambda both run it: settings (flags locally,
//! the same variables in Lambda), the credential (`CIRCLECI_TOKEN`, or the secret's
//! `token`), and a stream per project.

use crate::api::CircleCiClient;
use crate::config::{
    parse_projects, CircleCiConfig, DEFAULT_API_URL, DEFAULT_GIVE_UP_AFTER,
    DEFAULT_INSIGHTS_INTERVAL, DEFAULT_LOOKBACK, DEFAULT_SWEEP_INTERVAL, DEFAULT_SWEEP_WINDOW,
};
use async_trait::async_trait;
use heimdallr_core::http::HttpStats;
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::{Common, ConfigError, Source};
use heimdallr_core::stream::{AnyStream, StreamError};
use heimdallr_core::token::Token;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// CircleCI's settings: the command's flags and, with no arguments, the Lambda's
/// environment (same variables, same defaults).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "circleci_settings")]
pub struct Settings {
    /// CircleCI API base URL, version path included.
    #[arg(id = "circleci_api_url", value_name = "URL", long = "circleci-api-url", env = "CIRCLECI_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// Project slugs, separated by commas (gh/acme/web, circleci/<org-id>/<project-id>).
    #[arg(
        id = "circleci_projects",
        value_name = "SLUGS",
        long = "circleci-projects",
        env = "CIRCLECI_PROJECTS",
        default_value = ""
    )]
    pub projects: String,
    /// Pipelines created this recently get their workflows re-listed every run (re-runs).
    #[arg(id = "circleci_lookback", value_name = "DURATION", long = "circleci-lookback", env = "CIRCLECI_LOOKBACK", default_value = DEFAULT_LOOKBACK, value_parser = heimdallr_core::time::parse_duration)]
    pub lookback: Duration,
    /// How far back the periodic sweep re-lists workflows.
    #[arg(id = "circleci_sweep_window", value_name = "DURATION", long = "circleci-sweep-window", env = "CIRCLECI_SWEEP_WINDOW", default_value = DEFAULT_SWEEP_WINDOW, value_parser = heimdallr_core::time::parse_duration)]
    pub sweep_window: Duration,
    /// How often the sweep runs.
    #[arg(id = "circleci_sweep_interval", value_name = "DURATION", long = "circleci-sweep-interval", env = "CIRCLECI_SWEEP_INTERVAL", default_value = DEFAULT_SWEEP_INTERVAL, value_parser = heimdallr_core::time::parse_duration)]
    pub sweep_interval: Duration,
    /// A pending workflow that cannot be read is retried every run for this long, then
    /// given up (that run fails, naming it).
    #[arg(id = "circleci_give_up_after", value_name = "DURATION", long = "circleci-give-up-after", env = "CIRCLECI_GIVE_UP_AFTER", default_value = DEFAULT_GIVE_UP_AFTER, value_parser = heimdallr_core::time::parse_duration)]
    pub give_up_after: Duration,
    /// How often Insights is asked for recent runs the walk no longer lists (re-runs of
    /// pipelines older than the look-back, however old).
    #[arg(id = "circleci_insights_interval", value_name = "DURATION", long = "circleci-insights-interval", env = "CIRCLECI_INSIGHTS_INTERVAL", default_value = DEFAULT_INSIGHTS_INTERVAL, value_parser = heimdallr_core::time::parse_duration)]
    pub insights_interval: Duration,
}

/// The CircleCI source: one HTTP client; the token is the pass's.
pub struct CircleCi {
    client: CircleCiClient,
    settings: Settings,
    projects: Vec<String>,
}

#[async_trait]
impl Source for CircleCi {
    const NAME: &'static str = "circleci";
    const CREDENTIAL_ENV: &'static str = "CIRCLECI_TOKEN";
    type Settings = Settings;
    /// A personal API token.
    type Credential = Token;

    fn new(settings: &Settings, common: &Common) -> Result<Self, ConfigError> {
        let projects = parse_projects(&settings.projects)
            .map_err(|e| ConfigError::new(format!("CIRCLECI_PROJECTS: {e}")))?;
        let client = CircleCiClient::new(settings.api_url.trim(), Token::new(""), &common.http)
            .map_err(|e| ConfigError::new(format!("CIRCLECI_API_URL: {e}")))?;
        Ok(Self {
            client,
            settings: settings.clone(),
            projects,
        })
    }

    fn credential_from_env(text: &str) -> Result<Token, ConfigError> {
        Token::from_setting(text)
            .ok_or_else(|| ConfigError::new(crate::config::ConfigError::MissingToken))
    }

    /// `{"token": "<CircleCI personal API token>"}`.
    fn credential_from_secret(secret: &Value) -> Result<Token, ConfigError> {
        heimdallr_core::source::token_in_secret(secret, "token", "CircleCI API token")
    }

    fn http(&self) -> Arc<HttpStats> {
        self.client.stats()
    }

    async fn streams(
        &self,
        token: &Token,
        _pii: &PiiPolicy,
    ) -> Result<Vec<Box<dyn AnyStream>>, StreamError> {
        let config = CircleCiConfig {
            projects: self.projects.clone(),
            lookback: self.settings.lookback,
            sweep_window: self.settings.sweep_window,
            sweep_interval: self.settings.sweep_interval,
            give_up_after: self.settings.give_up_after,
            insights_interval: self.settings.insights_interval,
        };
        Ok(crate::sync::streams(
            &self.client.with_token(token.clone()),
            &config,
        ))
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
        assert_eq!(settings.lookback, std::time::Duration::from_secs(3600));
        assert_eq!(
            settings.sweep_window,
            std::time::Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn the_token_is_required_and_never_printed() {
        let missing = CircleCi::credential_from_env(" ")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            missing,
            Some(crate::config::ConfigError::MissingToken.to_string())
        );
        let token = CircleCi::credential_from_env("cci-secret").unwrap();
        assert!(!format!("{token:?}").contains("cci-secret"));
    }
}
