//! Loopback stand-ins for the APIs Heimdallr reads. They page, rate-limit and fail the way
//! the real services do, so the real binaries can be tested end to end without a network.

pub mod circleci;
pub mod heroku;
pub mod http;
pub mod lambda_box;
pub mod lambda_runtime;
pub mod postgres;
mod redshift_copy;
pub mod redshift_data;
pub mod rollbar;
pub mod s3;
pub mod secrets_manager;
