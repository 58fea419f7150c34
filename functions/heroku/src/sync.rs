//! Two streams per app, `heroku/releases/<app>` and `heroku/builds/<app>`, and how they
//! move. Each walks newest first (releases by `version`, builds by `started_at`, the
//! fields the API accepts in a Range) down to its high-water mark, following
//! `Next-Range`; a walk cut short saves its Next-Range with each batch and the next run
//! finishes it first. Rows that change after they are first seen are re-read by id every
//! run until they stop changing: pending releases and builds, and succeeded builds still
//! waiting for their release id. When a new release becomes current, the one that was
//! current is re-read too, so exactly one release per app says `current`. The app's row is
//! refreshed with its releases. Each release's git sha is read from its slug, once per
//! slug: promotions, rollbacks and config changes have a slug but no build in the app.
//!
//! Heroku's 4,500 requests an hour are shared with every other client of the account: a
//! run stops early, saving its place, once `RateLimit-Remaining` drops below the headroom.
use crate::api::{ApiError, HerokuClient, RangePage};
use crate::config::{Apps, HerokuConfig};
use crate::mapping::{
    app_row, build_is_final, build_row, int, release_is_final, release_row, stored_document, text,
    time,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use heimdallr_core::engine::{RunStatus, StreamKey, StreamRun};
use heimdallr_core::http::HttpStats;
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::schema::{HEROKU_APPS, HEROKU_BUILDS, HEROKU_RELEASES};
use heimdallr_core::stream::{AnyStream, ErrorKind, Stream, StreamError};
use heimdallr_core::walk::{drive, PageOutcome, Pages, WalkState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub const SOURCE: &str = "heroku";
pub const RELEASES: &str = "releases";
pub const BUILDS: &str = "builds";
/// A succeeded build is watched this long for the release id Heroku fills in later.
const RELEASE_ID_WAIT_HOURS: i64 = 24;
/// How far below the mark (by `created_at`) the builds walk reads, since pages come by
/// `started_at`.
const BUILD_ORDER_MARGIN_MINUTES: i64 = 60;
/// Slug commits remembered in the releases cursor.
const SLUG_COMMITS_KEPT: usize = 100;
/// Slugs read at once.
const SLUG_READS_AT_ONCE: usize = 8;

/// Saved position of a walk (by `M`: release version or build creation time, its
/// Next-Range while unfinished) and the rows still changing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: Deserialize<'de>"))]
pub struct Cursor<M> {
    #[serde(flatten)]
    pub walk: WalkState<M>,
    /// Ids to re-read every run until they stop changing.
    #[serde(default)]
    pub pending: BTreeSet<String>,
    /// The release stored as current (releases only).
    #[serde(default)]
    pub current: Option<String>,
    /// The commits of the slugs read most recently (releases only), newest last: a slug
    /// is read once, and a release re-read (pending, current flipping) needs no request.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub slug_commits: VecDeque<(String, Option<String>)>,
    /// What the stored rows hold (see [`CURSOR_FORMAT`]).
    #[serde(default)]
    pub format: u32,
}

/// 2: releases carry their slug's commit, and builds and releases no signed URL. A cursor
/// of an earlier format walks its list once more from the newest page, so that the rows
/// stored before get them too (rows are merged; the rate headroom paces the slug reads).
pub const CURSOR_FORMAT: u32 = 2;

impl<M> Default for Cursor<M> {
    fn default() -> Self {
        Self {
            walk: WalkState::default(),
            pending: BTreeSet::new(),
            current: None,
            slug_commits: VecDeque::new(),
            format: CURSOR_FORMAT,
        }
    }
}

impl<M> Cursor<M> {
    /// A cursor stored by an earlier release: its list is walked again from the top.
    fn upgrade(&mut self) {
        if self.format < CURSOR_FORMAT {
            self.walk = WalkState::default();
            self.format = CURSOR_FORMAT;
        }
    }

    /// The commit of `slug`, if it was read.
    fn slug_commit(&self, slug: &str) -> Option<Option<&str>> {
        self.slug_commits
            .iter()
            .rev()
            .find(|(id, _)| id == slug)
            .map(|(_, commit)| commit.as_deref())
    }

    fn remember_slug(&mut self, slug: String, commit: Option<String>) {
        self.slug_commits.retain(|(id, _)| *id != slug);
        self.slug_commits.push_back((slug, commit));
        while self.slug_commits.len() > SLUG_COMMITS_KEPT {
            self.slug_commits.pop_front();
        }
    }
}

pub type ReleasesCursor = Cursor<i64>;
pub type BuildsCursor = Cursor<DateTime<Utc>>;

/// An app the key cannot see: not an empty app.
fn no_such_app(app: &str) -> StreamError {
    StreamError::new(
        ErrorKind::Api,
        format!("app {app:?} does not exist or the key cannot see it"),
    )
}

/// Releases then builds, per configured app (or every app the key sees: listed now). A
/// refused key fails the first stream and the others are not run (they share the key).
pub async fn streams(
    client: &HerokuClient,
    config: &HerokuConfig,
) -> Result<Vec<Box<dyn AnyStream>>, StreamError> {
    let apps = match &config.apps {
        Apps::Named(apps) => apps.clone(),
        Apps::All => client
            .apps(config.page_size)
            .await?
            .iter()
            .filter_map(|a| text(a, &["name"]))
            .collect(),
    };
    let config = Arc::new(config.clone());
    let mut streams: Vec<Box<dyn AnyStream>> = Vec::new();
    for app in apps {
        let stream = AppStream {
            client: client.clone(),
            app,
            config: Arc::clone(&config),
        };
        streams.push(Box::new(ReleasesStream(stream.clone())));
        streams.push(Box::new(BuildsStream(stream)));
    }
    Ok(streams)
}

/// What both streams of an app hold.
#[derive(Clone)]
pub struct AppStream {
    client: HerokuClient,
    app: String,
    config: Arc<HerokuConfig>,
}

/// `heroku/releases/<app>` (which also refreshes the app's row).
pub struct ReleasesStream(AppStream);

/// `heroku/builds/<app>`.
pub struct BuildsStream(AppStream);

type ReleasesRun = StreamRun<ReleasesCursor>;
type BuildsRun = StreamRun<BuildsCursor>;

/// How many more requests the run may make now: none without time left or once the
/// account's rate budget is down to the headroom (the last request may reach it).
fn requests_allowed<C>(run: &StreamRun<C>, stream: &AppStream) -> u64
where
    C: Serialize + serde::de::DeserializeOwned + Default,
{
    if !run.time_left() {
        return 0;
    }
    let headroom = stream.config.headroom;
    match stream.client.remaining() {
        Some(left) if left < headroom => {
            tracing::warn!(stream = %run.key(), left, headroom,
                "rate-limit headroom reached; stopping here, the next run resumes");
            0
        }
        Some(left) => left - headroom + 1,
        None => u64::MAX,
    }
}

/// Whether the run may make one more request.
fn may_go_on<C>(run: &StreamRun<C>, stream: &AppStream) -> bool
where
    C: Serialize + serde::de::DeserializeOwned + Default,
{
    requests_allowed(run, stream) > 0
}

#[async_trait]
impl Stream for ReleasesStream {
    type Cursor = ReleasesCursor;

    fn key(&self) -> StreamKey {
        StreamKey::new(SOURCE, RELEASES, &self.0.app)
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.0.client.stats())
    }

    async fn run(&self, run: &mut ReleasesRun) -> Result<RunStatus, StreamError> {
        let s = &self.0;
        run.cursor.upgrade();
        if !may_go_on(run, s) {
            return Ok(run.stop_partial().await?);
        }
        let Some(app) = s.client.app(&s.app).await? else {
            return Err(no_such_app(&s.app));
        };
        run.page_fetched();
        // Its pipeline stage says which environment the app is (heimdallr_environment_map).
        if !may_go_on(run, s) {
            return Ok(run.stop_partial().await?);
        }
        let coupling = s.client.pipeline_coupling(&s.app).await?;
        run.page_fetched();
        let synced_at = Utc::now();
        match app_row(&app, coupling.as_ref(), &s.config.pii, synced_at) {
            Ok(row) => run.add(&HEROKU_APPS, row),
            Err(reason) => run.reject(
                &HEROKU_APPS,
                &s.app,
                &reason,
                stored_document(&app, &s.config.pii),
            ),
        }
        for id in run.cursor.pending.clone() {
            if !may_go_on(run, s) {
                return Ok(run.stop_partial().await?);
            }
            let release = s.client.release(&s.app, &id).await?;
            run.page_fetched();
            match release {
                None => {
                    run.cursor.pending.remove(&id);
                }
                Some(release) => {
                    if !read_slugs(run, s, &[&release]).await? {
                        return Ok(run.stop_partial().await?);
                    }
                    add_release(run, s, &release, &app).await?;
                }
            }
            run.commit_if_full().await?;
        }
        let guard = RangeGuard::new(&run.cursor.walk);
        drive(
            run,
            &mut ReleasePages {
                stream: s,
                app,
                guard,
            },
        )
        .await
    }
}

/// The walk of an app's releases, newest version first.
struct ReleasePages<'a> {
    stream: &'a AppStream,
    app: Value,
    guard: RangeGuard,
}

#[async_trait]
impl Pages<ReleasesCursor> for ReleasePages<'_> {
    fn resuming(&self, cursor: &ReleasesCursor) -> bool {
        cursor.walk.is_resuming()
    }

    async fn next_page(&mut self, run: &mut ReleasesRun) -> Result<PageOutcome, StreamError> {
        let s = self.stream;
        let page = match next_range_page(run, s, &mut self.guard, AppList::Releases).await? {
            Ok(page) => page,
            Err(outcome) => return Ok(outcome),
        };
        let records: Vec<(String, Option<i64>)> = page
            .items
            .iter()
            .map(|r| (text(r, &["id"]).unwrap_or_default(), int(r, &["version"])))
            .collect();
        let new: Vec<&Value> = page
            .items
            .iter()
            .zip(&records)
            .filter(|(_, (id, version))| run.cursor.walk.is_new(id, version.as_ref()))
            .map(|(release, _)| release)
            .collect();
        // The page's slugs first: a run out of time or budget stops before the page,
        // which the next run reads again.
        if !read_slugs(run, s, &new).await? {
            return Ok(PageOutcome::Stop);
        }
        for release in new {
            add_release(run, s, release, &self.app).await?;
        }
        let lowest = records.iter().filter_map(|(_, v)| *v).min();
        // Done at the oldest page, or once a page reaches below the mark.
        let last_page = page.items.is_empty() || run.cursor.walk.is_below_mark(lowest.as_ref());
        Ok(PageOutcome::after_page(run.cursor.walk.advance(
            page.next_range,
            &records,
            last_page,
        )))
    }
}

/// The two lists of an app that are walked by `Range`, newest first.
#[derive(Clone, Copy)]
enum AppList {
    Releases,
    Builds,
}

/// The walk's next page of `list`, as [`RangeGuard::check`] reads the answer, counted as
/// fetched (empty at the end of the list). `Err` says what the walk does instead: `Stop`
/// at the rate headroom, `Again` from the newest page.
async fn next_range_page<M>(
    run: &mut StreamRun<Cursor<M>>,
    s: &AppStream,
    guard: &mut RangeGuard,
    list: AppList,
) -> Result<Result<RangePage, PageOutcome>, StreamError>
where
    M: Ord + Clone + Serialize + serde::de::DeserializeOwned,
{
    if !may_go_on(run, s) {
        return Ok(Err(PageOutcome::Stop));
    }
    let next = run.cursor.walk.next_page().map(String::from);
    let answer = match list {
        AppList::Releases => {
            s.client
                .releases(&s.app, next.as_deref(), s.config.page_size)
                .await
        }
        AppList::Builds => {
            s.client
                .builds(&s.app, next.as_deref(), s.config.page_size)
                .await
        }
    };
    let page = match guard.check(run, next, answer)? {
        Fetched::Page(page) => page,
        Fetched::Restart => return Ok(Err(PageOutcome::Again)),
        Fetched::End => RangePage::default(),
    };
    run.page_fetched();
    Ok(Ok(page))
}

/// What an answer to a walk's Range request means.
enum Fetched {
    Page(RangePage),
    /// Ask again from the newest page.
    Restart,
    /// The list ends here.
    End,
}

/// Reads a walk's answers the way Heroku's Range contract allows, and guards the walk:
/// - a 416 on a range of our own (the first page) fails the stream, naming the range;
/// - a 416 on a `Next-Range` saved by an earlier run (the list changed under it) restarts
///   the walk from the newest page, which covers everything down to the unchanged mark;
///   once per run;
/// - a 416 on the `Next-Range` Heroku handed over after a full page, in this run, is read
///   as the end of the list: Heroku documents no "nothing there" answer, and this is the
///   one place where nothing else can be meant (a full last page can carry a Next-Range);
/// - a `Next-Range` equal to the one sent would ask for the same page for ever: an error.
struct RangeGuard {
    resumed: bool,
    restarted: bool,
}

impl RangeGuard {
    fn new<M: Ord + Clone>(walk: &WalkState<M>) -> Self {
        Self {
            resumed: walk.is_resuming(),
            restarted: false,
        }
    }

    fn check<M>(
        &mut self,
        run: &mut StreamRun<Cursor<M>>,
        sent: Option<String>,
        answer: Result<RangePage, ApiError>,
    ) -> Result<Fetched, StreamError>
    where
        M: Ord + Clone + Serialize + serde::de::DeserializeOwned,
    {
        let saved = std::mem::replace(&mut self.resumed, false) && sent.is_some();
        match answer {
            Ok(page) => {
                if page.next_range.is_some() && page.next_range == sent {
                    return Err(StreamError::shape(format!(
                        "Heroku answered the range {:?} with the same Next-Range: the walk \
                         would not move",
                        sent.unwrap_or_default()
                    )));
                }
                Ok(Fetched::Page(page))
            }
            Err(ApiError::RangeRefused { range, .. }) if saved && !self.restarted => {
                tracing::warn!(stream = %run.key(), range, "Heroku refused a saved Next-Range; restarting the walk from the newest page");
                self.restarted = true;
                run.cursor.walk.restart();
                Ok(Fetched::Restart)
            }
            Err(ApiError::RangeRefused { range, .. }) if sent.is_some() && !saved => {
                tracing::warn!(stream = %run.key(), range, "Heroku answered 416 to the Next-Range it gave after a full page: the list ends there");
                Ok(Fetched::End)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads the commits of the slugs of `releases` not read yet, a few at a time. Returns
/// false (nothing lost: the caller stops before these releases) when the time or the rate
/// budget does not allow them.
async fn read_slugs(
    run: &mut ReleasesRun,
    stream: &AppStream,
    releases: &[&Value],
) -> Result<bool, StreamError> {
    let mut wanted: Vec<String> = releases
        .iter()
        .filter_map(|r| text(r, &["slug", "id"]))
        .filter(|slug| run.cursor.slug_commit(slug).is_none())
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut rest: &[String] = &wanted;
    while !rest.is_empty() {
        let allowed = requests_allowed(run, stream);
        if allowed == 0 {
            return Ok(false);
        }
        let take = rest.len().min(SLUG_READS_AT_ONCE).min(allowed as usize);
        let (chunk, later) = rest.split_at(take);
        rest = later;
        let reads = chunk.iter().map(|slug| {
            let (client, app, slug) = (stream.client.clone(), stream.app.clone(), slug.clone());
            async move { client.slug(&app, &slug).await }
        });
        let slugs = futures::future::join_all(reads).await;
        for (id, slug) in chunk.iter().zip(slugs) {
            run.page_fetched();
            let commit = slug?.and_then(|slug| text(&slug, &["commit"]));
            run.cursor.remember_slug(id.clone(), commit);
        }
    }
    Ok(true)
}

/// A release row; remembers it while pending; when it is the new current release, re-reads
/// the previously current one (now no longer current).
async fn add_release(
    run: &mut ReleasesRun,
    stream: &AppStream,
    release: &Value,
    app: &Value,
) -> Result<(), StreamError> {
    let synced_at = Utc::now();
    let pii = &stream.config.pii;
    let Some(id) = text(release, &["id"]) else {
        run.reject(
            &HEROKU_RELEASES,
            "",
            "release has no id",
            stored_document(release, pii),
        );
        return Ok(());
    };
    add_release_row(run, release, app, pii, &id, synced_at);
    if let Some(created) = time(release, &["created_at"]) {
        run.observe_source_time(created);
    }
    if release_is_final(release) {
        run.cursor.pending.remove(&id);
    } else {
        run.cursor.pending.insert(id.clone());
    }
    let is_current = release.get("current").and_then(Value::as_bool) == Some(true);
    if is_current && run.cursor.current.as_deref() != Some(id.as_str()) {
        if let Some(previous_id) = run.cursor.current.replace(id) {
            if !may_go_on(run, stream) {
                // No budget left now: the next run re-reads it with the pending ones.
                run.cursor.pending.insert(previous_id);
                return Ok(());
            }
            if let Some(previous) = stream.client.release(&stream.app, &previous_id).await? {
                run.page_fetched();
                if read_slugs(run, stream, &[&previous]).await? {
                    add_release_row(run, &previous, app, pii, &previous_id, synced_at);
                } else {
                    // Out of budget for its slug: re-read with the pending ones next run,
                    // rather than stored without its commit.
                    run.cursor.pending.insert(previous_id);
                }
            }
        }
    }
    Ok(())
}

/// Maps and queues one release (a reject with the reason when it cannot be mapped).
fn add_release_row(
    run: &mut ReleasesRun,
    release: &Value,
    app: &Value,
    pii: &PiiPolicy,
    id: &str,
    synced_at: DateTime<Utc>,
) {
    let commit = text(release, &["slug", "id"])
        .and_then(|slug| run.cursor.slug_commit(&slug).flatten().map(String::from));
    match release_row(release, app, commit.as_deref(), pii, synced_at) {
        Ok(row) => run.add(&HEROKU_RELEASES, row),
        Err(reason) => run.reject(&HEROKU_RELEASES, id, &reason, json!({"id": id})),
    }
}

#[async_trait]
impl Stream for BuildsStream {
    type Cursor = BuildsCursor;

    fn key(&self) -> StreamKey {
        StreamKey::new(SOURCE, BUILDS, &self.0.app)
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.0.client.stats())
    }

    async fn run(&self, run: &mut BuildsRun) -> Result<RunStatus, StreamError> {
        let s = &self.0;
        run.cursor.upgrade();
        // The app as the builds' fallback for their app id and name; fetched by the
        // releases stream, so only its name is known here.
        let app = json!({"name": s.app});
        for id in run.cursor.pending.clone() {
            if !may_go_on(run, s) {
                return Ok(run.stop_partial().await?);
            }
            let build = s.client.build(&s.app, &id).await?;
            run.page_fetched();
            match build {
                None => {
                    run.cursor.pending.remove(&id);
                }
                Some(build) => add_build(run, &build, &app, &s.config.pii),
            }
            run.commit_if_full().await?;
        }
        let guard = RangeGuard::new(&run.cursor.walk);
        drive(
            run,
            &mut BuildPages {
                stream: s,
                app,
                guard,
            },
        )
        .await
    }
}

/// The walk of an app's builds, newest started first.
struct BuildPages<'a> {
    stream: &'a AppStream,
    app: Value,
    guard: RangeGuard,
}

#[async_trait]
impl Pages<BuildsCursor> for BuildPages<'_> {
    fn resuming(&self, cursor: &BuildsCursor) -> bool {
        cursor.walk.is_resuming()
    }

    async fn next_page(&mut self, run: &mut BuildsRun) -> Result<PageOutcome, StreamError> {
        let s = self.stream;
        let page = match next_range_page(run, s, &mut self.guard, AppList::Builds).await? {
            Ok(page) => page,
            Err(outcome) => return Ok(outcome),
        };
        let records: Vec<(String, Option<DateTime<Utc>>)> = page
            .items
            .iter()
            .map(|b| {
                (
                    text(b, &["id"]).unwrap_or_default(),
                    time(b, &["created_at"]),
                )
            })
            .collect();
        for (build, (id, created)) in page.items.iter().zip(&records) {
            if run.cursor.walk.is_new(id, created.as_ref()) {
                add_build(run, build, &self.app, &s.config.pii);
            }
        }
        // Pages come by `started_at` (not in the answer), the mark is `created_at`. Every
        // build on later pages started before every build of this page, and a finished
        // build's record was last updated when it finished, after it started: so no later
        // build was created after the oldest `updated_at` of this page's finished builds.
        // Once that is below the mark, everything after is stored, whatever any build
        // waited in a queue (a quiet run of an app with more builds than a page ends on the
        // first page). A pending build's `updated_at` may predate its start: it says
        // nothing. Failing that, the older rule: even the page's newest-created build is
        // older than the mark by the margin within which a build starts.
        let oldest_update = page
            .items
            .iter()
            .filter(|b| build_is_final(b))
            .filter_map(|b| time(b, &["updated_at"]))
            .min();
        let newest_created = records.iter().filter_map(|(_, t)| *t).max();
        let last_page = page.items.is_empty()
            || run.cursor.walk.is_below_mark(oldest_update.as_ref())
            || run.cursor.walk.is_below_mark(
                newest_created
                    .map(|t| t + Duration::minutes(BUILD_ORDER_MARGIN_MINUTES))
                    .as_ref(),
            );
        Ok(PageOutcome::after_page(run.cursor.walk.advance(
            page.next_range,
            &records,
            last_page,
        )))
    }
}

/// A build row; remembered while pending, and while succeeded without its release id
/// (for a day: a build whose release never comes stops being watched).
fn add_build(run: &mut BuildsRun, build: &Value, app: &Value, pii: &PiiPolicy) {
    let synced_at = Utc::now();
    let Some(id) = text(build, &["id"]) else {
        run.reject(
            &HEROKU_BUILDS,
            "",
            "build has no id",
            stored_document(build, pii),
        );
        return;
    };
    match build_row(build, app, pii, synced_at) {
        Ok(row) => run.add(&HEROKU_BUILDS, row),
        Err(reason) => run.reject(&HEROKU_BUILDS, &id, &reason, json!({"id": id})),
    }
    let created = time(build, &["created_at"]);
    if let Some(created) = created {
        run.observe_source_time(created);
    }
    let waiting_for_release = build.get("status").and_then(Value::as_str) == Some("succeeded")
        && text(build, &["release", "id"]).is_none()
        && created.is_some_and(|t| synced_at - t < Duration::hours(RELEASE_ID_WAIT_HOURS));
    if !build_is_final(build) || waiting_for_release {
        run.cursor.pending.insert(id);
    } else {
        run.cursor.pending.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_an_earlier_release_walks_its_list_again_keeping_what_moves() {
        // Stored before migration 6: no format, a mark, a pending release.
        let old = serde_json::json!({"high_water": 194, "walk": null, "pending": ["r-1"], "current": "r-2"});
        let mut cursor: ReleasesCursor = serde_json::from_value(old).unwrap();
        assert_eq!(cursor.format, 0);
        cursor.upgrade();
        assert_eq!(
            cursor.walk,
            WalkState::default(),
            "walked again from the top"
        );
        assert!(cursor.pending.contains("r-1") && cursor.current.as_deref() == Some("r-2"));
        assert_eq!(cursor.format, CURSOR_FORMAT);
        // A current cursor is left alone.
        let mut current = ReleasesCursor::default();
        current.walk.high_water = Some(7);
        current.upgrade();
        assert_eq!(current.walk.high_water, Some(7));
    }
}
