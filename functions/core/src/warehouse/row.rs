//! The row model: values, rows, the rows of one table, and a batch of them; and the
//! checks that make a row storable on every backend before any SQL is written.

use crate::json::JsonText;
use crate::schema::{ColumnType, Table};
use chrono::{DateTime, Utc};

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    BigInt(i64),
    Integer(i32),
    Bool(bool),
    Double(f64),
    Text(String),
    Timestamp(DateTime<Utc>),
    /// A whole document, as storable text.
    Json(JsonText),
}

impl Value {
    pub fn text(value: Option<impl Into<String>>) -> Self {
        value.map_or(Value::Null, |v| Value::Text(v.into()))
    }
    /// A document from a parsed value.
    pub fn json(value: &serde_json::Value) -> Self {
        Value::Json(JsonText::from_value(value))
    }
    pub fn bigint(value: Option<i64>) -> Self {
        value.map_or(Value::Null, Value::BigInt)
    }
    pub fn timestamp(value: Option<DateTime<Utc>>) -> Self {
        value.map_or(Value::Null, Value::Timestamp)
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    fn fits(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Value::Null, _)
                | (Value::BigInt(_), ColumnType::BigInt)
                | (Value::Integer(_), ColumnType::Integer)
                | (Value::Bool(_), ColumnType::Boolean)
                | (Value::Double(_), ColumnType::Double)
                | (Value::Text(_), ColumnType::Text(_))
                | (Value::Timestamp(_), ColumnType::Timestamp)
                | (Value::Json(_), ColumnType::Json)
        )
    }
    /// The value as key text, for reject records and de-duplication.
    pub fn key_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::BigInt(v) => v.to_string(),
            Value::Integer(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Double(v) => v.to_string(),
            Value::Text(v) => v.clone(),
            Value::Timestamp(v) => v.to_rfc3339(),
            Value::Json(v) => v.as_str().to_string(),
        }
    }
}

/// One row, its values in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Orders rows by their key (the columns at `key_indexes`, see [`Table::key_indexes`])
    /// as SQL orders them (numbers as numbers), so that writers lock keys in the same order.
    pub fn key_cmp(&self, other: &Row, key_indexes: &[usize]) -> std::cmp::Ordering {
        key_indexes
            .iter()
            .map(|&i| match (self.0.get(i), other.0.get(i)) {
                (Some(Value::BigInt(a)), Some(Value::BigInt(b))) => a.cmp(b),
                (Some(Value::Integer(a)), Some(Value::Integer(b))) => a.cmp(b),
                (Some(Value::Text(a)), Some(Value::Text(b))) => a.cmp(b),
                (Some(Value::Timestamp(a)), Some(Value::Timestamp(b))) => a.cmp(b),
                (a, b) => a.map(Value::key_text).cmp(&b.map(Value::key_text)),
            })
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    /// About what the row weighs in memory, in bytes: its text and documents, plus a
    /// word per value. What byte-bounded batches count.
    pub fn weight(&self) -> usize {
        self.0
            .iter()
            .map(|value| {
                16 + match value {
                    Value::Text(text) => text.len(),
                    Value::Json(document) => document.as_str().len(),
                    _ => 0,
                }
            })
            .sum()
    }

    pub fn key_text(&self, table: &Table) -> String {
        table
            .key_indexes()
            .into_iter()
            .map(|i| self.0.get(i).map(Value::key_text).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Makes a row storable on every backend, or says why it cannot be stored.
/// Text is cut to its column's byte limit at a UTF-8 boundary; U+0000 is replaced (documents
/// are storable by construction, see [`JsonText`]).
pub fn prepare_row(table: &Table, row: Row) -> Result<Row, String> {
    check_row(table, &row)?;
    Ok(normalize_row(table, row))
}

/// Why a row cannot be stored in `table`, if it cannot.
pub fn check_row(table: &Table, row: &Row) -> Result<(), String> {
    if row.0.len() != table.columns.len() {
        return Err(format!(
            "{} values for {} columns of {}",
            row.0.len(),
            table.columns.len(),
            table.name
        ));
    }
    for (value, column) in row.0.iter().zip(table.columns) {
        if !value.fits(column.ty) {
            return Err(format!(
                "column {}: {:?} does not fit {:?}",
                column.name, value, column.ty
            ));
        }
        if value.is_null() && !column.nullable {
            return Err(format!(
                "column {} is part of the key and is missing",
                column.name
            ));
        }
        if let Value::Double(v) = value {
            if !v.is_finite() {
                return Err(format!(
                    "column {}: {v} is not a finite number",
                    column.name
                ));
            }
        }
    }
    Ok(())
}

/// Cuts text to its column's limit and replaces U+0000 in it, in place. The row must pass
/// [`check_row`].
pub fn normalize_row(table: &Table, mut row: Row) -> Row {
    for (value, column) in row.0.iter_mut().zip(table.columns) {
        if let (Value::Text(text), ColumnType::Text(max)) = (value, column.ty) {
            if text.contains('\0') {
                *text = crate::text::without_nul(text).into_owned();
            }
            let cut = crate::text::truncate_utf8(text, max as usize).len();
            text.truncate(cut);
        }
    }
    row
}

impl Row {
    /// The row as a JSON object of column name to value (kept with a reject).
    pub fn to_json(&self, table: &Table) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (i, value) in self.0.iter().enumerate() {
            let name = table
                .columns
                .get(i)
                .map_or_else(|| format!("column_{i}"), |c| c.name.to_string());
            let json = match value {
                Value::Null => serde_json::Value::Null,
                Value::BigInt(v) => (*v).into(),
                Value::Integer(v) => (*v).into(),
                Value::Bool(v) => (*v).into(),
                Value::Double(v) => serde_json::Number::from_f64(*v)
                    .map_or_else(|| v.to_string().into(), serde_json::Value::Number),
                Value::Text(v) => v.clone().into(),
                Value::Timestamp(v) => v.to_rfc3339().into(),
                Value::Json(v) => v.to_value(),
            };
            object.insert(name, json);
        }
        serde_json::Value::Object(object)
    }
}

/// Rows for one table.
#[derive(Debug, Clone)]
pub struct TableRows {
    pub table: &'static Table,
    pub rows: Vec<Row>,
}

impl TableRows {
    /// Keeps the last row for each key: a batch never touches a key twice.
    pub fn dedup_by_key(&mut self) {
        let keys = self.table.key_indexes();
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<Row> = Vec::with_capacity(self.rows.len());
        for row in std::mem::take(&mut self.rows).into_iter().rev() {
            let key: Vec<String> = keys.iter().map(|&i| row.0[i].key_text()).collect();
            if seen.insert(key) {
                kept.push(row);
            }
        }
        kept.reverse();
        self.rows = kept;
    }
}

/// A stream's heartbeat: it reached its source's head at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub source: String,
    pub stream: String,
    pub scope: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What one transaction writes: rows of source tables, the stream state, the run record,
/// and heartbeats (applied last, as narrow updates of the state rows: they move
/// `caught_up_at` forward and leave the cursor to whoever committed it).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub writes: Vec<TableRows>,
    /// Tables whose rows the batch replaces whole (emptied first, in the transaction).
    pub replace: Vec<&'static Table>,
    /// (Re)defines the views over the company's activity table (`schema.table`), first in
    /// the transaction: `Dialect::activity_views`.
    pub activity_views: Option<String>,
    /// Replaces `heimdallr_retention_estimates` with what `rollbar_item_retention_impact`
    /// says now (after the activity views, in the same transaction).
    pub refresh_estimates: bool,
    pub heartbeats: Vec<Heartbeat>,
    /// A backend that can cancel a running statement (Redshift) cancels it after this
    /// instant and reports the batch as not applied.
    pub cancel_after: Option<std::time::Instant>,
}

impl Batch {
    pub fn push(&mut self, table: &'static Table, row: Row) {
        debug_assert_eq!(
            row.0.len(),
            table.columns.len(),
            "a {} row has one value per column",
            table.name
        );
        match self
            .writes
            .iter_mut()
            .find(|w| std::ptr::eq(w.table, table))
        {
            Some(write) => write.rows.push(row),
            None => self.writes.push(TableRows {
                table,
                rows: vec![row],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ROLLBAR_ITEMS;

    fn item_row(id: Value, title: Value) -> Row {
        let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
        values[0] = id;
        values[ROLLBAR_ITEMS.column_index("title").unwrap()] = title;
        Row(values)
    }

    #[test]
    fn rows_are_cut_to_fit_or_rejected_with_a_reason() {
        let long = "é".repeat(3000); // 6000 bytes > 4096
        let row = prepare_row(
            &ROLLBAR_ITEMS,
            item_row(Value::BigInt(1), Value::Text(long)),
        )
        .unwrap();
        let Value::Text(title) = &row.0[ROLLBAR_ITEMS.column_index("title").unwrap()] else {
            panic!("title is text")
        };
        assert_eq!(title.len(), 4096);

        let err = prepare_row(&ROLLBAR_ITEMS, item_row(Value::Null, Value::Null)).unwrap_err();
        assert!(err.contains("column id"), "{err}");
        let err = prepare_row(
            &ROLLBAR_ITEMS,
            item_row(Value::Text("x".into()), Value::Null),
        )
        .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(prepare_row(&ROLLBAR_ITEMS, Row(vec![])).is_err());
    }

    #[test]
    fn dedup_keeps_the_last_row_per_key() {
        let mut rows = TableRows {
            table: &ROLLBAR_ITEMS,
            rows: vec![
                item_row(Value::BigInt(1), Value::Text("old".into())),
                item_row(Value::BigInt(2), Value::Text("two".into())),
                item_row(Value::BigInt(1), Value::Text("new".into())),
            ],
        };
        rows.dedup_by_key();
        let titles: Vec<_> = rows.rows.iter().map(|r| r.0[6].key_text()).collect();
        assert_eq!(titles, vec!["two", "new"]);
    }
}
