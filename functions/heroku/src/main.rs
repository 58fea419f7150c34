//! The Heroku Lambda (`bootstrap` on provided.al2023): the shared frame builds logging, the
//! source and its clients once per cold start and hands each scheduled event to the
//! handler.

#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    heimdallr_core::lambda::function::serve::<heimdallr_heroku::Heroku>().await
}
