//! Amazon Redshift through the Data API.
//!
//! Plain logic, always built (and tested without the SDK): [`target`] parses the URL,
//! [`sql`] writes Redshift's own SQL, [`plan`] turns a batch into Data API transactions.
//! With the `redshift` feature: `data_api` is the transport, `warehouse` the adapter.

#[cfg(feature = "redshift")]
mod data_api;
pub mod plan;
pub mod sql;
pub mod target;
#[cfg(feature = "redshift")]
mod warehouse;

#[cfg(feature = "redshift")]
pub use warehouse::RedshiftWarehouse;
