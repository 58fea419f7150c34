//! Rollbar's two streams per project and how they move:
//!
//! - `occurrences`: a keyset walk from the newest id down to the high-water mark. The
//!   mark moves only when a walk reaches it; until then each committed batch saves where
//!   the walk got to, and the next run closes that gap before looking for anything new.
//! - `items`: items touched by new occurrences are re-read (one by one, or by a full
//!   sweep past a limit), and every item is swept on a slower cadence, so that resolves,
//!   mutes, reassignments and count resets land too.

use crate::api::{ApiError, RollbarClient};
use crate::config::{Project, RollbarConfig};
use crate::mapping::{item_row, lenient_i64, occurrence_id, occurrence_row, RawOccurrence};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use heimdallr_core::engine::{
    cursor_json as to_json, load_cursor, CursorError, RunOutcome, RunStatus, StreamKey, StreamRun,
    SyncOptions,
};
use heimdallr_core::schema::{ROLLBAR_ITEMS, ROLLBAR_OCCURRENCES};
use heimdallr_core::warehouse::{Warehouse, WarehouseError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub const SOURCE: &str = "rollbar";
pub const OCCURRENCES: &str = "occurrences";
pub const ITEMS: &str = "items";
/// Items fetched at once when refreshing touched items.
const ITEM_FETCH_CONCURRENCY: usize = 8;
/// Page size of the first request of a walk that has a high-water mark to stop at.
const FIRST_PAGE_LIMIT: u32 = 100;

/// A page of occurrences being fetched in the background.
type PageFetch = JoinHandle<Result<Vec<Box<RawValue>>, ApiError>>;

/// Saved position of the occurrence walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OccurrencesCursor {
    /// Every occurrence with an id up to this one is in the warehouse.
    #[serde(default)]
    pub high_water: Option<i64>,
    /// A walk that stopped early: ids in `(next_below, top]` are stored, the gap
    /// `(high_water, next_below)` is not yet.
    #[serde(default)]
    pub walk: Option<Walk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    pub top: i64,
    pub next_below: i64,
}

/// Saved position of the item refresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemsCursor {
    #[serde(default)]
    pub last_sweep_completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub sweep: Option<Sweep>,
    /// Items touched by stored occurrences and not re-read since.
    #[serde(default)]
    pub pending: BTreeSet<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub next_page: u32,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    State(#[from] CursorError),
    #[error("{0}")]
    Shape(String),
}

/// Syncs every configured project, one after the other; each project's streams have their
/// own state, so one project's failure does not hold the others back.
pub async fn sync_all(
    warehouse: Arc<dyn Warehouse>,
    client: &RollbarClient,
    config: &RollbarConfig,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    let mut outcomes = Vec::new();
    for project in &config.projects {
        outcomes
            .extend(sync_project(Arc::clone(&warehouse), client, project, config, options).await);
    }
    outcomes
}

pub async fn sync_project(
    warehouse: Arc<dyn Warehouse>,
    client: &RollbarClient,
    project: &Project,
    config: &RollbarConfig,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    let occurrences_key = StreamKey::new(SOURCE, OCCURRENCES, &project.label);
    let items_key = StreamKey::new(SOURCE, ITEMS, &project.label);

    let (occurrences, unauthorized) =
        match begin(&warehouse, occurrences_key, client, options).await {
            Err(outcome) => (outcome, false),
            Ok((mut run, cursor)) => {
                let result = walk_occurrences(
                    &mut run, cursor, client, project, config, &warehouse, &items_key,
                )
                .await;
                finish(run, result).await
            }
        };
    let mut outcomes = vec![occurrences];
    // A rejected token would fail the items stream the same way: say it once.
    if !unauthorized {
        let items = match begin(&warehouse, items_key, client, options).await {
            Err(outcome) => outcome,
            Ok((mut run, cursor)) => {
                let result = refresh_items(&mut run, cursor, client, project, config).await;
                finish(run, result).await.0
            }
        };
        outcomes.push(items);
    }
    outcomes
}

async fn begin(
    warehouse: &Arc<dyn Warehouse>,
    key: StreamKey,
    client: &RollbarClient,
    options: &SyncOptions,
) -> Result<(StreamRun, Option<serde_json::Value>), RunOutcome> {
    StreamRun::start(warehouse, key, options, Some(client.stats())).await
}

/// Records how a stream run ended; says whether the token was rejected.
async fn finish(run: StreamRun, result: Result<RunStatus, StreamError>) -> (RunOutcome, bool) {
    let unauthorized = matches!(&result, Err(StreamError::Api(e)) if e.is_unauthorized());
    if let Err(e) = &result {
        tracing::error!(stream = %run.key(), error = %e, "stream run failed");
    }
    (
        run.finish(result.map_err(|e| e.to_string())).await,
        unauthorized,
    )
}

/// Walks occurrences newest first down to the high-water mark, committing each batch with
/// the walk's position (and the items it touched).
async fn walk_occurrences(
    run: &mut StreamRun,
    cursor: Option<serde_json::Value>,
    client: &RollbarClient,
    project: &Project,
    config: &RollbarConfig,
    warehouse: &Arc<dyn Warehouse>,
    items_key: &StreamKey,
) -> Result<RunStatus, StreamError> {
    let mut cursor: OccurrencesCursor = load_cursor(run.key(), cursor)?;
    let items_state = warehouse
        .read_state(items_key.source, items_key.stream, &items_key.scope)
        .await?;
    let mut items: ItemsCursor = load_cursor(items_key, items_state.map(|s| s.cursor))?;
    // A walk left unfinished by an earlier run is closed first, then one fresh walk.
    let mut closing_gap = cursor.walk.is_some();
    // The next page is requested as soon as this one arrives, so that fetching overlaps
    // reading, mapping and committing. Pages come newest first, so the next one starts
    // below the last occurrence's id; the guess is checked once the page is read (the walk
    // goes on below its lowest id) and a prefetch for any other id is dropped unused.
    let mut prefetched: Option<(i64, PageFetch)> = None;
    loop {
        if !run.time_left() {
            if let Some((_, next)) = prefetched.take() {
                next.abort();
            }
            return Ok(RunStatus::Partial);
        }
        let below = cursor.walk.map(|w| w.next_below);
        // Most runs find a handful of new occurrences: poll with a small first page and
        // walk on with full pages only when there is more.
        let limit = if cursor.walk.is_none() && cursor.high_water.is_some() {
            config.page_limit.min(FIRST_PAGE_LIMIT)
        } else {
            config.page_limit
        };
        let page = match prefetched.take() {
            Some((next_below, next)) if Some(next_below) == below => next
                .await
                .map_err(|e| StreamError::Shape(format!("page fetch task failed: {e}")))??,
            stale => {
                if let Some((_, next)) = stale {
                    next.abort();
                }
                client.occurrences(&project.token, below, limit).await?
            }
        };
        run.page_fetched();
        if let Some(next_below) = page.last().and_then(|raw| occurrence_id(raw)) {
            let walk_goes_on = cursor.high_water.is_none_or(|hw| next_below > hw);
            if walk_goes_on && run.time_left() {
                let (client, token, limit) =
                    (client.clone(), project.token.clone(), config.page_limit);
                prefetched = Some((
                    next_below,
                    tokio::spawn(async move {
                        client.occurrences(&token, Some(next_below), limit).await
                    }),
                ));
            }
        }
        let page: Vec<RawOccurrence> = page.into_iter().map(RawOccurrence::new).collect();
        let lowest_on_page = page.iter().filter_map(|o| o.id).min();
        let walk_done = if page.is_empty() {
            // The start of the project's history: everything below the walk is stored.
            if let Some(walk) = cursor.walk.take() {
                cursor.high_water = Some(cursor.high_water.map_or(walk.top, |hw| hw.max(walk.top)));
            }
            true
        } else {
            let synced_at = Utc::now();
            let highest = page.iter().filter_map(|o| o.id).max();
            let page_len = page.len();
            for occurrence in page {
                let Some(id) = occurrence.id else {
                    run.reject(
                        &ROLLBAR_OCCURRENCES,
                        "",
                        &occurrence.missing_id_reason(),
                        occurrence.reject_document(&config.pii),
                    );
                    continue;
                };
                if cursor.high_water.is_some_and(|hw| id <= hw) {
                    continue; // stored by an earlier walk
                }
                match occurrence_row(&occurrence, &config.pii, synced_at) {
                    Ok((row, meta)) => {
                        if let Some(item) = meta.item_id {
                            items.pending.insert(item);
                        }
                        if let Some(time) = meta.occurred_at {
                            run.observe_source_time(time);
                        }
                        run.add(&ROLLBAR_OCCURRENCES, row);
                    }
                    Err(reason) => run.reject(
                        &ROLLBAR_OCCURRENCES,
                        &id.to_string(),
                        &reason,
                        json!({"id": id}),
                    ),
                }
            }
            let (Some(lowest), Some(highest)) = (lowest_on_page, highest) else {
                return Err(StreamError::Shape(format!(
                    "a page of {page_len} occurrences below {below:?} carries no ids; cannot continue the walk"
                )));
            };
            let top = cursor.walk.map_or(highest, |w| w.top);
            if cursor.high_water.is_some_and(|hw| lowest <= hw) {
                cursor.high_water = cursor.high_water.map(|hw| hw.max(top));
                cursor.walk = None;
                true
            } else {
                cursor.walk = Some(Walk {
                    top,
                    next_below: lowest,
                });
                false
            }
        };
        if walk_done || run.batch_full() || !run.time_left() {
            run.stage_state_of(items_key, to_json(&items));
            run.commit(to_json(&cursor)).await?;
        }
        if walk_done {
            if closing_gap {
                closing_gap = false;
                continue;
            }
            return Ok(RunStatus::Succeeded);
        }
    }
}

/// Re-reads items touched by new occurrences, then sweeps every item when due.
async fn refresh_items(
    run: &mut StreamRun,
    cursor: Option<serde_json::Value>,
    client: &RollbarClient,
    project: &Project,
    config: &RollbarConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: ItemsCursor = load_cursor(run.key(), cursor)?;
    let now = Utc::now();
    if cursor.sweep.is_none() && cursor.pending.len() > config.item_refresh_limit {
        // Cheaper to read every page than this many items one by one. Items touched from
        // here on stay pending and are re-read after.
        tracing::info!(stream = %run.key(), pending = cursor.pending.len(), "many touched items: sweeping all");
        cursor.sweep = Some(Sweep {
            next_page: 1,
            started_at: now,
        });
        cursor.pending.clear();
    }
    while !cursor.pending.is_empty() {
        if !run.time_left() {
            return Ok(RunStatus::Partial);
        }
        let chunk: Vec<i64> = cursor
            .pending
            .iter()
            .take(ITEM_FETCH_CONCURRENCY * 4)
            .copied()
            .collect();
        // Owned futures (no closure borrowing its argument), so that the pass stays `Send`
        // for the Lambda frame's async trait.
        let fetches = chunk.iter().map(|id| {
            let (client, token, id) = (client.clone(), project.token.clone(), *id);
            async move { client.item(&token, id).await }
        });
        let fetched: Vec<_> = futures::stream::iter(fetches.collect::<Vec<_>>())
            .buffered(ITEM_FETCH_CONCURRENCY)
            .collect()
            .await;
        let synced_at = Utc::now();
        for (id, result) in chunk.iter().zip(fetched) {
            run.page_fetched();
            // An item Rollbar no longer has is simply not refreshed.
            if let Some(item) = result? {
                add_item(run, &item, synced_at);
            }
            cursor.pending.remove(id);
        }
        run.commit(to_json(&cursor)).await?;
    }
    let sweep_due = cursor.sweep.is_some()
        || cursor.last_sweep_completed_at.is_none_or(|last| {
            (now - last).to_std().unwrap_or_default() >= config.items_sweep_interval
        });
    if !sweep_due {
        return Ok(RunStatus::Succeeded);
    }
    let mut sweep = cursor.sweep.clone().unwrap_or(Sweep {
        next_page: 1,
        started_at: now,
    });
    loop {
        if !run.time_left() {
            return Ok(RunStatus::Partial);
        }
        let page = client.items_page(&project.token, sweep.next_page).await?;
        run.page_fetched();
        if page.is_empty() {
            cursor.last_sweep_completed_at = Some(sweep.started_at);
            cursor.sweep = None;
            run.commit(to_json(&cursor)).await?;
            return Ok(RunStatus::Succeeded);
        }
        let synced_at = Utc::now();
        for item in &page {
            add_item(run, item, synced_at);
        }
        sweep.next_page += 1;
        cursor.sweep = Some(sweep.clone());
        run.commit(to_json(&cursor)).await?;
    }
}

fn add_item(run: &mut StreamRun, item: &serde_json::Value, synced_at: DateTime<Utc>) {
    match item_row(item, synced_at) {
        Ok(row) => {
            if let Some(time) = item
                .get("last_occurrence_timestamp")
                .and_then(serde_json::Value::as_f64)
                .and_then(heimdallr_core::time::from_unix_seconds)
            {
                run.observe_source_time(time);
            }
            run.add(&ROLLBAR_ITEMS, row);
        }
        Err(reason) => {
            let key = lenient_i64(item.get("id"))
                .map(|id| id.to_string())
                .unwrap_or_default();
            run.reject(&ROLLBAR_ITEMS, &key, &reason, item.clone());
        }
    }
}
