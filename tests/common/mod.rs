//! Shared helpers of the end-to-end tests: the real `heimdallr` binary, the warehouses it
//! writes (a DuckDB file, a real PostgreSQL), and readers that compare them to the fakes.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

#[allow(unused_imports)]
pub use heimdallr_fakes::postgres::{test_postgres_url as postgres_url, unique_schema};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "heimdallr-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test's sync writes.
#[derive(Clone, Debug)]
pub enum Target {
    Duck(PathBuf),
    Postgres {
        url: String,
        schema: String,
    },
    /// The Data API stand-in at `endpoint`, which runs the statements on `pg_url`; with
    /// `s3` (the S3 stand-in's endpoint), batches of [`BULK_ROWS`] rows or more are
    /// staged in [`STAGING_BUCKET`] and loaded with COPY as [`COPY_ROLE`].
    Redshift {
        endpoint: String,
        pg_url: String,
        schema: String,
        s3: Option<String>,
    },
}

/// The staging bucket, the role COPY assumes, and the bulk threshold of bulk targets.
pub const STAGING_BUCKET: &str = "heimdallr-staging";
pub const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/heimdallr-copy";
pub const BULK_ROWS: usize = 40;

/// The warehouse URL the Redshift tests give the command (the stand-in checks its parts).
pub const REDSHIFT_URL: &str = "redshift-data://awsuser@cluster/test-cluster/dev";

impl Target {
    pub fn warehouse_arg(&self) -> String {
        match self {
            Target::Duck(path) => path.display().to_string(),
            Target::Postgres { url, .. } => url.clone(),
            Target::Redshift { s3: None, .. } => REDSHIFT_URL.to_string(),
            Target::Redshift { s3: Some(_), .. } => format!(
                "{REDSHIFT_URL}?staging=s3://{STAGING_BUCKET}/rollbar/&copy_role={COPY_ROLE}&bulk_rows={BULK_ROWS}"
            ),
        }
    }
    pub fn schema(&self) -> &str {
        match self {
            Target::Duck(_) => "heimdallr",
            Target::Postgres { schema, .. } | Target::Redshift { schema, .. } => schema,
        }
    }
}

/// The `heimdallr` binary with a clean environment pointed at `api_url` and `target`.
pub fn heimdallr(target: &Target, api_url: &str, tokens: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heimdallr"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("ROLLBAR_API_URL", api_url)
        .env("ROLLBAR_ACCESS_TOKEN", tokens)
        .env("HEIMDALLR_WAREHOUSE", target.warehouse_arg())
        .env("HEIMDALLR_SCHEMA", target.schema())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Target::Redshift { endpoint, s3, .. } = target {
        if let Some(s3) = s3 {
            command.env("AWS_ENDPOINT_URL_S3", s3);
        }
        // The SDK's standard configuration, pointed at the stand-in.
        command
            .env("AWS_ENDPOINT_URL_REDSHIFT_DATA", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
    command
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(mut command: Command) -> Finished {
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("heimdallr did not finish within 5 minutes")
        .expect("heimdallr starts");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `heimdallr ARGS` against `api_url` and `target` and returns how it ended.
pub async fn run_args(target: &Target, api_url: &str, tokens: &str, args: &[&str]) -> Finished {
    let mut command = heimdallr(target, api_url, tokens);
    command.args(args);
    run(command).await
}

pub async fn sync_once(target: &Target, api_url: &str, tokens: &str, extra: &[&str]) -> Finished {
    let mut command = heimdallr(target, api_url, tokens);
    command.args(["sync", "rollbar", "--once"]).args(extra);
    let finished = run(command).await;
    assert_eq!(
        finished.code,
        Some(0),
        "sync failed\nstdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
    finished
}

/// Runs `command`, which must succeed and never print `secret`.
pub async fn run_ok(command: Command, secret: &str) -> Finished {
    let finished = run(command).await;
    assert_eq!(
        finished.code,
        Some(0),
        "heimdallr failed\nstdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
    assert!(
        !finished.stderr.contains(secret) && !finished.stdout.contains(secret),
        "a secret was printed"
    );
    finished
}

pub fn spawn(mut command: Command) -> Child {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command.spawn().expect("heimdallr starts")
}

/// An occurrence as the warehouse holds it, in the fields the tests compare.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOccurrence {
    pub item_id: Option<i64>,
    pub project_id: Option<i64>,
    pub occurred_at: Option<i64>,
    pub environment: Option<String>,
    pub level: Option<String>,
    pub body_type: Option<String>,
    pub exception_class: Option<String>,
    pub exception_message: Option<String>,
    pub person_id: Option<String>,
    pub person_email: Option<String>,
    pub code_version: Option<String>,
    pub request_url: Option<String>,
    pub uuid: Option<String>,
    pub data: Value,
}

/// An item as the warehouse holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub counter: Option<i64>,
    pub status: Option<String>,
    pub level: Option<String>,
    pub total_occurrences: Option<i64>,
    pub last_occurrence_id: Option<i64>,
    pub assigned_user_id: Option<i64>,
    pub resolved_in_version: Option<String>,
    pub title: Option<String>,
}

const OCCURRENCE_COLUMNS: &[&str] = &[
    "id",
    "item_id",
    "project_id",
    "EPOCH_SECONDS",
    "environment",
    "level",
    "body_type",
    "exception_class",
    "exception_message",
    "person_id",
    "person_email",
    "code_version",
    "request_url",
    "uuid",
    "data",
];
const ITEM_COLUMNS: &[&str] = &[
    "id",
    "counter",
    "status",
    "level",
    "total_occurrences",
    "last_occurrence_id",
    "assigned_user_id",
    "resolved_in_version",
    "title",
];

pub struct Snapshot {
    pub occurrences: BTreeMap<i64, StoredOccurrence>,
    pub items: BTreeMap<i64, StoredItem>,
    pub rejects: Vec<(String, String)>,
    pub runs: Vec<(String, String, String)>,
    pub occurrence_row_count: i64,
}

/// Every cell as text, so one reader serves both backends.
pub type TextRows = Vec<Vec<Option<String>>>;

fn select_as_text(columns: &[&str], from: &str) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST({c} AS TEXT)"))
        .collect();
    format!("SELECT {} FROM {from}", cells.join(", "))
}

/// Runs a statement whose result is not read (DDL, inserts).
pub async fn execute(target: &Target, sql: String) {
    match target {
        Target::Postgres { url, .. } | Target::Redshift { pg_url: url, .. } => {
            heimdallr_fakes::postgres::connect(url)
                .await
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        Target::Duck(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                duckdb::Connection::open(&path)
                    .expect("open duckdb file")
                    .execute_batch(&sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            })
            .await
            .expect("duckdb writer");
        }
    }
}

pub async fn query_text(target: &Target, sql: String) -> TextRows {
    match target {
        Target::Postgres { url, .. } | Target::Redshift { pg_url: url, .. } => {
            heimdallr_fakes::postgres::connect(url)
                .await
                .query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.get::<_, Option<String>>(i))
                        .collect()
                })
                .collect()
        }
        Target::Duck(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let conn = duckdb::Connection::open(&path).expect("open duckdb file");
                let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let mut rows = stmt.query([]).expect("query");
                let mut out = Vec::new();
                while let Some(row) = rows.next().expect("row") {
                    let width = row.as_ref().column_count();
                    out.push(
                        (0..width)
                            .map(|i| row.get::<_, Option<String>>(i).expect("text cell"))
                            .collect(),
                    );
                }
                out
            })
            .await
            .expect("duckdb reader")
        }
    }
}

fn int(cell: &Option<String>) -> Option<i64> {
    cell.as_deref().map(|v| v.parse().expect("integer cell"))
}

/// Reads everything the tests compare from the warehouse.
pub async fn snapshot(target: &Target) -> Snapshot {
    let schema = target.schema();
    // DuckDB without its ICU extension has no EXTRACT(EPOCH ..) for TIMESTAMPTZ.
    let epoch_seconds = match target {
        Target::Postgres { .. } | Target::Redshift { .. } => {
            "CAST(EXTRACT(EPOCH FROM occurred_at) AS BIGINT)"
        }
        Target::Duck(_) => "CAST(epoch_us(occurred_at) // 1000000 AS BIGINT)",
    };
    let occurrence_columns: Vec<&str> = OCCURRENCE_COLUMNS
        .iter()
        .map(|c| {
            if *c == "EPOCH_SECONDS" {
                epoch_seconds
            } else {
                c
            }
        })
        .collect();
    let occurrences = query_text(
        target,
        select_as_text(
            &occurrence_columns,
            &format!("{schema}.rollbar_occurrences"),
        ),
    )
    .await
    .into_iter()
    .map(|r| {
        let occurrence = StoredOccurrence {
            item_id: int(&r[1]),
            project_id: int(&r[2]),
            occurred_at: int(&r[3]),
            environment: r[4].clone(),
            level: r[5].clone(),
            body_type: r[6].clone(),
            exception_class: r[7].clone(),
            exception_message: r[8].clone(),
            person_id: r[9].clone(),
            person_email: r[10].clone(),
            code_version: r[11].clone(),
            request_url: r[12].clone(),
            uuid: r[13].clone(),
            data: serde_json::from_str(r[14].as_deref().unwrap_or("null")).expect("data is JSON"),
        };
        (int(&r[0]).expect("id"), occurrence)
    })
    .collect();
    let items = query_text(
        target,
        select_as_text(ITEM_COLUMNS, &format!("{schema}.rollbar_items")),
    )
    .await
    .into_iter()
    .map(|r| {
        let item = StoredItem {
            counter: int(&r[1]),
            status: r[2].clone(),
            level: r[3].clone(),
            total_occurrences: int(&r[4]),
            last_occurrence_id: int(&r[5]),
            assigned_user_id: int(&r[6]),
            resolved_in_version: r[7].clone(),
            title: r[8].clone(),
        };
        (int(&r[0]).expect("id"), item)
    })
    .collect();
    let rejects = query_text(
        target,
        format!("SELECT target_table, reason FROM {schema}._heimdallr_rejects ORDER BY record_key"),
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
        )
    })
    .collect();
    let runs = query_text(
        target,
        format!("SELECT stream, scope, status FROM {schema}._heimdallr_runs"),
    )
    .await
    .into_iter()
    .map(|r| {
        let cell = |i: usize| r[i].clone().unwrap_or_default();
        (cell(0), cell(1), cell(2))
    })
    .collect();
    let count = query_text(
        target,
        format!("SELECT CAST(COUNT(*) AS TEXT) FROM {schema}.rollbar_occurrences"),
    )
    .await;
    Snapshot {
        occurrences,
        items,
        rejects,
        runs,
        occurrence_row_count: int(&count[0][0]).expect("count"),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn level_name(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) if n.as_i64() == Some(40) => Some("error".into()),
        Value::Number(n) if n.as_i64() == Some(50) => Some("critical".into()),
        Value::Number(n) if n.as_i64() == Some(1) => Some("active".into()),
        other => text(other),
    }
}

/// What the warehouse must hold for one occurrence of the fake, derived independently of
/// the mapping code. `pii_kept` says whether personal fields are stored.
pub fn expected_occurrence(instance: &Value, pii_kept: bool) -> StoredOccurrence {
    let data = &instance["data"];
    let body = &data["body"];
    let (body_type, class, message) = if let Some(chain) = body["trace_chain"].as_array() {
        (
            "trace_chain",
            text(&chain[0]["exception"]["class"]),
            text(&chain[0]["exception"]["message"]),
        )
    } else if body["trace"].is_object() {
        (
            "trace",
            text(&body["trace"]["exception"]["class"]),
            text(&body["trace"]["exception"]["message"]),
        )
    } else {
        ("message", None, text(&body["message"]["body"]))
    };
    let mut stored_data = data.clone();
    if !pii_kept {
        if let Some(person) = stored_data.get_mut("person").and_then(Value::as_object_mut) {
            person.remove("email");
            person.remove("username");
        }
        if let Some(request) = stored_data
            .get_mut("request")
            .and_then(Value::as_object_mut)
        {
            request.remove("user_ip");
        }
    }
    StoredOccurrence {
        item_id: instance["item_id"].as_i64(),
        project_id: instance["project_id"].as_i64(),
        occurred_at: instance["timestamp"].as_i64(),
        environment: text(&data["environment"]),
        level: level_name(&data["level"]),
        body_type: Some(body_type.into()),
        exception_class: class,
        exception_message: message,
        person_id: text(&data["person"]["id"]),
        person_email: if pii_kept {
            text(&data["person"]["email"])
        } else {
            None
        },
        code_version: text(&data["code_version"]),
        request_url: text(&data["request"]["url"]),
        uuid: text(&data["uuid"]),
        data: stored_data,
    }
}

pub fn expected_item(item: &Value) -> StoredItem {
    StoredItem {
        counter: item["counter"].as_i64(),
        status: level_name(&item["status"]),
        level: level_name(&item["level"]),
        total_occurrences: item["total_occurrences"].as_i64(),
        last_occurrence_id: item["last_occurrence_id"].as_i64(),
        assigned_user_id: item["assigned_user_id"].as_i64(),
        resolved_in_version: text(&item["resolved_in_version"]),
        title: text(&item["title"]),
    }
}

/// The warehouse equals the fake: every occurrence id, field by field for a sample of
/// `sample_every`, and every item field by field.
pub fn assert_matches_source(
    snapshot: &Snapshot,
    occurrences: &BTreeMap<i64, Value>,
    items: &BTreeMap<i64, Value>,
    sample_every: usize,
) {
    let stored_ids: Vec<i64> = snapshot.occurrences.keys().copied().collect();
    let source_ids: Vec<i64> = occurrences
        .iter()
        .filter(|(_, v)| v["id"].is_i64())
        .map(|(id, _)| *id)
        .collect();
    let missing: Vec<_> = source_ids
        .iter()
        .filter(|id| !snapshot.occurrences.contains_key(id))
        .take(5)
        .collect();
    let extra: Vec<_> = stored_ids
        .iter()
        .filter(|id| !occurrences.contains_key(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "occurrences differ: {} stored, {} in source; missing e.g. {missing:?}, unexpected e.g. {extra:?}",
        stored_ids.len(),
        source_ids.len()
    );
    assert_eq!(
        snapshot.occurrence_row_count as usize,
        source_ids.len(),
        "no occurrence is stored twice"
    );
    for (i, (id, instance)) in occurrences
        .iter()
        .filter(|(_, v)| v["id"].is_i64())
        .enumerate()
    {
        if i % sample_every.max(1) == 0 {
            assert_eq!(
                snapshot.occurrences[id],
                expected_occurrence(instance, false),
                "occurrence {id} differs"
            );
        }
    }
    let stored_items: Vec<i64> = snapshot.items.keys().copied().collect();
    let source_items: Vec<i64> = items.keys().copied().collect();
    assert_eq!(stored_items, source_items, "item ids differ");
    for (id, item) in items {
        assert_eq!(snapshot.items[id], expected_item(item), "item {id} differs");
    }
}

/// The Python interpreters with a DuckDB client (scripts/test.sh installs the oldest and
/// newest versions the README names), or none outside it.
pub fn duckdb_clients() -> Vec<String> {
    let pythons: Vec<String> = std::env::var("HEIMDALLR_TEST_DUCKDB_PYTHONS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    if pythons.is_empty() {
        assert!(
            std::env::var("HEIMDALLR_REQUIRE_DUCKDB_CLIENTS").is_err(),
            "HEIMDALLR_TEST_DUCKDB_PYTHONS is not set but the DuckDB clients are required"
        );
        eprintln!("skipping: no DuckDB client (run scripts/test.sh)");
    }
    pythons
}

/// Runs `script` with `python` in `dir`, `stdin` on its input; returns what it printed.
pub async fn run_python(python: &str, dir: &Path, script: &str, stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("python runs");
    assert!(
        output.status.success(),
        "{python} failed on\n{script}\n{stdin}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
