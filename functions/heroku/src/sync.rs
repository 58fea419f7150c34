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
use chrono::{DateTime, Duration, Utc};
use heimdallr_core::engine::{
    cursor_json, load_cursor, CursorError, RunOutcome, RunStatus, StreamKey, StreamRun, SyncOptions,
};
use heimdallr_core::schema::{HEROKU_APPS, HEROKU_BUILDS, HEROKU_RELEASES};
use heimdallr_core::walk::WalkState;
use heimdallr_core::warehouse::{Warehouse, WarehouseError};
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

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    State(#[from] CursorError),
    #[error("app {0:?} does not exist or the key cannot see it")]
    NoSuchApp(String),
    #[error("{0}")]
    Shape(String),
}

/// Syncs every configured app (or every app the key sees), releases then builds.
pub async fn sync_all(
    warehouse: Arc<dyn Warehouse>,
    client: &HerokuClient,
    config: &HerokuConfig,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    client.stats().start_pass();
    let apps = match &config.apps {
        Apps::Named(apps) => apps.clone(),
        Apps::All => match client.apps(config.page_size).await {
            Ok(apps) => apps.iter().filter_map(|a| text(a, &["name"])).collect(),
            Err(e) => {
                let key = StreamKey::new(SOURCE, "apps", "*");
                tracing::error!(error = %e, "cannot list the apps the key can see");
                return vec![RunOutcome::not_started(key, e.to_string())];
            }
        },
    };
    let mut outcomes = Vec::new();
    for app in &apps {
        let mut unauthorized = false;
        for stream in [RELEASES, BUILDS] {
            if unauthorized {
                break; // a rejected key fails every stream the same way: say it once
            }
            let key = StreamKey::new(SOURCE, stream, app);
            let outcome =
                match StreamRun::start(&warehouse, key, options, Some(client.stats())).await {
                    Err(outcome) => outcome,
                    Ok((mut run, cursor)) => {
                        let result = if stream == RELEASES {
                            sync_releases(&mut run, cursor, client, app, config).await
                        } else {
                            sync_builds(&mut run, cursor, client, app, config).await
                        };
                        unauthorized =
                            matches!(&result, Err(StreamError::Api(e)) if e.is_unauthorized());
                        if let Err(e) = &result {
                            tracing::error!(stream = %run.key(), error = %e, "stream run failed");
                        }
                        run.finish(result.map_err(|e| e.to_string())).await
                    }
                };
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// How many more requests the run may make now: none without time left or once the
/// account's rate budget is down to the headroom (the last request may reach it).
fn requests_allowed(run: &StreamRun, client: &HerokuClient, config: &HerokuConfig) -> u64 {
    if !run.time_left() {
        return 0;
    }
    match client.remaining() {
        Some(left) if left < config.headroom => {
            tracing::warn!(stream = %run.key(), left, headroom = config.headroom,
                "rate-limit headroom reached; stopping here, the next run resumes");
            0
        }
        Some(left) => left - config.headroom + 1,
        None => u64::MAX,
    }
}

/// Whether the run may make one more request.
fn may_go_on(run: &StreamRun, client: &HerokuClient, config: &HerokuConfig) -> bool {
    requests_allowed(run, client, config) > 0
}

async fn sync_releases(
    run: &mut StreamRun,
    cursor: Option<Value>,
    client: &HerokuClient,
    app_name: &str,
    config: &HerokuConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: ReleasesCursor = load_cursor(run.key(), cursor)?;
    cursor.upgrade();
    if !may_go_on(run, client, config) {
        return Ok(run.stop_partial(cursor_json(&cursor)).await?);
    }
    let Some(app) = client.app(app_name).await? else {
        return Err(StreamError::NoSuchApp(app_name.to_string()));
    };
    run.page_fetched();
    let synced_at = Utc::now();
    match app_row(&app, &config.pii, synced_at) {
        Ok(row) => run.add(&HEROKU_APPS, row),
        Err(reason) => run.reject(
            &HEROKU_APPS,
            app_name,
            &reason,
            stored_document(&app, &config.pii),
        ),
    }

    for id in cursor.pending.clone() {
        if !may_go_on(run, client, config) {
            return Ok(run.stop_partial(cursor_json(&cursor)).await?);
        }
        let release = client.release(app_name, &id).await?;
        run.page_fetched();
        match release {
            None => {
                cursor.pending.remove(&id);
            }
            Some(release) => {
                if !read_slugs(run, client, app_name, config, &mut cursor, &[&release]).await? {
                    return Ok(run.stop_partial(cursor_json(&cursor)).await?);
                }
                add_release(run, &release, &app, config, &mut cursor, client, app_name).await?;
            }
        }
        if run.batch_full() {
            run.commit(cursor_json(&cursor)).await?;
        }
    }

    let mut guard = RangeGuard::new(&cursor.walk);
    for _ in 0..cursor.walk.walks_this_run() {
        loop {
            if !may_go_on(run, client, config) {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            let next = cursor.walk.next_page().map(String::from);
            let page = client
                .releases(app_name, next.as_deref(), config.page_size)
                .await;
            let page = match guard.check(run, &mut cursor.walk, next, page)? {
                Fetched::Page(page) => page,
                Fetched::Restart => continue,
                Fetched::End => RangePage::default(),
            };
            run.page_fetched();
            let records: Vec<(String, Option<i64>)> = page
                .items
                .iter()
                .map(|r| (text(r, &["id"]).unwrap_or_default(), int(r, &["version"])))
                .collect();
            let new: Vec<&Value> = page
                .items
                .iter()
                .zip(&records)
                .filter(|(_, (id, version))| cursor.walk.is_new(id, version.as_ref()))
                .map(|(release, _)| release)
                .collect();
            // The page's slugs first: a run out of time or budget stops before the page,
            // which the next run reads again.
            if !read_slugs(run, client, app_name, config, &mut cursor, &new).await? {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            for release in new {
                add_release(run, release, &app, config, &mut cursor, client, app_name).await?;
            }
            let lowest = records.iter().filter_map(|(_, v)| *v).min();
            // Done at the oldest page, or once a page reaches below the mark.
            let last_page = page.items.is_empty() || cursor.walk.is_below_mark(lowest.as_ref());
            let done = cursor.walk.advance(page.next_range, &records, last_page);
            run.commit_page(done, cursor_json(&cursor)).await?;
            if done {
                break;
            }
        }
    }
    Ok(RunStatus::Succeeded)
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

    fn check<M: Ord + Clone>(
        &mut self,
        run: &StreamRun,
        walk: &mut WalkState<M>,
        sent: Option<String>,
        answer: Result<RangePage, ApiError>,
    ) -> Result<Fetched, StreamError> {
        let saved = std::mem::replace(&mut self.resumed, false) && sent.is_some();
        match answer {
            Ok(page) => {
                if page.next_range.is_some() && page.next_range == sent {
                    return Err(StreamError::Shape(format!(
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
                walk.restart();
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
    run: &mut StreamRun,
    client: &HerokuClient,
    app_name: &str,
    config: &HerokuConfig,
    cursor: &mut ReleasesCursor,
    releases: &[&Value],
) -> Result<bool, StreamError> {
    let mut wanted: Vec<String> = releases
        .iter()
        .filter_map(|r| text(r, &["slug", "id"]))
        .filter(|slug| cursor.slug_commit(slug).is_none())
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut rest: &[String] = &wanted;
    while !rest.is_empty() {
        let allowed = requests_allowed(run, client, config);
        if allowed == 0 {
            return Ok(false);
        }
        let take = rest.len().min(SLUG_READS_AT_ONCE).min(allowed as usize);
        let (chunk, later) = rest.split_at(take);
        rest = later;
        let reads = chunk.iter().map(|slug| {
            let (client, app, slug) = (client.clone(), app_name.to_string(), slug.clone());
            async move { client.slug(&app, &slug).await }
        });
        let slugs = futures::future::join_all(reads).await;
        for (id, slug) in chunk.iter().zip(slugs) {
            run.page_fetched();
            let commit = slug?.and_then(|slug| text(&slug, &["commit"]));
            cursor.remember_slug(id.clone(), commit);
        }
    }
    Ok(true)
}

/// A release row; remembers it while pending; when it is the new current release, re-reads
/// the previously current one (now no longer current).
async fn add_release(
    run: &mut StreamRun,
    release: &Value,
    app: &Value,
    config: &HerokuConfig,
    cursor: &mut ReleasesCursor,
    client: &HerokuClient,
    app_name: &str,
) -> Result<(), StreamError> {
    let synced_at = Utc::now();
    let Some(id) = text(release, &["id"]) else {
        run.reject(
            &HEROKU_RELEASES,
            "",
            "release has no id",
            stored_document(release, &config.pii),
        );
        return Ok(());
    };
    add_release_row(run, release, app, config, cursor, &id, synced_at);
    if let Some(created) = time(release, &["created_at"]) {
        run.observe_source_time(created);
    }
    if release_is_final(release) {
        cursor.pending.remove(&id);
    } else {
        cursor.pending.insert(id.clone());
    }
    let is_current = release.get("current").and_then(Value::as_bool) == Some(true);
    if is_current && cursor.current.as_deref() != Some(id.as_str()) {
        if let Some(previous_id) = cursor.current.replace(id) {
            if !may_go_on(run, client, config) {
                // No budget left now: the next run re-reads it with the pending ones.
                cursor.pending.insert(previous_id);
                return Ok(());
            }
            if let Some(previous) = client.release(app_name, &previous_id).await? {
                run.page_fetched();
                if read_slugs(run, client, app_name, config, cursor, &[&previous]).await? {
                    add_release_row(run, &previous, app, config, cursor, &previous_id, synced_at);
                } else {
                    // Out of budget for its slug: re-read with the pending ones next run,
                    // rather than stored without its commit.
                    cursor.pending.insert(previous_id);
                }
            }
        }
    }
    Ok(())
}

/// Maps and queues one release (a reject with the reason when it cannot be mapped).
fn add_release_row(
    run: &mut StreamRun,
    release: &Value,
    app: &Value,
    config: &HerokuConfig,
    cursor: &ReleasesCursor,
    id: &str,
    synced_at: DateTime<Utc>,
) {
    let commit = text(release, &["slug", "id"])
        .and_then(|slug| cursor.slug_commit(&slug).flatten().map(String::from));
    match release_row(release, app, commit.as_deref(), &config.pii, synced_at) {
        Ok(row) => run.add(&HEROKU_RELEASES, row),
        Err(reason) => run.reject(&HEROKU_RELEASES, id, &reason, json!({"id": id})),
    }
}

async fn sync_builds(
    run: &mut StreamRun,
    cursor: Option<Value>,
    client: &HerokuClient,
    app_name: &str,
    config: &HerokuConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: BuildsCursor = load_cursor(run.key(), cursor)?;
    cursor.upgrade();
    // The app as the builds' fallback for their app id and name; fetched by the releases
    // stream, so only its name is known here.
    let app = json!({"name": app_name});

    for id in cursor.pending.clone() {
        if !may_go_on(run, client, config) {
            return Ok(run.stop_partial(cursor_json(&cursor)).await?);
        }
        let build = client.build(app_name, &id).await?;
        run.page_fetched();
        match build {
            None => {
                cursor.pending.remove(&id);
            }
            Some(build) => add_build(run, &build, &app, config, &mut cursor),
        }
        if run.batch_full() {
            run.commit(cursor_json(&cursor)).await?;
        }
    }

    let mut guard = RangeGuard::new(&cursor.walk);
    for _ in 0..cursor.walk.walks_this_run() {
        loop {
            if !may_go_on(run, client, config) {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            let next = cursor.walk.next_page().map(String::from);
            let page = client
                .builds(app_name, next.as_deref(), config.page_size)
                .await;
            let page = match guard.check(run, &mut cursor.walk, next, page)? {
                Fetched::Page(page) => page,
                Fetched::Restart => continue,
                Fetched::End => RangePage::default(),
            };
            run.page_fetched();
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
                if cursor.walk.is_new(id, created.as_ref()) {
                    add_build(run, build, &app, config, &mut cursor);
                }
            }
            // Pages come by `started_at`, the mark is `created_at`: a build starts within
            // the margin of its creation, so once even the newest-created build of a page
            // is older than the mark by the margin, every build after it is stored. (The
            // page's highest, not its lowest: one build that waited long must not end it.)
            let newest_created = records.iter().filter_map(|(_, t)| *t).max();
            let last_page = page.items.is_empty()
                || cursor.walk.is_below_mark(
                    newest_created
                        .map(|t| t + Duration::minutes(BUILD_ORDER_MARGIN_MINUTES))
                        .as_ref(),
                );
            let done = cursor.walk.advance(page.next_range, &records, last_page);
            run.commit_page(done, cursor_json(&cursor)).await?;
            if done {
                break;
            }
        }
    }
    Ok(RunStatus::Succeeded)
}

/// A build row; remembered while pending, and while succeeded without its release id
/// (for a day: a build whose release never comes stops being watched).
fn add_build(
    run: &mut StreamRun,
    build: &Value,
    app: &Value,
    config: &HerokuConfig,
    cursor: &mut BuildsCursor,
) {
    let synced_at = Utc::now();
    let Some(id) = text(build, &["id"]) else {
        run.reject(
            &HEROKU_BUILDS,
            "",
            "build has no id",
            stored_document(build, &config.pii),
        );
        return;
    };
    match build_row(build, app, &config.pii, synced_at) {
        Ok(row) => run.add(&HEROKU_BUILDS, row),
        Err(reason) => run.reject(&HEROKU_BUILDS, &id, &reason, json!({"id": id})),
    }
    if let Some(created) = time(build, &["created_at"]) {
        run.observe_source_time(created);
    }
    let waiting_for_release = build.get("status").and_then(Value::as_str) == Some("succeeded")
        && text(build, &["release", "id"]).is_none()
        && time(build, &["created_at"])
            .is_some_and(|t| synced_at - t < Duration::hours(RELEASE_ID_WAIT_HOURS));
    if !build_is_final(build) || waiting_for_release {
        cursor.pending.insert(id);
    } else {
        cursor.pending.remove(&id);
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
