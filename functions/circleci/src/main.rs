//! The CircleCI Lambda (`bootstrap` on provided.al2023), in the shared frame.

#![recursion_limit = "256"]

use heimdallr_circleci::lambda::{CircleCiSettings, CircleCiSource};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    heimdallr_core::lambda::function::serve("circleci", || {
        Ok(CircleCiSource::new(CircleCiSettings::from_env()?))
    })
    .await
}
