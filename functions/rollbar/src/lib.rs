//! Rollbar source: reads items, occurrences and deploys of one or more projects and hands
//! typed rows to the engine. Everything Rollbar-specific (envelope, paging, field quirks) is here.

pub mod api;
pub mod config;
pub mod deploys;
pub mod mapping;
pub mod source;
pub mod sync;

pub use api::RollbarClient;
pub use config::{ConfigError, Project, RollbarConfig};
pub use source::{Rollbar, Settings};
