//! What the Lambda handler tests of every source share: a Secrets Manager client pointed at
//! the stand-in, and a scheduled event with a deadline. Included by path from each source's
//! `tests/lambda_handler.rs` (the fakes crate stays free of the AWS SDK and Lambda runtime).

use heimdallr_fakes::lambda_runtime::scheduled_event;
use lambda_runtime::{Context, LambdaEvent};
use std::time::{SystemTime, UNIX_EPOCH};

/// The real SDK client, talking to the Secrets Manager stand-in at `endpoint`.
pub fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "AKIDEXAMPLE",
            "example",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// An EventBridge tick with `seconds_left` before the invocation's deadline.
pub fn event(request_id: &str, seconds_left: u64) -> LambdaEvent<serde_json::Value> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut context = Context::default();
    context.request_id = request_id.to_string();
    context.deadline = now_ms + seconds_left * 1000;
    LambdaEvent::new(scheduled_event(), context)
}
