//! Two streams per app, `heroku/releases/<app>` and `heroku/builds/<app>`, and how they
//! move. Each walks newest first (releases by `version`, builds by `created_at`) down to
//! its high-water mark, following `Next-Range`; a walk cut short saves its Next-Range with
//! each batch and the next run finishes it first. Rows that change after they are first
//! seen are re-read by id every run until they stop changing: pending releases and
//! builds, and succeeded builds still waiting for their release id. When a new release
//! becomes current, the one that was current is re-read too, so exactly one release per
//! app says `current`. The app's row is refreshed with its releases.
//!
//! Heroku's 4,500 requests an hour are shared with every other client of the account: a
//! run stops early, saving its place, once `RateLimit-Remaining` drops below the headroom.

use crate::api::{ApiError, HerokuClient};
use crate::config::{Apps, HerokuConfig};
use crate::mapping::{
    app_row, build_is_final, build_row, int, release_is_final, release_row, text, time,
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
use std::collections::BTreeSet;
use std::sync::Arc;

pub const SOURCE: &str = "heroku";
pub const RELEASES: &str = "releases";
pub const BUILDS: &str = "builds";
/// A succeeded build is watched this long for the release id Heroku fills in later.
const RELEASE_ID_WAIT_HOURS: i64 = 24;

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
}

impl<M> Default for Cursor<M> {
    fn default() -> Self {
        Self {
            walk: WalkState::default(),
            pending: BTreeSet::new(),
            current: None,
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
}

/// Syncs every configured app (or every app the key sees), releases then builds.
pub async fn sync_all(
    warehouse: Arc<dyn Warehouse>,
    client: &HerokuClient,
    config: &HerokuConfig,
    options: &SyncOptions,
) -> Vec<RunOutcome> {
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

/// Whether the run may make another request: time left, and the account's rate budget
/// above the headroom.
fn may_go_on(run: &StreamRun, client: &HerokuClient, config: &HerokuConfig) -> bool {
    if !run.time_left() {
        return false;
    }
    match client.remaining() {
        Some(left) if left < config.headroom => {
            tracing::warn!(stream = %run.key(), left, headroom = config.headroom,
                "rate-limit headroom reached; stopping here, the next run resumes");
            false
        }
        _ => true,
    }
}

async fn sync_releases(
    run: &mut StreamRun,
    cursor: Option<Value>,
    client: &HerokuClient,
    app_name: &str,
    config: &HerokuConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: ReleasesCursor = load_cursor(run.key(), cursor)?;
    let Some(app) = client.app(app_name).await? else {
        return Err(StreamError::NoSuchApp(app_name.to_string()));
    };
    run.page_fetched();
    let synced_at = Utc::now();
    match app_row(&app, synced_at) {
        Ok(row) => run.add(&HEROKU_APPS, row),
        Err(reason) => run.reject(&HEROKU_APPS, app_name, &reason, app.clone()),
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
                add_release(run, &release, &app, config, &mut cursor, client, app_name).await?;
            }
        }
    }

    for _ in 0..cursor.walk.walks_this_run() {
        loop {
            if !may_go_on(run, client, config) {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            let page = client
                .releases(app_name, cursor.walk.next_page(), config.page_size)
                .await?;
            run.page_fetched();
            let versions: Vec<i64> = page
                .items
                .iter()
                .filter_map(|r| int(r, &["version"]))
                .collect();
            for release in &page.items {
                if !cursor.walk.is_stored(int(release, &["version"])) {
                    add_release(run, release, &app, config, &mut cursor, client, app_name).await?;
                }
            }
            let (lowest, newest) = (
                versions.iter().min().copied(),
                versions.iter().max().copied(),
            );
            // Done at the oldest page, or once a page reaches the mark.
            let last_page = page.items.is_empty() || cursor.walk.is_stored(lowest);
            let done = cursor.walk.advance(page.next_range, newest, last_page);
            run.commit_page(done, cursor_json(&cursor)).await?;
            if done {
                break;
            }
        }
    }
    Ok(RunStatus::Succeeded)
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
        run.reject(&HEROKU_RELEASES, "", "release has no id", release.clone());
        return Ok(());
    };
    match release_row(release, app, &config.pii, synced_at) {
        Ok(row) => run.add(&HEROKU_RELEASES, row),
        Err(reason) => run.reject(&HEROKU_RELEASES, &id, &reason, json!({"id": id})),
    }
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
        if let Some(previous) = cursor.current.replace(id) {
            if let Some(previous) = client.release(app_name, &previous).await? {
                run.page_fetched();
                if let Ok(row) = release_row(&previous, app, &config.pii, synced_at) {
                    run.add(&HEROKU_RELEASES, row);
                }
            }
        }
    }
    Ok(())
}

async fn sync_builds(
    run: &mut StreamRun,
    cursor: Option<Value>,
    client: &HerokuClient,
    app_name: &str,
    config: &HerokuConfig,
) -> Result<RunStatus, StreamError> {
    let mut cursor: BuildsCursor = load_cursor(run.key(), cursor)?;
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
    }

    for _ in 0..cursor.walk.walks_this_run() {
        loop {
            if !may_go_on(run, client, config) {
                return Ok(run.stop_partial(cursor_json(&cursor)).await?);
            }
            let page = client
                .builds(app_name, cursor.walk.next_page(), config.page_size)
                .await?;
            run.page_fetched();
            let times: Vec<DateTime<Utc>> = page
                .items
                .iter()
                .filter_map(|b| time(b, &["created_at"]))
                .collect();
            for build in &page.items {
                if !cursor.walk.is_stored(time(build, &["created_at"])) {
                    add_build(run, build, &app, config, &mut cursor);
                }
            }
            let (lowest, newest) = (times.iter().min().copied(), times.iter().max().copied());
            // Done at the oldest page, or once a page reaches the mark.
            let last_page = page.items.is_empty() || cursor.walk.is_stored(lowest);
            let done = cursor.walk.advance(page.next_range, newest, last_page);
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
        run.reject(&HEROKU_BUILDS, "", "build has no id", build.clone());
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
