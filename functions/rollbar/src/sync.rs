//! Rollbar's three streams per project and how they move:
//!
//! - `occurrences`: a keyset walk from the newest id down to the high-water mark. The
//!   mark moves only when a walk reaches it; until then each committed batch saves where
//!   the walk got to, and the next run closes that gap before looking for anything new.
//! - `items`: items touched by new occurrences are re-read (a hundred per call, or by a
//!   full sweep past a limit), and every item is swept on a slower cadence, so that
//!   resolves, mutes, reassignments and count resets land too.
//! - `deploys`: Rollbar's deploy records, newest page first (`crate::deploys`).

use crate::api::{ApiError, OccurrencesPage, RollbarClient, ITEMS_PER_PAGE};
use crate::config::{Project, RollbarConfig, Token, DEFAULT_API_PAGE};
use crate::mapping::{item_row, lenient_i64, occurrence_id, occurrence_row, RawOccurrence};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use heimdallr_core::engine::{RunStatus, StreamKey, StreamRun};
use heimdallr_core::http::HttpStats;
use heimdallr_core::schema::{ROLLBAR_ITEMS, ROLLBAR_OCCURRENCES};
use heimdallr_core::stream::{AnyStream, Stream, StreamError};
use heimdallr_core::walk::{drive, PageOutcome, Pages};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub const SOURCE: &str = "rollbar";
pub const OCCURRENCES: &str = "occurrences";
pub const ITEMS: &str = "items";
/// Page size of the first request of a walk that has a high-water mark to stop at.
const FIRST_PAGE_LIMIT: u32 = 100;

/// A page of occurrences being fetched in the background.
type PageFetch = JoinHandle<Result<OccurrencesPage, ApiError>>;

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
    /// The highest stored ids at or below the mark (at most the overlap's worth, highest
    /// first): the overlap re-reads them without writing them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    pub top: i64,
    pub next_below: i64,
    /// Occurrences at or below the mark this walk has re-read (the overlap).
    #[serde(default)]
    pub overlap_seen: usize,
    /// The highest ids this walk stored or found stored (at most the overlap's worth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub newest: Vec<i64>,
}

/// What one page of the walk means for the cursor: [`plan_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct PagePlan {
    /// The cursor once the page is stored.
    pub next: OccurrencesCursor,
    /// The walk ends with this page (the mark moved to the walk's top).
    pub done: bool,
    /// Ids on the page to write: everything above the mark, and those of the overlap that
    /// are not known to be stored.
    pub store: BTreeSet<i64>,
}

/// The `keep` highest of `ids`, highest first, without repeats.
fn highest(ids: impl IntoIterator<Item = i64>, keep: usize) -> Vec<i64> {
    let set: BTreeSet<i64> = ids.into_iter().collect();
    set.into_iter().rev().take(keep).collect()
}

/// The walk's arithmetic for one page, `ids` being the ids on the page that asked for ids
/// `below` (the walk's position; `None` for the newest page). A walk ends at the start of
/// history (an empty page) or once it has re-read `overlap` occurrences at or below the
/// mark: ids are only approximately in time order, so an id can appear below the mark
/// after the mark moved, and re-reading the few nearest the mark catches it. Ids of the
/// overlap known to be stored (`recent`) are not written again, so a quiet run writes
/// nothing.
pub fn plan_page(
    cursor: &OccurrencesCursor,
    below: Option<i64>,
    ids: &[i64],
    overlap: usize,
) -> Result<PagePlan, String> {
    let walk_newest = cursor
        .walk
        .as_ref()
        .map(|w| w.newest.clone())
        .unwrap_or_default();
    let finish = |mut next: OccurrencesCursor, top: Option<i64>, newest: Vec<i64>| {
        next.high_water = match (next.high_water, top) {
            (Some(mark), Some(top)) => Some(mark.max(top)),
            (mark, top) => mark.or(top),
        };
        next.walk = None;
        next.recent = highest(
            newest.into_iter().chain(cursor.recent.iter().copied()),
            overlap,
        );
        next
    };
    let (Some(&lowest), Some(&highest_on_page)) = (ids.iter().min(), ids.iter().max()) else {
        // The start of the project's history: everything below the walk is stored.
        let top = cursor.walk.as_ref().map(|w| w.top);
        return Ok(PagePlan {
            next: finish(cursor.clone(), top, walk_newest),
            done: true,
            store: BTreeSet::new(),
        });
    };
    if let Some(below) = below {
        if highest_on_page >= below {
            return Err(format!(
                "asked for occurrences below id {below} and got ids up to {highest_on_page}: the \
                 API did not honour lastId, so the walk cannot go on (is ROLLBAR_API_URL a proxy \
                 that drops query parameters?)"
            ));
        }
    }
    let mut store = BTreeSet::new();
    let mut known = Vec::new();
    let mut overlap_seen = cursor.walk.as_ref().map_or(0, |w| w.overlap_seen);
    let mut sorted: Vec<i64> = ids.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    for id in sorted {
        match cursor.high_water {
            Some(mark) if id <= mark => {
                if overlap_seen < overlap {
                    if cursor.recent.contains(&id) {
                        known.push(id);
                    } else {
                        store.insert(id);
                    }
                }
                overlap_seen += 1;
            }
            _ => {
                store.insert(id);
            }
        }
    }
    let newest = highest(
        walk_newest
            .into_iter()
            .chain(store.iter().copied())
            .chain(known),
        overlap,
    );
    let top = cursor.walk.as_ref().map_or(highest_on_page, |w| w.top);
    let reached_mark = cursor.high_water.is_some_and(|mark| lowest <= mark);
    let done = reached_mark && overlap_seen >= overlap;
    let next = if done {
        finish(cursor.clone(), Some(top), newest)
    } else {
        OccurrencesCursor {
            walk: Some(Walk {
                top,
                next_below: lowest,
                overlap_seen,
                newest,
            }),
            ..cursor.clone()
        }
    };
    Ok(PagePlan { next, done, store })
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
    /// More items were touched than are worth reading by id (and than a state row should
    /// hold): the next items run sweeps them all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sweep_requested: bool,
}

impl ItemsCursor {
    /// Remembers an item touched by a new occurrence; past `limit` pending items, asks for
    /// a full sweep instead (which re-reads them all) and forgets the ids.
    pub fn touch(&mut self, item: i64, limit: usize) {
        if self.sweep_requested {
            return;
        }
        self.pending.insert(item);
        if self.pending.len() > limit {
            self.pending.clear();
            self.sweep_requested = true;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub next_page: u32,
    pub started_at: DateTime<Utc>,
}

/// Two streams per project (occurrences, then the items they touched), and a third for its
/// deploys when asked (`ROLLBAR_DEPLOYS`), run one after the other; each has its own state, so one project's failure does not hold the
/// others back, and a project whose token is refused skips its other streams.
pub fn streams(client: &RollbarClient, config: &RollbarConfig) -> Vec<Box<dyn AnyStream>> {
    let config = Arc::new(config.clone());
    let mut streams: Vec<Box<dyn AnyStream>> = Vec::new();
    for project in &config.projects {
        let stream = ProjectStream {
            client: client.clone(),
            project: project.clone(),
            config: Arc::clone(&config),
        };
        streams.push(Box::new(OccurrencesStream(stream.clone())));
        if config.deploys {
            streams.push(Box::new(ItemsStream(stream.clone())));
            streams.push(Box::new(crate::deploys::DeploysStream(stream)));
        } else {
            streams.push(Box::new(ItemsStream(stream)));
        }
    }
    streams
}

/// What every stream of a project holds.
#[derive(Clone)]
pub struct ProjectStream {
    pub(crate) client: RollbarClient,
    pub(crate) project: Project,
    pub(crate) config: Arc<RollbarConfig>,
}

impl ProjectStream {
    fn items_key(&self) -> StreamKey {
        StreamKey::new(SOURCE, ITEMS, &self.project.label)
    }
}

/// `rollbar/occurrences/<project>`.
pub struct OccurrencesStream(ProjectStream);

/// `rollbar/items/<project>`.
pub struct ItemsStream(ProjectStream);

type OccurrencesRun = StreamRun<OccurrencesCursor>;
type ItemsRun = StreamRun<ItemsCursor>;

#[async_trait]
impl Stream for OccurrencesStream {
    type Cursor = OccurrencesCursor;

    fn key(&self) -> StreamKey {
        StreamKey::new(SOURCE, OCCURRENCES, &self.0.project.label)
    }

    fn credential(&self) -> String {
        self.0.project.label.clone()
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.0.client.stats())
    }

    /// Walks occurrences newest first down to the high-water mark (and the overlap below
    /// it), committing each batch with the walk's position and the items it touched.
    async fn run(&self, run: &mut OccurrencesRun) -> Result<RunStatus, StreamError> {
        let items: ItemsCursor = run.read_cursor_of(&self.0.items_key()).await?;
        let mut pages = OccurrencePages {
            stream: &self.0,
            items,
            page_limit: self.0.config.page_limit,
            prefetched: None,
        };
        drive(run, &mut pages).await
    }
}

/// The keyset walk of a project's occurrences, newest id first.
struct OccurrencePages<'a> {
    stream: &'a ProjectStream,
    /// The items stream's cursor: the items this walk touches, committed with it.
    items: ItemsCursor,
    /// Pages that time out are asked for again smaller, down to the API's default page.
    page_limit: u32,
    /// The next page is requested as soon as this one's ids are read, so that fetching
    /// overlaps mapping and committing; a prefetch for any other position is dropped.
    prefetched: Option<(i64, PageFetch)>,
}

impl Drop for OccurrencePages<'_> {
    fn drop(&mut self) {
        if let Some((_, next)) = self.prefetched.take() {
            next.abort();
        }
    }
}

#[async_trait]
impl Pages<OccurrencesCursor> for OccurrencePages<'_> {
    fn resuming(&self, cursor: &OccurrencesCursor) -> bool {
        cursor.walk.is_some()
    }

    fn before_commit(&mut self, run: &mut OccurrencesRun) {
        run.stage_state_of(&self.stream.items_key(), &self.items);
    }

    async fn next_page(&mut self, run: &mut OccurrencesRun) -> Result<PageOutcome, StreamError> {
        let (client, token) = (&self.stream.client, &self.stream.project.token);
        let config = &self.stream.config;
        let below = run.cursor.walk.as_ref().map(|w| w.next_below);
        // Most runs find a handful of new occurrences: poll with a small first page and
        // walk on with full pages only when there is more.
        let limit = if run.cursor.walk.is_none() && run.cursor.high_water.is_some() {
            self.page_limit.min(FIRST_PAGE_LIMIT)
        } else {
            self.page_limit
        };
        let page = match self.prefetched.take() {
            Some((next_below, next)) if Some(next_below) == below => next
                .await
                .map_err(|e| StreamError::shape(format!("page fetch task failed: {e}")))?,
            stale => {
                if let Some((_, next)) = stale {
                    next.abort();
                }
                fetch_page(client, token, below, limit).await
            }
        };
        let page = match page {
            Err(e) if e.is_timeout() => {
                let smaller = smaller_page(limit);
                if smaller == limit {
                    return Err(e.into());
                }
                tracing::warn!(stream = %run.key(), limit, smaller, "page timed out; asking for smaller pages");
                self.page_limit = smaller;
                return Ok(PageOutcome::Again);
            }
            other => other?,
        };
        run.page_fetched();
        // Each occurrence with its id, read once.
        let mut raws: Vec<(Option<i64>, &RawValue)> = page
            .instances()?
            .into_iter()
            .map(|raw| (occurrence_id(raw), raw))
            .collect();
        let ids: Vec<i64> = raws.iter().filter_map(|(id, _)| *id).collect();
        if ids.len() < raws.len() && ids.is_empty() {
            return Err(StreamError::shape(format!(
                "a page of {} occurrences below {below:?} carries no ids; cannot continue the walk",
                raws.len()
            )));
        }
        // The whole page's plan checks it and says whether there is a next page to fetch.
        let whole =
            plan_page(&run.cursor, below, &ids, config.overlap).map_err(StreamError::shape)?;
        if let (false, Some(walk)) = (whole.done, whole.next.walk.as_ref()) {
            let next_below = walk.next_below;
            if run.time_left() {
                let (client, token, limit) = (client.clone(), token.clone(), self.page_limit);
                self.prefetched = Some((
                    next_below,
                    tokio::spawn(async move {
                        fetch_page(&client, &token, Some(next_below), limit).await
                    }),
                ));
            }
        }
        // The page is stored in parts of at most a batch, each committed with the cursor
        // that covers it: a large page never holds more than a batch of rows in memory,
        // and parts of one page plan exactly as consecutive pages would.
        raws.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        let mut part_below = below;
        let mut done = raws.is_empty();
        if done {
            run.cursor = whole.next;
        }
        let mut rest: &[(Option<i64>, &RawValue)] = &raws;
        while !rest.is_empty() && !done {
            let room = run.batch_room().max(1);
            let (part, later) = rest.split_at(room.min(rest.len()));
            rest = later;
            let part_ids: Vec<i64> = part.iter().filter_map(|(id, _)| *id).collect();
            let plan = if part_ids.is_empty() {
                None // only occurrences without ids: rejects, the position stays
            } else {
                Some(
                    plan_page(&run.cursor, part_below, &part_ids, config.overlap)
                        .map_err(StreamError::shape)?,
                )
            };
            let synced_at = Utc::now();
            for (_, raw) in part {
                let occurrence = RawOccurrence::new(raw);
                let Some(id) = occurrence.id else {
                    run.reject(
                        &ROLLBAR_OCCURRENCES,
                        "",
                        &occurrence.missing_id_reason(),
                        occurrence.reject_document(&config.pii),
                    );
                    continue;
                };
                if !plan.as_ref().is_some_and(|p| p.store.contains(&id)) {
                    continue; // stored by an earlier walk, below the overlap
                }
                match occurrence_row(&occurrence, &config.pii, synced_at) {
                    Ok((row, meta)) => {
                        if let Some(item) = meta.item_id {
                            self.items.touch(item, config.item_refresh_limit);
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
            if let Some(plan) = plan {
                part_below = part_ids.iter().min().copied();
                run.cursor = plan.next;
                done = plan.done;
            }
            if !done && run.batch_full() {
                self.before_commit(run);
                run.commit().await?;
            }
        }
        Ok(PageOutcome::after_page(done))
    }
}

/// One page of occurrences; a timeout is reported at once while a smaller page can still
/// be asked for, and retried like any failure at the smallest.
async fn fetch_page(
    client: &RollbarClient,
    token: &Token,
    below: Option<i64>,
    limit: u32,
) -> Result<OccurrencesPage, ApiError> {
    let report_timeouts = smaller_page(limit) < limit;
    client
        .occurrences(token, below, limit, report_timeouts)
        .await
}

/// Half the page, down to the API's default page size.
fn smaller_page(limit: u32) -> u32 {
    (limit / 2).max(DEFAULT_API_PAGE.min(limit))
}

#[async_trait]
impl Stream for ItemsStream {
    type Cursor = ItemsCursor;

    fn key(&self) -> StreamKey {
        self.0.items_key()
    }

    fn credential(&self) -> String {
        self.0.project.label.clone()
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.0.client.stats())
    }

    /// Re-reads items touched by new occurrences (a hundred per call), then sweeps every
    /// item when due, or when more items were touched than are worth reading by id.
    async fn run(&self, run: &mut ItemsRun) -> Result<RunStatus, StreamError> {
        let (client, token) = (&self.0.client, &self.0.project.token);
        let config = &self.0.config;
        let now = run.now();
        if run.cursor.sweep.is_none() && run.cursor.sweep_requested {
            // Cheaper to read every page than this many items by id. Items touched from
            // here on stay pending and are re-read after. A request that comes while a
            // sweep is under way waits for it to end: that sweep may have passed the
            // touched items.
            tracing::info!(stream = %run.key(), "many touched items: sweeping all");
            run.cursor.sweep = Some(Sweep {
                next_page: 1,
                started_at: now,
            });
            run.cursor.sweep_requested = false;
        }
        while !run.cursor.pending.is_empty() {
            if !run.time_left() {
                return Ok(run.stop_partial().await?);
            }
            let chunk: Vec<i64> = run
                .cursor
                .pending
                .iter()
                .take(ITEMS_PER_PAGE)
                .copied()
                .collect();
            let items = client.items_by_ids(token, &chunk).await?;
            run.page_fetched();
            let synced_at = Utc::now();
            for item in &items {
                add_item(run, item, synced_at);
            }
            // An item Rollbar no longer has is simply not refreshed.
            for id in &chunk {
                run.cursor.pending.remove(id);
            }
            let all_read = run.cursor.pending.is_empty();
            run.commit_page(all_read).await?;
        }
        // Every item new occurrences touched is fresh: that is this stream's head. The
        // sweep below is upkeep; stopping partway through it is not falling behind.
        run.reached_head();
        let sweep_due = run.cursor.sweep.is_some()
            || run.cursor.last_sweep_completed_at.is_none_or(|last| {
                (now - last).to_std().unwrap_or_default() >= config.items_sweep_interval
            });
        if !sweep_due {
            return Ok(RunStatus::Succeeded);
        }
        let mut sweep = run.cursor.sweep.clone().unwrap_or(Sweep {
            next_page: 1,
            started_at: now,
        });
        loop {
            if !run.time_left() {
                return Ok(run.stop_partial().await?);
            }
            let page = client.items_page(token, sweep.next_page).await?;
            run.page_fetched();
            if page.is_empty() {
                run.cursor.last_sweep_completed_at = Some(sweep.started_at);
                run.cursor.sweep = None;
                run.commit().await?;
                return Ok(RunStatus::Succeeded);
            }
            let synced_at = Utc::now();
            for item in &page {
                add_item(run, item, synced_at);
            }
            sweep.next_page += 1;
            run.cursor.sweep = Some(sweep.clone());
            run.commit_page(false).await?;
        }
    }
}

fn add_item(run: &mut ItemsRun, item: &serde_json::Value, synced_at: DateTime<Utc>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(high_water: Option<i64>, recent: &[i64]) -> OccurrencesCursor {
        OccurrencesCursor {
            high_water,
            walk: None,
            recent: recent.to_vec(),
        }
    }

    fn walking(
        high_water: Option<i64>,
        (top, next_below, overlap_seen): (i64, i64, usize),
        newest: &[i64],
        recent: &[i64],
    ) -> OccurrencesCursor {
        OccurrencesCursor {
            high_water,
            walk: Some(Walk {
                top,
                next_below,
                overlap_seen,
                newest: newest.to_vec(),
            }),
            recent: recent.to_vec(),
        }
    }

    fn ids(list: &[i64]) -> BTreeSet<i64> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_first_walk_stores_everything_and_ends_at_the_start_of_history() {
        let start = cursor(None, &[]);
        let plan = plan_page(&start, None, &[30, 20, 10], 2).unwrap();
        assert!(!plan.done);
        assert_eq!(plan.store, ids(&[10, 20, 30]));
        assert_eq!(plan.next, walking(None, (30, 10, 0), &[30, 20], &[]));
        let end = plan_page(&plan.next, Some(10), &[], 2).unwrap();
        assert!(end.done);
        assert_eq!(end.next, cursor(Some(30), &[30, 20]));
    }

    #[test]
    fn a_walk_reads_the_overlap_below_the_mark_then_moves_the_mark_to_its_top() {
        let start = cursor(Some(100), &[]);
        // Two new ones and two below the mark: the overlap of 3 is not read yet.
        let plan = plan_page(&start, None, &[120, 110, 100, 95], 3).unwrap();
        assert!(!plan.done);
        assert_eq!(plan.store, ids(&[120, 110, 100, 95]));
        assert_eq!(
            plan.next,
            walking(Some(100), (120, 95, 2), &[120, 110, 100], &[])
        );
        // The next page finishes the overlap: only the id closest to the mark is read.
        let plan = plan_page(&plan.next, Some(95), &[90, 80, 70], 3).unwrap();
        assert!(plan.done);
        assert_eq!(plan.store, ids(&[90]));
        assert_eq!(plan.next, cursor(Some(120), &[120, 110, 100]));
    }

    #[test]
    fn a_quiet_run_rereads_the_overlap_and_writes_nothing() {
        let quiet = cursor(Some(100), &[100, 97, 90]);
        let plan = plan_page(&quiet, None, &[100, 97, 90, 80], 3).unwrap();
        assert!(plan.done);
        assert!(plan.store.is_empty(), "{:?}", plan.store);
        assert_eq!(plan.next, quiet);
    }

    #[test]
    fn a_late_id_just_below_the_mark_is_stored_by_the_overlap() {
        // 99 arrived after the walk that set the mark at 100 had passed it.
        let before = cursor(Some(100), &[100, 97, 90]);
        let plan = plan_page(&before, None, &[101, 100, 99, 97], 3).unwrap();
        assert!(plan.done);
        assert_eq!(plan.store, ids(&[101, 99]));
        assert_eq!(plan.next, cursor(Some(101), &[101, 100, 99]));
        let no_overlap = plan_page(&cursor(Some(100), &[]), None, &[101, 100, 99], 0).unwrap();
        assert!(no_overlap.done);
        assert_eq!(
            no_overlap.store,
            ids(&[101]),
            "without overlap, only new ids"
        );
    }

    #[test]
    fn a_resumed_walk_closes_its_gap_and_keeps_its_top() {
        let resumed = walking(Some(50), (200, 120, 0), &[200], &[50]);
        let plan = plan_page(&resumed, Some(120), &[110, 60, 50, 40], 1).unwrap();
        assert!(plan.done);
        assert_eq!(
            plan.store,
            ids(&[60, 110]),
            "50 is known, 40 is past the overlap"
        );
        assert_eq!(plan.next, cursor(Some(200), &[200]));
    }

    #[test]
    fn a_page_that_is_not_below_the_asked_id_stops_the_walk() {
        let resumed = walking(None, (200, 120, 0), &[], &[]);
        let error = plan_page(&resumed, Some(120), &[200, 150, 130], 0).unwrap_err();
        assert!(error.contains("did not honour lastId"), "{error}");
        assert!(plan_page(&resumed, Some(120), &[120], 0).is_err());
    }

    #[test]
    fn touched_items_past_the_limit_become_one_sweep() {
        let mut items = ItemsCursor::default();
        for id in 0..5 {
            items.touch(id, 4);
        }
        assert!(items.sweep_requested);
        assert!(items.pending.is_empty(), "the state row stays small");
        items.touch(9, 4);
        assert!(items.pending.is_empty());
    }

    #[test]
    fn timed_out_pages_halve_down_to_the_api_default() {
        assert_eq!(smaller_page(5000), 2500);
        assert_eq!(smaller_page(30), 20);
        assert_eq!(smaller_page(20), 20);
        assert_eq!(smaller_page(5), 5);
    }
}
