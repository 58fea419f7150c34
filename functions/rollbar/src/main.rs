//! The Rollbar Lambda (`bootstrap` on provided.al2023): the shared frame builds logging and
//! clients once per cold start and hands each scheduled event to the handler.

#![recursion_limit = "256"]

use heimdallr_rollbar::lambda::{RollbarSettings, RollbarSource};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    heimdallr_core::lambda::function::serve("rollbar", || {
        RollbarSource::new(RollbarSettings::from_env()?)
    })
    .await
}
