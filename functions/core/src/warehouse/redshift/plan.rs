//! Turns a [`Batch`] into Data API transactions: each a list of at most
//! [`MAX_BATCH_STATEMENTS`] statements of at most [`MAX_STATEMENT_BYTES`] bytes, which one
//! `BatchExecuteStatement` runs as one transaction.
//!
//! A table whose rows fit one INSERT is written directly (delete its keys, insert). A
//! larger one goes through a temp stage: create, multi-row inserts, delete the keys the
//! stage replaces, insert the last staged row per key, drop the stage.
//!
//! With a staging location ([`Bulk`]), a table with many rows in the batch (`bulk_rows`) or
//! a row too large to go inline goes through S3 instead: its rows become one gzipped
//! JSON-lines object ([`Upload`]) that the transaction `COPY`s into the stage, in place of
//! the inserts. The caller uploads a transaction's objects before submitting it.
//!
//! When a batch needs more than one transaction, the stream tables (rejects, run record,
//! state) go last, so the cursor commits with the final part. The earlier parts only merge
//! source rows ahead of a cursor that has not moved yet: a run that dies between parts
//! fetches those rows again and merges them onto themselves, so nothing is lost or doubled.

use super::bulk;
use super::sql;
use crate::schema::{ColumnType, Table, REJECTS, RUNS, STATE};
use crate::warehouse::{Batch, Row, TableRows, Value};
use chrono::{DateTime, Utc};

/// The Data API's limit on one statement's text: AWS documents "100 KB" and refuses a
/// larger one ("Cannot process query string larger than 100kB"); read as 100 000 bytes.
pub const MAX_STATEMENT_BYTES: usize = 100_000;
/// Redshift's limit on a VARCHAR value (a string literal, `JSON_PARSE`'s input, a string
/// inside SUPER) unless the cluster opted in to large strings.
pub const MAX_LITERAL_BYTES: usize = 65_535;
/// The Data API's limit on statements in one BatchExecuteStatement.
pub const MAX_BATCH_STATEMENTS: usize = 40;
/// Room left for `, <sequence>` when a tuple goes into a stage.
const SEQUENCE_ALLOWANCE: usize = 24;

/// One BatchExecuteStatement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transaction {
    pub statements: Vec<String>,
    /// Rows it writes, over all tables.
    pub rows: usize,
    /// The objects its COPY statements load: to be in S3 before it is submitted.
    pub uploads: Vec<Upload>,
}

/// One staged object: a table's rows as gzipped JSON lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub table: &'static str,
    /// The object's key in the staging bucket.
    pub key: String,
    /// Shared, not copied, by each upload and re-upload.
    pub body: bytes::Bytes,
    pub rows: usize,
    /// Uncompressed bytes (the JSON lines).
    pub raw_bytes: usize,
}

/// Where this batch's objects go, and when a table takes the bulk path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulk {
    pub bucket: String,
    /// Key prefix of this batch's objects (unique per batch, ends in `/`).
    pub key_prefix: String,
    /// COPY's IAM_ROLE (an ARN, or `default`).
    pub copy_role: String,
    /// A table with at least this many rows in the batch goes through S3.
    pub rows: usize,
}

/// What the cluster accepts inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest string value (a document's text) one literal may carry.
    pub literal_bytes: usize,
    /// The longest string value inside a document loaded by COPY.
    pub super_string_bytes: usize,
}

impl Limits {
    /// `large_strings`: the cluster opted in to strings over 65 535 bytes.
    pub fn for_cluster(large_strings: bool) -> Self {
        Self {
            literal_bytes: if large_strings {
                MAX_STATEMENT_BYTES
            } else {
                MAX_LITERAL_BYTES
            },
            super_string_bytes: if large_strings {
                bulk::MAX_COPY_RECORD_BYTES
            } else {
                bulk::MAX_SUPER_STRING_BYTES
            },
        }
    }
}

/// Plans `batch` into transactions for `schema`, every row inline; `now` stamps the reject
/// records of rows too large to send.
pub fn plan_batch(
    schema: &str,
    batch: &Batch,
    now: DateTime<Utc>,
    limits: Limits,
) -> Vec<Transaction> {
    plan_batch_with(schema, batch, now, limits, None)
}

/// Plans `batch`, sending the tables that are large or hold a row too large to go inline
/// through S3 when `bulk` says where.
pub fn plan_batch_with(
    schema: &str,
    batch: &Batch,
    now: DateTime<Utc>,
    limits: Limits,
    bulk: Option<&Bulk>,
) -> Vec<Transaction> {
    let mut writes: Vec<TableRows> = batch
        .writes
        .iter()
        .filter(|w| !w.rows.is_empty())
        .cloned()
        .collect();
    let copied: Vec<&'static str> = writes
        .iter()
        .filter(|w| takes_bulk_path(schema, w, limits, bulk))
        .map(|w| w.table.name)
        .collect();
    let oversize_rejects = shrink_oversize_rows(schema, &mut writes, now, limits, &copied);
    if !oversize_rejects.is_empty() {
        push_rows(&mut writes, &REJECTS, oversize_rejects);
    }
    // Source tables first, then rejects, the run record, and the state last of all.
    let rank = |table: &Table| {
        [&REJECTS, &RUNS, &STATE]
            .iter()
            .position(|t| std::ptr::eq(*t, table))
            .map_or(0, |p| p + 1)
    };
    writes.sort_by_key(|w| rank(w.table));

    let mut planner = Planner::default();
    planner
        .current
        .statements
        .extend(crate::warehouse::Dialect::Redshift.analyst_statements(schema, batch));
    for table in &batch.replace {
        planner
            .current
            .statements
            .push(crate::warehouse::Dialect::Redshift.delete_all(schema, table));
    }
    for mut write in writes {
        write.dedup_by_key();
        match bulk {
            Some(bulk) if copied.contains(&write.table.name) || write.rows.len() >= bulk.rows => {
                planner.add_copied_table(schema, &write, bulk)
            }
            _ => planner.add_table(schema, &write),
        }
    }
    // After the state rows, in the last transaction (a heartbeat is a few hundred bytes).
    for beat in &batch.heartbeats {
        if planner.room() == 0 {
            planner.next_transaction();
        }
        planner
            .current
            .statements
            .push(sql::update_heartbeat(schema, beat));
    }
    planner.finish()
}

fn push_rows(writes: &mut Vec<TableRows>, table: &'static Table, rows: Vec<Row>) {
    match writes.iter_mut().find(|w| std::ptr::eq(w.table, table)) {
        Some(write) => write.rows.extend(rows),
        None => writes.push(TableRows { table, rows }),
    }
}

#[derive(Default)]
struct Planner {
    done: Vec<Transaction>,
    current: Transaction,
    stages: usize,
}

impl Planner {
    fn room(&self) -> usize {
        MAX_BATCH_STATEMENTS - self.current.statements.len()
    }

    fn next_transaction(&mut self) {
        if !self.current.statements.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn add_table(&mut self, schema: &str, write: &TableRows) {
        let table = write.table;
        let tuples: Vec<String> = write
            .rows
            .iter()
            .map(|row| sql::tuple(&row.0, None))
            .collect();
        let chunks = chunk_tuples(schema, table, &tuples);
        if let [only] = chunks.as_slice() {
            if self.room() < 2 {
                self.next_transaction();
            }
            let keys: Vec<Vec<&Value>> = write
                .rows
                .iter()
                .map(|row| table.key_indexes().iter().map(|&i| &row.0[i]).collect())
                .collect();
            self.current
                .statements
                .push(sql::delete_keys(schema, table, &keys));
            self.current.statements.push(format!(
                "{}{}",
                sql::insert_prefix(schema, table, None),
                tuples[only.clone()].join(", ")
            ));
            self.current.rows += write.rows.len();
            return;
        }
        let mut next = 0;
        while next < chunks.len() {
            if self.room() < 5 {
                self.next_transaction();
            }
            let take = (chunks.len() - next).min(self.room() - 4);
            self.stages += 1;
            let stage = format!("stage_{}_{}", table.name, self.stages);
            let statements = &mut self.current.statements;
            statements.push(sql::create_stage(table, &stage));
            for chunk in &chunks[next..next + take] {
                let values: Vec<String> = chunk
                    .clone()
                    .map(|i| {
                        let tuple = &tuples[i];
                        // `(..)` becomes `(.., i)`: the later row of a key wins in the stage.
                        format!("{}, {i})", &tuple[..tuple.len() - 1])
                    })
                    .collect();
                statements.push(format!(
                    "{}{}",
                    sql::insert_prefix(schema, table, Some(&stage)),
                    values.join(", ")
                ));
                self.current.rows += chunk.len();
            }
            statements.push(sql::delete_staged(schema, table, &stage));
            statements.push(sql::insert_staged(schema, table, &stage));
            statements.push(sql::drop_stage(&stage));
            next += take;
        }
    }

    /// Stage, COPY the table's object into it, merge, drop: five statements, whatever the
    /// number of rows.
    fn add_copied_table(&mut self, schema: &str, write: &TableRows, bulk: &Bulk) {
        let table = write.table;
        if self.room() < 5 {
            self.next_transaction();
        }
        self.stages += 1;
        let stage = format!("stage_{}_{}", table.name, self.stages);
        let lines: Vec<String> = write
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| bulk::json_line(table, row, i))
            .collect();
        let raw_bytes = lines.iter().map(|l| l.len() + 1).sum();
        // Writing into a Vec cannot fail.
        let body = bulk::gzip_lines(&lines).unwrap_or_default().into();
        let key = format!("{}{}-{}.jsonl.gz", bulk.key_prefix, self.stages, table.name);
        let statements = &mut self.current.statements;
        statements.push(sql::create_stage(table, &stage));
        statements.push(bulk::copy_statement(
            &stage,
            &bulk.bucket,
            &key,
            &bulk.copy_role,
        ));
        statements.push(sql::delete_staged(schema, table, &stage));
        statements.push(sql::insert_staged(schema, table, &stage));
        statements.push(sql::drop_stage(&stage));
        self.current.rows += write.rows.len();
        self.current.uploads.push(Upload {
            table: table.name,
            key,
            body,
            rows: write.rows.len(),
            raw_bytes,
        });
    }

    fn finish(mut self) -> Vec<Transaction> {
        self.next_transaction();
        self.done
    }
}

/// Splits tuples into runs that fit one INSERT statement, whichever prefix it gets.
fn chunk_tuples(schema: &str, table: &Table, tuples: &[String]) -> Vec<std::ops::Range<usize>> {
    let stage_name = format!("stage_{}_{}", table.name, u32::MAX);
    let prefix = sql::insert_prefix(schema, table, None)
        .len()
        .max(sql::insert_prefix(schema, table, Some(&stage_name)).len());
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = prefix;
    for (i, tuple) in tuples.iter().enumerate() {
        let add = tuple.len() + SEQUENCE_ALLOWANCE + if i > start { 2 } else { 0 };
        if i > start && bytes + add > MAX_STATEMENT_BYTES {
            chunks.push(start..i);
            start = i;
            bytes = prefix + tuple.len() + SEQUENCE_ALLOWANCE;
        } else {
            bytes += add;
        }
    }
    if start < tuples.len() {
        chunks.push(start..tuples.len());
    }
    chunks
}

/// The largest tuple one INSERT can carry for `table`.
fn max_tuple_bytes(schema: &str, table: &Table) -> usize {
    let stage_name = format!("stage_{}_{}", table.name, u32::MAX);
    MAX_STATEMENT_BYTES
        - SEQUENCE_ALLOWANCE
        - sql::insert_prefix(schema, table, Some(&stage_name))
            .len()
            .max(sql::insert_prefix(schema, table, None).len())
}

/// Whether `write` goes through S3: staging is set, and the table has `bulk.rows` rows or
/// more in the batch, or a row that cannot go inline whole.
fn takes_bulk_path(schema: &str, write: &TableRows, limits: Limits, bulk: Option<&Bulk>) -> bool {
    let Some(bulk) = bulk else {
        return false;
    };
    if write.rows.len() >= bulk.rows {
        return true;
    }
    let limit = max_tuple_bytes(schema, write.table);
    write.rows.iter().any(|row| {
        longest_document(row) > limits.literal_bytes || sql::tuple(&row.0, None).len() > limit
    })
}

/// The longest document in `row`, in bytes of JSON text.
fn longest_document(row: &Row) -> usize {
    row.0
        .iter()
        .filter_map(|value| match value {
            Value::Json(text) => Some(text.as_str().len()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Rows too large for their path lose their raw JSON (replaced by a note of its size), and
/// each such row gets a reject record saying why. Inline: a document over the cluster's
/// string limit (65 535 bytes unless it opted in to large strings), or a row over one Data
/// API statement. Through S3 (`copied` tables): a row over COPY's 4 MB JSON record; a
/// string inside a document over SUPER's string limit is cut to it first (the rest of the
/// document is kept, and a reject record says so). A row still too large after that is
/// not written, and its reject record keeps its key columns. Returns the reject rows.
fn shrink_oversize_rows(
    schema: &str,
    writes: &mut [TableRows],
    now: DateTime<Utc>,
    limits: Limits,
    copied: &[&'static str],
) -> Vec<Row> {
    let (source, scope, run_id) = run_identity(writes);
    let mut rejects = Vec::new();
    let mut reject = |table: &Table, row: &Row, reason: String| {
        let mut key_only = serde_json::Map::new();
        for i in table.key_indexes() {
            key_only.insert(table.columns[i].name.into(), row.0[i].key_text().into());
        }
        rejects.push(Row(vec![
            Value::Text(source.clone()),
            Value::Text(table.name.into()),
            Value::Text(crate::text::truncate_utf8(&row.key_text(table), 255).to_string()),
            Value::Text(scope.clone()),
            Value::Text(run_id.clone()),
            Value::Text(reason),
            Value::json(&serde_json::Value::Object(key_only)),
            Value::Timestamp(now),
        ]));
    };
    for write in writes.iter_mut() {
        let table = write.table;
        if copied.contains(&table.name) {
            write.rows = std::mem::take(&mut write.rows)
                .into_iter()
                .filter_map(|row| fit_for_copy(table, row, limits, &mut reject))
                .collect();
            continue;
        }
        let limit = max_tuple_bytes(schema, table);
        let mut kept = Vec::with_capacity(write.rows.len());
        for mut row in std::mem::take(&mut write.rows) {
            let size = sql::tuple(&row.0, None).len();
            let document = longest_document(&row);
            if size <= limit && document <= limits.literal_bytes {
                kept.push(row);
                continue;
            }
            let why = if document > limits.literal_bytes {
                format!(
                    "a document of {document} bytes exceeds Redshift's string limit ({} bytes; \
                     see large_strings in the README)",
                    limits.literal_bytes
                )
            } else {
                format!(
                    "row of {size} bytes exceeds a Data API statement ({MAX_STATEMENT_BYTES} bytes)"
                )
            };
            omit_documents(table, &mut row, "too large to send to Redshift inline");
            let fits = sql::tuple(&row.0, None).len() <= limit;
            let reason = if fits {
                format!("{why}; stored without its raw JSON")
            } else {
                format!("{why}; too large even without its raw JSON: not stored")
            };
            reject(table, &row, reason);
            if fits {
                kept.push(row);
            }
        }
        write.rows = kept;
    }
    rejects
}

/// Room left in a COPY record for the stage's sequence number.
const COPY_RECORD_LIMIT: usize = bulk::MAX_COPY_RECORD_BYTES - SEQUENCE_ALLOWANCE;

/// The row as COPY can load it (strings inside documents cut to SUPER's limit, documents
/// omitted past COPY's record limit), reporting every change; None when even that is not
/// enough.
fn fit_for_copy(
    table: &Table,
    mut row: Row,
    limits: Limits,
    reject: &mut impl FnMut(&Table, &Row, String),
) -> Option<Row> {
    let mut cut_strings = 0;
    let mut uncuttable = false;
    for value in row.0.iter_mut() {
        if let Value::Json(text) = value {
            if let Some((cut, count)) =
                bulk::cut_long_strings(text.as_str(), limits.super_string_bytes)
            {
                match crate::json::JsonText::parse(&cut) {
                    Ok(cut) => {
                        *value = Value::Json(cut);
                        cut_strings += count;
                    }
                    // Cuts fall between characters, so this should not happen; if it
                    // does, the document is not sent at all rather than sent broken.
                    Err(_) => uncuttable = true,
                }
            }
        }
    }
    if uncuttable {
        omit_documents(
            table,
            &mut row,
            "a string too long for Redshift could not be cut",
        );
        reject(
            table,
            &row,
            "a string inside the document exceeds Redshift's limit for a string in SUPER and could not be cut; stored without its raw JSON".into(),
        );
    }
    if cut_strings > 0 {
        reject(
            table,
            &row,
            format!(
                "{cut_strings} string(s) inside the document exceed Redshift's limit for a string in SUPER ({} bytes; see large_strings in the README); stored with them cut to it",
                limits.super_string_bytes
            ),
        );
    }
    let size = bulk::json_line(table, &row, 0).len();
    if size <= COPY_RECORD_LIMIT {
        return Some(row);
    }
    omit_documents(table, &mut row, "too large for one COPY record");
    let fits = bulk::json_line(table, &row, 0).len() <= COPY_RECORD_LIMIT;
    let why = format!(
        "a row of {size} bytes exceeds COPY's JSON record limit ({} bytes)",
        bulk::MAX_COPY_RECORD_BYTES
    );
    reject(
        table,
        &row,
        if fits {
            format!("{why}; stored without its raw JSON")
        } else {
            format!("{why}; too large even without its raw JSON: not stored")
        },
    );
    fits.then_some(row)
}

/// Replaces every document of `row` by a note of its size.
fn omit_documents(table: &Table, row: &mut Row, why: &str) {
    for (value, column) in row.0.iter_mut().zip(table.columns) {
        if column.ty == ColumnType::Json && !value.is_null() {
            let bytes = value.key_text().len();
            *value = Value::json(&serde_json::json!({
                "heimdallr_omitted": format!("{bytes} bytes of JSON: {why}"),
            }));
        }
    }
}

/// (source, scope, run id) of the batch, from its run record.
fn run_identity(writes: &[TableRows]) -> (String, String, String) {
    let text = |row: &Row, column: &str| {
        RUNS.column_index(column)
            .and_then(|i| row.0.get(i))
            .map(Value::key_text)
            .unwrap_or_default()
    };
    writes
        .iter()
        .find(|w| std::ptr::eq(w.table, &RUNS))
        .and_then(|w| w.rows.first())
        .map_or_else(
            || ("unknown".into(), String::new(), String::new()),
            |row| (text(row, "source"), text(row, "scope"), text(row, "run_id")),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ROLLBAR_ITEMS, ROLLBAR_OCCURRENCES};

    fn occurrence(id: i64, payload_bytes: usize) -> Row {
        let mut values = vec![Value::Null; ROLLBAR_OCCURRENCES.columns.len()];
        values[0] = Value::BigInt(id);
        values[ROLLBAR_OCCURRENCES.column_index("title").unwrap()] =
            Value::Text(format!("it's a \\ title {id}"));
        values[ROLLBAR_OCCURRENCES.column_index("data").unwrap()] =
            Value::json(&serde_json::json!({ "body": "x".repeat(payload_bytes) }));
        Row(values)
    }

    fn state_row() -> Row {
        Row(vec![
            Value::Text("rollbar".into()),
            Value::Text("occurrences".into()),
            Value::Text("web".into()),
            Value::json(&serde_json::json!({"high_water": 9})),
            Value::Null,
            Value::Text("run-1".into()),
            Value::Null,
            Value::Null,
        ])
    }

    fn batch_of(occurrences: usize, payload_bytes: usize) -> Batch {
        let mut batch = Batch::default();
        for id in 0..occurrences {
            batch.push(&ROLLBAR_OCCURRENCES, occurrence(id as i64, payload_bytes));
        }
        batch.push(&STATE, state_row());
        batch
    }

    fn all_statements(plan: &[Transaction]) -> impl Iterator<Item = &String> {
        plan.iter().flat_map(|t| &t.statements)
    }

    /// Every statement of the plan, one a line.
    fn plan_text(plan: &[Transaction]) -> String {
        all_statements(plan).cloned().collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn a_small_batch_is_one_transaction_without_a_stage() {
        let plan = plan_batch(
            "h",
            &batch_of(3, 100),
            Utc::now(),
            Limits::for_cluster(false),
        );
        assert_eq!(plan.len(), 1);
        let statements = &plan[0].statements;
        assert_eq!(statements.len(), 4, "{statements:#?}");
        assert_eq!(
            statements[0],
            "DELETE FROM \"h\".\"rollbar_occurrences\" WHERE \"id\" IN (0, 1, 2)"
        );
        assert!(statements[1].contains("'it''s a \\\\ title 0'"));
        assert!(statements[1].contains("JSON_PARSE('{\"body\":\"xxx"));
        assert!(statements[2].starts_with("DELETE FROM \"h\".\"_heimdallr_state\" WHERE (\"source\" = 'rollbar' AND \"stream\" = 'occurrences' AND \"scope\" = 'web')"));
        assert_eq!(plan[0].rows, 4);
    }

    #[test]
    fn every_statement_and_transaction_stays_inside_the_data_api_limits() {
        // ~4.5 MB of occurrences: more than 40 statements of 100 KB, so two transactions.
        let plan = plan_batch(
            "h",
            &batch_of(1500, 3000),
            Utc::now(),
            Limits::for_cluster(false),
        );
        assert!(plan.len() > 1, "expected a split, got {}", plan.len());
        for transaction in &plan {
            assert!(transaction.statements.len() <= MAX_BATCH_STATEMENTS);
            for statement in &transaction.statements {
                assert!(
                    statement.len() <= MAX_STATEMENT_BYTES,
                    "{}",
                    statement.len()
                );
            }
        }
        let inserted: usize = plan.iter().map(|t| t.rows).sum();
        assert_eq!(inserted, 1501);
        // The cursor commits with the last part only.
        let with_state: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(|(_, t)| t.statements.iter().any(|s| s.contains("_heimdallr_state")))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(with_state, vec![plan.len() - 1]);
        // Statements are filled: the inserts average well over half the limit.
        let inserts: Vec<usize> = all_statements(&plan)
            .filter(|s| s.starts_with("INSERT INTO \"stage_"))
            .map(String::len)
            .collect();
        let average = inserts.iter().sum::<usize>() / inserts.len();
        assert!(average > MAX_STATEMENT_BYTES * 3 / 4, "average {average}");
    }

    #[test]
    fn a_staged_table_merges_the_last_row_of_each_key() {
        let mut batch = batch_of(0, 0);
        let mut first = occurrence(1, 50_000);
        first.0[ROLLBAR_OCCURRENCES.column_index("title").unwrap()] = Value::Text("old".into());
        batch.push(&ROLLBAR_OCCURRENCES, first);
        batch.push(&ROLLBAR_OCCURRENCES, occurrence(2, 50_000));
        batch.push(&ROLLBAR_OCCURRENCES, occurrence(1, 50_000));
        let plan = plan_batch("h", &batch, Utc::now(), Limits::for_cluster(false));
        let statements: Vec<&String> = all_statements(&plan).collect();
        assert!(statements[0].starts_with("CREATE TEMP TABLE \"stage_rollbar_occurrences_1\""));
        assert!(statements.iter().any(|s| s.starts_with(
            "DELETE FROM \"h\".\"rollbar_occurrences\" USING \"stage_rollbar_occurrences_1\""
        )));
        assert!(statements.iter().any(|s| s
            .contains("ROW_NUMBER() OVER (PARTITION BY \"id\" ORDER BY \"_heimdallr_seq\" DESC)")));
        assert!(statements
            .iter()
            .any(|s| *s == "DROP TABLE \"stage_rollbar_occurrences_1\""));
        // De-duplicated before staging too: the old version of item 1 is not sent at all.
        assert!(!statements.iter().any(|s| s.contains("'old'")));
    }

    #[test]
    fn a_row_too_large_for_a_statement_is_kept_without_its_raw_json_and_reported() {
        let mut batch = batch_of(2, 100);
        batch.push(&ROLLBAR_OCCURRENCES, occurrence(7, 200_000));
        let mut run = vec![Value::Null; RUNS.columns.len()];
        run[0] = Value::Text("run-9".into());
        run[1] = Value::Text("rollbar".into());
        run[2] = Value::Text("occurrences".into());
        run[3] = Value::Text("web".into());
        batch.push(&RUNS, Row(run));
        let plan = plan_batch("h", &batch, Utc::now(), Limits::for_cluster(false));
        let text = plan_text(&plan);
        assert!(text.contains("heimdallr_omitted"));
        assert!(text.contains("INSERT INTO \"h\".\"_heimdallr_rejects\""));
        assert!(text.contains("stored without its raw JSON"));
        assert!(text.contains("'run-9'"));
        for statement in all_statements(&plan) {
            assert!(statement.len() <= MAX_STATEMENT_BYTES);
        }
    }

    #[test]
    fn no_statement_passes_100_000_bytes_at_the_boundary() {
        // Documents sized so that a tuple lands within a few bytes either side of the limit.
        let largest = max_tuple_bytes("h", &ROLLBAR_OCCURRENCES);
        for payload in (largest - 400)..(largest - 200) {
            let plan = plan_batch(
                "h",
                &batch_of(2, payload),
                Utc::now(),
                Limits::for_cluster(true),
            );
            for statement in all_statements(&plan) {
                assert!(
                    statement.len() <= 100_000,
                    "payload {payload}: a statement of {} bytes",
                    statement.len()
                );
            }
        }
    }

    #[test]
    fn a_document_over_65535_bytes_is_not_sent_unless_the_cluster_opted_in() {
        let mut batch = batch_of(1, 100);
        batch.push(&ROLLBAR_OCCURRENCES, occurrence(8, 70_000));
        let plan = plan_batch("h", &batch, Utc::now(), Limits::for_cluster(false));
        let text = plan_text(&plan);
        assert!(text.contains("heimdallr_omitted"));
        assert!(text.contains("exceeds Redshift''s string limit (65535 bytes"));
        for statement in all_statements(&plan) {
            for literal in statement.split("JSON_PARSE('").skip(1) {
                let end = literal.find("')").unwrap_or(literal.len());
                assert!(end <= MAX_LITERAL_BYTES, "a literal of {end} bytes");
            }
        }
        // A cluster with large strings takes the 70 KB document whole.
        let plan = plan_batch("h", &batch, Utc::now(), Limits::for_cluster(true));
        let text = plan_text(&plan);
        assert!(!text.contains("heimdallr_omitted"));
    }

    #[test]
    fn items_and_occurrences_share_a_transaction_when_they_fit() {
        let mut batch = batch_of(5, 100);
        let mut item = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
        item[0] = Value::BigInt(42);
        batch.push(&ROLLBAR_ITEMS, Row(item));
        let plan = plan_batch("h", &batch, Utc::now(), Limits::for_cluster(false));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].statements.len(), 6);
    }
}

#[cfg(test)]
mod message_size {
    use super::*;
    use crate::schema::ROLLBAR_OCCURRENCES;

    /// An occurrence whose message of `bytes` is stored twice: in its column and in `data`.
    fn with_message(bytes: usize) -> Batch {
        let message = "m".repeat(bytes);
        let mut values = vec![Value::Null; ROLLBAR_OCCURRENCES.columns.len()];
        values[0] = Value::BigInt(1);
        values[ROLLBAR_OCCURRENCES
            .column_index("exception_message")
            .unwrap()] = Value::Text(message.clone());
        values[ROLLBAR_OCCURRENCES.column_index("data").unwrap()] = Value::json(
            &serde_json::json!({"body": {"message": {"body": message}}, "environment": "production"}),
        );
        let mut batch = Batch::default();
        batch.push(&ROLLBAR_OCCURRENCES, Row(values));
        batch
    }

    fn stored_whole(bytes: usize, large_strings: bool) -> bool {
        let plan = plan_batch(
            "heimdallr",
            &with_message(bytes),
            Utc::now(),
            Limits::for_cluster(large_strings),
        );
        !plan
            .iter()
            .flat_map(|t| &t.statements)
            .any(|s| s.contains("heimdallr_omitted"))
    }

    /// The README's figure: a message is stored twice (its column and `data`), so the row
    /// passes a statement's 100 000 bytes from about 49 KB, whatever the string limit.
    #[test]
    fn the_largest_message_stored_whole_is_about_49_kb() {
        for large_strings in [false, true] {
            assert!(stored_whole(49_000, large_strings));
            assert!(!stored_whole(50_500, large_strings));
        }
    }
}
