//! The SQL every backend shares, generated from table descriptions: DDL, migrations,
//! state and status reads. SQL one backend alone runs lives with that backend (`postgres`,
//! `duck`, `redshift::sql`), the analyst views in `views`; nothing outside `warehouse`
//! writes SQL.

use crate::schema::{Column, ColumnType, Table, MIGRATIONS_TABLE, RUNS, STATE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    DuckDb,
    /// Amazon Redshift through the Data API: no enforced keys, no ON CONFLICT, SUPER for
    /// JSON, VARCHAR lengths in bytes, and values inlined as literals (a batch of statements
    /// takes no parameters).
    Redshift,
}

/// Schema names are interpolated into SQL, so they must be plain identifiers.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && name.len() <= 63 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err("a schema name is letters, digits and underscores, 63 at most, not starting with a digit".into())
    }
}

/// Quotes an identifier, doubling embedded quotes.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

pub(super) fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| quote(c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn key_list(table: &Table) -> String {
    table
        .key
        .iter()
        .map(|k| quote(k))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Dialect {
    pub fn column_type(self, ty: ColumnType) -> String {
        match (self, ty) {
            (_, ColumnType::BigInt) => "BIGINT".into(),
            (_, ColumnType::Integer) => "INTEGER".into(),
            (_, ColumnType::Boolean) => "BOOLEAN".into(),
            (Dialect::Postgres | Dialect::Redshift, ColumnType::Double) => {
                "DOUBLE PRECISION".into()
            }
            (Dialect::DuckDb, ColumnType::Double) => "DOUBLE".into(),
            // Byte limits are enforced before storage (see prepare_row), identically for
            // every backend; PostgreSQL's VARCHAR(n) would count characters instead.
            (Dialect::Postgres, ColumnType::Text(_)) => "TEXT".into(),
            (Dialect::DuckDb, ColumnType::Text(_)) => "VARCHAR".into(),
            // Redshift counts VARCHAR lengths in bytes, as prepare_row does.
            (Dialect::Redshift, ColumnType::Text(max)) => {
                format!("VARCHAR({})", max.clamp(1, crate::schema::MAX_TEXT_BYTES))
            }
            (_, ColumnType::Timestamp) => "TIMESTAMPTZ".into(),
            (Dialect::Postgres, ColumnType::Json) => "JSONB".into(),
            (Dialect::DuckDb, ColumnType::Json) => "JSON".into(),
            (Dialect::Redshift, ColumnType::Json) => "SUPER".into(),
        }
    }

    pub fn create_schema(self, schema: &str) -> String {
        format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema))
    }

    pub fn create_migrations_table(self, schema: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (version BIGINT PRIMARY KEY, name {} NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
            qualified(schema, MIGRATIONS_TABLE),
            self.column_type(ColumnType::Text(255)),
        )
    }

    pub fn select_migrations(self, schema: &str) -> String {
        format!(
            "SELECT version FROM {} ORDER BY version",
            qualified(schema, MIGRATIONS_TABLE)
        )
    }

    /// Records `version` as applied, with its values written out (for a batch of
    /// statements without parameters); `name` is one of Heimdallr's own.
    pub fn insert_migration_literal(self, schema: &str, version: i64, name: &str) -> String {
        format!(
            "INSERT INTO {} (version, name, applied_at) VALUES ({version}, '{}', CURRENT_TIMESTAMP)",
            qualified(schema, MIGRATIONS_TABLE),
            name.replace('\'', "''")
        )
    }

    /// Forgets that `version` was applied (the views' pending marker).
    pub fn delete_migration_literal(self, schema: &str, version: i64) -> String {
        format!(
            "DELETE FROM {} WHERE version = {version}",
            qualified(schema, MIGRATIONS_TABLE)
        )
    }

    pub fn insert_migration(self, schema: &str) -> String {
        format!(
            "INSERT INTO {} (version, name, applied_at) VALUES ($1, $2, CURRENT_TIMESTAMP)",
            qualified(schema, MIGRATIONS_TABLE)
        )
    }

    /// DDL for one table: the table with its primary key, plus an event-time index on
    /// PostgreSQL (DuckDB scans are fast and its indexes slow loading down), and on
    /// Redshift its distribution and sort keys (the key is informational there).
    /// `version` is the creating migration's: columns added later are left to their own
    /// [`Dialect::add_columns`] step, so that every install has the same columns in the
    /// same order.
    pub fn create_table(self, schema: &str, table: &Table, version: i64) -> Vec<String> {
        let columns = table
            .columns
            .iter()
            .filter(|c| c.added_in <= version)
            .map(|c| {
                format!(
                    "{} {}{}",
                    quote(c.name),
                    self.column_type(c.ty),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {} ({columns}, PRIMARY KEY ({})){}",
            qualified(schema, table.name),
            key_list(table),
            if self == Dialect::Redshift {
                super::redshift::sql::table_attributes(table)
            } else {
                String::new()
            }
        )];
        if let (Dialect::Postgres, Some(time)) = (self, table.event_time) {
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                quote(&format!("{}_{}_idx", table.name, time)),
                qualified(schema, table.name),
                quote(time)
            ));
        }
        statements
    }

    /// The columns migration `version` adds to `table`. PostgreSQL and DuckDB skip a column
    /// that exists; Redshift has no `IF NOT EXISTS` here, and its migrator treats a
    /// migration another migrator recorded meanwhile as applied.
    pub fn add_columns(self, schema: &str, table: &Table, version: i64) -> Vec<String> {
        table
            .columns
            .iter()
            .filter(|c| c.added_in == version)
            .map(|c| {
                format!(
                    "ALTER TABLE {} ADD COLUMN {}{} {}",
                    qualified(schema, table.name),
                    if self == Dialect::Redshift {
                        ""
                    } else {
                        "IF NOT EXISTS "
                    },
                    quote(c.name),
                    self.column_type(c.ty)
                )
            })
            .collect()
    }

    /// `ON CONFLICT (key) DO UPDATE SET` every other column: the merge PostgreSQL and
    /// DuckDB share (Redshift has no ON CONFLICT; it deletes then inserts).
    pub(super) fn on_conflict_update(self, table: &Table) -> String {
        let updates: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !table.key.contains(&c.name))
            .map(|c| format!("{} = EXCLUDED.{}", quote(c.name), quote(c.name)))
            .collect();
        if updates.is_empty() {
            format!("ON CONFLICT ({}) DO NOTHING", key_list(table))
        } else {
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                key_list(table),
                updates.join(", ")
            )
        }
    }

    /// Empties a table whose rows a batch replaces whole.
    pub fn delete_all(self, schema: &str, table: &Table) -> String {
        format!("DELETE FROM {}", qualified(schema, table.name))
    }

    pub fn drop_table(self, schema: &str, table: &str) -> String {
        format!("DROP TABLE IF EXISTS {}", qualified(schema, table))
    }

    /// Timestamps read back as microseconds since the epoch, the same on every backend.
    fn epoch_micros(self, expr: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("CAST(EXTRACT(EPOCH FROM {expr}) * 1000000 AS BIGINT)")
            }
            Dialect::DuckDb => format!("epoch_us({expr})"),
        }
    }

    /// A JSON column as its JSON text.
    fn json_text(self, expr: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!("CAST({expr} AS TEXT)"),
            Dialect::Redshift => format!("JSON_SERIALIZE({expr})"),
        }
    }

    /// The n-th (1-based) parameter of a read: `$n`, or a named `:param` on the Data API.
    fn parameter(self, n: usize, name: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!("${n}"),
            Dialect::Redshift => format!(":{name}"),
        }
    }

    /// Moves one stream's heartbeat forward, leaving the rest of its state as it is (an
    /// overlapping run may have committed a newer cursor). PostgreSQL and DuckDB only: the
    /// Data API takes no parameters in a transaction (`redshift::sql::update_heartbeat`).
    /// Parameters: caught_up_at, source, stream, scope.
    pub fn update_heartbeat(self, schema: &str) -> String {
        let at = match self {
            Dialect::DuckDb => "CAST($1 AS TIMESTAMPTZ)",
            Dialect::Postgres | Dialect::Redshift => "$1",
        };
        format!(
            "UPDATE {} SET caught_up_at = {at} WHERE source = $2 AND stream = $3 AND scope = $4 \
             AND (caught_up_at IS NULL OR caught_up_at < {at})",
            qualified(schema, STATE.name)
        )
    }

    /// cursor (text), source_time, updated_at and caught_up_at (epoch micros) of one
    /// stream, and how many of its runs started after its last finished one and never
    /// finished (a run record with no end: the process was killed). Parameters: source,
    /// stream, scope. The subqueries are not correlated (Redshift refuses some that are).
    pub fn select_state(self, schema: &str) -> String {
        let (source, stream, scope) = (
            self.parameter(1, "source"),
            self.parameter(2, "stream"),
            self.parameter(3, "scope"),
        );
        let runs = qualified(schema, RUNS.name);
        // Only the last two days of runs (the table grows by a run a minute, for ever): a
        // run killed longer ago no longer shrinks the budget.
        let recent = self.started_within_days(2);
        let this_stream = format!("source = {source} AND stream = {stream} AND scope = {scope}");
        let its_runs = format!("{this_stream} AND {recent}");
        let last_finished = format!(
            "(SELECT MAX(started_at) FROM {runs} WHERE {its_runs} AND finished_at IS NOT NULL)"
        );
        format!(
            "SELECT {}, {}, {}, {}, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM {runs} WHERE {its_runs} AND finished_at IS NULL \
             AND (started_at > {last_finished} OR {last_finished} IS NULL)) \
             FROM {} WHERE {this_stream}",
            self.json_text("cursor"),
            self.epoch_micros("source_time"),
            self.epoch_micros("updated_at"),
            self.epoch_micros("caught_up_at"),
            qualified(schema, STATE.name),
        )
    }

    /// stream, scope and the start (epoch micros) of each stream's latest run of the
    /// last 7 days that made a request: its last turn. Parameter: source.
    pub fn select_last_turns(self, schema: &str) -> String {
        format!(
            "SELECT stream, scope, {} FROM {} WHERE source = {} AND pages_fetched > 0 AND {} \
             GROUP BY stream, scope",
            self.epoch_micros("MAX(started_at)"),
            qualified(schema, RUNS.name),
            self.parameter(1, "source"),
            self.started_within_days(7),
        )
    }

    /// `started_at` in the last `days` days, written so that PostgreSQL can use the runs'
    /// time index.
    fn started_within_days(self, days: u32) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("started_at > {} - INTERVAL '{days} days'", self.now())
            }
            Dialect::DuckDb => format!(
                "epoch_us(started_at) > epoch_us(CURRENT_TIMESTAMP) - {}",
                u64::from(days) * 86_400_000_000
            ),
        }
    }

    /// How many of the tables `status` reads exist (2 once migrated). Parameter: schema.
    pub fn count_status_tables(self) -> String {
        format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables \
             WHERE table_schema = {} AND table_name IN ('{}', '{}')",
            self.parameter(1, "schema"),
            STATE.name,
            RUNS.name
        )
    }

    /// Whether the environment map view exists (1) or not (0). Parameter: schema.
    pub fn count_environment_map(self) -> String {
        self.count_view(crate::schema::View::EnvironmentMap)
    }

    /// 1 when the view exists in the schema (the first parameter), else 0.
    pub fn count_view(self, view: crate::schema::View) -> String {
        format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables \
             WHERE table_schema = {} AND table_name = '{}'",
            self.parameter(1, "schema"),
            view.name()
        )
    }

    /// The first `limit` rows of `fix_next` as text, in rank order, in the columns of
    /// [`super::FixNextRow`]: counts and users lost as whole numbers, times as UTC days.
    pub fn select_fix_next(self, schema: &str, limit: u32) -> String {
        let text = self.column_type(ColumnType::Text(4096));
        let whole = |c: &str| format!("CAST(CAST(ROUND({c}) AS BIGINT) AS {text})");
        let day = |c: &str| format!("CAST({} AS {text})", self.utc_day(c));
        let columns = [
            format!("CAST(rank AS {text})"),
            format!("CAST(item_id AS {text})"),
            "environment".into(),
            "title".into(),
            "level".into(),
            "trend".into(),
            format!("CAST(people_7d AS {text})"),
            format!("CAST(people_30d AS {text})"),
            format!("CAST(people_all AS {text})"),
            whole("users_lost_d7"),
            whole("users_lost_d7_low"),
            whole("users_lost_d7_high"),
            "estimate_note".into(),
            "suspect_source".into(),
            "suspect_target".into(),
            "suspect_sha".into(),
            day("suspect_deployed_at"),
            "suspect_actor".into(),
            day("first_seen_at"),
            day("last_seen_at"),
            "CASE WHEN reactivated THEN 'yes' ELSE 'no' END".into(),
            "reactivation_sha".into(),
            "rollbar_url".into(),
        ];
        format!(
            "SELECT {} FROM {} ORDER BY rank LIMIT {limit}",
            columns.join(", "),
            qualified(schema, crate::schema::View::FixNext.name())
        )
    }

    /// The environment map as text columns: app, project id, environment, origin, shared.
    pub fn select_environment_map(self, schema: &str) -> String {
        let text = self.column_type(ColumnType::Text(64));
        format!(
            "SELECT heroku_app, CAST(rollbar_project_id AS {text}), rollbar_environment, origin, \
             CAST(shared_versions AS {text}) FROM {} ORDER BY heroku_app, rollbar_project_id, rollbar_environment",
            qualified(schema, crate::schema::View::EnvironmentMap.name())
        )
    }

    /// One row per stream: its state joined to its latest run.
    pub fn status(self, schema: &str) -> String {
        let state = qualified(schema, STATE.name);
        let runs = qualified(schema, RUNS.name);
        format!(
            "WITH streams AS (SELECT source, stream, scope FROM {state} UNION SELECT source, stream, scope FROM {runs}), \
             latest AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY source, stream, scope ORDER BY started_at DESC, updated_at DESC) AS rn FROM {runs}) \
             SELECT k.source, k.stream, k.scope, {}, {}, {}, \
             r.run_id, {}, {}, r.status, r.rows_written, r.error \
             FROM streams k \
             LEFT JOIN {state} s ON s.source = k.source AND s.stream = k.stream AND s.scope = k.scope \
             LEFT JOIN latest r ON r.source = k.source AND r.stream = k.stream AND r.scope = k.scope AND r.rn = 1 \
             ORDER BY k.source, k.stream, k.scope",
            self.json_text("s.cursor"),
            self.epoch_micros("s.source_time"),
            self.epoch_micros("s.updated_at"),
            self.epoch_micros("r.started_at"),
            self.epoch_micros("r.finished_at"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ROLLBAR_OCCURRENCES;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert!(check_identifier("heimdallr").is_ok());
        assert!(check_identifier("_x1").is_ok());
        assert!(check_identifier("1x").is_err());
        assert!(check_identifier("a;drop").is_err());
        assert!(check_identifier("").is_err());
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn tables_get_json_types_and_indexes_per_backend() {
        let ddl = Dialect::DuckDb
            .create_table("h", &ROLLBAR_OCCURRENCES, 2)
            .join(";");
        assert!(ddl.contains("\"data\" JSON") && !ddl.contains("INDEX"));
        let ddl = Dialect::Postgres
            .create_table("h", &ROLLBAR_OCCURRENCES, 2)
            .join(";");
        assert!(ddl.contains("\"data\" JSONB") && ddl.contains("CREATE INDEX IF NOT EXISTS"));
    }
}
