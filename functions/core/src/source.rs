//! What a source crate registers, once, for both the `heimdallr` command and its Lambda:
//! its name, its settings (clap arguments whose environment variables and defaults are
//! the same for the command's flags and the Lambda's environment), its credential (from
//! an environment variable locally, from its Secrets Manager secret in Lambda) and the
//! streams of one pass. The command and the Lambda frame only ever iterate sources.

use crate::engine::{RunOutcome, StreamKey, SyncOptions};
use crate::http::{HttpSettings, HttpStats};
use crate::pii::PiiPolicy;
use crate::stream::{run_streams, AnyStream, StreamError};
use crate::warehouse::Warehouse;
use async_trait::async_trait;
use std::sync::Arc;

/// A setting or credential that cannot be used: the message names it, never its value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

/// A credential that is one token in a field of the Lambda's secret, `{"<field>": "<token>"}`;
/// the error shows the expected shape (`what` describes the token), never a value.
pub fn token_in_secret(
    secret: &serde_json::Value,
    field: &str,
    what: &str,
) -> Result<crate::token::Token, ConfigError> {
    secret
        .get(field)
        .and_then(serde_json::Value::as_str)
        .and_then(crate::token::Token::from_setting)
        .ok_or_else(|| ConfigError::new(format!("expected {{\"{field}\": \"<{what}>\"}}")))
}

/// The schema that holds Heimdallr's tables unless one is named.
pub const DEFAULT_SCHEMA: &str = "heimdallr";
/// How long an API request may take before it is given up (and retried).
pub const DEFAULT_HTTP_TIMEOUT: &str = "60s";

/// The engine's settings, the same for every source: the command's `sync` flags and every
/// Lambda's environment, defined once.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EngineSettings {
    /// Give up on an API request after this long (it is retried, within the budget).
    #[arg(long, env = "HEIMDALLR_HTTP_TIMEOUT", default_value = DEFAULT_HTTP_TIMEOUT, value_parser = crate::time::parse_duration)]
    pub http_timeout: std::time::Duration,
    /// Retries of failed API requests allowed per pass, over all requests.
    #[arg(long, env = "HEIMDALLR_HTTP_RETRY_BUDGET", default_value_t = crate::http::DEFAULT_RETRY_BUDGET)]
    pub http_retry_budget: u64,
    /// Source rows per transaction.
    #[arg(long, env = "HEIMDALLR_BATCH_ROWS", default_value_t = crate::engine::DEFAULT_BATCH_ROWS as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_rows: u32,
    /// Bytes of source rows per transaction, and what an API page aims at: the bound on
    /// a run's memory (about five times this, plus ~15 MB). `8MiB`, `4MB`, `500KiB` or bytes.
    #[arg(long, env = "HEIMDALLR_BATCH_BYTES", default_value = crate::engine::DEFAULT_BATCH_BYTES_SETTING, value_parser = crate::text::parse_bytes)]
    pub batch_bytes: usize,
    /// Personal fields (person username and email, request user_ip, owner emails): keep,
    /// hash or drop.
    #[arg(long, env = "HEIMDALLR_PII", default_value = "drop")]
    pub pii: String,
    /// Which Rollbar project and environment runs on which Heroku app and comes from which
    /// CircleCI project: a JSON list, stored whole in `heimdallr_environments` for the
    /// analyst views (docs/analysts.md).
    #[arg(long, env = "HEIMDALLR_ENVIRONMENTS", value_parser = crate::environments::parse)]
    pub environments: Option<crate::environments::Environments>,
    /// Your activity table (`schema.table`, columns `user_id` and `active_on`): when set,
    /// the release health and retention impact views are defined over it.
    #[arg(long, env = "HEIMDALLR_ACTIVITY_TABLE", value_parser = crate::environments::parse_activity_table)]
    pub activity_table: Option<String>,
}

impl EngineSettings {
    /// What the API clients are built with.
    pub fn http(&self) -> HttpSettings {
        HttpSettings {
            request_timeout: self.http_timeout,
            retry_budget: self.http_retry_budget,
        }
    }
}

/// What every source is given besides its own settings.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub http: HttpSettings,
}

/// A source: one crate, one API.
#[async_trait]
pub trait Source: Send + Sync + Sized + 'static {
    /// Its name, in commands (`heimdallr sync rollbar`), stream keys and metrics.
    const NAME: &'static str;
    /// The environment variable the command reads its credential from.
    const CREDENTIAL_ENV: &'static str;
    /// Its settings, as clap arguments with their environment variables and defaults:
    /// the command's flags, and the Lambda's environment (read with no arguments).
    type Settings: clap::Args + clap::FromArgMatches + Clone + std::fmt::Debug + Send + Sync;
    /// Its credential (tokens never print).
    type Credential: Send + Sync;

    /// The source for these settings: API clients built once (per command, per Lambda
    /// cold start).
    fn new(settings: &Self::Settings, common: &Common) -> Result<Self, ConfigError>;

    /// The credential from the command's environment variable.
    fn credential_from_env(text: &str) -> Result<Self::Credential, ConfigError>;

    /// The credential from the Lambda's secret (a JSON object); errors name the secret's
    /// fields, never their values.
    fn credential_from_secret(secret: &serde_json::Value) -> Result<Self::Credential, ConfigError>;

    /// The API client's counters (the retry budget is per pass).
    fn http(&self) -> Arc<HttpStats>;

    /// The streams of one pass, in the order they run; `pii` applies to what they store.
    async fn streams(
        &self,
        credential: &Self::Credential,
        pii: &PiiPolicy,
    ) -> Result<Vec<Box<dyn AnyStream>>, StreamError>;
}

/// One pass of a source: a fresh retry budget, its streams, run one after the other.
pub async fn sync_source<S: Source>(
    source: &S,
    credential: &S::Credential,
    pii: &PiiPolicy,
    warehouse: &Arc<dyn Warehouse>,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    source.http().start_pass();
    match source.streams(credential, pii).await {
        Ok(streams) => run_streams(warehouse, &streams, options).await,
        Err(e) => {
            let key = StreamKey::new(S::NAME, "streams", "*");
            tracing::error!(source = S::NAME, error = %e, "cannot list the source's streams");
            let outcome = RunOutcome::not_started(key, e);
            outcome.log(&options.run_id);
            vec![outcome]
        }
    }
}

/// Reads a source's settings from the environment alone (no arguments), as the Lambda
/// does: the same variables and defaults as the command's flags.
pub fn settings_from_env<S: clap::Args + clap::FromArgMatches>() -> Result<S, ConfigError> {
    let command = S::augment_args(clap::Command::new("heimdallr").no_binary_name(true));
    // Errors name the environment variable, which is what a Lambda's user sets.
    let named = |error: clap::Error| {
        let mut line = error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        for arg in command.get_arguments() {
            if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
                let flag = format!("--{long}");
                if line.contains(&flag) {
                    line = format!("{}: {line}", env.to_string_lossy());
                    break;
                }
            }
        }
        ConfigError::new(line)
    };
    let matches = command
        .clone()
        .try_get_matches_from(Vec::<String>::new())
        .map_err(named)?;
    S::from_arg_matches(&matches).map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lambda's environment and the command's flags share these defaults, and they
    /// are the engine's own.
    #[test]
    fn the_engine_settings_default_to_the_engines_defaults() {
        let settings: EngineSettings = settings_from_env().unwrap();
        assert_eq!(settings.http(), HttpSettings::default());
        assert_eq!(
            settings.batch_rows as usize,
            crate::engine::DEFAULT_BATCH_ROWS
        );
        assert_eq!(settings.batch_bytes, crate::engine::DEFAULT_BATCH_BYTES);
        assert_eq!(settings.pii, "drop");
    }

    #[test]
    fn a_token_in_a_secret_is_read_and_a_wrong_shape_is_named_without_values() {
        let secret = serde_json::json!({"api_key": "hk-secret-1"});
        let token = token_in_secret(&secret, "api_key", "Heroku API key").unwrap();
        assert_eq!(token.expose(), "hk-secret-1");
        let wrong = serde_json::json!({"token": "hk-secret-2"});
        let error = token_in_secret(&wrong, "api_key", "Heroku API key")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(error, r#"expected {"api_key": "<Heroku API key>"}"#);
        assert!(token_in_secret(&serde_json::json!({"api_key": ""}), "api_key", "key").is_err());
    }

    #[derive(Debug, clap::Args)]
    struct Example {
        /// A bounded number.
        #[arg(
            long = "example-limit",
            env = "HEIMDALLR_SOURCE_TEST_LIMIT",
            default_value_t = 7,
            value_parser = clap::value_parser!(u32).range(1..=10)
        )]
        limit: u32,
    }

    #[test]
    fn settings_read_the_environment_alone_and_errors_name_the_variable() {
        let defaults: Example = settings_from_env().unwrap();
        assert_eq!(defaults.limit, 7, "the flag's default");
        std::env::set_var("HEIMDALLR_SOURCE_TEST_LIMIT", "11");
        let error = settings_from_env::<Example>().unwrap_err().to_string();
        std::env::remove_var("HEIMDALLR_SOURCE_TEST_LIMIT");
        assert!(
            error.starts_with("HEIMDALLR_SOURCE_TEST_LIMIT: invalid value '11'"),
            "{error}"
        );
    }
}
