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
use crate::mapping::{item_row, lenient_i64, occurrence_key, occurrence_row, RawOccurrence};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use heimdallr_core::engine::{RunStatus, StreamKey, StreamRun};
use heimdallr_core::http::HttpStats;
use heimdallr_core::http::RequestOptions;
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
/// What a page assumes an occurrence weighs until a page says: about the largest payload
/// Rollbar accepts (128 KB), so that a first page stays within budget whatever the size.
const LARGEST_OCCURRENCE_BYTES: u64 = 128 * 1024;

/// A page of occurrences being fetched in the background.
type PageFetch = JoinHandle<Result<OccurrencesPage, ApiError>>;

/// Saved position of the occurrence walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OccurrencesCursor {
    /// Every occurrence with an id up to this one is in the warehouse.
    #[serde(default)]
    pub high_water: Option<i64>,
    /// The newest `timestamp` (Unix seconds) stored when the mark was set: the overlap
    /// re-reads occurrences below the mark received up to the overlap window before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_water_time: Option<i64>,
    /// A walk that stopped early: ids in `(next_below, top]` are stored, the gap
    /// `(high_water, next_below)` is not yet.
    #[serde(default)]
    pub walk: Option<Walk>,
    /// The highest stored ids at or below the mark (at most [`Overlap::known_ids`],
    /// highest first): the overlap re-reads them without writing them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<i64>,
    /// What an occurrence weighed on the last page read, in bytes: pages are sized from it
    /// so that one page stays within the engine's byte budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    pub top: i64,
    pub next_below: i64,
    /// The newest `timestamp` among the occurrences this walk stored above the mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_time: Option<i64>,
    /// Pages of the overlap (below the mark) this walk has read.
    #[serde(default)]
    pub overlap_pages: u32,
    /// The highest ids this walk stored or found stored (at most [`Overlap::known_ids`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub newest: Vec<i64>,
}

/// What a walk re-reads below the high-water mark. Occurrences are listed "descending by
/// occurrence ID (which is approximately descending by timestamp)" (Rollbar's reference),
/// and one can become listable seconds after ids above it were read: a walk goes on below
/// the mark until the occurrences it sees were received `window_secs` before the mark's
/// own, so that anything listed up to that late is caught. A count of ids would cover a
/// fraction of a second in an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// How late (seconds of `timestamp` below the mark's) an occurrence may be listed.
    pub window_secs: i64,
    /// Stored ids remembered below the mark, so a quiet run re-reads without re-writing.
    pub known_ids: usize,
    /// At most this many pages of overlap per walk (a bound in requests, for an incident
    /// where the window holds more than a Lambda run can read); reaching it is logged.
    pub max_pages: u32,
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
    /// The walk ended at the overlap's page bound, before the window's end.
    pub overlap_cut_short: bool,
}

/// The `keep` highest of `ids`, highest first, without repeats.
fn highest(ids: impl IntoIterator<Item = i64>, keep: usize) -> Vec<i64> {
    let set: BTreeSet<i64> = ids.into_iter().collect();
    set.into_iter().rev().take(keep).collect()
}

/// The walk's arithmetic for one page, `records` being the (id, timestamp) of the
/// occurrences on the page that asked for ids `below` (the walk's position; `None` for the
/// newest page). A walk ends at the start of history (an empty page) or once it has read
/// below the mark past the overlap window (see [`Overlap`]). Ids of the overlap known to
/// be stored (`recent`) are not written again, so a quiet run writes nothing.
pub fn plan_page(
    cursor: &OccurrencesCursor,
    below: Option<i64>,
    records: &[(i64, Option<i64>)],
    overlap: &Overlap,
) -> Result<PagePlan, String> {
    let walk = cursor.walk.as_ref();
    let walk_newest = walk.map(|w| w.newest.clone()).unwrap_or_default();
    let finish =
        |mut next: OccurrencesCursor, top: Option<i64>, top_time: Option<i64>, newest: Vec<i64>| {
            next.high_water = match (next.high_water, top) {
                (Some(mark), Some(top)) => Some(mark.max(top)),
                (mark, top) => mark.or(top),
            };
            next.high_water_time = match (next.high_water_time, top_time) {
                (Some(old), Some(new)) => Some(old.max(new)),
                (old, new) => old.or(new),
            };
            next.walk = None;
            next.recent = highest(
                newest.into_iter().chain(cursor.recent.iter().copied()),
                overlap.known_ids,
            );
            next
        };
    let ids = records.iter().map(|(id, _)| *id);
    let (Some(lowest), Some(highest_on_page)) = (ids.clone().min(), ids.max()) else {
        // The start of the project's history: everything below the walk is stored.
        return Ok(PagePlan {
            next: finish(
                cursor.clone(),
                walk.map(|w| w.top),
                walk.and_then(|w| w.top_time),
                walk_newest,
            ),
            done: true,
            store: BTreeSet::new(),
            overlap_cut_short: false,
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
    // Received before this, an occurrence below the mark is outside the window. A mark
    // set before marks had times: the first page that reaches it is the overlap.
    let cutoff = cursor
        .high_water_time
        .map(|time| time - overlap.window_secs);
    let mut store = BTreeSet::new();
    let mut known = Vec::new();
    let mut top_time = walk.and_then(|w| w.top_time);
    let mut reached_mark = false;
    let mut past_window = cutoff.is_none();
    let mut sorted: Vec<(i64, Option<i64>)> = records.to_vec();
    sorted.sort_unstable_by_key(|record| std::cmp::Reverse(record.0));
    sorted.dedup_by_key(|(id, _)| *id);
    for (id, time) in sorted {
        match cursor.high_water {
            Some(mark) if id <= mark => {
                reached_mark = true;
                let in_window = match (cutoff, time) {
                    (Some(cutoff), Some(time)) => time >= cutoff,
                    _ => true,
                };
                if !in_window {
                    past_window = true;
                } else if cursor.recent.contains(&id) {
                    known.push(id);
                } else {
                    store.insert(id);
                }
            }
            _ => {
                store.insert(id);
                top_time = match (top_time, time) {
                    (Some(top), Some(time)) => Some(top.max(time)),
                    (top, time) => top.or(time),
                };
            }
        }
    }
    let newest = highest(
        walk_newest
            .into_iter()
            .chain(store.iter().copied())
            .chain(known),
        overlap.known_ids,
    );
    let top = walk.map_or(highest_on_page, |w| w.top);
    let overlap_pages = walk.map_or(0, |w| w.overlap_pages) + u32::from(reached_mark);
    let overlap_cut_short = reached_mark && !past_window && overlap_pages >= overlap.max_pages;
    let done = reached_mark && (past_window || overlap_cut_short);
    let next = if done {
        finish(cursor.clone(), Some(top), top_time, newest)
    } else {
        OccurrencesCursor {
            walk: Some(Walk {
                top,
                next_below: lowest,
                top_time,
                overlap_pages,
                newest,
            }),
            ..cursor.clone()
        }
    };
    Ok(PagePlan {
        next,
        done,
        store,
        overlap_cut_short,
    })
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
        let overlap = config.overlap();
        let below = run.cursor.walk.as_ref().map(|w| w.next_below);
        let limit = self.limit(run);
        let page = match self.prefetched.take() {
            Some((next_below, next)) if Some(next_below) == below => next
                .await
                .map_err(|e| StreamError::shape(format!("page fetch task failed: {e}")))?,
            stale => {
                if let Some((_, next)) = stale {
                    next.abort();
                }
                fetch_page(client, token, below, limit, run.page_bytes()).await
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
            Err(e) => match e.too_large() {
                // Occurrences much larger than the last page's: abandoned as it arrived,
                // asked again at the size it turned out to have.
                Some(bytes) if limit > 1 => {
                    let per_occurrence = bytes.div_ceil(u64::from(limit)).max(1);
                    tracing::warn!(stream = %run.key(), limit, bytes, per_occurrence, "page over its byte budget; asking for fewer occurrences");
                    run.cursor.occurrence_bytes =
                        Some(per_occurrence.max(run.cursor.occurrence_bytes.unwrap_or(0) * 2));
                    return Ok(PageOutcome::Again);
                }
                Some(_) => {
                    return Err(StreamError::shape(format!(
                        "{e}: one occurrence is larger than twice the byte budget; raise \
                         HEIMDALLR_BATCH_BYTES"
                    )))
                }
                None => return Err(e.into()),
            },
            Ok(page) => page,
        };
        run.page_fetched();
        // Each occurrence with its id and time, read once.
        // A time more than an hour ahead (a client's clock, or milliseconds) would move
        // the window's end into the future and close it: such an occurrence is stored, but
        // its time is not the window's.
        let latest_credible = run.now().timestamp() + 3600;
        let mut raws: Vec<(Option<i64>, Option<i64>, &RawValue)> = page
            .instances()?
            .into_iter()
            .map(|raw| {
                let (id, time) = occurrence_key(raw);
                (id, time.filter(|t| *t <= latest_credible), raw)
            })
            .collect();
        if !raws.is_empty() {
            run.cursor.occurrence_bytes = Some((page.bytes() / raws.len()).max(1) as u64);
        }
        let records: Vec<(i64, Option<i64>)> = raws
            .iter()
            .filter_map(|(id, time, _)| id.map(|id| (id, *time)))
            .collect();
        if records.len() < raws.len() && records.is_empty() {
            return Err(StreamError::shape(format!(
                "a page of {} occurrences below {below:?} carries no ids; cannot continue the walk",
                raws.len()
            )));
        }
        // The whole page's plan checks it and says whether there is a next page to fetch.
        let whole =
            plan_page(&run.cursor, below, &records, &overlap).map_err(StreamError::shape)?;
        if let (false, Some(walk)) = (whole.done, whole.next.walk.as_ref()) {
            let next_below = walk.next_below;
            if run.time_left() {
                // Sized from this page's occurrences: the page held now and the one
                // fetched meanwhile both stay within the byte budget.
                let (client, token) = (client.clone(), token.clone());
                let (limit, budget) = (self.limit(run), run.page_bytes());
                self.prefetched = Some((
                    next_below,
                    tokio::spawn(async move {
                        fetch_page(&client, &token, Some(next_below), limit, budget).await
                    }),
                ));
            }
        }
        // The page is stored in parts of at most a batch (rows and bytes), each committed
        // with the cursor that covers it: a large page never holds more than a batch of
        // rows in memory, and parts of one page plan exactly as consecutive pages would.
        raws.sort_by_key(|(id, _, _)| std::cmp::Reverse(*id));
        let mut part_below = below;
        let mut done = raws.is_empty();
        if done {
            run.cursor = whole.next;
        }
        let mut rest: &[(Option<i64>, Option<i64>, &RawValue)] = &raws;
        while !rest.is_empty() && !done {
            let room = run.batch_room_for(rest.iter().map(|(_, _, raw)| raw.get().len()));
            let (part, later) = rest.split_at(room.min(rest.len()));
            rest = later;
            let part_records: Vec<(i64, Option<i64>)> = part
                .iter()
                .filter_map(|(id, time, _)| id.map(|id| (id, *time)))
                .collect();
            let plan = if part_records.is_empty() {
                None // only occurrences without ids: rejects, the position stays
            } else {
                Some(
                    plan_page(&run.cursor, part_below, &part_records, &overlap)
                        .map_err(StreamError::shape)?,
                )
            };
            let synced_at = Utc::now();
            for (_, _, raw) in part {
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
                    continue; // stored by an earlier walk, or below the window
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
                part_below = part_records.iter().map(|(id, _)| *id).min();
                if plan.overlap_cut_short {
                    tracing::warn!(
                        stream = %run.key(),
                        pages = overlap.max_pages,
                        window_secs = overlap.window_secs,
                        "the overlap below the mark reached its page bound before the end of its window; occurrences listed later than this may be missed"
                    );
                }
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

impl OccurrencePages<'_> {
    /// Occurrences to ask for: as many as the engine's page budget holds at the size the
    /// last page's had (the largest Rollbar accepts until a page says), within the
    /// setting; a walk that only polls for news starts small.
    fn limit(&self, run: &OccurrencesRun) -> u32 {
        let per_occurrence = run
            .cursor
            .occurrence_bytes
            .unwrap_or(LARGEST_OCCURRENCE_BYTES)
            .max(1);
        let by_bytes =
            (run.page_bytes() as u64 / per_occurrence).clamp(1, u64::from(u32::MAX)) as u32;
        let limit = self.page_limit.min(by_bytes).max(1);
        // Most runs find a handful of new occurrences: poll with a small first page and
        // walk on with full pages only when there is more.
        if run.cursor.walk.is_none() && run.cursor.high_water.is_some() {
            limit.min(FIRST_PAGE_LIMIT)
        } else {
            limit
        }
    }
}

/// One page of occurrences; a timeout is reported at once while a smaller page can still
/// be asked for, and retried like any failure at the smallest. A body over twice the
/// page budget is abandoned as it arrives (occurrences far larger than the last page's).
async fn fetch_page(
    client: &RollbarClient,
    token: &Token,
    below: Option<i64>,
    limit: u32,
    page_bytes: usize,
) -> Result<OccurrencesPage, ApiError> {
    let options = RequestOptions {
        report_timeouts: smaller_page(limit) < limit,
        max_body_bytes: Some(page_bytes.saturating_mul(2)),
    };
    client.occurrences(token, below, limit, options).await
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
            let found = client.items_by_ids(token, &chunk).await?;
            run.page_fetched();
            let synced_at = Utc::now();
            for item in &found.items {
                add_item(run, item, synced_at);
            }
            // An item Rollbar no longer has (deleted, or merged into another) cannot be
            // refreshed: kept as a reject with the reason, not silently forgotten.
            for id in &found.missing {
                run.reject(
                    &ROLLBAR_ITEMS,
                    &id.to_string(),
                    "asked for by id, Rollbar did not return this item (deleted, or merged into another item): its stored row is no longer refreshed",
                    serde_json::json!({"id": id}),
                );
            }
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

    /// A window of 60 s, two known ids, three pages of overlap at most.
    fn overlap() -> Overlap {
        Overlap {
            window_secs: 60,
            known_ids: 2,
            max_pages: 3,
        }
    }

    fn cursor(high_water: Option<(i64, i64)>, recent: &[i64]) -> OccurrencesCursor {
        OccurrencesCursor {
            high_water: high_water.map(|(id, _)| id),
            high_water_time: high_water.map(|(_, time)| time),
            walk: None,
            recent: recent.to_vec(),
            occurrence_bytes: None,
        }
    }

    fn walking(
        base: OccurrencesCursor,
        (top, next_below, top_time, overlap_pages): (i64, i64, Option<i64>, u32),
        newest: &[i64],
    ) -> OccurrencesCursor {
        OccurrencesCursor {
            walk: Some(Walk {
                top,
                next_below,
                top_time,
                overlap_pages,
                newest: newest.to_vec(),
            }),
            ..base
        }
    }

    /// Records whose time is their id (one a second).
    fn timed(ids: &[i64]) -> Vec<(i64, Option<i64>)> {
        ids.iter().map(|id| (*id, Some(*id))).collect()
    }

    fn ids(list: &[i64]) -> BTreeSet<i64> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_first_walk_stores_everything_and_ends_at_the_start_of_history() {
        let start = cursor(None, &[]);
        let plan = plan_page(&start, None, &timed(&[30, 20, 10]), &overlap()).unwrap();
        assert!(!plan.done);
        assert_eq!(plan.store, ids(&[10, 20, 30]));
        assert_eq!(
            plan.next,
            walking(start.clone(), (30, 10, Some(30), 0), &[30, 20])
        );
        let end = plan_page(&plan.next, Some(10), &[], &overlap()).unwrap();
        assert!(end.done);
        assert_eq!(end.next, cursor(Some((30, 30)), &[30, 20]));
    }

    #[test]
    fn a_walk_reads_below_the_mark_until_past_the_window_then_moves_the_mark() {
        // The mark: id 1000 received at second 1000; the window reaches back to 940.
        let start = cursor(Some((1000, 1000)), &[]);
        let plan = plan_page(&start, None, &timed(&[1010, 1005, 990, 950]), &overlap()).unwrap();
        assert!(!plan.done, "950 is still inside the window");
        assert_eq!(plan.store, ids(&[1010, 1005, 990, 950]));
        let plan = plan_page(&plan.next, Some(950), &timed(&[945, 930, 900]), &overlap()).unwrap();
        assert!(plan.done, "930 is past it");
        assert_eq!(plan.store, ids(&[945]), "only what is inside the window");
        assert_eq!(plan.next.high_water, Some(1010));
        assert_eq!(plan.next.high_water_time, Some(1010));
        assert!(plan.next.walk.is_none());
    }

    #[test]
    fn an_occurrence_listed_late_below_the_mark_is_stored_and_known_ones_are_not_rewritten() {
        // 990 became listable after the walk that set the mark at 1000 had passed it.
        let before = cursor(Some((1000, 1000)), &[1000, 995]);
        let plan = plan_page(
            &before,
            None,
            &timed(&[1001, 1000, 995, 990, 900]),
            &overlap(),
        )
        .unwrap();
        assert!(plan.done);
        assert_eq!(plan.store, ids(&[1001, 990]));
        assert_eq!(plan.next.recent, vec![1001, 1000], "the highest two");
        // A quiet run: everything below the mark is known or past the window.
        let quiet = cursor(Some((1000, 1000)), &[1000, 995]);
        let plan = plan_page(&quiet, None, &timed(&[1000, 995, 900]), &overlap()).unwrap();
        assert!(plan.done);
        assert!(plan.store.is_empty(), "{:?}", plan.store);
        assert_eq!(plan.next, quiet);
    }

    #[test]
    fn ids_out_of_time_order_are_judged_by_their_time_not_their_place() {
        // 980 was received at second 1000, inside the window though its id is lower.
        let start = cursor(Some((1000, 1000)), &[]);
        let records = vec![(1002, Some(1002)), (980, Some(1000)), (970, Some(900))];
        let plan = plan_page(&start, None, &records, &overlap()).unwrap();
        assert!(plan.done);
        assert_eq!(plan.store, ids(&[1002, 980]));
    }

    #[test]
    fn a_window_that_holds_more_than_the_page_bound_ends_the_walk_and_says_so() {
        let mut cursor = cursor(Some((1000, 1000)), &[]);
        let mut below = None;
        for page in 0..3 {
            let top = 1000 - page * 10;
            let plan = plan_page(&cursor, below, &timed(&[top - 1, top - 5]), &overlap()).unwrap();
            assert_eq!(plan.done, page == 2, "page {page}");
            assert_eq!(plan.overlap_cut_short, page == 2);
            below = Some(top - 5);
            cursor = plan.next;
        }
    }

    #[test]
    fn a_mark_without_a_time_reads_one_page_below_it() {
        // A cursor saved before marks had times.
        let old = OccurrencesCursor {
            high_water: Some(100),
            ..Default::default()
        };
        let plan = plan_page(&old, None, &timed(&[120, 99, 50]), &overlap()).unwrap();
        assert!(plan.done);
        assert_eq!(plan.store, ids(&[120, 99, 50]));
        assert_eq!(plan.next.high_water_time, Some(120), "times from now on");
    }

    #[test]
    fn a_resumed_walk_closes_its_gap_and_keeps_its_top() {
        let resumed = walking(
            cursor(Some((50, 100)), &[50]),
            (200, 120, Some(200), 0),
            &[200],
        );
        let plan = plan_page(
            &resumed,
            Some(120),
            &timed(&[110, 60, 50, 40, 5]),
            &overlap(),
        )
        .unwrap();
        assert!(plan.done);
        assert_eq!(
            plan.store,
            ids(&[60, 110, 40]),
            "50 is known, 5 is past the window"
        );
        assert_eq!(plan.next.high_water, Some(200));
        assert_eq!(plan.next.high_water_time, Some(200));
    }

    #[test]
    fn a_page_that_is_not_below_the_asked_id_stops_the_walk() {
        let resumed = walking(cursor(None, &[]), (200, 120, None, 0), &[]);
        let error =
            plan_page(&resumed, Some(120), &timed(&[200, 150, 130]), &overlap()).unwrap_err();
        assert!(error.contains("did not honour lastId"), "{error}");
        assert!(plan_page(&resumed, Some(120), &timed(&[120]), &overlap()).is_err());
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
