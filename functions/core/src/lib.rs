//! Heimdallr's engine: everything more than one source needs, written once.
//!
//! - [`source`]: what a source crate registers (name, settings, credential, streams).
//! - [`stream`]: the Stream trait, its typed cursor, the one runner and its error kinds.
//! - [`walk`]: the paged walk every API's stream drives.
//! - [`engine`]: sync state, batching, the time budget and run records.
//! - [`http`]: the API client every source uses (timeouts, retries, rate limits).
//! - [`warehouse`]: the store trait, its backends and every line of SQL.
//! - [`schema`]: the tables and the versioned migrations that create them.
//! - [`json`]: documents kept as text, and reads of just the fields a mapping needs.
//! - [`pii`]: what happens to personal data before it is stored.
//! - [`text`]: cutting text to fit; [`time`]: durations as people write them, API times.
//! - [`token`]: API credentials that never print.
//! - `lambda` (feature `lambda`): the frame every function runs in.

pub mod engine;
pub mod environments;
pub mod http;
pub mod json;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod pii;
pub mod schema;
pub mod source;
pub mod stream;
pub mod text;
pub mod time;
pub mod token;
pub mod walk;
pub mod warehouse;

pub use engine::{RunOutcome, RunStatus, StreamKey, StreamRun, SyncOptions};
pub use warehouse::{Row, Value, Warehouse, WarehouseError};
