//! The engine's own tables: stream state, run records and rejected rows.

use super::ColumnType::*;
use super::{added, col, key, Table};

/// Where each stream is: its cursor, committed with the rows it covers.
pub static STATE: Table = Table {
    name: "_heimdallr_state",
    columns: &[
        key("source", Text(64)),
        key("stream", Text(64)),
        key("scope", Text(255)),
        col("cursor", Json),
        col("source_time", Timestamp),
        col("run_id", Text(64)),
        col("updated_at", Timestamp),
        // The heartbeat: when a run last reached the source's head (or, until one has,
        // when the stream first ran). Its age is what the freshness alarm watches.
        added("caught_up_at", Timestamp, 7),
    ],
    key: &["source", "stream", "scope"],
    event_time: None,
    dist_key: None,
};

/// One row per run and stream, updated with every batch the run commits.
pub static RUNS: Table = Table {
    name: "_heimdallr_runs",
    columns: &[
        key("run_id", Text(64)),
        key("source", Text(64)),
        key("stream", Text(64)),
        key("scope", Text(255)),
        col("started_at", Timestamp),
        col("finished_at", Timestamp),
        col("status", Text(32)),
        col("rows_written", BigInt),
        col("pages_fetched", BigInt),
        col("api_retries", BigInt),
        col("rejects", BigInt),
        col("error", Text(4096)),
        col("updated_at", Timestamp),
    ],
    key: &["run_id", "source", "stream", "scope"],
    event_time: Some("started_at"),
    dist_key: None,
};

/// Rows that could not be stored, with the reason; the sync goes on without them.
pub static REJECTS: Table = Table {
    name: "_heimdallr_rejects",
    columns: &[
        key("source", Text(64)),
        key("target_table", Text(64)),
        key("record_key", Text(255)),
        col("scope", Text(255)),
        col("run_id", Text(64)),
        col("reason", Text(4096)),
        col("raw", Json),
        col("rejected_at", Timestamp),
    ],
    key: &["source", "target_table", "record_key"],
    event_time: Some("rejected_at"),
    dist_key: None,
};

/// The environments setting (`HEIMDALLR_ENVIRONMENTS`), stored whole: which Rollbar project
/// and environment runs on which Heroku app and comes from which CircleCI project. The
/// analyst views join on it.
pub static ENVIRONMENTS: Table = Table {
    name: "heimdallr_environments",
    columns: &[
        key("rollbar_project_id", BigInt),
        key("rollbar_environment", Text(255)),
        col("name", Text(255)),
        col("heroku_app", Text(255)),
        col("circleci_project_slug", Text(255)),
        col("circleci_branch", Text(255)),
        col("circleci_deploys", Boolean),
        col("updated_at", Timestamp),
    ],
    key: &["rollbar_project_id", "rollbar_environment"],
    event_time: None,
    dist_key: None,
};

/// The retention estimates `fix_next` ranks by, copied from `rollbar_item_retention_impact`
/// by a sync when they are older than `environments::RETENTION_REFRESH_EVERY` (the view
/// reads the whole activity table: minutes at company size; `fix_next` must take seconds).
pub static RETENTION_ESTIMATES: Table = Table {
    name: "heimdallr_retention_estimates",
    columns: &[
        key("item_id", BigInt),
        col("hit_people", BigInt),
        col("users_lost_d7", Double),
        col("users_lost_d7_low", Double),
        col("users_lost_d7_high", Double),
        col("users_lost_d30", Double),
        col("estimate_note", Text(255)),
        col("estimated_at", Timestamp),
    ],
    key: &["item_id"],
    event_time: None,
    dist_key: None,
};
