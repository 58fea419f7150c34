//! Heroku's tables: apps, builds and releases.

use super::ColumnType::*;
use super::{added, col, key, Table};

/// Heroku apps, refreshed on every run (key `id`).
pub static HEROKU_APPS: Table = Table {
    name: "heroku_apps",
    columns: &[
        key("id", Text(64)),
        col("name", Text(255)),
        col("region", Text(64)),
        col("stack", Text(64)),
        col("web_url", Text(1024)),
        col("created_at", Timestamp),
        col("updated_at", Timestamp),
        col("released_at", Timestamp),
        col("data", Json),
        col("synced_at", Timestamp),
        // The app's pipeline (GET /apps/{app}/pipeline-couplings) and its stage there:
        // test, review, development, staging or production; NULL in no pipeline.
        added("pipeline_id", Text(64), 11),
        added("pipeline_stage", Text(32), 11),
    ],
    key: &["id"],
    event_time: None,
    dist_key: None,
};

/// Heroku builds (key `id`): pending until final, gaining their release id later.
pub static HEROKU_BUILDS: Table = Table {
    name: "heroku_builds",
    columns: &[
        key("id", Text(64)),
        col("app_id", Text(64)),
        col("app_name", Text(255)),
        col("status", Text(32)),
        col("created_at", Timestamp),
        col("updated_at", Timestamp),
        col("stack", Text(64)),
        col("source_version", Text(255)),
        col("version_description", Text(4096)),
        col("release_id", Text(64)),
        col("slug_id", Text(64)),
        col("user_id", Text(64)),
        col("user_email", Text(255)),
        col("buildpacks", Text(4096)),
        col("data", Json),
        col("synced_at", Timestamp),
    ],
    key: &["id"],
    event_time: Some("created_at"),
    dist_key: Some("app_id"),
};

/// Heroku releases (key `id`); exactly one per app has `current` true.
pub static HEROKU_RELEASES: Table = Table {
    name: "heroku_releases",
    columns: &[
        key("id", Text(64)),
        col("app_id", Text(64)),
        col("app_name", Text(255)),
        col("version", BigInt),
        col("description", Text(4096)),
        col("status", Text(32)),
        col("current", Boolean),
        col("created_at", Timestamp),
        col("updated_at", Timestamp),
        col("slug_id", Text(64)),
        col("user_id", Text(64)),
        col("user_email", Text(255)),
        col("addon_plan_names", Text(4096)),
        col("data", Json),
        col("synced_at", Timestamp),
        // The git sha of the release's slug (`GET /apps/{app}/slugs/{id}`): promotions,
        // rollbacks and config changes have a slug but no build of their own.
        added("slug_commit", Text(255), 6),
    ],
    key: &["id"],
    event_time: Some("created_at"),
    dist_key: Some("app_id"),
};
