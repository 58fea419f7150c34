//! SQL text for each backend, generated from table descriptions. No other module writes SQL.

use crate::schema::{Column, ColumnType, Table, MIGRATIONS_TABLE, RUNS, STATE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    DuckDb,
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
    pub fn column_type(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (_, ColumnType::BigInt) => "BIGINT",
            (_, ColumnType::Integer) => "INTEGER",
            (_, ColumnType::Boolean) => "BOOLEAN",
            (Dialect::Postgres, ColumnType::Double) => "DOUBLE PRECISION",
            (Dialect::DuckDb, ColumnType::Double) => "DOUBLE",
            // Byte limits are enforced before storage (see prepare_row), identically for
            // every backend; PostgreSQL's VARCHAR(n) would count characters instead.
            (Dialect::Postgres, ColumnType::Text(_)) => "TEXT",
            (Dialect::DuckDb, ColumnType::Text(_)) => "VARCHAR",
            (_, ColumnType::Timestamp) => "TIMESTAMPTZ",
            (Dialect::Postgres, ColumnType::Json) => "JSONB",
            (Dialect::DuckDb, ColumnType::Json) => "JSON",
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
    /// PostgreSQL (DuckDB scans are fast and its indexes slow loading down).
    pub fn create_table(self, schema: &str, table: &Table) -> Vec<String> {
        let columns = table
            .columns
            .iter()
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
            "CREATE TABLE IF NOT EXISTS {} ({columns}, PRIMARY KEY ({}))",
            qualified(schema, table.name),
            key_list(table)
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

    /// A session-local stage with the target's columns, dropped at commit (PostgreSQL).
    pub fn create_stage(self, schema: &str, table: &Table, stage: &str) -> String {
        format!(
            "CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP",
            quote(stage),
            qualified(schema, table.name)
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
            Dialect::Postgres => {
                format!("CAST(EXTRACT(EPOCH FROM {expr}) * 1000000 AS BIGINT)")
            }
            Dialect::DuckDb => format!("epoch_us({expr})"),
        }
    }

    /// cursor (text), source_time and updated_at (epoch micros) of one stream.
    pub fn select_state(self, schema: &str) -> String {
        format!(
            "SELECT CAST(cursor AS TEXT), {}, {} FROM {} WHERE source = $1 AND stream = $2 AND scope = $3",
            self.epoch_micros("source_time"),
            self.epoch_micros("updated_at"),
            qualified(schema, STATE.name)
        )
    }

    /// One row per stream: its state joined to its latest run.
    pub fn status(self, schema: &str) -> String {
        let state = qualified(schema, STATE.name);
        let runs = qualified(schema, RUNS.name);
        format!(
            "WITH streams AS (SELECT source, stream, scope FROM {state} UNION SELECT source, stream, scope FROM {runs}), \
             latest AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY source, stream, scope ORDER BY started_at DESC, updated_at DESC) AS rn FROM {runs}) \
             SELECT k.source, k.stream, k.scope, CAST(s.cursor AS TEXT), {}, {}, \
             r.run_id, {}, {}, r.status, r.rows_written, r.error \
             FROM streams k \
             LEFT JOIN {state} s ON s.source = k.source AND s.stream = k.stream AND s.scope = k.scope \
             LEFT JOIN latest r ON r.source = k.source AND r.stream = k.stream AND r.scope = k.scope AND r.rn = 1 \
             ORDER BY k.source, k.stream, k.scope",
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
            .create_table("h", &ROLLBAR_OCCURRENCES)
            .join(";");
        assert!(ddl.contains("\"data\" JSON") && !ddl.contains("INDEX"));
        let ddl = Dialect::Postgres
            .create_table("h", &ROLLBAR_OCCURRENCES)
            .join(";");
        assert!(ddl.contains("\"data\" JSONB") && ddl.contains("CREATE INDEX IF NOT EXISTS"));
    }
}
