//! The warehouse's tables and the versioned migrations that create them.
//!
//! Tables are described once, as data, one module per source (`rollbar`, `circleci`,
//! `heroku`) and one for the engine's own tables; each backend's dialect turns a
//! description into DDL and DML. Descriptions are append-only: a released column is never
//! changed in place; a change is a new [`Migration`] step.
//!
//! The migrations stay one ordered list for every source: a warehouse has one history,
//! and every function migrates the whole schema because the analyst views join the
//! sources' tables.

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

mod circleci;
mod engine;
mod heroku;
mod rollbar;

pub use circleci::*;
pub use engine::*;
pub use heroku::*;
pub use rollbar::*;

/// Longest VARCHAR Redshift allows; the cap for free text everywhere.
pub const MAX_TEXT_BYTES: u32 = 65_535;

/// Applied migrations (version, name, applied_at); created by the backend itself.
pub const MIGRATIONS_TABLE: &str = "_heimdallr_migrations";

/// The analyst views (their SQL is in `warehouse::views`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Per item, environment and UTC day: occurrences and distinct affected people.
    ItemDailyImpact,
    /// Per person and item: first and last seen, occurrences.
    PersonExposure,
    /// Deploys only, one row per environment and deploy: Heroku releases, Rollbar deploy
    /// records, and CircleCI pipelines where the environment says they deploy.
    Deploys,
    /// Per item: the deploy of its own environment that most likely brought it in (by the
    /// code_version of its first occurrence, else the last one before it).
    SuspectDeploy,
    /// Per Heroku release: new and reactivated items and affected people after it, in its
    /// environment.
    ReleaseImpact,
    /// Per item, all time: people, occurrences, first and last seen, status, level.
    ItemImpact,
    /// Per item and code version: first and last seen, occurrences, people, new or not.
    ItemVersions,
    /// Which Heroku app runs which Rollbar environment: the setting's, and where it says
    /// nothing, what the shas tell (`origin` = `setting` or `inferred`).
    EnvironmentMap,
    /// One row per open error or critical item, ranked: what to fix first (users lost
    /// when the activity table is set, people hit otherwise), with its trend, suspect
    /// deploy and Rollbar link.
    FixNext,
}

impl View {
    /// Every view, each after the views it reads (the order they are created in).
    pub const ALL: [View; 9] = [
        View::ItemDailyImpact,
        View::PersonExposure,
        View::EnvironmentMap,
        View::Deploys,
        View::SuspectDeploy,
        View::ReleaseImpact,
        View::ItemImpact,
        View::ItemVersions,
        View::FixNext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::ItemDailyImpact => "rollbar_item_daily_impact",
            View::PersonExposure => "rollbar_person_exposure",
            View::Deploys => "deploys",
            View::SuspectDeploy => "rollbar_item_suspect_deploy",
            View::ReleaseImpact => "release_impact",
            View::ItemImpact => "rollbar_item_impact",
            View::ItemVersions => "rollbar_item_versions",
            View::EnvironmentMap => "heimdallr_environment_map",
            View::FixNext => "fix_next",
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
    /// Dropped before a redefinition that changes its columns (which `CREATE OR REPLACE`
    /// cannot do on PostgreSQL or Redshift); views that depend on it are dropped first.
    DropView(View),
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
    Migration {
        version: 7,
        name: "stream heartbeats",
        steps: &[Step::AddColumns(&STATE)],
    },
    Migration {
        version: 8,
        name: "rollbar deploys",
        steps: &[Step::CreateTable(&ROLLBAR_DEPLOYS)],
    },
    Migration {
        version: 9,
        name: "environments and per-environment analyst views",
        steps: &[
            Step::CreateTable(&ENVIRONMENTS),
            // Dependents first: the suspect deploy reads the deploys view.
            Step::DropView(View::SuspectDeploy),
            Step::DropView(View::Deploys),
            Step::DropView(View::ReleaseImpact),
            Step::DropView(View::PersonExposure),
            Step::DropView(View::ItemDailyImpact),
            Step::CreateView(View::ItemDailyImpact),
            Step::CreateView(View::PersonExposure),
            Step::CreateView(View::EnvironmentMap),
            Step::CreateView(View::Deploys),
            Step::CreateView(View::SuspectDeploy),
            Step::CreateView(View::ReleaseImpact),
            Step::CreateView(View::ItemImpact),
            Step::CreateView(View::ItemVersions),
        ],
    },
    Migration {
        version: 10,
        name: "analyst views without correlated subqueries",
        // Redshift refuses some correlated subqueries (the Database Developer Guide,
        // "Correlated subqueries"): the environment map and the deploys now use
        // anti-joins. Every view is re-created after it (`warehouse::view_statements`).
        steps: &[
            Step::CreateView(View::EnvironmentMap),
            Step::CreateView(View::Deploys),
        ],
    },
    Migration {
        version: 11,
        name: "fix next list, Heroku pipeline stages, deploy actors and commit ranges, regressions' suspect deploys",
        steps: &[
            Step::AddColumns(&HEROKU_APPS),
            Step::CreateTable(&RETENTION_ESTIMATES),
            Step::CreateView(View::EnvironmentMap),
            Step::CreateView(View::Deploys),
            Step::CreateView(View::SuspectDeploy),
            Step::CreateView(View::FixNext),
        ],
    },
];

/// Every table a migration creates, for status and docs.
pub fn all_tables() -> impl Iterator<Item = &'static Table> {
    MIGRATIONS.iter().flat_map(|m| {
        m.steps.iter().filter_map(|step| match step {
            Step::CreateTable(table) => Some(*table),
            Step::AddColumns(_) | Step::CreateView(_) | Step::DropView(_) => None,
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
