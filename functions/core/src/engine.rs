//! The sync engine's bookkeeping, shared by every source: state per (source, stream,
//! scope), row batching, the time budget, rejects, and the run record. A source's stream
//! logic pulls pages and decides cursors; [`StreamRun`] turns them into transactions.

use crate::http::HttpStats;
use crate::json::JsonText;
use crate::schema::{Table, REJECTS, RUNS, STATE};
use crate::stream::{ErrorKind, StreamError};
use crate::warehouse::{
    check_row, normalize_row, prepare_row, Batch, Heartbeat, Row, Value, Warehouse, WarehouseError,
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

/// Identifies one stream's state: e.g. (rollbar, occurrences, project "web").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub source: &'static str,
    pub stream: &'static str,
    pub scope: String,
}

impl StreamKey {
    pub fn new(source: &'static str, stream: &'static str, scope: impl Into<String>) -> Self {
        Self {
            source,
            stream,
            scope: scope.into(),
        }
    }
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.stream, self.scope)
    }
}

/// How long a commit may run past the time budget before a backend that can cancel it
/// does (the Lambda keeps a larger margin than this before its hard deadline).
pub const COMMIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Source rows per transaction unless configured: large enough that per-transaction costs
/// (PostgreSQL's commit, Redshift's Data API calls) stay small, small enough that a batch of
/// raw documents stays a few MB.
pub const DEFAULT_BATCH_ROWS: usize = 1000;

/// Bytes of source rows per transaction unless configured, and the size an API page aims
/// at: what bounds a run's memory. A run holds about two pages (the one being stored and
/// the one fetched meanwhile) and two batches (the one being built and the one committing),
/// plus the backend's encoding of the committing one: about five times this, over a
/// process baseline of about 15 MB. `scripts/bench-memory.sh` measured it (README,
/// "Memory"): 8 MiB keeps the peak under 100 MB at every occurrence size up to Rollbar's
/// 128 KB, and costs nothing with small rows (the row bound decides first).
pub const DEFAULT_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// [`DEFAULT_BATCH_BYTES`] as the setting writes it.
pub const DEFAULT_BATCH_BYTES_SETTING: &str = "8MiB";

/// The least a shrunk budget goes down to (see [`StreamRun::page_bytes`]).
const MIN_BATCH_BYTES: usize = 1024 * 1024;

/// How many times the byte budget halves after runs that never finished, at most.
const MAX_SHRINKS: u32 = 3;

/// What every run of every source shares.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub run_id: String,
    /// Stop starting new pages after this instant; `None` runs until caught up.
    pub deadline: Option<Instant>,
    /// Source rows per transaction.
    pub batch_rows: usize,
    /// Bytes of source rows per transaction, and what a page of an API aims at.
    pub batch_bytes: usize,
    /// Told after every committed batch (the command's progress bar).
    pub progress: Option<Progress>,
    /// The wall clock sources compare their records' times with (windows, sweeps); a
    /// simulation can drive it.
    pub clock: Clock,
}

/// The time of day for a sync: the system's, or one a simulation sets.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>>);

impl Clock {
    /// A clock that reads `now`.
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(now)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.as_ref().map_or_else(Utc::now, |now| now())
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(set)"
        } else {
            "Clock(system)"
        })
    }
}

/// Told (stream, rows written so far in this run) after each commit.
pub type ProgressFn = dyn Fn(&StreamKey, u64) + Send + Sync;

/// The command's progress callback.
#[derive(Clone)]
pub struct Progress(pub Arc<ProgressFn>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl SyncOptions {
    pub fn new(deadline: Option<Instant>) -> Self {
        Self {
            run_id: uuid::Uuid::new_v4().to_string(),
            deadline,
            batch_rows: DEFAULT_BATCH_ROWS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            progress: None,
            clock: Clock::default(),
        }
    }

    /// The sync's wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn time_left(&self) -> bool {
        self.deadline.is_none_or(|d| Instant::now() < d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    /// Caught up with the source.
    Succeeded,
    /// Stopped at the time budget with work left; the next run resumes.
    Partial,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }
}

/// Figures of one finished stream run (also the source of metrics).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub key: StreamKey,
    pub status: RunStatus,
    pub rows_written: u64,
    pub pages_fetched: u64,
    pub api_retries: u64,
    pub rejects: u64,
    pub newest_source_time: Option<DateTime<Utc>>,
    /// When the stream last reached the source's head, as the warehouse holds it (now, for
    /// a run that just did); `None` while nothing is on record (a stream whose first run
    /// failed, or a warehouse that could not be read).
    pub caught_up_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// What kind of failure `error` is.
    pub error_kind: Option<ErrorKind>,
    /// Runs of this stream before this one that started and never finished (the process
    /// was killed: out of memory, or past its time); 0 normally.
    pub unfinished_before: u32,
    /// Failures the stream worked around and went on (a refused page token, one record
    /// that could not be read this time): each was logged at warn level.
    pub recovered: u64,
    pub duration: std::time::Duration,
}

impl RunOutcome {
    /// The run's one summary log line (`stream done`), at error level when it failed.
    pub fn log(&self, run_id: &str) {
        let status = self.status.as_str();
        let (rows, pages, retries, rejects) = (
            self.rows_written,
            self.pages_fetched,
            self.api_retries,
            self.rejects,
        );
        match &self.error {
            None => {
                tracing::info!(run_id, stream = %self.key, status, rows, pages, retries, rejects, "stream done")
            }
            Some(error) => {
                let kind = self.error_kind.map_or("", ErrorKind::as_str);
                tracing::error!(run_id, stream = %self.key, status, rows, pages, retries, rejects, error, kind, "stream done")
            }
        }
    }

    /// A run that failed before it could read its state (e.g. the warehouse is down, or
    /// the source could not list its streams).
    pub fn not_started(key: StreamKey, error: StreamError) -> Self {
        Self {
            key,
            status: RunStatus::Failed,
            rows_written: 0,
            pages_fetched: 0,
            api_retries: 0,
            rejects: 0,
            newest_source_time: None,
            caught_up_at: None,
            error: Some(error.to_string()),
            error_kind: Some(error.kind),
            unfinished_before: 0,
            recovered: 0,
            duration: std::time::Duration::ZERO,
        }
    }
}

/// A stored cursor that no longer reads as the stream's cursor type.
#[derive(Debug, thiserror::Error)]
#[error(
    "stored state of {key} is unreadable ({detail}); fix or delete that row of _heimdallr_state"
)]
pub struct CursorError {
    pub key: String,
    pub detail: String,
}

/// Reads a stream's stored cursor (the default when there is none yet).
fn load_cursor<T: serde::de::DeserializeOwned + Default>(
    key: &StreamKey,
    cursor: Option<serde_json::Value>,
) -> Result<T, CursorError> {
    match cursor {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(value) => serde_json::from_value(value).map_err(|e| CursorError {
            key: key.to_string(),
            detail: e.to_string(),
        }),
    }
}

/// A cursor as the JSON the state row stores.
fn cursor_json<T: serde::Serialize>(cursor: &T) -> serde_json::Value {
    serde_json::to_value(cursor).unwrap_or(serde_json::Value::Null)
}

/// Another stream's state as read: its key, source time and heartbeat.
type OtherState = (StreamKey, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// One stream's run: its cursor, the rows it collects, and the transactions that commit
/// them together with the cursor that covers them and the run record.
pub struct StreamRun<C> {
    /// Where the stream is. The stream's logic moves it; every commit stores it.
    pub cursor: C,
    warehouse: Arc<dyn Warehouse>,
    key: StreamKey,
    options: SyncOptions,
    started_at: DateTime<Utc>,
    started: Instant,
    pending: Batch,
    pending_rows: usize,
    /// What the queued rows weigh ([`Row::weight`]).
    pending_bytes: usize,
    /// Runs before this one that never finished: each halves the byte budget.
    unfinished_before: u32,
    /// Failures worked around this run ([`StreamRun::recovered`]).
    recovered: u64,
    rows_written: u64,
    pages_fetched: u64,
    rejects: u64,
    http: Option<Arc<HttpStats>>,
    retries_at_start: u64,
    source_time: Option<DateTime<Utc>>,
    /// The cursor this stream last committed (or found stored): a heartbeat is recorded
    /// only when the cursor is still that one, with nothing left pending.
    committed_cursor: serde_json::Value,
    /// The heartbeat every commit of this run carries: the stored one, or this run's start
    /// for a stream with none yet (so a stream that never catches up still ages).
    caught_up_at: DateTime<Utc>,
    /// Whether `caught_up_at` is in the warehouse (stored before, or committed by this run).
    caught_up_at_stored: bool,
    /// The stream said it reached the source's head during this run (`reached_head`).
    head_reached: bool,
    /// Other streams' stored state read by this run (see `stage_state_of`).
    others: Vec<OtherState>,
    /// The batch being committed in the background, and its source rows.
    in_flight: Option<(u64, tokio::task::JoinHandle<Result<(), WarehouseError>>)>,
}

impl<C: serde::Serialize + serde::de::DeserializeOwned + Default> StreamRun<C> {
    /// Reads the stream's state and records the run as started.
    pub async fn start(
        warehouse: Arc<dyn Warehouse>,
        key: StreamKey,
        options: &SyncOptions,
        http: Option<Arc<HttpStats>>,
    ) -> Result<Self, StreamError> {
        let state = warehouse
            .read_state(key.source, key.stream, &key.scope, reads_deadline(options))
            .await?;
        let cursor = load_cursor(&key, state.as_ref().map(|s| s.cursor.clone()));
        let retries_at_start = http.as_ref().map_or(0, |h| h.retries());
        let started_at = Utc::now();
        let stored_heartbeat = state.as_ref().and_then(|s| s.caught_up_at);
        let run = Self {
            cursor: C::default(),
            warehouse,
            key,
            options: options.clone(),
            started_at,
            started: Instant::now(),
            pending: Batch::default(),
            pending_rows: 0,
            pending_bytes: 0,
            unfinished_before: state.as_ref().map_or(0, |s| s.unfinished_runs),
            recovered: 0,
            rows_written: 0,
            pages_fetched: 0,
            rejects: 0,
            http,
            retries_at_start,
            source_time: state.as_ref().and_then(|s| s.source_time),
            committed_cursor: serde_json::Value::Null,
            caught_up_at: stored_heartbeat.unwrap_or(started_at),
            caught_up_at_stored: stored_heartbeat.is_some(),
            head_reached: false,
            others: Vec::new(),
            in_flight: None,
        };
        let mut run = run;
        if run.unfinished_before > 0 {
            // A run killed by the kernel (out of memory) or by Lambda (past its time)
            // leaves only its start on record: say so, and ask for less at a time.
            tracing::warn!(
                stream = %run.key,
                unfinished_runs = run.unfinished_before,
                page_bytes = run.page_bytes(),
                "earlier runs of this stream started and never finished (killed for memory or time?): pages and batches shrink"
            );
        }
        let mut batch = Batch::default();
        match cursor {
            Ok(cursor) => {
                run.committed_cursor = cursor_json(&cursor);
                run.cursor = cursor;
                batch.push(&RUNS, run.run_row(RunStatus::Running, None, None));
                // Every stream has a heartbeat from its first attempt, so one whose first
                // runs fail ages (and alarms) like any other.
                if state.is_none() {
                    batch.push(
                        &STATE,
                        state_row(
                            &run.key,
                            serde_json::Value::Null,
                            None,
                            Some(started_at),
                            &run.options.run_id,
                        ),
                    );
                } else if stored_heartbeat.is_none() {
                    batch.heartbeats.push(run.heartbeat(started_at));
                }
                run.warehouse.commit(batch).await?;
                run.caught_up_at_stored = true;
                Ok(run)
            }
            // Recorded as a failed run, so that `status` and the runs table show why the
            // stream no longer moves; the stored cursor is left as it is.
            Err(e) => {
                let error = StreamError::from(e);
                let message = error.to_string();
                batch.push(
                    &RUNS,
                    run.run_row(RunStatus::Failed, Some(Utc::now()), Some(&message)),
                );
                run.warehouse.commit(batch).await?;
                Err(error)
            }
        }
    }

    /// Another stream's stored cursor (e.g. the items a walk of occurrences touches).
    pub async fn read_cursor_of<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        key: &StreamKey,
    ) -> Result<T, StreamError> {
        let state = self
            .warehouse
            .read_state(
                key.source,
                key.stream,
                &key.scope,
                reads_deadline(&self.options),
            )
            .await?;
        // Kept so that staging this stream's cursor leaves its other fields as they are.
        self.others.retain(|(k, _, _)| k != key);
        self.others.push((
            key.clone(),
            state.as_ref().and_then(|s| s.source_time),
            state.as_ref().and_then(|s| s.caught_up_at),
        ));
        Ok(load_cursor(key, state.map(|s| s.cursor))?)
    }

    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Says that the stream has reached its source's head in this run, though it goes on
    /// with other work (e.g. a periodic sweep) that may stop it partway: its heartbeat is
    /// recorded at the end of the run all the same.
    pub fn reached_head(&mut self) {
        self.head_reached = true;
    }

    fn heartbeat(&self, at: DateTime<Utc>) -> Heartbeat {
        Heartbeat {
            source: self.key.source.to_string(),
            stream: self.key.stream.to_string(),
            scope: self.key.scope.clone(),
            at,
        }
    }

    /// The sync's wall-clock time (a simulation may drive it).
    pub fn now(&self) -> DateTime<Utc> {
        self.options.now()
    }

    pub fn time_left(&self) -> bool {
        self.options.time_left()
    }

    pub fn page_fetched(&mut self) {
        self.pages_fetched += 1;
    }

    /// The newest source event time seen (drives the freshness lag).
    pub fn observe_source_time(&mut self, time: DateTime<Utc>) {
        if self.source_time.is_none_or(|t| time > t) {
            self.source_time = Some(time);
        }
    }

    pub fn pending_rows(&self) -> usize {
        self.pending_rows
    }

    /// A failure the stream worked around, the run going on: logged at warn level with
    /// what was done about it, and counted (the `Recovered` metric), so that a stream that
    /// keeps recovering is seen.
    pub fn recovered(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.recovered += 1;
        tracing::warn!(stream = %self.key, error = %error, "{what}");
    }

    /// Whether the batch holds its rows' worth or its bytes' worth.
    pub fn batch_full(&self) -> bool {
        self.pending_rows >= self.options.batch_rows || self.pending_bytes >= self.batch_bytes()
    }

    /// Source rows the batch can take before it is full.
    pub fn batch_room(&self) -> usize {
        self.options.batch_rows.saturating_sub(self.pending_rows)
    }

    /// How many of the next records, of these sizes in bytes, the batch takes before it is
    /// full (at least one, so that a record larger than a batch is still stored).
    pub fn batch_room_for(&self, sizes: impl IntoIterator<Item = usize>) -> usize {
        let mut room_bytes = self.batch_bytes().saturating_sub(self.pending_bytes);
        let mut fits = 0;
        for size in sizes.into_iter().take(self.batch_room()) {
            if fits > 0 && size > room_bytes {
                break;
            }
            room_bytes = room_bytes.saturating_sub(size);
            fits += 1;
        }
        fits.max(1)
    }

    /// The byte budget of one batch: the setting, halved for each earlier run that never
    /// finished (at most [`MAX_SHRINKS`] times, never below 1 MiB).
    fn batch_bytes(&self) -> usize {
        let budget = self.options.batch_bytes;
        (budget >> self.unfinished_before.min(MAX_SHRINKS)).max(MIN_BATCH_BYTES.min(budget))
    }

    /// What one API page should weigh: a source sizes its pages (its `limit`) from the
    /// bytes its records had so far, so that memory stays bounded whatever their size.
    pub fn page_bytes(&self) -> usize {
        self.batch_bytes()
    }

    /// Queues a row. A row that cannot be stored becomes a reject with its reason and its
    /// values, committed with the batch; the sync goes on.
    pub fn add(&mut self, table: &'static Table, row: Row) {
        match check_row(table, &row) {
            Ok(()) => {
                let row = normalize_row(table, row);
                self.pending_bytes += row.weight();
                self.pending.push(table, row);
                self.pending_rows += 1;
            }
            Err(reason) => {
                let key = row.key_text(table);
                self.reject(table, &key, &reason, row.to_json(table));
            }
        }
    }

    /// Records a payload that could not be mapped at all.
    pub fn reject(
        &mut self,
        table: &'static Table,
        record_key: &str,
        reason: &str,
        raw: impl Into<JsonText>,
    ) {
        tracing::warn!(stream = %self.key, table = table.name, record_key, reason, "row rejected");
        self.rejects += 1;
        let row = Row(vec![
            Value::Text(self.key.source.to_string()),
            Value::Text(table.name.to_string()),
            Value::Text(if record_key.is_empty() {
                "(no key)".into()
            } else {
                record_key.to_string()
            }),
            Value::Text(self.key.scope.clone()),
            Value::Text(self.options.run_id.clone()),
            Value::Text(reason.to_string()),
            Value::Json(raw.into()),
            Value::Timestamp(Utc::now()),
        ]);
        match prepare_row(&REJECTS, row) {
            Ok(row) => {
                self.pending_bytes += row.weight();
                self.pending.push(&REJECTS, row)
            }
            Err(e) => tracing::error!(error = %e, "reject record itself cannot be stored"),
        }
    }

    /// Queues another stream's state to be committed with this batch (e.g. items to
    /// refresh, recorded together with the occurrences that touched them).
    /// Its source time and heartbeat stay as read by `read_cursor_of` (streams of a pass
    /// run one after the other, so nothing else moved them meanwhile).
    pub fn stage_state_of(&mut self, key: &StreamKey, cursor: &impl serde::Serialize) {
        let (source_time, caught_up_at) = self
            .others
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or((None, None), |(_, time, beat)| (*time, *beat));
        let row = state_row(
            key,
            cursor_json(cursor),
            source_time,
            caught_up_at,
            &self.options.run_id,
        );
        self.pending.push(&STATE, row);
    }

    /// Commits the queued rows, this stream's cursor and the run record in ONE
    /// transaction. The transaction runs in the background while the caller fetches and
    /// maps the next batch; batches still commit one after the other, in order, so a
    /// failed batch stops every later one (its error surfaces at the next `commit` or at
    /// `finish`). Returns how many source rows the batch holds.
    pub async fn commit(&mut self) -> Result<usize, WarehouseError> {
        self.settle().await?;
        let mut batch = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        for write in &mut batch.writes {
            write.dedup_by_key();
        }
        let rows: usize = batch
            .writes
            .iter()
            .filter(|w| !std::ptr::eq(w.table, &REJECTS) && !std::ptr::eq(w.table, &STATE))
            .map(|w| w.rows.len())
            .sum();
        let written = self.rows_written + rows as u64;
        self.committed_cursor = cursor_json(&self.cursor);
        batch.push(
            &STATE,
            state_row(
                &self.key,
                self.committed_cursor.clone(),
                self.source_time,
                Some(self.caught_up_at),
                &self.options.run_id,
            ),
        );
        let run_row = self.run_row_with(RunStatus::Running, None, None, written);
        batch.push(&RUNS, run_row);
        batch.cancel_after = self.options.deadline.map(|d| d + COMMIT_GRACE);
        let warehouse = Arc::clone(&self.warehouse);
        self.in_flight = Some((
            rows as u64,
            tokio::spawn(async move { warehouse.commit(batch).await }),
        ));
        Ok(rows)
    }

    /// After a page of a walk: commits the batch with the cursor when the walk is done,
    /// the batch is full, or the time budget is spent (so a stop never loses a fetched
    /// page).
    pub async fn commit_page(&mut self, walk_done: bool) -> Result<(), WarehouseError> {
        if self.commit_due(walk_done) {
            self.commit().await?;
        }
        Ok(())
    }

    /// Whether a page's rows commit now: at the walk's end, with a full batch, or when the
    /// time is spent (so that a stop never loses a fetched page).
    pub fn commit_due(&self, walk_done: bool) -> bool {
        walk_done || self.batch_full() || !self.time_left()
    }

    /// Commits when the batch is full (between the reads of a list of ids).
    pub async fn commit_if_full(&mut self) -> Result<(), WarehouseError> {
        if self.batch_full() {
            self.commit().await?;
        }
        Ok(())
    }

    /// Stops the run where it is: commits what is queued with the cursor; the next run
    /// resumes from it.
    pub async fn stop_partial(&mut self) -> Result<RunStatus, WarehouseError> {
        self.commit().await?;
        Ok(RunStatus::Partial)
    }

    /// Waits for the batch in flight, if any, and counts its rows once it is committed.
    async fn settle(&mut self) -> Result<(), WarehouseError> {
        let Some((rows, commit)) = self.in_flight.take() else {
            return Ok(());
        };
        commit.await.map_err(|e| WarehouseError::Query {
            target: self.warehouse.describe(),
            context: "commit batch".into(),
            detail: format!("the commit task failed: {e}"),
        })??;
        self.rows_written += rows;
        self.caught_up_at_stored = true;
        if let Some(progress) = &self.options.progress {
            (progress.0)(&self.key, self.rows_written);
        }
        tracing::debug!(stream = %self.key, rows, total = self.rows_written, "batch committed");
        Ok(())
    }

    /// Records the run's end. Rows still queued are dropped (they were never covered by a
    /// committed cursor, so the next run fetches them again).
    pub async fn finish(mut self, result: Result<RunStatus, StreamError>) -> RunOutcome {
        let settled = self.settle().await;
        let (status, error) = match (result, settled) {
            (Ok(status), Ok(())) => (status, None),
            (Err(error), _) => (RunStatus::Failed, Some(error)),
            (Ok(_), Err(e)) => (RunStatus::Failed, Some(StreamError::from(e))),
        };
        let message = error.as_ref().map(ToString::to_string);
        let finished_at = Utc::now();
        let mut batch = Batch::default();
        batch.push(
            &RUNS,
            self.run_row(status, Some(finished_at), message.as_deref()),
        );
        let reached =
            status == RunStatus::Succeeded || (status == RunStatus::Partial && self.head_reached);
        // Only for a position that is stored: nothing queued, the cursor as committed.
        let stored = self.pending_rows == 0 && cursor_json(&self.cursor) == self.committed_cursor;
        if reached && !stored {
            tracing::warn!(stream = %self.key, "ended caught up with uncommitted work: no heartbeat recorded");
        }
        let caught_up = reached && stored;
        if caught_up {
            batch.heartbeats.push(self.heartbeat(finished_at));
        }
        let recorded = self.warehouse.commit(batch).await;
        if let Err(e) = &recorded {
            tracing::error!(stream = %self.key, error = %e, "could not record the run's end");
        }
        let caught_up_at = match (caught_up, recorded.is_ok()) {
            (true, true) => Some(finished_at),
            _ => self.caught_up_at_stored.then_some(self.caught_up_at),
        };
        RunOutcome {
            key: self.key.clone(),
            status,
            rows_written: self.rows_written,
            pages_fetched: self.pages_fetched,
            api_retries: self.retries(),
            rejects: self.rejects,
            newest_source_time: self.source_time,
            caught_up_at,
            error: message,
            error_kind: error.map(|e| e.kind),
            unfinished_before: self.unfinished_before,
            recovered: self.recovered,
            duration: self.started.elapsed(),
        }
    }

    fn retries(&self) -> u64 {
        self.http
            .as_ref()
            .map_or(0, |h| h.retries().saturating_sub(self.retries_at_start))
    }

    fn run_row(
        &self,
        status: RunStatus,
        finished: Option<DateTime<Utc>>,
        error: Option<&str>,
    ) -> Row {
        self.run_row_with(status, finished, error, self.rows_written)
    }

    fn run_row_with(
        &self,
        status: RunStatus,
        finished: Option<DateTime<Utc>>,
        error: Option<&str>,
        rows_written: u64,
    ) -> Row {
        let row = Row(vec![
            Value::Text(self.options.run_id.clone()),
            Value::Text(self.key.source.to_string()),
            Value::Text(self.key.stream.to_string()),
            Value::Text(self.key.scope.clone()),
            Value::Timestamp(self.started_at),
            Value::timestamp(finished),
            Value::Text(status.as_str().to_string()),
            Value::BigInt(rows_written as i64),
            Value::BigInt(self.pages_fetched as i64),
            Value::BigInt(self.retries() as i64),
            Value::BigInt(self.rejects as i64),
            Value::text(error),
            Value::Timestamp(Utc::now()),
        ]);
        // Built here from known types: only the error text may need trimming.
        normalize_row(&RUNS, row)
    }
}

/// Reads are cancelled where a backend can, like writes, past the time budget's grace.
fn reads_deadline(options: &SyncOptions) -> Option<Instant> {
    options.deadline.map(|d| d + COMMIT_GRACE)
}

fn state_row(
    key: &StreamKey,
    cursor: serde_json::Value,
    source_time: Option<DateTime<Utc>>,
    caught_up_at: Option<DateTime<Utc>>,
    run_id: &str,
) -> Row {
    Row(vec![
        Value::Text(key.source.to_string()),
        Value::Text(key.stream.to_string()),
        Value::Text(key.scope.clone()),
        // No cursor yet (a stream's first start) is NULL, read back as the default.
        if cursor.is_null() {
            Value::Null
        } else {
            Value::json(&cursor)
        },
        Value::timestamp(source_time),
        Value::Text(run_id.to_string()),
        Value::Timestamp(Utc::now()),
        Value::timestamp(caught_up_at),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ROLLBAR_ITEMS;
    use crate::warehouse::{StoredState, StreamStatus};
    use std::sync::Mutex;

    /// Records every committed batch.
    #[derive(Default)]
    struct RecordingWarehouse {
        batches: Mutex<Vec<Batch>>,
        stored_cursor: Option<serde_json::Value>,
        stored_heartbeat: Option<DateTime<Utc>>,
        unfinished_runs: u32,
    }

    #[async_trait::async_trait]
    impl Warehouse for RecordingWarehouse {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn migrate(
            &self,
            _: Option<Instant>,
        ) -> Result<crate::warehouse::Migrated, WarehouseError> {
            Ok(Default::default())
        }
        async fn read_state(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Option<Instant>,
        ) -> Result<Option<StoredState>, WarehouseError> {
            Ok(self.stored_cursor.clone().map(|cursor| StoredState {
                cursor,
                source_time: None,
                updated_at: None,
                caught_up_at: self.stored_heartbeat,
                unfinished_runs: self.unfinished_runs,
            }))
        }
        async fn commit(&self, batch: Batch) -> Result<(), WarehouseError> {
            self.batches.lock().unwrap().push(batch);
            Ok(())
        }
        async fn last_turns(
            &self,
            _source: &str,
            _deadline: Option<Instant>,
        ) -> Result<Vec<crate::warehouse::Turn>, WarehouseError> {
            Ok(Vec::new())
        }
        async fn status(&self) -> Result<Option<Vec<StreamStatus>>, WarehouseError> {
            Ok(None)
        }
        async fn fix_next(
            &self,
            _limit: u32,
        ) -> Result<Option<Vec<crate::warehouse::FixNextRow>>, WarehouseError> {
            Ok(None)
        }
        async fn retention_estimated_at(
            &self,
        ) -> Result<Option<chrono::DateTime<chrono::Utc>>, WarehouseError> {
            Ok(None)
        }
    }

    fn item(id: i64, title: &str) -> Row {
        let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
        values[0] = Value::BigInt(id);
        values[6] = Value::Text(title.into());
        Row(values)
    }

    fn table_rows<'a>(batch: &'a Batch, table: &Table) -> &'a [Row] {
        batch
            .writes
            .iter()
            .find(|w| w.table.name == table.name)
            .map_or(&[], |w| &w.rows)
    }

    #[tokio::test]
    async fn rows_cursor_rejects_and_run_record_commit_together() {
        let warehouse = Arc::new(RecordingWarehouse::default());
        let key = StreamKey::new("rollbar", "items", "web");
        let options = SyncOptions::new(None);
        let mut run =
            StreamRun::<serde_json::Value>::start(warehouse.clone(), key.clone(), &options, None)
                .await
                .unwrap();
        assert!(run.cursor.is_null(), "no state yet: the default cursor");
        run.add(&ROLLBAR_ITEMS, item(1, "old"));
        run.add(&ROLLBAR_ITEMS, item(1, "new"));
        run.add(&ROLLBAR_ITEMS, Row(vec![Value::Text("oops".into())]));
        run.stage_state_of(
            &StreamKey::new("rollbar", "other", "web"),
            &serde_json::json!({"x": 1}),
        );
        assert_eq!(run.pending_rows(), 2);
        run.cursor = serde_json::json!({"page": 2});
        run.commit().await.unwrap();
        let outcome = run.finish(Ok(RunStatus::Succeeded)).await;

        let batches = warehouse.batches.lock().unwrap();
        assert_eq!(batches.len(), 3, "run start, the batch, run end");
        let batch = &batches[1];
        let items = table_rows(batch, &ROLLBAR_ITEMS);
        assert_eq!(items.len(), 1, "de-duplicated on the key");
        assert_eq!(
            items[0].0[6],
            Value::Text("new".into()),
            "the last row wins"
        );
        let rejects = table_rows(batch, &REJECTS);
        assert_eq!(rejects.len(), 1);
        assert_eq!(
            rejects[0].0[6],
            Value::json(&serde_json::json!({"id": "oops"}))
        );
        let states = table_rows(batch, &STATE);
        assert_eq!(states.len(), 2, "own cursor and the staged one");
        assert!(states
            .iter()
            .any(|s| s.0[3] == Value::json(&serde_json::json!({"page": 2}))));
        let runs = table_rows(batch, &RUNS);
        assert_eq!(runs[0].0[6], Value::Text("running".into()));
        assert_eq!(runs[0].0[7], Value::BigInt(1));
        let end = table_rows(&batches[2], &RUNS);
        assert_eq!(end[0].0[6], Value::Text("succeeded".into()));
        assert!(!end[0].0[5].is_null(), "finished_at is set");
        assert_eq!((outcome.rows_written, outcome.rejects), (1, 1));
    }

    fn heartbeat_of(row: &Row) -> &Value {
        &row.0[STATE.column_index("caught_up_at").unwrap()]
    }

    fn items_stream() -> (StreamKey, SyncOptions) {
        (
            StreamKey::new("rollbar", "items", "web"),
            SyncOptions::new(None),
        )
    }

    fn with_heartbeat(at: DateTime<Utc>) -> Arc<RecordingWarehouse> {
        Arc::new(RecordingWarehouse {
            stored_cursor: Some(serde_json::json!({"page": 1})),
            stored_heartbeat: Some(at),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_run_that_reaches_the_head_records_its_heartbeat_without_rewriting_the_cursor() {
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        let warehouse = with_heartbeat(an_hour_ago);
        let (key, options) = items_stream();
        let mut run =
            StreamRun::<serde_json::Value>::start(warehouse.clone(), key.clone(), &options, None)
                .await
                .unwrap();
        run.cursor = serde_json::json!({"page": 2});
        run.commit().await.unwrap();
        let outcome = run.finish(Ok(RunStatus::Succeeded)).await;

        let batches = warehouse.batches.lock().unwrap();
        let during = table_rows(&batches[1], &STATE);
        assert_eq!(
            heartbeat_of(&during[0]),
            &Value::Timestamp(an_hour_ago),
            "a batch keeps the stored heartbeat"
        );
        let end = &batches[2];
        assert!(
            table_rows(end, &STATE).is_empty(),
            "the cursor is left to the commits (an overlapping run may have moved it)"
        );
        assert_eq!(end.heartbeats.len(), 1);
        assert_eq!(end.heartbeats[0].stream, "items");
        assert!(end.heartbeats[0].at > an_hour_ago);
        assert_eq!(outcome.caught_up_at, Some(end.heartbeats[0].at));
    }

    #[tokio::test]
    async fn no_heartbeat_for_a_position_that_is_not_stored() {
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        let warehouse = with_heartbeat(an_hour_ago);
        let (key, options) = items_stream();
        let mut run = StreamRun::<serde_json::Value>::start(warehouse.clone(), key, &options, None)
            .await
            .unwrap();
        run.commit().await.unwrap();
        // Moved after the last commit: "caught up" would be a claim about lost work.
        run.cursor = serde_json::json!({"page": 3});
        let outcome = run.finish(Ok(RunStatus::Succeeded)).await;
        assert!(warehouse.batches.lock().unwrap()[2].heartbeats.is_empty());
        assert_eq!(outcome.caught_up_at, Some(an_hour_ago));
    }

    #[tokio::test]
    async fn a_partial_run_keeps_the_old_heartbeat_unless_it_reached_the_head_first() {
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        let warehouse = with_heartbeat(an_hour_ago);
        let (key, options) = items_stream();
        let mut run =
            StreamRun::<serde_json::Value>::start(warehouse.clone(), key.clone(), &options, None)
                .await
                .unwrap();
        let status = run.stop_partial().await.unwrap();
        let outcome = run.finish(Ok(status)).await;
        assert_eq!(
            outcome.caught_up_at,
            Some(an_hour_ago),
            "still an hour behind"
        );
        assert!(warehouse.batches.lock().unwrap()[2].heartbeats.is_empty());

        // Head reached, then stopped in upkeep (Rollbar's item sweep): caught up.
        let mut run = StreamRun::<serde_json::Value>::start(warehouse.clone(), key, &options, None)
            .await
            .unwrap();
        run.reached_head();
        let status = run.stop_partial().await.unwrap();
        let outcome = run.finish(Ok(status)).await;
        assert_eq!(outcome.status, RunStatus::Partial);
        assert!(outcome.caught_up_at.is_some_and(|t| t > an_hour_ago));
    }

    #[tokio::test]
    async fn a_new_stream_ages_from_its_first_attempt_even_when_it_fails() {
        let fresh = Arc::new(RecordingWarehouse::default());
        let (key, options) = items_stream();
        let run = StreamRun::<serde_json::Value>::start(fresh.clone(), key, &options, None)
            .await
            .unwrap();
        let outcome = run
            .finish(Err(StreamError::new(ErrorKind::Authentication, "401")))
            .await;
        let batches = fresh.batches.lock().unwrap();
        let first = table_rows(&batches[0], &STATE);
        assert_eq!(first.len(), 1, "the start writes the stream's state row");
        assert_eq!(first[0].0[3], Value::Null, "with the default cursor");
        let Value::Timestamp(origin) = heartbeat_of(&first[0]) else {
            panic!("and a heartbeat: {:?}", first[0]);
        };
        assert_eq!(outcome.caught_up_at, Some(*origin));
    }

    #[tokio::test]
    async fn a_stored_state_without_a_heartbeat_gets_one_at_its_next_start() {
        let warehouse = Arc::new(RecordingWarehouse {
            stored_cursor: Some(serde_json::json!({"page": 1})),
            ..Default::default()
        });
        let (key, options) = items_stream();
        let run = StreamRun::<serde_json::Value>::start(warehouse.clone(), key, &options, None)
            .await
            .unwrap();
        let outcome = run
            .finish(Err(StreamError::new(ErrorKind::Api, "500")))
            .await;
        let batches = warehouse.batches.lock().unwrap();
        assert!(
            table_rows(&batches[0], &STATE).is_empty(),
            "the cursor is not rewritten"
        );
        assert_eq!(batches[0].heartbeats.len(), 1);
        assert_eq!(outcome.caught_up_at, Some(batches[0].heartbeats[0].at));
    }

    #[tokio::test]
    async fn staging_another_streams_cursor_keeps_its_heartbeat_and_source_time() {
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        let warehouse = Arc::new(RecordingWarehouse {
            stored_cursor: Some(serde_json::json!({})),
            stored_heartbeat: Some(an_hour_ago),
            ..Default::default()
        });
        let options = SyncOptions::new(None);
        let mut run = StreamRun::<serde_json::Value>::start(
            warehouse.clone(),
            StreamKey::new("rollbar", "occurrences", "web"),
            &options,
            None,
        )
        .await
        .unwrap();
        let items = StreamKey::new("rollbar", "items", "web");
        let _: serde_json::Value = run.read_cursor_of(&items).await.unwrap();
        run.stage_state_of(&items, &serde_json::json!({"pending": [7]}));
        run.commit().await.unwrap();
        run.finish(Ok(RunStatus::Partial)).await;
        let batches = warehouse.batches.lock().unwrap();
        let staged = table_rows(&batches[1], &STATE)
            .iter()
            .find(|r| r.0[1] == Value::Text("items".into()))
            .unwrap();
        assert_eq!(heartbeat_of(staged), &Value::Timestamp(an_hour_ago));
    }

    #[tokio::test]
    async fn a_failed_run_is_recorded_with_its_error_and_uncommitted_rows_are_dropped() {
        let warehouse = Arc::new(RecordingWarehouse::default());
        let options = SyncOptions::new(Some(Instant::now()));
        let mut run = StreamRun::<serde_json::Value>::start(
            warehouse.clone(),
            StreamKey::new("rollbar", "items", "web"),
            &options,
            None,
        )
        .await
        .unwrap();
        assert!(!run.time_left(), "a deadline in the past leaves no time");
        run.add(&ROLLBAR_ITEMS, item(1, "x"));
        let outcome = run
            .finish(Err(StreamError::new(ErrorKind::Authentication, "boom")))
            .await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.error_kind, Some(ErrorKind::Authentication));
        let batches = warehouse.batches.lock().unwrap();
        let end = &batches.last().unwrap().writes;
        assert_eq!(end.len(), 1, "only the run record");
        assert_eq!(end[0].rows[0].0[11], Value::Text("boom".into()));
    }

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    struct PageCursor {
        page: u32,
    }

    #[tokio::test]
    async fn a_stored_cursor_that_does_not_read_is_a_failed_run_on_record() {
        let warehouse = Arc::new(RecordingWarehouse {
            stored_cursor: Some(serde_json::json!({"page": "not a number"})),
            ..Default::default()
        });
        let started = StreamRun::<PageCursor>::start(
            warehouse.clone(),
            StreamKey::new("rollbar", "items", "web"),
            &SyncOptions::new(None),
            None,
        )
        .await;
        let error = started.err().expect("the cursor does not read");
        assert_eq!(error.kind, ErrorKind::State);
        let batches = warehouse.batches.lock().unwrap();
        assert_eq!(batches.len(), 1, "one write: the failed run");
        let runs = table_rows(&batches[0], &RUNS);
        assert_eq!(runs[0].0[6], Value::Text("failed".into()));
        assert!(!runs[0].0[5].is_null(), "finished");
        assert!(
            matches!(&runs[0].0[11], Value::Text(e) if e.contains("rollbar/items/web")),
            "{:?}",
            runs[0].0[11]
        );
        assert!(
            table_rows(&batches[0], &STATE).is_empty(),
            "the cursor is left as it is"
        );
    }
}
