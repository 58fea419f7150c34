//! One stream per project, `circleci/pipelines/<slug>`, and how it moves.
//!
//! The API has no "since" filter, and a pipeline does not change when its workflows finish
//! or are re-run. So each run:
//! 1. re-polls every workflow remembered as not final, by id, however old (holds can last
//!    90 days), with its jobs; a final workflow's status decides, whatever its jobs say
//!    (`blocked` and `not_run` jobs of a failed workflow never move);
//! 2. walks pipelines newest first, following `next_page_token`, down to the newer of the
//!    high-water mark and the look-back window (default 1 h before now), storing new
//!    pipelines and re-listing the workflows of those inside the window, so that re-runs
//!    land; every `sweep_interval` (default 6 h) the window is `sweep_window` wide
//!    (default 7 days), for re-runs of older pipelines.
//!
//! Re-listing is cheap because it remembers when each pipeline was last listed (the last
//! walk's and the last sweep's window and start): a workflow created before that and final
//! is stored already, with its jobs, and is not read again; only new workflows are.
//!
//! The first walk has no mark: it backfills as far as the API serves. A walk that stops
//! early (time budget, crash, error) saves its next page token with each committed batch;
//! the next run finishes it before starting a fresh one (`heimdallr_core::walk`).

use crate::api::{ApiError, CircleCiClient};
use crate::config::CircleCiConfig;
use crate::mapping::{id_of, job_row, pipeline_row, time, workflow_is_final, workflow_row};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use heimdallr_core::engine::{RunStatus, StreamKey, StreamRun};
use heimdallr_core::http::{HttpError, HttpStats};
use heimdallr_core::schema::{CIRCLECI_JOBS, CIRCLECI_PIPELINES, CIRCLECI_WORKFLOWS};
use heimdallr_core::stream::ErrorKind;
use heimdallr_core::stream::{AnyStream, Stream, StreamError};
use heimdallr_core::walk::{drive, PageOutcome, Pages, WalkState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub const SOURCE: &str = "circleci";
pub const PIPELINES: &str = "pipelines";

/// Saved position of a project's stream: the walk by pipeline creation time (its page
/// token while unfinished), the workflows still moving, and what recent walks listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelinesCursor {
    #[serde(flatten)]
    pub walk: WalkState<DateTime<Utc>>,
    /// Workflows not final yet.
    #[serde(default)]
    pub pending_workflows: BTreeSet<String>,
    /// Pending workflows whose re-poll failed, with when it first failed: retried every
    /// run, given up after the configured time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failing_workflows: BTreeMap<String, DateTime<Utc>>,
    /// The last walk that finished, and the last sweep.
    #[serde(default)]
    pub last_walk: Option<Listing>,
    #[serde(default)]
    pub last_sweep: Option<Listing>,
    /// The walk under way (kept while it is resumed) and whether it is a sweep.
    #[serde(default)]
    pub current: Option<Listing>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sweeping: bool,
    /// When Insights was last asked for recent runs (re-runs of pipelines the walk no
    /// longer lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insights_checked_at: Option<DateTime<Utc>>,
    /// Workflows stored in the last two [`INSIGHTS_OVERLAP`]s, with their creation time,
    /// at most [`KNOWN_RUNS_KEPT`] (the newest): a run Insights lists that is here is
    /// stored already and is not read again (one that fell off is read once more).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub known_runs: BTreeMap<String, DateTime<Utc>>,
}

/// How far before the last check Insights is asked again: it lists completed runs only, so
/// a run created before the last check and completed after it is found by the next one
/// (a run longer than this, or on hold longer, is left to the walk and the sweep).
const INSIGHTS_OVERLAP: chrono::Duration = chrono::Duration::days(1);
/// At most this many known runs in the cursor (about 66 bytes each): the state row stays
/// far below Redshift's 65 535-byte document with the other fields.
const KNOWN_RUNS_KEPT: usize = 400;

impl PipelinesCursor {
    /// Remembers a stored workflow for Insights, keeping the newest [`KNOWN_RUNS_KEPT`].
    fn remember_run(&mut self, id: String, created: DateTime<Utc>) {
        self.known_runs.insert(id, created);
        while self.known_runs.len() > KNOWN_RUNS_KEPT {
            let oldest = self
                .known_runs
                .iter()
                .min_by_key(|(id, created)| (**created, (*id).clone()))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.known_runs.remove(&id),
                None => break,
            };
        }
    }
}

/// A walk that listed the workflows of every pipeline created at or after `from` (all of
/// them when `None`), starting at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub at: DateTime<Utc>,
    pub from: Option<DateTime<Utc>>,
}

/// Whether a listing that reached back to `from` (`None`: every pipeline) covers a
/// pipeline created at `created` (one without a time only an unbounded listing covers).
fn covers(from: Option<DateTime<Utc>>, created: Option<&DateTime<Utc>>) -> bool {
    match (from, created) {
        (None, _) => true,
        (Some(from), Some(created)) => *created >= from,
        (Some(_), None) => false,
    }
}

impl PipelinesCursor {
    /// When the workflows of a pipeline created at `created` were last listed, if a
    /// finished walk covered it.
    pub fn listed_at(&self, created: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        [&self.last_walk, &self.last_sweep]
            .into_iter()
            .flatten()
            .filter(|l| covers(l.from, created.as_ref()))
            .map(|l| l.at)
            .max()
    }

    /// Starts a fresh walk at `now`: a sweep when one is due.
    fn begin_walk(&mut self, now: DateTime<Utc>, config: &CircleCiConfig) {
        self.sweeping = self
            .last_sweep
            .as_ref()
            .is_none_or(|s| now - s.at >= duration(config.sweep_interval));
        let window = if self.sweeping {
            config.sweep_window.max(config.lookback)
        } else {
            config.lookback
        };
        self.current = Some(Listing {
            at: now,
            // The first walk backfills everything.
            from: self.walk.high_water.map(|_| now - duration(window)),
        });
    }

    /// A finished walk becomes the last one (and the last sweep, if it was one).
    fn end_walk(&mut self) {
        if let Some(done) = self.current.take() {
            if self.sweeping || self.last_sweep.is_none() {
                self.last_sweep = Some(done.clone());
            }
            self.last_walk = Some(done);
        }
        self.sweeping = false;
    }
}

fn duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Clock skew allowed between CircleCI's timestamps and ours when deciding that a
/// workflow existed before a listing (both NTP-synced: well under this).
const SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// One stream per project, one after the other; each has its own state. A refused token
/// fails the first project's stream and the others are not run (they share the token).
pub fn streams(client: &CircleCiClient, config: &CircleCiConfig) -> Vec<Box<dyn AnyStream>> {
    let config = Arc::new(config.clone());
    config
        .projects
        .iter()
        .map(|slug| {
            Box::new(PipelinesStream {
                client: client.clone(),
                slug: slug.clone(),
                config: Arc::clone(&config),
            }) as Box<dyn AnyStream>
        })
        .collect()
}

/// `circleci/pipelines/<slug>`: a project's pipelines, workflows and jobs.
pub struct PipelinesStream {
    client: CircleCiClient,
    slug: String,
    config: Arc<CircleCiConfig>,
}

type Run = StreamRun<PipelinesCursor>;

#[async_trait]
impl Stream for PipelinesStream {
    type Cursor = PipelinesCursor;

    fn key(&self) -> StreamKey {
        StreamKey::new(SOURCE, PIPELINES, &self.slug)
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.client.stats())
    }

    async fn run(&self, run: &mut Run) -> Result<RunStatus, StreamError> {
        // 1. Workflows still moving, however old. One that cannot be read is retried next
        //    run and does not hold up the others or the walk.
        let pending: Vec<String> = run.cursor.pending_workflows.iter().cloned().collect();
        let mut given_up = Vec::new();
        for id in pending {
            if !run.time_left() {
                return Ok(run.stop_partial().await?);
            }
            match self.repoll(run, &id).await {
                Ok(still_moving) => {
                    run.cursor.failing_workflows.remove(&id);
                    if !still_moving {
                        run.cursor.pending_workflows.remove(&id);
                    }
                }
                Err(error) if !isolated(&error) => return Err(error),
                Err(error) => {
                    let now = run.now();
                    let since = *run
                        .cursor
                        .failing_workflows
                        .entry(id.clone())
                        .or_insert(now);
                    if now - since >= duration(self.config.give_up_after) {
                        run.cursor.failing_workflows.remove(&id);
                        run.cursor.pending_workflows.remove(&id);
                        given_up.push(format!("{id} (failing since {since}: {error})"));
                    } else {
                        run.recovered(
                            &format!("pending workflow {id} could not be read; retried next run, given up if it still fails after {}", humantime(self.config.give_up_after)),
                            &error,
                        );
                    }
                }
            }
            run.commit_if_full().await?;
        }
        // 2. The walk: an unfinished one first, then a fresh one from the newest pipeline.
        let mut status = drive(
            run,
            &mut PipelinePages {
                stream: self,
                restarted: false,
            },
        )
        .await?;
        // 3. Runs the walk no longer lists: re-runs of pipelines older than the look-back.
        if status == RunStatus::Succeeded && !self.check_insights(run).await? {
            status = run.stop_partial().await?;
        }
        if given_up.is_empty() {
            Ok(status)
        } else {
            // Everything else is stored; the run fails so that the loss is seen.
            Err(StreamError::new(
                ErrorKind::Api,
                format!(
                    "gave up on {} pending workflow(s) that kept failing for more than {}; their latest status and jobs are not stored: {}",
                    given_up.len(),
                    humantime(self.config.give_up_after),
                    given_up.join("; ")
                ),
            ))
        }
    }
}

impl PipelinesStream {
    /// Every `CIRCLECI_INSIGHTS_INTERVAL`, asks Insights for the recent runs of each named
    /// workflow (every branch, since the last check less [`INSIGHTS_OVERLAP`]) and reads
    /// those not stored yet by id, with their jobs: a re-run of a pipeline the walk no
    /// longer lists lands within the interval, however old the pipeline. Insights' items
    /// carry no pipeline, so a run is known by its id ([`PipelinesCursor::known_runs`]).
    /// The first check only starts the clock (the walk covered what existed). Returns
    /// false when the time ran out first (the next run checks again).
    async fn check_insights(&self, run: &mut Run) -> Result<bool, StreamError> {
        let now = run.now();
        let Some(last) = run.cursor.insights_checked_at else {
            run.cursor.insights_checked_at = Some(now);
            run.commit().await?;
            return Ok(true);
        };
        if now - last < duration(self.config.insights_interval) {
            return Ok(true);
        }
        // At most 89 days back: Insights refuses a start-date past 90 days (a stream whose
        // checks kept failing must not be locked out for good).
        let since = (last - INSIGHTS_OVERLAP).max(now - chrono::Duration::days(89));
        // Insights is a help, not the source of record: when it fails, the walk and the
        // sweep still stand; the failure is reported and the next run asks again.
        let names = match self.client.insights_workflow_names(&self.slug).await {
            Ok(names) => names,
            Err(e) => return self.insights_failed(run, e.into()).await,
        };
        run.page_fetched();
        let mut read = 0;
        for name in names {
            if !run.time_left() {
                return Ok(false);
            }
            let runs = match self.client.insights_runs(&self.slug, &name, since).await {
                Ok(runs) => runs,
                Err(e) => return self.insights_failed(run, e.into()).await,
            };
            run.page_fetched();
            for item in runs {
                let Ok(id) = id_of(&item) else { continue };
                if run.cursor.known_runs.contains_key(&id) {
                    continue;
                }
                if !run.time_left() {
                    return Ok(false);
                }
                let Some(workflow) = self.client.workflow(&id).await? else {
                    continue;
                };
                run.page_fetched();
                read += 1;
                if add_workflow(run, &workflow, &self.client).await? {
                    run.cursor.pending_workflows.insert(id);
                }
                run.commit_if_full().await?;
            }
        }
        if read > 0 {
            tracing::info!(stream = %run.key(), workflows = read, "runs found by Insights that the walk no longer lists (re-runs of older pipelines)");
        }
        run.cursor.insights_checked_at = Some(now);
        run.cursor
            .known_runs
            .retain(|_, created| *created >= now - INSIGHTS_OVERLAP * 2);
        run.commit().await?;
        Ok(true)
    }

    /// An Insights list that failed: reported (warn, `Recovered`), what was read so far
    /// is kept, and the next run asks again from the same point. A refused token or the
    /// rate limit still ends the run.
    async fn insights_failed(
        &self,
        run: &mut Run,
        error: StreamError,
    ) -> Result<bool, StreamError> {
        if !isolated(&error) {
            return Err(error);
        }
        run.recovered(
            "CircleCI Insights could not be read; re-runs of older pipelines wait for the next run or the sweep",
            &error,
        );
        run.commit().await?;
        Ok(true)
    }

    /// Re-reads a pending workflow and its jobs; whether it is still moving.
    async fn repoll(&self, run: &mut Run, id: &str) -> Result<bool, StreamError> {
        let still_moving = match self.client.workflow(id).await? {
            // CircleCI no longer has it: nothing left to follow.
            None => false,
            Some(workflow) => add_workflow(run, &workflow, &self.client).await?,
        };
        run.page_fetched();
        Ok(still_moving)
    }
}

/// Whether a failure to re-read one workflow stays with that workflow: not a refused
/// token or the rate limit (every other call would fail the same way).
fn isolated(error: &StreamError) -> bool {
    !matches!(
        error.kind,
        ErrorKind::Authentication | ErrorKind::RateLimit | ErrorKind::Warehouse
    )
}

fn humantime(d: std::time::Duration) -> String {
    heimdallr_core::time::format_duration(d)
}

/// The walk of a project's pipelines, newest first, by page token.
struct PipelinePages<'a> {
    stream: &'a PipelinesStream,
    /// A refused page token restarted the walk this run (once: a second refusal is an
    /// error, not a loop).
    restarted: bool,
}

#[async_trait]
impl Pages<PipelinesCursor> for PipelinePages<'_> {
    fn resuming(&self, cursor: &PipelinesCursor) -> bool {
        cursor.walk.is_resuming()
    }

    fn begin(&mut self, run: &mut Run) {
        let now = run.now();
        run.cursor.begin_walk(now, &self.stream.config);
    }

    async fn next_page(&mut self, run: &mut Run) -> Result<PageOutcome, StreamError> {
        if run.cursor.current.is_none() {
            // A walk saved before walks recorded their start.
            self.begin(run);
        }
        let (client, slug) = (&self.stream.client, &self.stream.slug);
        let token = run.cursor.walk.next_page().map(String::from);
        let page = match client.pipelines(slug, token.as_deref()).await {
            // A page token CircleCI no longer accepts: 400, or 404 `{"message": "Not
            // Found"}` for a token that went stale (circleci/circleci-docs#6472). The walk
            // starts over from the top: everything it covers is merged again, nothing is
            // skipped, and what is stored stays.
            Err(ApiError::Http(refused)) if token.is_some() && !self.restarted => {
                let status = match refused {
                    HttpError::Status { status: 400, .. } => 400,
                    HttpError::NotFound { .. } => 404,
                    other => return Err(ApiError::Http(other).into()),
                };
                self.restarted = true;
                run.recovered(
                    &format!("saved page token refused (HTTP {status}); restarting the walk from the newest pipeline"),
                    &format!("project {slug}: pipelines"),
                );
                run.cursor.walk.restart();
                self.begin(run);
                return Ok(PageOutcome::Again);
            }
            other => other?,
        };
        run.page_fetched();
        if page.next_page_token.is_some() && page.next_page_token == token {
            return Err(ApiError::NoProgress {
                url: format!("project {slug}: pipelines"),
            }
            .into());
        }
        let from = run.cursor.current.as_ref().and_then(|c| c.from);
        let records: Vec<(String, Option<DateTime<Utc>>)> = page
            .items
            .iter()
            .map(|p| (id_of(p).unwrap_or_default(), time(p, &["created_at"])))
            .collect();
        let synced_at = Utc::now();
        for (pipeline, (id, created)) in page.items.iter().zip(&records) {
            let is_new = run.cursor.walk.is_new(id, created.as_ref());
            let in_window = covers(from, created.as_ref());
            if !is_new && !in_window {
                continue;
            }
            if let Some(created) = created {
                run.observe_source_time(*created);
            }
            add_pipeline(run, pipeline, client, is_new, synced_at).await?;
        }
        // Done at the start of history, or once a page reaches below both the mark and
        // the window.
        let lowest = records.iter().filter_map(|(_, t)| *t).min();
        let reached = run.cursor.walk.is_below_mark(lowest.as_ref())
            && matches!((from, lowest), (Some(from), Some(lowest)) if lowest < from);
        let done = run.cursor.walk.advance(
            page.next_page_token,
            &records,
            page.items.is_empty() || reached,
        );
        if done {
            run.cursor.end_walk();
        }
        Ok(PageOutcome::after_page(done))
    }
}

/// A pipeline, its workflows and their jobs; workflows still moving are remembered. What
/// an earlier listing stored and cannot have changed is not read or written again.
async fn add_pipeline(
    run: &mut Run,
    pipeline: &Value,
    client: &CircleCiClient,
    is_new: bool,
    synced_at: DateTime<Utc>,
) -> Result<(), StreamError> {
    let listed_at = if is_new {
        None
    } else {
        run.cursor.listed_at(time(pipeline, &["created_at"]))
    };
    let changed_since = |value: &Value, field: &str| {
        listed_at.is_none_or(|at| time(value, &[field]).is_none_or(|t| t >= at - SKEW))
    };
    let id = match pipeline_row(pipeline, synced_at) {
        Ok(row) => {
            if changed_since(pipeline, "updated_at") {
                run.add(&CIRCLECI_PIPELINES, row);
            }
            id_of(pipeline).unwrap_or_default()
        }
        Err(reason) => {
            run.reject(&CIRCLECI_PIPELINES, "", &reason, pipeline.clone());
            return Ok(());
        }
    };
    // A 404 (no workflows yet, e.g. a pipeline still in setup) is an empty list.
    let workflows = client.pipeline_workflows(&id).await?;
    run.page_fetched();
    for workflow in &workflows {
        let workflow_id = id_of(workflow).ok();
        let stored_final = workflow_is_final(workflow.get("status").and_then(Value::as_str))
            && !changed_since(workflow, "created_at")
            && workflow_id
                .as_ref()
                .is_some_and(|w| !run.cursor.pending_workflows.contains(w));
        // A workflow whose re-poll keeps failing is retried there, within its bound; the
        // walk does not trip on it again.
        let failing = workflow_id
            .as_ref()
            .is_some_and(|w| run.cursor.failing_workflows.contains_key(w));
        if stored_final || failing {
            continue;
        }
        let still_moving = add_workflow(run, workflow, client).await?;
        if let Some(workflow_id) = workflow_id {
            if still_moving {
                run.cursor.pending_workflows.insert(workflow_id);
            } else {
                run.cursor.pending_workflows.remove(&workflow_id);
            }
        }
    }
    Ok(())
}

/// A workflow and its jobs. Returns whether it is still moving: its status decides (a
/// final workflow can leave jobs `blocked` or `not_run` for ever).
async fn add_workflow(
    run: &mut Run,
    workflow: &Value,
    client: &CircleCiClient,
) -> Result<bool, StreamError> {
    let synced_at = Utc::now();
    let id = match workflow_row(workflow, synced_at) {
        Ok(row) => {
            run.add(&CIRCLECI_WORKFLOWS, row);
            let id = id_of(workflow).unwrap_or_default();
            // Recent ones are remembered, so that Insights does not have them read again.
            if let Some(created) = time(workflow, &["created_at"]) {
                if created >= run.now() - INSIGHTS_OVERLAP * 2 {
                    run.cursor.remember_run(id.clone(), created);
                }
            }
            id
        }
        Err(reason) => {
            run.reject(&CIRCLECI_WORKFLOWS, "", &reason, workflow.clone());
            return Ok(false);
        }
    };
    let jobs = client.workflow_jobs(&id).await?;
    run.page_fetched();
    for job in &jobs {
        match job_row(job, &id, synced_at) {
            Ok(row) => run.add(&CIRCLECI_JOBS, row),
            Err(reason) => run.reject(
                &CIRCLECI_JOBS,
                "",
                &reason,
                json!({"workflow_id": id, "job": job}),
            ),
        }
    }
    Ok(!workflow_is_final(
        workflow.get("status").and_then(Value::as_str),
    ))
}
