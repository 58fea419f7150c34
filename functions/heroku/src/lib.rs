//! Heroku source: apps, builds and releases over the Platform API v3. Everything
//! Heroku-specific (Range pagination, the shared rate budget, the moving `current`
//! release, builds that gain their release later) is here.

pub mod api;
pub mod config;
pub mod mapping;
pub mod source;
pub mod sync;

pub use api::HerokuClient;
pub use config::{ConfigError, HerokuConfig};
pub use source::{Heroku, Settings};
