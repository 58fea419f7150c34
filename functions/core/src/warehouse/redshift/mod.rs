//! Amazon Redshift through the Data API.
//!
//! Plain logic, always built (and tested without the SDK): [`target`] parses the URL,
//! [`sql`] writes Redshift's own SQL, [`bulk`] the COPY path's objects and statements,
//! [`plan`] turns a batch into Data API transactions (and the objects they load). With the
//! `redshift` feature: `data_api` and `staging` are the Data API and S3 transports,
//! `warehouse` the adapter.

pub mod bulk;
#[cfg(feature = "redshift")]
mod data_api;
pub mod plan;
pub mod sql;
#[cfg(feature = "redshift")]
mod staging;
pub mod target;
#[cfg(feature = "redshift")]
mod warehouse;

#[cfg(feature = "redshift")]
pub use warehouse::RedshiftWarehouse;
