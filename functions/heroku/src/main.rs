//! The Heroku Lambda (`bootstrap` on provided.al2023), in the shared frame.

#![recursion_limit = "256"]

use heimdallr_heroku::lambda::{HerokuSettings, HerokuSource};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    heimdallr_core::lambda::function::serve("heroku", || {
        Ok(HerokuSource::new(HerokuSettings::from_env()?))
    })
    .await
}
