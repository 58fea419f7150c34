//! SQL text for each backend, generated from table descriptions. No other module writes SQL.

use super::Value;
use crate::schema::{Column, ColumnType, Table, MIGRATIONS_TABLE, RUNS, STATE};
use chrono::{DateTime, Utc};

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

fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| quote(c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_list(table: &Table) -> String {
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
                redshift_table_attributes(table)
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

    /// A session-local stage with the target's columns (PostgreSQL); it lives as long as the
    /// session and is emptied at every commit.
    pub fn create_session_stage(self, schema: &str, table: &Table, stage: &str) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS",
            quote(stage),
            qualified(schema, table.name)
        )
    }

    /// Upserts one row given as parameters `$1..$n`, in column order.
    pub fn upsert_row(self, schema: &str, table: &Table) -> String {
        let placeholders: Vec<String> =
            (1..=table.columns.len()).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({}) {}",
            qualified(schema, table.name),
            column_list(table.columns),
            placeholders.join(", "),
            self.on_conflict_update(table)
        )
    }

    /// COPY straight into the target table (PostgreSQL, for batches of new keys only).
    pub fn copy_into_table(self, schema: &str, table: &Table) -> String {
        format!(
            "COPY {} ({}) FROM STDIN BINARY",
            qualified(schema, table.name),
            column_list(table.columns)
        )
    }

    pub fn copy_into_stage(self, table: &Table, stage: &str) -> String {
        format!(
            "COPY {} ({}) FROM STDIN BINARY",
            quote(stage),
            column_list(table.columns)
        )
    }

    fn on_conflict_update(self, table: &Table) -> String {
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

    /// Merges a de-duplicated stage into the target on its key. Rows go in key order so
    /// that concurrent writers lock keys in the same order and cannot deadlock.
    pub fn merge_from_stage(self, schema: &str, table: &Table, stage: &str) -> String {
        let columns = column_list(table.columns);
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {} ORDER BY {} {}",
            qualified(schema, table.name),
            quote(stage),
            key_list(table),
            self.on_conflict_update(table)
        )
    }

    /// DuckDB's stage: a plain table the appender fills, timestamps and JSON as text (the
    /// appender binds values, it does not cast them).
    pub fn create_text_stage(self, schema: &str, table: &Table, stage: &str) -> String {
        let columns = table
            .columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    ColumnType::Timestamp | ColumnType::Json => {
                        self.column_type(ColumnType::Text(0))
                    }
                    other => self.column_type(other),
                };
                format!("{} {ty}", quote(c.name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE OR REPLACE TABLE {} ({columns})",
            qualified(schema, stage)
        )
    }

    /// Merges a text stage into the target, casting timestamps and JSON on the way.
    pub fn merge_from_text_stage(self, schema: &str, table: &Table, stage: &str) -> String {
        let select: Vec<String> = table
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Timestamp => format!("CAST({} AS TIMESTAMPTZ)", quote(c.name)),
                ColumnType::Json => format!("CAST({} AS JSON)", quote(c.name)),
                _ => quote(c.name),
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY {} {}",
            qualified(schema, table.name),
            column_list(table.columns),
            select.join(", "),
            qualified(schema, stage),
            key_list(table),
            self.on_conflict_update(table)
        )
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

    /// cursor (text), source_time and updated_at (epoch micros) of one stream. Parameters:
    /// source, stream, scope.
    pub fn select_state(self, schema: &str) -> String {
        format!(
            "SELECT {}, {}, {} FROM {} WHERE source = {} AND stream = {} AND scope = {}",
            self.json_text("cursor"),
            self.epoch_micros("source_time"),
            self.epoch_micros("updated_at"),
            qualified(schema, STATE.name),
            self.parameter(1, "source"),
            self.parameter(2, "stream"),
            self.parameter(3, "scope"),
        )
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

/// Redshift's table attributes: rows distributed on the table's join column (or left to
/// Redshift), sorted by event time first so that time-bounded queries skip blocks.
fn redshift_table_attributes(table: &Table) -> String {
    let distribution = match table.dist_key {
        Some(column) => format!(" DISTSTYLE KEY DISTKEY ({})", quote(column)),
        None => " DISTSTYLE AUTO".to_string(),
    };
    let mut sort: Vec<String> = table.event_time.iter().map(|c| quote(c)).collect();
    sort.extend(
        table
            .key
            .iter()
            .filter(|k| Some(**k) != table.event_time)
            .map(|k| quote(k)),
    );
    format!("{distribution} COMPOUND SORTKEY ({})", sort.join(", "))
}

/// The column the Redshift stage orders duplicate keys by: the later row wins.
pub const STAGE_SEQUENCE_COLUMN: &str = "_heimdallr_seq";

/// Redshift statements of one batch, as text with every value inlined.
impl Dialect {
    /// A value as a Redshift literal. Redshift treats a backslash in a string literal as
    /// an escape, so backslashes are doubled along with single quotes.
    pub fn redshift_literal(value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            Value::BigInt(v) => v.to_string(),
            Value::Integer(v) => v.to_string(),
            Value::Bool(v) => if *v { "TRUE" } else { "FALSE" }.into(),
            Value::Double(v) => format!("{v:e}"),
            Value::Text(v) => redshift_string(v),
            Value::Timestamp(v) => redshift_timestamp(v),
            Value::Json(v) => format!("JSON_PARSE({})", redshift_string(v.as_str())),
        }
    }

    /// `(v1, v2, ..)` for one row, with the stage's sequence number when given.
    pub fn redshift_tuple(values: &[Value], sequence: Option<usize>) -> String {
        let mut tuple = String::from("(");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                tuple.push_str(", ");
            }
            tuple.push_str(&Self::redshift_literal(value));
        }
        if let Some(sequence) = sequence {
            tuple.push_str(&format!(", {sequence}"));
        }
        tuple.push(')');
        tuple
    }

    /// The start of a multi-row insert into the target (`stage` None) or its stage; the
    /// tuples follow, separated by `, `.
    pub fn redshift_insert_prefix(schema: &str, table: &Table, stage: Option<&str>) -> String {
        match stage {
            None => format!(
                "INSERT INTO {} ({}) VALUES ",
                qualified(schema, table.name),
                column_list(table.columns)
            ),
            Some(stage) => format!(
                "INSERT INTO {} ({}, {}) VALUES ",
                quote(stage),
                column_list(table.columns),
                quote(STAGE_SEQUENCE_COLUMN)
            ),
        }
    }

    /// A session temp table with the target's columns and a sequence for de-duplication.
    pub fn redshift_create_stage(table: &Table, stage: &str) -> String {
        let columns = table
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(c.name), Dialect::Redshift.column_type(c.ty)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE TEMP TABLE {} ({columns}, {} INTEGER NOT NULL)",
            quote(stage),
            quote(STAGE_SEQUENCE_COLUMN)
        )
    }

    /// Deletes the target rows the stage replaces.
    pub fn redshift_delete_staged(schema: &str, table: &Table, stage: &str) -> String {
        let target = qualified(schema, table.name);
        let matches = table
            .key
            .iter()
            .map(|k| format!("{target}.{} = {}.{}", quote(k), quote(stage), quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "DELETE FROM {target} USING {} WHERE {matches}",
            quote(stage)
        )
    }

    /// Inserts the stage into the target, keeping the last staged row of each key.
    pub fn redshift_insert_staged(schema: &str, table: &Table, stage: &str) -> String {
        let columns = column_list(table.columns);
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {} DESC) AS heimdallr_rank FROM {}) AS staged WHERE heimdallr_rank = 1",
            qualified(schema, table.name),
            key_list(table),
            quote(STAGE_SEQUENCE_COLUMN),
            quote(stage)
        )
    }

    pub fn redshift_drop_stage(stage: &str) -> String {
        format!("DROP TABLE {}", quote(stage))
    }

    /// Deletes the target rows with these keys (a batch small enough to need no stage).
    /// `keys` holds each row's key values in the table's key order.
    pub fn redshift_delete_keys(schema: &str, table: &Table, keys: &[Vec<&Value>]) -> String {
        let condition = if table.key.len() == 1 {
            let list = keys
                .iter()
                .filter_map(|k| k.first().map(|v| Self::redshift_literal(v)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{} IN ({list})", quote(table.key[0]))
        } else {
            keys.iter()
                .map(|values| {
                    let parts = table
                        .key
                        .iter()
                        .zip(values)
                        .map(|(k, v)| format!("{} = {}", quote(k), Self::redshift_literal(v)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    format!("({parts})")
                })
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        format!(
            "DELETE FROM {} WHERE {condition}",
            qualified(schema, table.name)
        )
    }

    /// Serialises migrations across writers for the rest of the transaction.
    pub fn redshift_lock(schema: &str, table: &str) -> String {
        format!("LOCK {}", qualified(schema, table))
    }

    /// Records a migration unless a concurrent writer already did.
    pub fn redshift_record_migration(
        schema: &str,
        version: i64,
        name: &str,
        at: &DateTime<Utc>,
    ) -> String {
        let table = qualified(schema, MIGRATIONS_TABLE);
        format!(
            "INSERT INTO {table} (version, name, applied_at) SELECT {version}, {}, {} WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE version = {version})",
            redshift_string(name),
            redshift_timestamp(at)
        )
    }
}

fn redshift_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('\'');
    for c in text.chars() {
        match c {
            '\'' => literal.push_str("''"),
            '\\' => literal.push_str("\\\\"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}

fn redshift_timestamp(at: &DateTime<Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
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
    fn merge_updates_every_non_key_column_in_key_order() {
        let sql = Dialect::Postgres.merge_from_stage("h", &ROLLBAR_OCCURRENCES, "stage");
        assert!(sql.starts_with("INSERT INTO \"h\".\"rollbar_occurrences\""));
        assert!(sql.contains("ORDER BY \"id\" ON CONFLICT (\"id\") DO UPDATE SET"));
        assert!(sql.contains("\"data\" = EXCLUDED.\"data\""));
        assert!(!sql.contains("\"id\" = EXCLUDED"));
    }

    #[test]
    fn duckdb_stage_merge_casts_timestamps_and_json() {
        let stage = Dialect::DuckDb.create_text_stage("h", &ROLLBAR_OCCURRENCES, "_stage");
        assert!(stage.contains("\"occurred_at\" VARCHAR") && stage.contains("\"data\" VARCHAR"));
        let sql = Dialect::DuckDb.merge_from_text_stage("h", &ROLLBAR_OCCURRENCES, "_stage");
        assert!(sql.contains("CAST(\"occurred_at\" AS TIMESTAMPTZ)"));
        assert!(sql.contains("CAST(\"data\" AS JSON)"));
        assert!(sql.contains("ORDER BY \"id\" ON CONFLICT (\"id\") DO UPDATE"));
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
