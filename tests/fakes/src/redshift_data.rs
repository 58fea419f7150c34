//! A stand-in for the Redshift Data API (AWS JSON 1.1, `X-Amz-Target: RedshiftData.<Op>`,
//! epoch-second timestamps) that runs the statements on a real PostgreSQL.
//!
//! It enforces what the real service enforces: 100 KB per statement ("The maximum query
//! statement size is 100 KB", Data API considerations in the Redshift Management Guide;
//! read as 100 000 bytes), 40 statements per batch (the service model's `Sqls` length),
//! a batch is ONE transaction (serializable, as Redshift runs them), no TRUNCATE inside
//! it, no ON CONFLICT, ClientToken idempotency, statements that go SUBMITTED -> STARTED
//! -> FINISHED | FAILED | ABORTED while the client polls, and JSON_PARSE input of at most
//! 65 535 bytes (JSON_PARSE reference: string values "can't exceed 65,535 bytes" unless
//! the cluster set `enable_large_strings_opt_in`, which [`FakeRedshiftData::set_large_strings`]
//! stands for).
//!
//! PostgreSQL is made to read Redshift's SQL in three documented ways, and no other:
//! backslashes in string literals are escapes (`standard_conforming_strings = off`, as on
//! Redshift); `SUPER`, `JSON_PARSE` and `JSON_SERIALIZE` exist (a domain over jsonb and
//! two functions); the trailing `DISTSTYLE .. DISTKEY .. SORTKEY ..` attributes of a
//! CREATE TABLE are dropped. Serialization failures come back as Redshift's error 1023.
//!
//! Long polling: `WaitTimeSeconds` (0 to 30) on BatchExecuteStatement, ExecuteStatement and
//! DescribeStatement holds the answer until the statement ends or the time passes, and the
//! submissions then carry its `Status` (aws-sdk-redshiftdata's service model: "The number of
//! seconds to wait for the SQL statement to complete execution before returning the
//! description. The maximum value is 30 seconds.").
//!
//! `COPY .. FROM 's3://..' IAM_ROLE .. FORMAT AS JSON 'auto' [GZIP]` is executed from the S3
//! stand-in ([`FakeRedshiftData::attach_s3`]), with COPY's rules (Database Developer Guide):
//! the FROM path is a key prefix ("can reference a single file or a set of objects or
//! folders that have the same key prefix", COPY data sources) and "COPY terminates if no
//! files are found" (COPY examples, manifest) — the message, "The specified S3 prefix '..'
//! does not exist" (code 8001), is as users report it in GitHub issues, the docs give none;
//! the role must be associated with the cluster ("User .. is not authorized to assume IAM
//! Role ..", the message users report; "Authorizing COPY ... to access other AWS
//! resources" requires the association); `'auto'` matches top-level keys to column names,
//! case-sensitively, ignores other keys and leaves missing columns NULL (COPY from JSON
//! format); "The maximum size of a single JSON object or array .. is 4 MB"; a VARCHAR(n)
//! takes n bytes; a string inside SUPER at most 65 535 bytes unless large strings are on
//! (SUPER limitations). A refused row fails the whole COPY (MAXERROR 0) with "Load into
//! table '..' failed.  Check 'stl_load_errors' system table for details.", and is
//! recorded in `sys_load_error_detail` (file_name, line_number, column_name, column_type,
//! error_code, error_message, start_time) outside the failed transaction, as Redshift logs
//! load errors. Error codes follow the Load error reference where it gives one (1204 for a
//! value over its column, 1224 for SUPER input); the others are this stand-in's.
//!
//! Tests can also script what the next submissions do (status sequences, failures,
//! throttling, statements that never finish) without touching the database.

use crate::http::{serve, Handler, Reply, Request, ServerTask};
use crate::s3::FakeS3;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

/// The real service's limits.
pub const MAX_STATEMENT_BYTES: usize = 100_000;
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// What a scripted submission does instead of running its SQL.
#[derive(Debug, Clone)]
pub enum Script {
    /// Reports these statuses, one per DescribeStatement, then runs the SQL for real.
    StatusesThenRun(Vec<&'static str>),
    /// Fails at this (0-based) sub-statement with this error; nothing is applied.
    Fail { sub_statement: usize, error: String },
    /// Ends ABORTED.
    Abort,
    /// Stays STARTED until cancelled.
    Hang,
    /// The submission itself is refused with HTTP 400 ThrottlingException.
    Throttle,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Calls per operation name.
    pub calls: HashMap<String, u64>,
    /// Statements per BatchExecuteStatement, in order.
    pub batch_sizes: Vec<usize>,
    /// Bytes of every statement submitted in a batch.
    pub statement_bytes: Vec<usize>,
    /// Milliseconds from submission to a final status, per batch.
    pub batch_millis: Vec<u64>,
    /// Batches whose transaction committed.
    pub committed_batches: u64,
    pub cancels: u64,
    /// Submissions answered from an earlier submission with the same ClientToken.
    pub idempotent_replays: u64,
    /// COPY statements run, and the bytes of the objects they read (as stored).
    pub copies: u64,
    pub copied_bytes: u64,
}

/// What COPY reads from: the S3 stand-in, and the roles associated with the cluster.
#[derive(Clone, Default)]
struct CopySetup {
    s3: Option<FakeS3>,
    roles: Vec<String>,
    default_role: Option<String>,
}

struct Statement {
    sqls: Vec<String>,
    is_batch: bool,
    status: &'static str,
    error: Option<String>,
    failed_index: Option<usize>,
    created: f64,
    updated: f64,
    /// Statuses still to report before running (scripted).
    pending_statuses: VecDeque<&'static str>,
    scripted_end: Option<Script>,
    cancelled: bool,
    result: Option<QueryResult>,
    request: Value,
}

#[derive(Clone)]
struct QueryResult {
    columns: Vec<Value>,
    records: Vec<Vec<Value>>,
}

#[derive(Default)]
struct State {
    statements: HashMap<String, Statement>,
    tokens: HashMap<String, String>,
    scripts: VecDeque<Script>,
    stats: Stats,
    next_id: u64,
    /// The cluster opted in to large strings (`enable_large_strings_opt_in`).
    large_strings: bool,
    copy: CopySetup,
    /// Answers at once whatever WaitTimeSeconds asks (an endpoint without long polling).
    no_long_polling: bool,
    /// Held (long-polled) answers leave out `HasResultSet`.
    omit_result_flag: bool,
    /// How long the next batches take on the cluster before they run (a slow COPY).
    batch_delays: VecDeque<Duration>,
}

#[derive(Clone)]
pub struct FakeRedshiftData {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeRedshiftData {
    /// Serves the Data API on loopback, running statements on the PostgreSQL at `pg_url`
    /// (`None`: scripted submissions only).
    pub async fn start(pg_url: Option<String>) -> std::io::Result<Self> {
        if let Some(url) = &pg_url {
            install_redshift_compatibility(url)
                .await
                .map_err(|e| std::io::Error::other(format!("prepare PostgreSQL: {e}")))?;
        }
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let pg_url = Arc::new(pg_url);
        let handler: Handler = Arc::new(move |request| {
            let state = Arc::clone(&shared);
            let pg_url = Arc::clone(&pg_url);
            Box::pin(async move { handle_holding(state, pg_url, request).await })
        });
        let (addr, task) = serve(handler).await?;
        Ok(Self {
            state,
            addr,
            _server: Arc::new(ServerTask(task)),
        })
    }

    /// COPY reads its objects from this S3 stand-in.
    pub fn attach_s3(&self, s3: &FakeS3) {
        lock(&self.state).copy.s3 = Some(s3.clone());
    }

    /// Associates an IAM role with the cluster (COPY may assume it); `default` makes it
    /// the role `IAM_ROLE default` means.
    pub fn associate_role(&self, arn: &str, default: bool) {
        let mut state = lock(&self.state);
        state.copy.roles.push(arn.to_string());
        if default {
            state.copy.default_role = Some(arn.to_string());
        }
    }

    /// The next `count` batches stay STARTED this long before they run, whether or not
    /// anyone is still waiting for them (as a cluster finishes what a killed client sent).
    pub fn delay_next_batches(&self, count: usize, delay: Duration) {
        lock(&self.state)
            .batch_delays
            .extend(std::iter::repeat_n(delay, count));
    }

    /// Ignores WaitTimeSeconds, answering at once (to measure polling without it).
    pub fn set_long_polling(&self, on: bool) {
        lock(&self.state).no_long_polling = !on;
    }

    /// Held answers to ExecuteStatement leave out `HasResultSet`: the member is optional in
    /// the service model (the Rust SDK's `ExecuteStatementOutput::has_result_set` and
    /// `DescribeStatementOutput::has_result_set` are `Option<bool>`; boto3's type stubs
    /// list it under "Optional fields"), so a finished status without it is a legal answer,
    /// and it does not mean "no rows".
    pub fn omit_result_flag(&self, on: bool) {
        lock(&self.state).omit_result_flag = on;
    }

    /// Acts as a cluster that opted in to strings over 65 535 bytes.
    pub fn set_large_strings(&self, on: bool) {
        lock(&self.state).large_strings = on;
    }

    /// For `AWS_ENDPOINT_URL_REDSHIFT_DATA`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next submissions follow these scripts, in order.
    pub fn script(&self, scripts: impl IntoIterator<Item = Script>) {
        lock(&self.state).scripts.extend(scripts);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats.clone()
    }

    /// The SQL of every batch submitted so far, in order.
    pub fn submitted_batches(&self) -> Vec<Vec<String>> {
        let state = lock(&self.state);
        let mut batches: Vec<(&String, &Statement)> = state
            .statements
            .iter()
            .filter(|(_, s)| s.is_batch)
            .collect();
        batches.sort_by(|a, b| a.1.created.total_cmp(&b.1.created).then(a.0.cmp(b.0)));
        batches.into_iter().map(|(_, s)| s.sqls.clone()).collect()
    }

    /// The request body of every submission (to check identifiers and credentials).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state)
            .statements
            .values()
            .map(|s| s.request.clone())
            .collect()
    }
}

fn error(kind: &str, message: &str) -> Reply {
    Reply::json(400, &json!({"__type": kind, "message": message}))
        .with_header("content-type", "application/x-amz-json-1.1")
}

fn ok(body: Value) -> Reply {
    Reply::json(200, &body).with_header("content-type", "application/x-amz-json-1.1")
}

/// [`handle`], holding the answer while `WaitTimeSeconds` asks it to.
async fn handle_holding(
    state: Arc<Mutex<State>>,
    pg_url: Arc<Option<String>>,
    request: Request,
) -> Reply {
    let operation = request
        .header("x-amz-target")
        .unwrap_or_default()
        .trim_start_matches("RedshiftData.")
        .to_string();
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let hold = match &body["WaitTimeSeconds"] {
        Value::Null => 0,
        value => match value.as_u64().filter(|s| *s <= 30) {
            Some(seconds) => seconds,
            None => {
                return error(
                    "ValidationException",
                    "1 validation error detected: Value at 'waitTimeSeconds' failed to satisfy constraint: Member must have value less than or equal to 30",
                )
            }
        },
    };
    let hold = if lock(&state).no_long_polling {
        0
    } else {
        hold
    };
    let until = std::time::Instant::now() + Duration::from_secs(hold);
    match operation.as_str() {
        "DescribeStatement" if hold > 0 => {
            let id = body["Id"].as_str().unwrap_or_default().to_string();
            hold_until_ended(&state, &id, until).await;
            handle(state, pg_url, request)
        }
        "BatchExecuteStatement" | "ExecuteStatement" if hold > 0 => {
            let reply = handle(Arc::clone(&state), pg_url, request);
            let Reply::Response {
                status: 200,
                headers,
                body,
            } = reply
            else {
                return reply;
            };
            let mut answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let id = answer["Id"].as_str().unwrap_or_default().to_string();
            hold_until_ended(&state, &id, until).await;
            if let Some(statement) = lock(&state).statements.get(&id) {
                answer["Status"] = json!(statement.status);
                answer["HasResultSet"] = json!(statement.result.is_some());
            }
            if lock(&state).omit_result_flag {
                if let Some(answer) = answer.as_object_mut() {
                    answer.remove("HasResultSet");
                }
            }
            Reply::Response {
                status: 200,
                headers,
                body: answer.to_string().into_bytes(),
            }
        }
        _ => handle(state, pg_url, request),
    }
}

/// Waits while the statement runs for real (or hangs), until `until`. Scripted statuses
/// answer at once: each describes one observation.
async fn hold_until_ended(state: &Arc<Mutex<State>>, id: &str, until: std::time::Instant) {
    while std::time::Instant::now() < until {
        let running = match lock(state).statements.get(id) {
            Some(s) => {
                let hanging = matches!(s.scripted_end, Some(Script::Hang)) && !s.cancelled;
                s.pending_statuses.is_empty()
                    && (hanging
                        || (s.scripted_end.is_none()
                            && matches!(s.status, "SUBMITTED" | "STARTED")))
            }
            None => false,
        };
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn handle(state: Arc<Mutex<State>>, pg_url: Arc<Option<String>>, request: Request) -> Reply {
    let target = request
        .header("x-amz-target")
        .unwrap_or_default()
        .to_string();
    let Some(operation) = target.strip_prefix("RedshiftData.") else {
        return error("UnknownOperationException", &target);
    };
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    *lock(&state)
        .stats
        .calls
        .entry(operation.to_string())
        .or_default() += 1;
    match operation {
        "BatchExecuteStatement" => submit(&state, &pg_url, body, true),
        "ExecuteStatement" => submit(&state, &pg_url, body, false),
        "DescribeStatement" => describe(&state, &pg_url, &body),
        "GetStatementResult" => result(&state, &body),
        "CancelStatement" => cancel(&state, &body),
        other => error(
            "ValidationException",
            &format!("unsupported operation {other}"),
        ),
    }
}

fn submit(
    state: &Arc<Mutex<State>>,
    pg_url: &Arc<Option<String>>,
    body: Value,
    is_batch: bool,
) -> Reply {
    let sqls: Vec<String> = if is_batch {
        body["Sqls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        body["Sql"]
            .as_str()
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    };
    // The checks the real service makes before it accepts a statement.
    if body["Database"].as_str().unwrap_or_default().is_empty() {
        return error("ValidationException", "Database is required");
    }
    let cluster = body["ClusterIdentifier"].as_str().is_some();
    let workgroup = body["WorkgroupName"].as_str().is_some();
    if cluster == workgroup {
        return error(
            "ValidationException",
            "Either ClusterIdentifier or WorkgroupName is required",
        );
    }
    if cluster && body["DbUser"].as_str().is_none() && body["SecretArn"].as_str().is_none() {
        return error(
            "ValidationException",
            "DbUser or SecretArn is required for a cluster",
        );
    }
    if sqls.is_empty() || sqls.len() > MAX_BATCH_STATEMENTS {
        return error(
            "ValidationException",
            &format!("1 validation error detected: Value at 'sqls' failed to satisfy constraint: Member must have length less than or equal to {MAX_BATCH_STATEMENTS}"),
        );
    }
    if let Some(big) = sqls.iter().find(|s| s.len() > MAX_STATEMENT_BYTES) {
        return error(
            "ValidationException",
            &format!(
                "Cannot process query string larger than 100kB (got {} bytes)",
                big.len()
            ),
        );
    }
    if body["ExecutionMode"]
        .as_str()
        .is_some_and(|m| m != "TRANSACTION")
    {
        return error(
            "ValidationException",
            "only TRANSACTION mode is supported by this stand-in",
        );
    }
    let mut guard = lock(state);
    if let Some(token) = body["ClientToken"].as_str() {
        if let Some(id) = guard.tokens.get(token).cloned() {
            guard.stats.idempotent_replays += 1;
            return ok(json!({"Id": id, "CreatedAt": now(), "Database": body["Database"]}));
        }
    }
    let script = guard.scripts.pop_front();
    if matches!(script, Some(Script::Throttle)) {
        return error("ThrottlingException", "Rate exceeded");
    }
    guard.next_id += 1;
    let id = format!("00000000-0000-4000-8000-{:012x}", guard.next_id);
    if let Some(token) = body["ClientToken"].as_str() {
        guard.tokens.insert(token.to_string(), id.clone());
    }
    if is_batch {
        guard.stats.batch_sizes.push(sqls.len());
        guard
            .stats
            .statement_bytes
            .extend(sqls.iter().map(String::len));
    }
    let (pending_statuses, scripted_end) = match script {
        Some(Script::StatusesThenRun(statuses)) => (statuses.into_iter().collect(), None),
        Some(end) => (VecDeque::new(), Some(end)),
        None => (VecDeque::new(), None),
    };
    let created = now();
    guard.statements.insert(
        id.clone(),
        Statement {
            sqls: sqls.clone(),
            is_batch,
            status: "SUBMITTED",
            error: None,
            failed_index: None,
            created,
            updated: created,
            pending_statuses,
            scripted_end,
            cancelled: false,
            result: None,
            request: body.clone(),
        },
    );
    drop(guard);
    // Unscripted statements start at once, as the service would.
    let scripted = {
        let guard = lock(state);
        let statement = &guard.statements[&id];
        statement.scripted_end.is_some() || !statement.pending_statuses.is_empty()
    };
    if !scripted {
        start_running(state, pg_url, &id);
    }
    ok(json!({
        "Id": id,
        "CreatedAt": created,
        "Database": body["Database"],
        "ClusterIdentifier": body["ClusterIdentifier"],
        "WorkgroupName": body["WorkgroupName"],
        "DbUser": body["DbUser"],
        "SecretArn": body["SecretArn"],
    }))
}

/// Runs the statement on PostgreSQL in the background.
fn start_running(state: &Arc<Mutex<State>>, pg_url: &Arc<Option<String>>, id: &str) {
    let Some(url) = pg_url.as_ref().clone() else {
        let mut guard = lock(state);
        if let Some(statement) = guard.statements.get_mut(id) {
            statement.status = "FINISHED";
            statement.updated = now();
        }
        return;
    };
    let (sqls, is_batch, parameters, large_strings, copy, delay) = {
        let mut guard = lock(state);
        let large_strings = guard.large_strings;
        let copy = guard.copy.clone();
        let is_batch = guard.statements.get(id).is_some_and(|s| s.is_batch);
        let delay = if is_batch {
            guard.batch_delays.pop_front()
        } else {
            None
        };
        let Some(statement) = guard.statements.get_mut(id) else {
            return;
        };
        statement.status = "STARTED";
        statement.updated = now();
        (
            statement.sqls.clone(),
            statement.is_batch,
            statement.request["Parameters"].clone(),
            large_strings,
            copy,
            delay,
        )
    };
    let state = Arc::clone(state);
    let id = id.to_string();
    tokio::spawn(async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let outcome = if is_batch {
            run_batch(&url, &sqls, large_strings, &copy)
                .await
                .map(|copied| {
                    let mut guard = lock(&state);
                    guard.stats.copies += copied.0;
                    guard.stats.copied_bytes += copied.1;
                    None
                })
        } else {
            run_query(&url, &sqls[0], &parameters, large_strings)
                .await
                .map(Some)
        };
        let mut guard = lock(&state);
        let finished = now();
        let committed = outcome.is_ok() && is_batch;
        if let Some(statement) = guard.statements.get_mut(&id) {
            match outcome {
                Ok(result) => {
                    statement.status = "FINISHED";
                    statement.result = result;
                }
                Err((index, message)) => {
                    statement.status = "FAILED";
                    statement.failed_index = Some(index);
                    statement.error = Some(message);
                }
            }
            statement.updated = finished;
            let millis = ((finished - statement.created) * 1000.0) as u64;
            if is_batch {
                guard.stats.batch_millis.push(millis);
            }
        }
        if committed {
            guard.stats.committed_batches += 1;
        }
    });
}

fn describe(state: &Arc<Mutex<State>>, pg_url: &Arc<Option<String>>, body: &Value) -> Reply {
    let id = body["Id"].as_str().unwrap_or_default().to_string();
    let mut run_now = false;
    let reply = {
        let mut guard = lock(state);
        let Some(statement) = guard.statements.get_mut(&id) else {
            return error(
                "ResourceNotFoundException",
                &format!("Query does not exist: {id}"),
            );
        };
        if let Some(next) = statement.pending_statuses.pop_front() {
            statement.status = next;
            statement.updated = now();
            run_now = statement.pending_statuses.is_empty() && statement.scripted_end.is_none();
        } else if let Some(end) = statement.scripted_end.clone() {
            match end {
                Script::Fail {
                    sub_statement,
                    error,
                } => {
                    statement.status = "FAILED";
                    statement.failed_index = Some(sub_statement);
                    statement.error = Some(error);
                }
                Script::Abort => statement.status = "ABORTED",
                Script::Hang if statement.cancelled => statement.status = "ABORTED",
                Script::Hang => statement.status = "STARTED",
                Script::StatusesThenRun(_) | Script::Throttle => {}
            }
            statement.updated = now();
        }
        describe_body(&id, statement)
    };
    if run_now {
        start_running(state, pg_url, &id);
    }
    ok(reply)
}

fn describe_body(id: &str, statement: &Statement) -> Value {
    let final_status = statement.status;
    let sub_statements: Vec<Value> = if statement.is_batch {
        statement
            .sqls
            .iter()
            .enumerate()
            .map(|(i, sql)| {
                let status = match (final_status, statement.failed_index) {
                    ("FAILED", Some(f)) if i == f => "FAILED",
                    ("FAILED", Some(f)) if i < f => "FINISHED",
                    ("FAILED", _) => "ABORTED",
                    (other, _) => other,
                };
                let mut sub = json!({
                    "Id": format!("{id}:{}", i + 1),
                    "Status": status,
                    "QueryString": sql,
                    "CreatedAt": statement.created,
                    "UpdatedAt": statement.updated,
                    "Duration": 0,
                    "HasResultSet": false,
                });
                if status == "FAILED" {
                    sub["Error"] = json!(statement.error);
                }
                sub
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut body = json!({
        "Id": id,
        "Status": final_status,
        "CreatedAt": statement.created,
        "UpdatedAt": statement.updated,
        "Duration": ((statement.updated - statement.created) * 1e9) as i64,
        "Database": statement.request["Database"],
        "HasResultSet": statement.result.is_some(),
        "ResultRows": statement.result.as_ref().map_or(0, |r| r.records.len()),
        "RedshiftPid": 1073815778,
        "RedshiftQueryId": 0,
    });
    if statement.is_batch {
        body["SubStatements"] = json!(sub_statements);
    } else {
        body["QueryString"] = json!(statement.sqls.first());
    }
    if let Some(error) = &statement.error {
        body["Error"] = json!(error);
    }
    body
}

fn result(state: &Arc<Mutex<State>>, body: &Value) -> Reply {
    let id = body["Id"].as_str().unwrap_or_default();
    let guard = lock(state);
    let Some(statement) = guard.statements.get(id) else {
        return error(
            "ResourceNotFoundException",
            &format!("Query does not exist: {id}"),
        );
    };
    let Some(result) = &statement.result else {
        return error(
            "ValidationException",
            "Query does not have result. Please check query status with DescribeStatement.",
        );
    };
    // Pages of 2 records, so that clients have to follow NextToken.
    let start: usize = body["NextToken"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + 2).min(result.records.len());
    let mut reply = json!({
        "Records": result.records[start.min(end)..end],
        "ColumnMetadata": result.columns,
        "TotalNumRows": result.records.len(),
    });
    if end < result.records.len() {
        reply["NextToken"] = json!(end.to_string());
    }
    ok(reply)
}

fn cancel(state: &Arc<Mutex<State>>, body: &Value) -> Reply {
    let id = body["Id"].as_str().unwrap_or_default();
    let mut guard = lock(state);
    guard.stats.cancels += 1;
    match guard.statements.get_mut(id) {
        Some(statement) => {
            statement.cancelled = true;
            ok(json!({"Status": true}))
        }
        None => error(
            "ResourceNotFoundException",
            &format!("Query does not exist: {id}"),
        ),
    }
}

/// SUPER, JSON_PARSE, JSON_SERIALIZE and GETDATE for PostgreSQL, installed once per
/// database. GETDATE is Redshift's current time as a TIMESTAMP in UTC ("GETDATE function",
/// Database Developer Guide; its CURRENT_TIMESTAMP is a deprecated leader-node function).
async fn install_redshift_compatibility(url: &str) -> Result<(), tokio_postgres::Error> {
    let mut client = connect(url, false).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7259388)", &[])
        .await?;
    tx.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'super') THEN
             CREATE DOMAIN public.super AS jsonb;
           END IF;
         END $$;
         CREATE OR REPLACE FUNCTION public.json_parse(text) RETURNS jsonb
           LANGUAGE plpgsql IMMUTABLE STRICT AS $f$
           BEGIN
             IF octet_length($1) > 65535
                AND coalesce(current_setting('heimdallr_fake.large_strings', true), 'off') <> 'on' THEN
               RAISE EXCEPTION 'Invalid input: string length % exceeds the maximum 65535 for JSON_PARSE', octet_length($1);
             END IF;
             RETURN $1::jsonb;
           END $f$;
         CREATE OR REPLACE FUNCTION public.json_serialize(jsonb) RETURNS text
           LANGUAGE sql IMMUTABLE STRICT AS 'SELECT $1::text';
         CREATE OR REPLACE FUNCTION public.getdate() RETURNS timestamp
           LANGUAGE sql STABLE AS $f$SELECT (now() AT TIME ZONE 'UTC')$f$;
         CREATE TABLE IF NOT EXISTS public.sys_load_error_detail (
           query_id BIGINT, file_name TEXT, line_number BIGINT, column_name TEXT,
           column_type TEXT, error_code INTEGER, error_message TEXT,
           start_time TIMESTAMP DEFAULT clock_timestamp());",
    )
    .await?;
    tx.commit().await
}

pub(crate) async fn connect(
    url: &str,
    large_strings: bool,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    // Redshift reads backslashes in string literals as escapes.
    client
        .batch_execute(&format!(
            "SET standard_conforming_strings = off; SET escape_string_warning = off; \
             SET heimdallr_fake.large_strings = '{}'",
            if large_strings { "on" } else { "off" }
        ))
        .await?;
    Ok(client)
}

/// Redshift's SQL that PostgreSQL does not know, turned into what PostgreSQL runs:
/// - CREATE TABLE attributes (DISTSTYLE, SORTKEY) are cut off;
/// - a late-binding view's `WITH NO SCHEMA BINDING` ("CREATE VIEW", Database Developer
///   Guide) is cut off: PostgreSQL binds the view now, which is stricter. Redshift
///   requires every table of such a view to be schema-qualified: refused otherwise
///   (`redshift_refuses`);
/// - `DATEDIFF(day, a, b)` ("DATEDIFF function": whole date-part boundaries between two
///   dates) becomes `(b - a)`, the same whole days for DATE arguments; its bare date-part
///   keyword is no PostgreSQL argument.
fn to_postgres(sql: &str) -> String {
    if sql.starts_with("CREATE TABLE") {
        if let Some(at) = sql.find(") DISTSTYLE ") {
            return sql[..=at].to_string();
        }
    }
    let mut sql = sql
        .strip_suffix(" WITH NO SCHEMA BINDING")
        .unwrap_or(sql)
        .to_string();
    while let Some(start) = sql.find("DATEDIFF(day, ") {
        let args_at = start + "DATEDIFF(day, ".len();
        let Some((first, second, end)) = two_arguments(&sql[args_at..]) else {
            break;
        };
        let replaced = format!("(({second}) - ({first}))");
        sql.replace_range(start..args_at + end, &replaced);
    }
    sql
}

/// `a, b)` at the start of `text` (no nested parentheses in `a`/`b` beyond balanced
/// pairs): the two arguments and where the closing parenthesis ends.
fn two_arguments(text: &str) -> Option<(String, String, usize)> {
    let mut depth = 0i32;
    let mut comma = None;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                let comma = comma?;
                return Some((
                    text[..comma].trim().to_string(),
                    text[comma + 1..i].trim().to_string(),
                    i + 1,
                ));
            }
            ')' => depth -= 1,
            ',' if depth == 0 => comma = Some(i),
            _ => {}
        }
    }
    None
}

/// What Redshift would say about SQL that only PostgreSQL accepts.
/// Only the text before the first literal is looked at: data may say anything.
fn redshift_refuses(sql: &str) -> Option<String> {
    let code = sql
        .split('\'')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if code.starts_with("TRUNCATE") {
        return Some("ERROR: TRUNCATE cannot be run inside a transaction block in a batch".into());
    }
    if code.contains("ON CONFLICT") {
        return Some("ERROR: syntax error at or near \"ON\"".into());
    }
    if code.contains("JSONB") {
        return Some("ERROR: type \"jsonb\" does not exist".into());
    }
    let whole = sql.to_ascii_uppercase();
    if whole.starts_with("CREATE VIEW") && whole.ends_with("WITH NO SCHEMA BINDING") {
        // Every FROM/JOIN of a late-binding view names its schema (the literals of these
        // views hold neither word).
        let words: Vec<&str> = whole.split_whitespace().collect();
        for pair in words.windows(2) {
            let name = pair[1].trim_end_matches([')', ',']);
            if matches!(pair[0], "FROM" | "JOIN")
                && !name.starts_with('(')
                && !name.contains('.')
                && !is_cte_name(&whole, name)
            {
                return Some(format!(
                    "ERROR: All the relation names inside should be qualified when creating VIEW WITH NO SCHEMA BINDING ({name})"
                ));
            }
        }
    }
    None
}

/// Whether `name` is a WITH query of `code` (`name AS (`).
fn is_cte_name(code: &str, name: &str) -> bool {
    code.contains(&format!(" {name} AS ("))
}

fn redshift_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) if db.code().code() == "40001" => format!(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - {}",
            db.message()
        ),
        Some(db) => format!("ERROR: {}", db.message()),
        None => format!("ERROR: {error}"),
    }
}

/// One transaction, as the Data API runs a batch. Returns the COPY statements run and the
/// bytes they read, or the failing statement's index.
async fn run_batch(
    url: &str,
    sqls: &[String],
    large_strings: bool,
    copy: &CopySetup,
) -> Result<(u64, u64), (usize, String)> {
    let mut client = connect(url, large_strings)
        .await
        .map_err(|e| (0, redshift_error(&e)))?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::Serializable)
        .start()
        .await
        .map_err(|e| (0, redshift_error(&e)))?;
    let mut copied = (0, 0);
    for (index, sql) in sqls.iter().enumerate() {
        if sql.starts_with("COPY ") {
            let bytes =
                crate::redshift_copy::run_copy(&tx, url, sql, copy_context(copy, large_strings))
                    .await
                    .map_err(|message| (index, message))?;
            copied.0 += 1;
            copied.1 += bytes;
            continue;
        }
        if let Some(refusal) = redshift_refuses(sql) {
            return Err((index, refusal));
        }
        tx.batch_execute(&to_postgres(sql))
            .await
            .map_err(|e| (index, redshift_error(&e)))?;
    }
    tx.commit()
        .await
        .map_err(|e| (sqls.len().saturating_sub(1), redshift_error(&e)))?;
    Ok(copied)
}

fn copy_context(copy: &CopySetup, large_strings: bool) -> crate::redshift_copy::CopyContext<'_> {
    crate::redshift_copy::CopyContext {
        s3: copy.s3.as_ref(),
        roles: &copy.roles,
        default_role: copy.default_role.as_deref(),
        large_strings,
    }
}

/// A read with named `:parameters` (bound as text, as the Data API sends them).
async fn run_query(
    url: &str,
    sql: &str,
    parameters: &Value,
    large_strings: bool,
) -> Result<QueryResult, (usize, String)> {
    let client = connect(url, large_strings)
        .await
        .map_err(|e| (0, redshift_error(&e)))?;
    let mut values: Vec<String> = Vec::new();
    let mut text = String::with_capacity(sql.len());
    let named: HashMap<&str, &str> = parameters
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["value"].as_str()?)))
        .collect();
    let mut chars = sql.char_indices().peekable();
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
        }
        if c == ':' && !in_string {
            let name: String = sql[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(value) = named.get(name.as_str()) {
                values.push(value.to_string());
                text.push_str(&format!("${}", values.len()));
                for _ in 0..name.len() {
                    chars.next();
                }
                continue;
            }
        }
        text.push(c);
    }
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = client
        .query(&text, &params)
        .await
        .map_err(|e| (0, redshift_error(&e)))?;
    let columns: Vec<Value> = rows
        .first()
        .map(|row| {
            row.columns()
                .iter()
                .map(|c| json!({"name": c.name(), "label": c.name(), "typeName": c.type_().name()}))
                .collect()
        })
        .unwrap_or_default();
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut record = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            record.push(field(row, i, column.type_()));
        }
        records.push(record);
    }
    Ok(QueryResult { columns, records })
}

fn field(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Value {
    let null = json!({"isNull": true});
    match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map_or(null, |v| json!({"longValue": v})),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .ok()
            .flatten()
            .map_or(null, |v| json!({"longValue": v})),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .ok()
            .flatten()
            .map_or(null, |v| json!({"doubleValue": v})),
        Type::NUMERIC => null,
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .ok()
            .flatten()
            .map_or(null, |v| json!({"booleanValue": v})),
        _ => row
            .try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .map_or(null, |v| json!({"stringValue": v})),
    }
}

/// Waits for every statement the stand-in is running to end (tests that kill a client
/// mid-batch compare the database only after the service is done, as on Redshift).
pub async fn settle(fake: &FakeRedshiftData, within: Duration) {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        let running = lock(&fake.state)
            .statements
            .values()
            .any(|s| s.status == "STARTED" && s.scripted_end.is_none());
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
