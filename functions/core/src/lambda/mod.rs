//! What every source's Lambda shares: the token secret (read once per cold start, re-read
//! after an authentication failure), the time budget from the invocation deadline, JSON
//! logs, and CloudWatch Embedded Metric Format lines per stream run.

pub mod function;

use crate::engine::{RunOutcome, RunStatus};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use chrono::Utc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// CloudWatch namespace of the metrics every function emits.
pub const METRICS_NAMESPACE: &str = "Heimdallr";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {arn}: cannot be read: {detail}")]
    Unreadable { arn: String, detail: String },
    #[error(
        "secret {arn} is empty: put the source's tokens in it (see the README for its JSON shape)"
    )]
    Empty { arn: String },
    #[error("secret {arn} is malformed: {detail}")]
    Malformed { arn: String, detail: String },
    #[error("environment variable {0} is not set")]
    MissingSetting(&'static str),
}

/// Reports an error that stops the function before its runtime loop, through the Runtime
/// API (`POST /2018-06-01/runtime/init/error`, the error type in the
/// `Lambda-Runtime-Function-Error-Type` header and a JSON body). Best effort: the process
/// exits next in any case.
pub async fn report_init_error(error_type: &str, message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", error_type)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!(error = %e, "could not report the init error to the Runtime API");
    }
}

/// A Secrets Manager secret, fetched on first use and kept for the life of the sandbox.
pub struct SecretCache {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    value: Mutex<Option<serde_json::Value>>,
}

impl SecretCache {
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>) -> Self {
        Self {
            client,
            arn: arn.into(),
            value: Mutex::new(None),
        }
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The secret's JSON object; fetched once, then served from memory.
    pub async fn get(&self) -> Result<serde_json::Value, SecretError> {
        let mut slot = self.value.lock().await;
        if let Some(value) = slot.as_ref() {
            return Ok(value.clone());
        }
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| SecretError::Unreadable {
                arn: self.arn.clone(),
                // The error's code and message; never the request (it carries no secret,
                // but stays out of logs all the same).
                detail: match (e.code(), e.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    _ => e.to_string(),
                },
            })?;
        let text = output.secret_string().unwrap_or_default().trim();
        if text.is_empty() {
            return Err(SecretError::Empty {
                arn: self.arn.clone(),
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SecretError::Malformed {
                arn: self.arn.clone(),
                // serde's message names a line and column, never the content.
                detail: format!("not JSON ({})", e.classify_label()),
            })?;
        if !value.is_object() {
            return Err(SecretError::Malformed {
                arn: self.arn.clone(),
                detail: "expected a JSON object".into(),
            });
        }
        *slot = Some(value.clone());
        Ok(value)
    }

    /// Forgets the cached value, so the next `get` reads the (rotated) secret again.
    pub async fn invalidate(&self) {
        *self.value.lock().await = None;
    }
}

trait ClassifyLabel {
    fn classify_label(&self) -> &'static str;
}

impl ClassifyLabel for serde_json::Error {
    fn classify_label(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

/// The instant to stop starting new batches: the invocation deadline (Unix ms) less the
/// safety margin.
pub fn stop_at(deadline_ms: u64, margin: Duration) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(margin)
}

/// Reads a required environment variable.
pub fn required_env(name: &'static str) -> Result<String, SecretError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or(SecretError::MissingSetting(name))
}

/// The function's `ViewsFailed` metric (1 while its container's start could not create
/// the analyst views, else 0), one EMF line per invocation: the stack alarms on it.
pub fn views_emf_line(function: &str, views_failed: bool) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [{"Name": "ViewsFailed", "Unit": "Count"}],
            }]
        },
        "Function": function,
        "ViewsFailed": u8::from(views_failed),
    })
    .to_string()
}

/// One CloudWatch Embedded Metric Format line for a stream run. The metric names are a
/// contract with the stack's alarms and dashboards.
pub fn emf_line(function: &str, outcome: &RunOutcome) -> String {
    let now = Utc::now();
    let seconds_since =
        |t: chrono::DateTime<Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
    // Age of the newest source record: for the dashboard (a quiet project is old data, not
    // a problem).
    let freshness = outcome.newest_source_time.map(seconds_since);
    // The heartbeat the freshness alarm watches: how long since the stream last reached the
    // source's head. Absent when nothing is on record, and silence alarms.
    let behind = outcome.caught_up_at.map(seconds_since);
    let mut metrics = vec![
        serde_json::json!({"Name": "RowsWritten", "Unit": "Count"}),
        serde_json::json!({"Name": "PagesFetched", "Unit": "Count"}),
        serde_json::json!({"Name": "ApiRetries", "Unit": "Count"}),
        serde_json::json!({"Name": "Rejects", "Unit": "Count"}),
        serde_json::json!({"Name": "DurationMs", "Unit": "Milliseconds"}),
        serde_json::json!({"Name": "Failed", "Unit": "Count"}),
        serde_json::json!({"Name": "UnfinishedRuns", "Unit": "Count"}),
        serde_json::json!({"Name": "Recovered", "Unit": "Count"}),
    ];
    if freshness.is_some() {
        metrics.push(serde_json::json!({"Name": "FreshnessLagSeconds", "Unit": "Seconds"}));
    }
    if behind.is_some() {
        metrics.push(serde_json::json!({"Name": "SecondsSinceCaughtUp", "Unit": "Seconds"}));
    }
    let stream = format!("{}/{}", outcome.key.stream, outcome.key.scope);
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["Function", "Stream"], ["Function"]],
                "Metrics": metrics,
            }]
        },
        "Function": function,
        "Stream": stream,
        "Source": outcome.key.source,
        "Status": outcome.status.as_str(),
        "RowsWritten": outcome.rows_written,
        "PagesFetched": outcome.pages_fetched,
        "ApiRetries": outcome.api_retries,
        "Rejects": outcome.rejects,
        "DurationMs": outcome.duration.as_millis() as u64,
        "Failed": u8::from(outcome.status == RunStatus::Failed),
        // Earlier runs of the stream that never finished (killed for memory or time).
        "UnfinishedRuns": outcome.unfinished_before,
        // Failures worked around (a refused page token restarted, a workflow retried later).
        "Recovered": outcome.recovered,
    });
    if let Some(lag) = freshness {
        line["FreshnessLagSeconds"] = serde_json::json!(lag);
    }
    if let Some(behind) = behind {
        line["SecondsSinceCaughtUp"] = serde_json::json!(behind);
    }
    line.to_string()
}

/// JSON log lines on stdout, kept as they are by Lambda's JSON log format.
pub fn init_json_logging() {
    let filter = tracing_subscriber_filter();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .without_time()
        .with_env_filter(filter)
        .init();
}

fn tracing_subscriber_filter() -> tracing_subscriber::EnvFilter {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_ascii_lowercase())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},tokio_postgres=warn"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StreamKey;

    #[test]
    fn emf_lines_carry_every_metric_with_function_and_stream_dimensions() {
        let outcome = RunOutcome {
            key: StreamKey::new("rollbar", "occurrences", "web"),
            status: RunStatus::Succeeded,
            rows_written: 42,
            pages_fetched: 3,
            api_retries: 1,
            rejects: 0,
            newest_source_time: Some(Utc::now() - chrono::Duration::seconds(90)),
            caught_up_at: Some(Utc::now() - chrono::Duration::seconds(30)),
            error: None,
            error_kind: None,
            unfinished_before: 1,
            recovered: 2,
            duration: Duration::from_millis(1500),
        };
        let line: serde_json::Value =
            serde_json::from_str(&emf_line("heimdallr-rollbar", &outcome)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Heimdallr");
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["Function", "Stream"])
        );
        let names: Vec<_> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(line["UnfinishedRuns"], 1);
        assert_eq!(line["Recovered"], 2);
        for name in [
            "UnfinishedRuns",
            "Recovered",
            "RowsWritten",
            "PagesFetched",
            "ApiRetries",
            "Rejects",
            "DurationMs",
            "FreshnessLagSeconds",
            "SecondsSinceCaughtUp",
        ] {
            assert!(names.contains(&name), "{name}");
            assert!(line[name].is_number(), "{name} has a value");
        }
        assert_eq!(line["Function"], "heimdallr-rollbar");
        assert_eq!(line["Stream"], "occurrences/web");
        assert_eq!(line["RowsWritten"], 42);
        let lag = line["FreshnessLagSeconds"].as_f64().unwrap();
        assert!((89.0..120.0).contains(&lag), "{lag}");
        let behind = line["SecondsSinceCaughtUp"].as_f64().unwrap();
        assert!((29.0..60.0).contains(&behind), "{behind}");
    }

    #[test]
    fn a_stream_with_no_heartbeat_on_record_reports_none_so_silence_alarms() {
        let outcome = RunOutcome::not_started(
            StreamKey::new("rollbar", "occurrences", "web"),
            crate::stream::StreamError::new(crate::stream::ErrorKind::Warehouse, "down"),
        );
        let line: serde_json::Value =
            serde_json::from_str(&emf_line("heimdallr-rollbar", &outcome)).unwrap();
        assert!(line.get("SecondsSinceCaughtUp").is_none());
        let names = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].to_string();
        assert!(!names.contains("SecondsSinceCaughtUp"), "{names}");
        assert_eq!(line["Failed"], 1);
    }

    #[test]
    fn the_budget_ends_a_margin_before_the_deadline() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let stop = stop_at(now_ms + 60_000, Duration::from_secs(15));
        let left = stop.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(44) && left <= Duration::from_secs(45),
            "{left:?}"
        );
        let past = stop_at(now_ms.saturating_sub(1000), Duration::from_secs(15));
        assert!(past <= Instant::now());
    }
}
