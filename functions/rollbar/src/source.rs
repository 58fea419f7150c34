//! The Rollbar source as the command and its Lambda both run it: settings (flags locally,
//! the same variables in Lambda), the credential (`ROLLBAR_ACCESS_TOKEN`, or the secret's
//! `tokens`), and the streams of a pass.

use crate::api::RollbarClient;
use crate::config::{
    parse_projects, Project, RollbarConfig, DEFAULT_API_URL, DEFAULT_ITEMS_SWEEP_INTERVAL,
    DEFAULT_OVERLAP_WINDOW, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
};
use async_trait::async_trait;
use heimdallr_core::http::HttpStats;
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::{Common, ConfigError, Source};
use heimdallr_core::stream::{AnyStream, StreamError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Rollbar's settings: the command's flags and, with no arguments, the Lambda's
/// environment (same variables, same defaults).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "rollbar_settings")]
pub struct Settings {
    /// Rollbar API base URL, version path included.
    #[arg(id = "rollbar_api_url", value_name = "URL", long = "rollbar-api-url", env = "ROLLBAR_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// Occurrences per page of the walk (1 to 5000).
    #[arg(
        id = "rollbar_page_limit", value_name = "N",
        long = "rollbar-page-limit",
        env = "ROLLBAR_PAGE_LIMIT",
        default_value_t = DEFAULT_PAGE_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_LIMIT as i64)
    )]
    pub page_limit: u32,
    /// How often every item is re-read.
    #[arg(id = "rollbar_items_sweep_interval", value_name = "DURATION", long = "rollbar-items-sweep-interval", env = "ROLLBAR_ITEMS_SWEEP_INTERVAL", default_value = DEFAULT_ITEMS_SWEEP_INTERVAL, value_parser = heimdallr_core::time::parse_duration)]
    pub items_sweep_interval: Duration,
    /// How late an occurrence may become listable below ids already read: each walk
    /// re-reads, below the high-water mark, what Rollbar received this long before the
    /// newest stored occurrence (`2m`, `90s`; 0 only the mark's own second).
    #[arg(
        id = "rollbar_overlap_window", value_name = "DURATION",
        long = "rollbar-overlap-window",
        env = "ROLLBAR_OVERLAP_WINDOW",
        default_value = DEFAULT_OVERLAP_WINDOW,
        value_parser = heimdallr_core::time::parse_duration
    )]
    pub overlap_window: Duration,
    /// Also sync each project's deploy records (`GET /deploys`) into `rollbar_deploys`,
    /// for the per-environment deploy views. Off unless asked: a 404 on the list is then an
    /// error, never "no deploys".
    #[arg(
        id = "rollbar_deploys", value_name = "BOOL",
        long = "rollbar-deploys",
        env = "ROLLBAR_DEPLOYS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub deploys: bool,
}

/// The Rollbar source: one HTTP client for every project (each call carries its token).
pub struct Rollbar {
    client: RollbarClient,
    settings: Settings,
}

#[async_trait]
impl Source for Rollbar {
    const NAME: &'static str = "rollbar";
    const CREDENTIAL_ENV: &'static str = "ROLLBAR_ACCESS_TOKEN";
    type Settings = Settings;
    /// The projects and their read tokens.
    type Credential = Vec<Project>;

    fn new(settings: &Settings, common: &Common) -> Result<Self, ConfigError> {
        // A count of ids no longer means anything: refused, rather than ignored.
        if std::env::var_os("ROLLBAR_OVERLAP").is_some() {
            return Err(ConfigError::new(
                "ROLLBAR_OVERLAP (a count of ids) was replaced by ROLLBAR_OVERLAP_WINDOW, a \
                 duration of occurrence time (default 2m): unset ROLLBAR_OVERLAP and set \
                 ROLLBAR_OVERLAP_WINDOW if the default does not suit",
            ));
        }
        let client = RollbarClient::new(settings.api_url.trim(), &common.http)
            .map_err(|e| ConfigError::new(format!("ROLLBAR_API_URL: {e}")))?;
        Ok(Self {
            client,
            settings: settings.clone(),
        })
    }

    /// One bare token (project `default`), or `label=token` pairs.
    fn credential_from_env(text: &str) -> Result<Vec<Project>, ConfigError> {
        parse_projects(text).map_err(ConfigError::new)
    }

    /// `{"tokens": {"web": "<token>", ...}}`, or `{"token": "<token>"}` for one project.
    fn credential_from_secret(secret: &Value) -> Result<Vec<Project>, ConfigError> {
        let tokens = match (secret.get("tokens"), secret.get("token")) {
            (Some(Value::Object(map)), _) if !map.is_empty() => map
                .iter()
                .map(|(label, token)| {
                    token
                        .as_str()
                        .map(|t| format!("{label}={t}"))
                        .ok_or_else(|| ConfigError::new(format!("tokens.{label} is not a string")))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            (_, Some(Value::String(token))) if !token.trim().is_empty() => token.clone(),
            _ => {
                return Err(ConfigError::new(
                    "expected {\"tokens\": {\"label\": \"token\"}} or {\"token\": \"...\"}",
                ))
            }
        };
        // The parse error names positions and labels, never token values.
        parse_projects(&tokens).map_err(ConfigError::new)
    }

    fn http(&self) -> Arc<HttpStats> {
        self.client.stats()
    }

    async fn streams(
        &self,
        projects: &Vec<Project>,
        pii: &PiiPolicy,
    ) -> Result<Vec<Box<dyn AnyStream>>, StreamError> {
        let mut config =
            RollbarConfig::for_projects(Some(&self.settings.api_url), projects.clone());
        config.page_limit = self.settings.page_limit;
        config.items_sweep_interval = self.settings.items_sweep_interval;
        config.overlap_window = self.settings.overlap_window;
        config.deploys = self.settings.deploys;
        config.pii = pii.clone();
        Ok(crate::sync::streams(&self.client, &config))
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
        assert_eq!(settings.page_limit, crate::config::DEFAULT_PAGE_LIMIT);
        assert_eq!(
            Some(settings.overlap_window),
            heimdallr_core::time::parse_duration(crate::config::DEFAULT_OVERLAP_WINDOW).ok()
        );
        assert_eq!(settings.api_url, crate::config::DEFAULT_API_URL);
    }
}
