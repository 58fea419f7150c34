//! The warehouse's tables and the versioned migrations that create them.
//!
//! Tables are described once, as data; each backend's dialect turns a description into
//! DDL and DML. Descriptions are append-only: a released column is never changed in
//! place; a change is a new [`Migration`] step.

/// Column types every backend can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    BigInt,
    Integer,
    Boolean,
    Double,
    /// Text of at most this many bytes (UTF-8); longer values are cut at a character
    /// boundary before storage, the full value staying in the raw JSON.
    Text(u32),
    Timestamp,
    /// A whole JSON document (JSON in DuckDB, JSONB in PostgreSQL, SUPER in Redshift).
    Json,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The migration that added the column to an existing table (0: created with it).
    pub added_in: i64,
}

const fn col(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        nullable: true,
        added_in: 0,
    }
}

const fn key(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        nullable: false,
        added_in: 0,
    }
}

/// A nullable column a later migration adds (last in the table, where ALTER puts it).
const fn added(name: &'static str, ty: ColumnType, migration: i64) -> Column {
    Column {
        name,
        ty,
        nullable: true,
        added_in: migration,
    }
}

/// A table's description: its columns, its natural key, the column rows are ordered by
/// in time (the leading sort key of event tables on Redshift), and the column Redshift
/// distributes rows on (chosen so that the usual joins stay on one node).
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub key: &'static [&'static str],
    pub event_time: Option<&'static str>,
    pub dist_key: Option<&'static str>,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn key_indexes(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.column_index(k))
            .collect()
    }
}

use ColumnType::*;

/// Longest VARCHAR Redshift allows; the cap for free text everywhere.
pub const MAX_TEXT_BYTES: u32 = 65_535;

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

/// Applied migrations (version, name, applied_at); created by the backend itself.
pub const MIGRATIONS_TABLE: &str = "_heimdallr_migrations";

/// The analyst views (their SQL is in `warehouse::views`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Per item, environment and UTC day: occurrences and distinct affected people.
    ItemDailyImpact,
    /// Per person and item: first and last seen, occurrences.
    PersonExposure,
    /// Heroku releases and CircleCI pipelines: target, time, git sha, status.
    Deploys,
    /// Per item: the deploy that most likely brought it in (by code_version, else time).
    SuspectDeploy,
    /// Per Heroku release: new and reactivated items and affected people after it.
    ReleaseImpact,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::ItemDailyImpact => "rollbar_item_daily_impact",
            View::PersonExposure => "rollbar_person_exposure",
            View::Deploys => "deploys",
            View::SuspectDeploy => "rollbar_item_suspect_deploy",
            View::ReleaseImpact => "release_impact",
        }
    }
}

/// One step of a migration, rendered by each backend's dialect.
#[derive(Debug)]
pub enum Step {
    /// The table with the columns it had at the step's migration.
    CreateTable(&'static Table),
    /// The table's columns whose `added_in` is the step's migration.
    AddColumns(&'static Table),
    /// Created or replaced: a later migration may redefine a view with the same step.
    CreateView(View),
}

#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub steps: &'static [Step],
}

/// Every migration, in order. Append only.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "engine tables",
        steps: &[
            Step::CreateTable(&STATE),
            Step::CreateTable(&RUNS),
            Step::CreateTable(&REJECTS),
        ],
    },
    Migration {
        version: 2,
        name: "rollbar items and occurrences",
        steps: &[
            Step::CreateTable(&ROLLBAR_ITEMS),
            Step::CreateTable(&ROLLBAR_OCCURRENCES),
        ],
    },
    Migration {
        version: 3,
        name: "circleci pipelines, workflows and jobs",
        steps: &[
            Step::CreateTable(&CIRCLECI_PIPELINES),
            Step::CreateTable(&CIRCLECI_WORKFLOWS),
            Step::CreateTable(&CIRCLECI_JOBS),
        ],
    },
    Migration {
        version: 4,
        name: "heroku apps, builds and releases",
        steps: &[
            Step::CreateTable(&HEROKU_APPS),
            Step::CreateTable(&HEROKU_BUILDS),
            Step::CreateTable(&HEROKU_RELEASES),
        ],
    },
    Migration {
        version: 5,
        name: "analyst views",
        steps: &[
            Step::CreateView(View::ItemDailyImpact),
            Step::CreateView(View::PersonExposure),
            Step::CreateView(View::Deploys),
            Step::CreateView(View::SuspectDeploy),
            Step::CreateView(View::ReleaseImpact),
        ],
    },
    Migration {
        version: 6,
        name: "heroku release commits",
        steps: &[
            Step::AddColumns(&HEROKU_RELEASES),
            Step::CreateView(View::Deploys),
            Step::CreateView(View::ReleaseImpact),
        ],
    },
];

/// Every table a migration creates, for status and docs.
pub fn all_tables() -> impl Iterator<Item = &'static Table> {
    MIGRATIONS.iter().flat_map(|m| {
        m.steps.iter().filter_map(|step| match step {
            Step::CreateTable(table) => Some(*table),
            Step::AddColumns(_) | Step::CreateView(_) => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_column_exists_and_is_not_null() {
        for table in all_tables() {
            assert!(!table.key.is_empty(), "{} has no key", table.name);
            for k in table.key {
                let column = table.columns.iter().find(|c| c.name == *k);
                let column = column.unwrap_or_else(|| panic!("{}.{k} missing", table.name));
                assert!(!column.nullable, "{}.{k} must be NOT NULL", table.name);
            }
            for t in table.event_time.iter().chain(&table.dist_key) {
                assert!(
                    table.column_index(t).is_some(),
                    "{}.{t} missing",
                    table.name
                );
            }
        }
    }

    #[test]
    fn migration_versions_increase() {
        let versions: Vec<_> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
