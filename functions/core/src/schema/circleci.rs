//! CircleCI's tables: pipelines, their workflows and the workflows' jobs.

use super::ColumnType::*;
use super::{col, key, Table};

/// CircleCI pipelines (API v2), one row per pipeline (key `id`, a UUID).
pub static CIRCLECI_PIPELINES: Table = Table {
    name: "circleci_pipelines",
    columns: &[
        key("id", Text(64)),
        col("project_slug", Text(255)),
        col("number", BigInt),
        col("state", Text(32)),
        col("created_at", Timestamp),
        col("updated_at", Timestamp),
        col("trigger_type", Text(64)),
        col("trigger_actor", Text(255)),
        col("trigger_received_at", Timestamp),
        col("branch", Text(1024)),
        col("tag", Text(1024)),
        col("revision", Text(64)),
        col("commit_subject", Text(4096)),
        col("repository_url", Text(1024)),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("created_at"),
    dist_key: Some("id"),
};

/// CircleCI workflows: several per pipeline (reruns add more to old pipelines).
pub static CIRCLECI_WORKFLOWS: Table = Table {
    name: "circleci_workflows",
    columns: &[
        key("id", Text(64)),
        col("pipeline_id", Text(64)),
        col("pipeline_number", BigInt),
        col("project_slug", Text(255)),
        col("name", Text(1024)),
        col("status", Text(32)),
        col("created_at", Timestamp),
        col("stopped_at", Timestamp),
        col("started_by", Text(64)),
        col("canceled_by", Text(64)),
        col("errored_by", Text(64)),
        col("tag", Text(64)),
        col("auto_rerun_number", BigInt),
        col("max_auto_reruns", BigInt),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("created_at"),
    // Workflows join their pipeline.
    dist_key: Some("pipeline_id"),
};

/// CircleCI jobs, keyed on `id`: approval jobs have no job number.
pub static CIRCLECI_JOBS: Table = Table {
    name: "circleci_jobs",
    columns: &[
        key("id", Text(64)),
        col("job_number", BigInt),
        col("workflow_id", Text(64)),
        col("project_slug", Text(255)),
        col("name", Text(1024)),
        col("type", Text(32)),
        col("status", Text(32)),
        col("started_at", Timestamp),
        col("stopped_at", Timestamp),
        col("duration_ms", BigInt),
        col("approved_by", Text(64)),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("started_at"),
    dist_key: Some("workflow_id"),
};
