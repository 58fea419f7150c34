//! One stream per project, `circleci/pipelines/<slug>`, and how it moves.
//!
//! The API has no "since" filter, and a pipeline does not change when its workflows finish
//! or are re-run. So each run:
//! 1. re-polls every workflow remembered as not final (or with jobs not final), by id,
//!    however old (holds can last 90 days), with its jobs;
//! 2. walks pipelines newest first, following `next_page_token`, until a whole page is
//!    older than the high-water mark minus the look-back window; every pipeline inside the
//!    window gets its workflows and their jobs re-listed, so reruns of old pipelines land.
//!
//! The first walk has no mark: it backfills as far as the API serves. A walk that stops
//! early (time budget, crash, error) saves its next page token with each committed batch;
//! the next run finishes it before starting a fresh one (`heimdallr_core::walk`).

use crate::api::{ApiError, CircleCiClient};
use crate::config::CircleCiConfig;
use crate::mapping::{
    id_of, job_is_final, job_row, pipeline_row, time, workflow_is_final, workflow_row,
};
use chrono::{DateTime, Utc};
use heimdallr_core::engine::{
    cursor_json, load_cursor, CursorError, RunOutcome, RunStatus, StreamKey, StreamRun, SyncOptions,
};
use heimdallr_core::http::HttpError;
use heimdallr_core::schema::{CIRCLECI_JOBS, CIRCLECI_PIPELINES, CIRCLECI_WORKFLOWS};
use heimdallr_core::walk::WalkState;
use heimdallr_core::warehouse::{Warehouse, WarehouseError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const SOURCE: &str = "circleci";
pub const PIPELINES: &str = "pipelines";

/// Saved position of a project's stream: the walk by pipeline creation time (its page
/// token while unfinished) and the workflows still moving.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelinesCursor {
    #[serde(flatten)]
    pub walk: WalkState<DateTime<Utc>>,
    /// Workflows not final yet, or with jobs not final yet.
    #[serde(default)]
    pub pending_workflows: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    State(#[from] CursorError),
}

/// Syncs every configured project, one after the other; each has its own state.
pub async fn sync_all(
    warehouse: Arc<dyn Warehouse>,
    client: &CircleCiClient,
    config: &CircleCiConfig,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    let mut outcomes = Vec::new();
    for slug in &config.projects {
        let key = StreamKey::new(SOURCE, PIPELINES, slug);
        let outcome = match StreamRun::start(&warehouse, key, options, Some(client.stats())).await {
            Err(outcome) => outcome,
            Ok((mut run, cursor)) => {
                let result = sync_project(&mut run, cursor, client, slug, config).await;
                if let Err(e) = &result {
                    tracing::error!(stream = %run.key(), error = %e, "stream run failed");
                }
                run.finish(result.map_err(|e| e.to_string())).await
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

async fn sync_project(
    run: &mut StreamRun,
    cursor: Option<Value>,
    client: &CircleCiClient,
    slug: &str,
    config: &CircleCiConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: PipelinesCursor = load_cursor(run.key(), cursor)?;

    // 1. Workflows still moving, however old.
    let pending: Vec<String> = cursor.pending_workflows.iter().cloned().collect();
    for id in pending {
        if !run.time_left() {
            return Ok(run.stop_partial(cursor_json(&cursor)).await?);
        }
        let still_moving = match client.workflow(&id).await? {
            // CircleCI no longer has it: nothing left to follow.
            None => false,
            Some(workflow) => add_workflow(run, &workflow, client).await?,
        };
        run.page_fetched();
        if !still_moving {
            cursor.pending_workflows.remove(&id);
        }
        if run.batch_full() {
            run.commit(cursor_json(&cursor)).await?;
        }
    }

    // 2. The walk: an unfinished one first, then a fresh one from the newest pipeline.
    for _ in 0..cursor.walk.walks_this_run() {
        loop {
            if !run.time_left() {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            let token = cursor.walk.next_page().map(String::from);
            let page = match client.pipelines(slug, token.as_deref()).await {
                // A page token CircleCI no longer accepts: start the walk over from the top
                // (everything it covers is merged again, nothing is skipped).
                Err(ApiError::Http(HttpError::Status { status: 400, .. })) if token.is_some() => {
                    tracing::warn!(stream = %run.key(), "page token refused; restarting the walk from the newest pipeline");
                    cursor.walk.restart();
                    continue;
                }
                other => other?,
            };
            run.page_fetched();
            let window_start = cursor
                .walk
                .high_water
                .map(|mark| mark - chrono::Duration::from_std(config.lookback).unwrap_or_default());
            let mut newest_on_page: Option<DateTime<Utc>> = None;
            let mut any_in_window = false;
            let synced_at = Utc::now();
            for pipeline in &page.items {
                let created = time(pipeline, &["created_at"]);
                newest_on_page = newest_on_page.max(created);
                let in_window = match (window_start, created) {
                    (Some(start), Some(created)) => created >= start,
                    _ => true,
                };
                if !in_window {
                    continue;
                }
                any_in_window = true;
                if let Some(created) = created {
                    run.observe_source_time(created);
                }
                add_pipeline(run, pipeline, client, &mut cursor, synced_at).await?;
            }
            // Done at the start of history, or once a whole page is older than the window.
            let walk_done = cursor.walk.advance(
                page.next_page_token,
                newest_on_page,
                page.items.is_empty() || !any_in_window,
            );
            run.commit_page(walk_done, cursor_json(&cursor)).await?;
            if walk_done {
                break;
            }
        }
    }
    Ok(RunStatus::Succeeded)
}

/// A pipeline, its workflows and their jobs; workflows still moving are remembered.
async fn add_pipeline(
    run: &mut StreamRun,
    pipeline: &Value,
    client: &CircleCiClient,
    cursor: &mut PipelinesCursor,
    synced_at: DateTime<Utc>,
) -> Result<(), StreamError> {
    let id = match pipeline_row(pipeline, synced_at) {
        Ok(row) => {
            run.add(&CIRCLECI_PIPELINES, row);
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
        let still_moving = add_workflow(run, workflow, client).await?;
        if let Ok(workflow_id) = id_of(workflow) {
            if still_moving {
                cursor.pending_workflows.insert(workflow_id);
            } else {
                cursor.pending_workflows.remove(&workflow_id);
            }
        }
    }
    Ok(())
}

/// A workflow and its jobs. Returns whether it is still moving (it, or one of its jobs, is
/// not final).
async fn add_workflow(
    run: &mut StreamRun,
    workflow: &Value,
    client: &CircleCiClient,
) -> Result<bool, StreamError> {
    let synced_at = Utc::now();
    let id = match workflow_row(workflow, synced_at) {
        Ok(row) => {
            run.add(&CIRCLECI_WORKFLOWS, row);
            id_of(workflow).unwrap_or_default()
        }
        Err(reason) => {
            run.reject(&CIRCLECI_WORKFLOWS, "", &reason, workflow.clone());
            return Ok(false);
        }
    };
    let jobs = client.workflow_jobs(&id).await?;
    run.page_fetched();
    let mut moving = !workflow_is_final(workflow.get("status").and_then(Value::as_str));
    for job in &jobs {
        moving |= !job_is_final(job.get("status").and_then(Value::as_str));
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
    Ok(moving)
}
