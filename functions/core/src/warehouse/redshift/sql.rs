//! The SQL only Redshift runs: table attributes, literals (a Data API batch takes no
//! parameters, so every value is inlined), the stage that merges a large table, and the
//! migration lock. Plain text generation, built without the SDK.

use crate::schema::{Table, MIGRATIONS_TABLE};
use crate::warehouse::dialect::{column_list, key_list, qualified, quote, Dialect};
use crate::warehouse::Value;
use chrono::{DateTime, Utc};

/// Redshift's table attributes: rows distributed on the table's join column (or left to
/// Redshift), sorted by event time first so that time-bounded queries skip blocks.
pub(in crate::warehouse) fn table_attributes(table: &Table) -> String {
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

/// A value as a Redshift literal. Redshift treats a backslash in a string literal as
/// an escape, so backslashes are doubled along with single quotes.
pub fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::BigInt(v) => v.to_string(),
        Value::Integer(v) => v.to_string(),
        Value::Bool(v) => if *v { "TRUE" } else { "FALSE" }.into(),
        Value::Double(v) => format!("{v:e}"),
        Value::Text(v) => string_literal(v),
        Value::Timestamp(v) => timestamp_literal(v),
        Value::Json(v) => format!("JSON_PARSE({})", string_literal(v.as_str())),
    }
}

/// `(v1, v2, ..)` for one row, with the stage's sequence number when given.
pub fn tuple(values: &[Value], sequence: Option<usize>) -> String {
    let mut tuple = String::from("(");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            tuple.push_str(", ");
        }
        tuple.push_str(&literal(value));
    }
    if let Some(sequence) = sequence {
        tuple.push_str(&format!(", {sequence}"));
    }
    tuple.push(')');
    tuple
}

/// The start of a multi-row insert into the target (`stage` None) or its stage; the
/// tuples follow, separated by `, `.
pub fn insert_prefix(schema: &str, table: &Table, stage: Option<&str>) -> String {
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
pub fn create_stage(table: &Table, stage: &str) -> String {
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
pub fn delete_staged(schema: &str, table: &Table, stage: &str) -> String {
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
pub fn insert_staged(schema: &str, table: &Table, stage: &str) -> String {
    let columns = column_list(table.columns);
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {} DESC) AS heimdallr_rank FROM {}) AS staged WHERE heimdallr_rank = 1",
        qualified(schema, table.name),
        key_list(table),
        quote(STAGE_SEQUENCE_COLUMN),
        quote(stage)
    )
}

pub fn drop_stage(stage: &str) -> String {
    format!("DROP TABLE {}", quote(stage))
}

/// Deletes the target rows with these keys (a batch small enough to need no stage).
/// `keys` holds each row's key values in the table's key order.
pub fn delete_keys(schema: &str, table: &Table, keys: &[Vec<&Value>]) -> String {
    let condition = if table.key.len() == 1 {
        let list = keys
            .iter()
            .filter_map(|k| k.first().map(|v| literal(v)))
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
                    .map(|(k, v)| format!("{} = {}", quote(k), literal(v)))
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
pub fn lock(schema: &str, table: &str) -> String {
    format!("LOCK {}", qualified(schema, table))
}

/// Moves one stream's heartbeat forward, leaving its cursor as whoever committed it left it
/// (the narrow form of `Dialect::update_heartbeat`, with literals).
pub fn update_heartbeat(schema: &str, beat: &crate::warehouse::Heartbeat) -> String {
    let at = timestamp_literal(&beat.at);
    format!(
        "UPDATE {} SET caught_up_at = {at} WHERE source = {} AND stream = {} AND scope = {} \
         AND (caught_up_at IS NULL OR caught_up_at < {at})",
        qualified(schema, crate::schema::STATE.name),
        string_literal(&beat.source),
        string_literal(&beat.stream),
        string_literal(&beat.scope),
    )
}

/// Records a migration unless a concurrent writer already did.
pub fn record_migration(schema: &str, version: i64, name: &str, at: &DateTime<Utc>) -> String {
    let table = qualified(schema, MIGRATIONS_TABLE);
    format!(
        "INSERT INTO {table} (version, name, applied_at) SELECT {version}, {}, {} WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE version = {version})",
        string_literal(name),
        timestamp_literal(at)
    )
}

fn string_literal(text: &str) -> String {
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

fn timestamp_literal(at: &DateTime<Utc>) -> String {
    format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}
