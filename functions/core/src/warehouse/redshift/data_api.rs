//! The Data API transport: statements submitted through aws-sdk-redshiftdata, polled to
//! completion, retried or cancelled. It knows nothing of tables or batches.
//!
//! Each planned transaction is one `BatchExecuteStatement`, with a ClientToken derived
//! from its statements so that a resubmitted call is not applied twice. Completion is
//! waited for by long polling: the submission and each `DescribeStatement` ask the service
//! to hold the answer until the statement ends (`WaitTimeSeconds`: the API allows 30 s,
//! Heimdallr asks 20, never past the deadline), so a batch usually costs one call. An endpoint that answers at once
//! instead is polled with a backoff. A failure reports the failing sub-statement and
//! Redshift's text and applied nothing. Throttling and serializable isolation conflicts
//! (error 1023) are retried; a statement still running past the batch's deadline is
//! cancelled.

use super::plan::Transaction;
use super::target::{Compute, RedshiftTarget};
use crate::warehouse::WarehouseError;
use aws_sdk_redshiftdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use aws_sdk_redshiftdata::Client;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Submissions of one transaction before giving up (throttling, conflicts, transient).
const ATTEMPTS: u32 = 6;
/// How long one call may hold its answer until the statement ends (the API allows 30 s).
const LONG_POLL_SECONDS: u64 = 20;
/// First pause between polls of an endpoint that does not hold its answer; doubles up to
/// [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(1);

/// Names the cluster (and db user or secret) or the workgroup on a request builder; the
/// two statement calls have builders of different types with the same setters.
macro_rules! on_target {
    ($request:expr, $compute:expr) => {
        match $compute {
            Compute::Cluster {
                identifier,
                db_user,
                secret_arn,
            } => $request
                .cluster_identifier(identifier)
                .set_db_user(db_user.clone())
                .set_secret_arn(secret_arn.clone()),
            Compute::Workgroup { name, secret_arn } => $request
                .workgroup_name(name)
                .set_secret_arn(secret_arn.clone()),
        }
    };
}

/// A client for one cluster or workgroup and database.
pub(super) struct DataApi {
    client: Client,
    pub(super) target: RedshiftTarget,
    /// In every ClientToken: a later process (the next invocation) submitting the same
    /// statements, such as a migration cancelled at the last one's deadline, must not be
    /// answered with that earlier statement for the token's 8 hours.
    nonce: u32,
}

/// Why one submitted statement did not finish.
#[derive(Debug)]
enum Failure {
    /// Worth submitting again (throttling, conflicts, service hiccups).
    Retryable(String),
    Fatal(String),
    /// A sub-statement of the batch failed (0-based), with Redshift's error text.
    Statement {
        index: usize,
        redshift_error: String,
        detail: String,
    },
}

/// A transaction that was not applied: why (the detail of the error to report), and which
/// statement failed with what text from Redshift, when the service said.
#[derive(Debug)]
pub(super) struct NotApplied {
    pub(super) detail: String,
    pub(super) failed_statement: Option<(usize, String)>,
}

/// What a submission or a poll saw of a statement.
enum Observed {
    Finished {
        has_result_set: bool,
    },
    /// Failed or aborted: DescribeStatement says why.
    Ended,
    Running,
}

impl DataApi {
    pub(super) fn new(client: Client, target: RedshiftTarget) -> Self {
        Self {
            client,
            target,
            nonce: rand::random(),
        }
    }

    pub(super) fn error(&self, context: &str, detail: impl Into<String>) -> WarehouseError {
        WarehouseError::Query {
            target: self.target.describe(),
            context: context.to_string(),
            detail: detail.into(),
        }
    }

    /// Runs one transaction to completion, resubmitting after retryable failures.
    pub(super) async fn run_transaction(
        &self,
        transaction: &Transaction,
        deadline: Option<Instant>,
        context: &str,
    ) -> Result<(), WarehouseError> {
        self.run_transaction_detailed(transaction, deadline, 0)
            .await
            .map_err(|not_applied| self.error(context, not_applied.detail))
    }

    /// [`Self::run_transaction`], saying which statement failed and Redshift's text.
    /// `resubmission` counts deliberate resubmissions of the same statements (after
    /// re-uploading a lost object): each needs tokens of its own.
    pub(super) async fn run_transaction_detailed(
        &self,
        transaction: &Transaction,
        deadline: Option<Instant>,
        resubmission: u32,
    ) -> Result<(), NotApplied> {
        let digest = statements_digest(&transaction.statements);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A new token per attempt: the previous one names a statement that failed.
            let token = format!(
                "heimdallr-{digest}-{:08x}-{resubmission}-{attempt}",
                self.nonce
            );
            let outcome = match self.submit(&transaction.statements, &token, deadline).await {
                Ok((id, observed)) => self.wait(&id, observed, deadline).await.map(|_| ()),
                Err(failure) => Err(failure),
            };
            let (detail, failed_statement) = match outcome {
                Ok(()) => return Ok(()),
                Err(Failure::Retryable(detail)) if attempt < ATTEMPTS && !past(deadline) => {
                    let pause = backoff(attempt);
                    tracing::warn!(attempt, error = %detail, ?pause, "redshift batch not applied; retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(Failure::Retryable(detail) | Failure::Fatal(detail)) => (detail, None),
                Err(Failure::Statement {
                    index,
                    redshift_error,
                    detail,
                }) => (detail, Some((index, redshift_error))),
            };
            return Err(NotApplied {
                detail,
                failed_statement,
            });
        }
    }

    async fn submit(
        &self,
        statements: &[String],
        token: &str,
        deadline: Option<Instant>,
    ) -> Result<(String, Observed), Failure> {
        let request = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(statements.to_vec()))
            .database(&self.target.database)
            .client_token(token)
            .statement_name("heimdallr")
            .set_wait_time_seconds(long_poll_seconds(deadline));
        let request = on_target!(request, &self.target.compute);
        match request.send().await {
            Ok(output) => submitted(
                "BatchExecuteStatement",
                output.id,
                output.status.as_ref().map(|s| s.as_str()),
                output.has_result_set,
            ),
            Err(error) => Err(classify_sdk_error("BatchExecuteStatement", &error)),
        }
    }

    async fn execute(
        &self,
        sql: &str,
        parameters: &[(&str, &str)],
        deadline: Option<Instant>,
    ) -> Result<(String, Observed), Failure> {
        let parameters = parameters
            .iter()
            .map(|(name, value)| {
                SqlParameter::builder()
                    .name(*name)
                    .value(*value)
                    .build()
                    .map_err(|e| Failure::Fatal(format!("parameter {name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request = self
            .client
            .execute_statement()
            .sql(sql)
            .database(&self.target.database)
            .set_parameters((!parameters.is_empty()).then_some(parameters))
            .set_wait_time_seconds(long_poll_seconds(deadline));
        let request = on_target!(request, &self.target.compute);
        match request.send().await {
            Ok(output) => submitted(
                "ExecuteStatement",
                output.id,
                output.status.as_ref().map(|s| s.as_str()),
                output.has_result_set,
            ),
            Err(error) => Err(classify_sdk_error("ExecuteStatement", &error)),
        }
    }

    /// Waits until the statement ends (long polls, or polls with a backoff where the
    /// endpoint answers at once); cancels it once `deadline` has passed. Returns whether it
    /// has a result set.
    async fn wait(
        &self,
        id: &str,
        submitted: Observed,
        deadline: Option<Instant>,
    ) -> Result<bool, Failure> {
        if let Observed::Finished { has_result_set } = submitted {
            return Ok(has_result_set);
        }
        let mut pause = FIRST_POLL;
        let mut describe_failures = 0;
        loop {
            let hold = long_poll_seconds(deadline);
            let asked = Instant::now();
            let described = match self
                .client
                .describe_statement()
                .id(id)
                .set_wait_time_seconds(hold)
                .send()
                .await
            {
                Ok(described) => described,
                Err(error) => {
                    describe_failures += 1;
                    match classify_sdk_error("DescribeStatement", &error) {
                        Failure::Retryable(_) if describe_failures < ATTEMPTS => {
                            tokio::time::sleep(backoff(describe_failures)).await;
                            continue;
                        }
                        // The statement may still commit; the caller's retry re-applies the
                        // same merge, which is harmless.
                        failure => return Err(failure),
                    }
                }
            };
            match described.status {
                // Without the flag, a read asks for its rows: GetStatementResult says loudly
                // if there are none to get, where "no rows" would be a silent reset.
                Some(StatusString::Finished) => {
                    return Ok(described.has_result_set.unwrap_or(true))
                }
                Some(StatusString::Failed) => return Err(statement_failure(&described)),
                Some(StatusString::Aborted) => {
                    return Err(Failure::Fatal(format!(
                        "statement {id} was aborted{}",
                        described
                            .error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    )))
                }
                _ if past(deadline) => {
                    let cancelled = self.client.cancel_statement().id(id).send().await;
                    let note = match cancelled {
                        Ok(_) => "cancelled",
                        Err(_) => "could not be cancelled",
                    };
                    return Err(Failure::Fatal(format!(
                        "statement {id} was still running at the end of the time budget and {note}; nothing of it was applied"
                    )));
                }
                _ => {
                    // Answered well before the hold asked for: this endpoint does not long
                    // poll, so pause between polls.
                    let held = Duration::from_secs(hold.unwrap_or(0) as u64);
                    if asked.elapsed() < held / 2 || held.is_zero() {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_POLL);
                    }
                }
            }
        }
    }

    /// Runs a read and returns its rows; cancels it once `deadline` has passed.
    pub(super) async fn query(
        &self,
        context: &str,
        sql: &str,
        parameters: &[(&str, &str)],
        deadline: Option<Instant>,
    ) -> Result<Vec<Vec<Field>>, WarehouseError> {
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            let outcome = match self.execute(sql, parameters, deadline).await {
                Ok((id, observed)) => self
                    .wait(&id, observed, deadline)
                    .await
                    .map(|has_rows| (id, has_rows)),
                Err(failure) => Err(failure),
            };
            match outcome {
                Ok((id, true)) => break id,
                Ok((_, false)) => return Ok(Vec::new()),
                Err(Failure::Retryable(detail)) if attempt < ATTEMPTS && !past(deadline) => {
                    tracing::warn!(attempt, error = %detail, "redshift read failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(
                    Failure::Retryable(detail)
                    | Failure::Fatal(detail)
                    | Failure::Statement { detail, .. },
                ) => return Err(self.error(context, detail)),
            }
        };
        let mut rows = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(&id)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| {
                    self.error(
                        context,
                        format!("GetStatementResult: {}", DisplayErrorContext(&e)),
                    )
                })?;
            rows.extend(page.records);
            next_token = page.next_token;
            if next_token.is_none() {
                return Ok(rows);
            }
        }
    }
}

/// The hold to ask of a call: [`LONG_POLL_SECONDS`], less near the deadline (a second
/// kept to cancel), none in its last second.
fn long_poll_seconds(deadline: Option<Instant>) -> Option<i32> {
    let seconds = match deadline {
        None => LONG_POLL_SECONDS,
        Some(deadline) => deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .saturating_sub(1)
            .min(LONG_POLL_SECONDS),
    };
    (seconds > 0).then_some(seconds as i32)
}

/// A submission's statement id and what it saw of the statement (its status is present
/// when it was asked to hold its answer).
fn submitted(
    operation: &str,
    id: Option<String>,
    status: Option<&str>,
    has_result_set: Option<bool>,
) -> Result<(String, Observed), Failure> {
    let observed = match (status, has_result_set) {
        (Some("FINISHED"), Some(has_result_set)) => Observed::Finished { has_result_set },
        // Finished without saying whether it has rows (the flag is optional in the
        // output): DescribeStatement says, rather than reading as "no rows".
        (Some("FINISHED"), None) => Observed::Running,
        (Some("FAILED" | "ABORTED"), _) => Observed::Ended,
        _ => Observed::Running,
    };
    id.map(|id| (id, observed))
        .ok_or_else(|| Failure::Fatal(format!("{operation} returned no id")))
}

pub(super) fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.saturating_sub(1));
    let capped = base.min(Duration::from_secs(10));
    // Jitter, so that two writers that conflicted do not collide again in step.
    capped + Duration::from_millis(rand::random::<u64>() % 200)
}

fn statements_digest(statements: &[String]) -> String {
    let mut hasher = Sha256::new();
    for statement in statements {
        hasher.update(statement.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Redshift reports serializable isolation violations as error 1023.
fn is_conflict(error: &str) -> bool {
    error.contains("1023")
        || error.contains("Serializable isolation violation")
        || error.contains("deadlock detected")
}

fn classify_sdk_error<E>(operation: &str, error: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = format!("{operation}: {}", DisplayErrorContext(error));
    let code = match error {
        SdkError::ServiceError(service) => service.err().code().unwrap_or_default().to_string(),
        // Timeouts and connection failures: the request may not have arrived (or its
        // answer was lost); the same ClientToken makes a resubmission safe.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return Failure::Retryable(detail)
        }
        _ => String::new(),
    };
    match code.as_str() {
        "ThrottlingException"
        | "ActiveStatementsExceededException"
        | "ActiveSessionsExceededException"
        | "ActiveWaitingRequestsExceededException"
        | "InternalServerException" => Failure::Retryable(detail),
        _ => Failure::Fatal(detail),
    }
}

/// The failing sub-statement of a batch (its number, the start of its text, Redshift's
/// error), or the statement's own error.
fn statement_failure(
    described: &aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput,
) -> Failure {
    let failing = described
        .sub_statements
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, s)| s.status.as_ref().is_some_and(|s| s.as_str() == "FAILED"));
    let detail = match failing {
        Some((index, sub)) => format!(
            "statement {} of {} failed: {} [{}]",
            index + 1,
            described.sub_statements.as_ref().map_or(0, Vec::len),
            sub.error.as_deref().unwrap_or("no error text"),
            statement_head(sub.query_string.as_deref().unwrap_or_default()),
        ),
        None => format!(
            "statement failed: {}",
            described.error.as_deref().unwrap_or("no error text")
        ),
    };
    let error_text = described.error.as_deref().unwrap_or_default();
    if is_conflict(&detail) || is_conflict(error_text) {
        return Failure::Retryable(detail);
    }
    match failing {
        Some((index, sub)) => Failure::Statement {
            index,
            redshift_error: sub.error.clone().unwrap_or_default(),
            detail,
        },
        None => Failure::Fatal(detail),
    }
}

/// The start of a statement for messages: up to its VALUES (never the data) or 160 bytes.
fn statement_head(sql: &str) -> String {
    let end = sql.find(" VALUES ").unwrap_or(sql.len()).min(160);
    let head = crate::text::truncate_utf8(sql, end);
    if head.len() < sql.len() {
        format!("{head} ..")
    } else {
        head.to_string()
    }
}

pub(super) fn field_text(field: Option<&Field>) -> Option<String> {
    match field? {
        Field::StringValue(v) => Some(v.clone()),
        Field::LongValue(v) => Some(v.to_string()),
        Field::DoubleValue(v) => Some(v.to_string()),
        Field::BooleanValue(v) => Some(v.to_string()),
        _ => None,
    }
}

pub(super) fn field_i64(field: Option<&Field>) -> Option<i64> {
    match field? {
        Field::LongValue(v) => Some(*v),
        Field::DoubleValue(v) => Some(*v as i64),
        Field::StringValue(v) => v.parse().ok(),
        _ => None,
    }
}

pub(super) fn field_time(field: Option<&Field>) -> Option<DateTime<Utc>> {
    field_i64(field).and_then(DateTime::from_timestamp_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_a_statement_up_to_its_values_never_the_data() {
        let sql = "INSERT INTO \"h\".\"t\" (\"id\") VALUES (1, 'secret@example.com')";
        assert_eq!(statement_head(sql), "INSERT INTO \"h\".\"t\" (\"id\") ..");
        assert_eq!(statement_head("DROP TABLE \"s\""), "DROP TABLE \"s\"");
    }

    #[test]
    fn conflicts_are_recognised_by_redshift_error_1023() {
        assert!(is_conflict(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 123"
        ));
        assert!(!is_conflict("ERROR: relation \"x\" does not exist"));
    }

    #[test]
    fn client_tokens_follow_the_statements() {
        let a = statements_digest(&["SELECT 1".into()]);
        assert_eq!(a, statements_digest(&["SELECT 1".into()]));
        assert_ne!(a, statements_digest(&["SELECT 2".into()]));
        assert_eq!(a.len(), 32);
    }
}
