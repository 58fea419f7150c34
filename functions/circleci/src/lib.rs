//! CircleCI source: pipelines, workflows and jobs of one or more projects over API v2.
//! Everything CircleCI-specific (page tokens, 404 children, terminal states, the look-back
//! window) is here; state, batching and the warehouse are the engine's.

pub mod api;
pub mod config;
pub mod mapping;
pub mod source;
pub mod sync;

pub use api::CircleCiClient;
pub use config::{CircleCiConfig, ConfigError};
pub use source::{CircleCi, Settings};
