//! Amazon Redshift through the Data API: URL parsing and batch planning (plain logic, always
//! built) and the SDK transport (feature `redshift`).

#[cfg(feature = "redshift")]
mod client;
pub mod plan;
pub mod target;

#[cfg(feature = "redshift")]
pub use client::RedshiftWarehouse;
