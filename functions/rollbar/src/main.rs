//! The Rollbar Lambda (`bootstrap` on provided.al2023): logging and clients are set up
//! once per cold start; each scheduled event goes to the library's handler.

#![recursion_limit = "256"]

use heimdallr_rollbar::lambda::{RollbarFunction, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    heimdallr_core::lambda::init_json_logging();
    let settings = Settings::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let function = RollbarFunction::new(settings, aws_sdk_secretsmanager::Client::new(&aws))?;
    let function = &function;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move { function.handle(event).await },
    ))
    .await
}
