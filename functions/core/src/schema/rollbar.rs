//! Rollbar's tables: items (one row per error group), their occurrences, and deploys.

use super::ColumnType::*;
use super::{col, key, Table, MAX_TEXT_BYTES};

pub static ROLLBAR_ITEMS: Table = Table {
    name: "rollbar_items",
    columns: &[
        key("id", BigInt),
        col("project_id", BigInt),
        col("counter", BigInt),
        col("environment", Text(255)),
        col("level", Text(32)),
        col("status", Text(32)),
        col("title", Text(4096)),
        col("framework", Text(64)),
        col("platform", Text(64)),
        col("fingerprint", Text(255)),
        col("total_occurrences", BigInt),
        col("unique_occurrences", BigInt),
        col("first_occurrence_id", BigInt),
        col("first_occurrence_at", Timestamp),
        col("last_occurrence_id", BigInt),
        col("last_occurrence_at", Timestamp),
        col("last_activated_at", Timestamp),
        col("last_resolved_at", Timestamp),
        col("activating_occurrence_id", BigInt),
        col("resolved_in_version", Text(255)),
        col("assigned_user_id", BigInt),
        col("group_item_id", BigInt),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("last_occurrence_at"),
    dist_key: Some("id"),
};

pub static ROLLBAR_OCCURRENCES: Table = Table {
    name: "rollbar_occurrences",
    columns: &[
        key("id", BigInt),
        col("item_id", BigInt),
        col("project_id", BigInt),
        col("occurred_at", Timestamp),
        col("client_timestamp", Timestamp),
        col("environment", Text(255)),
        col("level", Text(32)),
        col("body_type", Text(32)),
        col("title", Text(4096)),
        col("exception_class", Text(1024)),
        col("exception_message", Text(MAX_TEXT_BYTES)),
        col("person_id", Text(255)),
        col("person_username", Text(255)),
        col("person_email", Text(255)),
        col("code_version", Text(255)),
        col("framework", Text(64)),
        col("platform", Text(64)),
        col("language", Text(64)),
        col("request_url", Text(4096)),
        col("request_method", Text(16)),
        col("request_user_ip", Text(128)),
        col("server_host", Text(255)),
        col("uuid", Text(64)),
        col("context", Text(1024)),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("occurred_at"),
    // Occurrences join their item: distributing both on the item id keeps that join local.
    dist_key: Some("item_id"),
};

/// Rollbar's own deploy records (`GET /api/1/deploys`), kept current: a deploy reported
/// as `started` later becomes `succeeded`, `failed` or `timed_out`.
pub static ROLLBAR_DEPLOYS: Table = Table {
    name: "rollbar_deploys",
    columns: &[
        key("id", BigInt),
        col("project_id", BigInt),
        col("environment", Text(255)),
        col("revision", Text(255)),
        col("status", Text(32)),
        col("started_at", Timestamp),
        col("finished_at", Timestamp),
        col("user_id", BigInt),
        // Personal (a person's login): stored under the PII policy.
        col("local_username", Text(255)),
        col("comment", Text(4096)),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("started_at"),
    dist_key: None,
};
