//! A fake Heroku Platform API v3 on loopback, the versioned Accept header, Bearer keys, a
//! token bucket that runs dry with 429 (no Retry-After), builds that finish and gain their
//! release later, a `current` flag that moves to each newly succeeded release, slugs with
//! their commit, and releases made by promotion, rollback and config changes.
//!
//! Rules and where they come from:
//! - Range pagination, from the Platform API reference ("Ranges"): `Range: <field> ..;
//!   max=N, order=desc`, "The default page size is 200 and maximum page size is 1000";
//!   "If a list response has been truncated you will receive a 206 Partial Content status
//!   and the Next-Range header set", so a page is a 206 only when more follows, and the
//!   last page is a 200 without Next-Range. `Accept-Ranges` names the fields.
//! - Range fields per list, from the published schema (heroku/platform-api `schema.json`,
//!   the `ranges` of each List link): apps `id, name, updated_at`; builds `id,
//!   started_at`; releases have none in the schema, and the reference's
//!   `Accept-Ranges: id, version` is used. A field a list does not accept is answered
//!   416, as the real API answers `created_at` on builds; a header that does not parse is
//!   a 400 `bad_request` ("Invalid `Range` header", as reported in heroku3.py#12). A range
//!   whose start lies past every item is a 416 too (RFC 9110: the range does not overlap).
//! - Builds carry no `started_at` (it is not a property in the schema) yet are ordered by
//!   it; here a build starts when it is created.
//! - Next-Range on a field that is not unique is undocumented (interagent/http-api-design
//!   #81): this fake's carries the last id as a tie-break, and clients must send it back
//!   verbatim, as every Heroku client does.
//! - `GET /apps/{app}/slugs/{id}` gives the slug with its `commit` (schema: slug Info);
//!   `blob.url`, `source_blob.url` and `output_stream_url` are signed URLs.
//! - `GET /apps/{app}/pipeline-couplings` ("Pipeline Coupling Info By App") gives one
//!   object, not a list: `app.id`, `created_at`, `id`, `pipeline.id`, `stage` (one of
//!   test, review, development, staging, production) and `updated_at`. An app in no
//!   pipeline answers 404 `not_found`, which the Heroku CLI reads as "not a member of any
//!   pipeline" (heroku/cli, packages pipelines: `getCoupling`).

use crate::http::{serve_state, Reply, Request, ServerTask};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const DEFAULT_PAGE: usize = 200;
pub const MAX_PAGE: usize = 1000;

struct App {
    id: String,
    name: String,
    releases: Vec<Value>,
    builds: Vec<Value>,
    /// Slugs the app can read, by id: its builds' and those promoted into it.
    slugs: Vec<Value>,
    /// The app's pipeline coupling, when it is in a pipeline.
    coupling: Option<Value>,
}

struct Bucket {
    tokens: f64,
    capacity: f64,
    refill_per_second: f64,
    at: Instant,
}

struct State {
    key: String,
    apps: Vec<App>,
    next_id: u64,
    clock: DateTime<Utc>,
    bucket: Bucket,
    requests: u64,
    throttled: u64,
    lowest_remaining: u64,
    ranges_seen: Vec<String>,
    not_satisfiable: u64,
    /// The next request that continues a list (a Range with a start) is answered 416.
    refuse_next_continuation: bool,
    /// Every list request is answered 416 (a Range field the API stopped accepting).
    refuse_ranges: bool,
    /// A full page is a 206 with a Next-Range even when nothing follows (the range after
    /// it is then a 416): an implementation the documentation does not rule out.
    full_pages_claim_more: bool,
    repeat_next_ranges: bool,
    /// Paths requested, in order.
    paths: Vec<String>,
}

/// What the fake holds, in the fields the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// (id, name)
    pub apps: Vec<(String, String)>,
    /// (id, app id, status, release id, source version)
    pub builds: Vec<(String, String, String, Option<String>, String)>,
    /// (id, app id, version, status, current, the slug's commit)
    pub releases: Vec<(String, String, i64, String, bool, Option<String>)>,
}

#[derive(Clone)]
pub struct FakeHeroku {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl State {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.next_id, self.next_id)
    }
    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += Duration::seconds(17);
        self.clock
    }
    fn app(&mut self, name: &str) -> &mut App {
        self.apps
            .iter_mut()
            .find(|a| a.name == name || a.id == name)
            .expect("a known app")
    }
    fn user(&self) -> Value {
        json!({"id": "0a1b2c3d-0000-4000-8000-000000000001", "email": "dev@example.com"})
    }
    /// A release of `slug` (None: the app's current slug, as a config change keeps it).
    fn add_release(
        &mut self,
        app: &str,
        description: &str,
        status: &str,
        slug: Option<String>,
    ) -> String {
        let id = self.id();
        let at = self.tick();
        let user = self.user();
        let app = self.app(app);
        let version = app.releases.len() as i64 + 1;
        let slug = slug.or_else(|| {
            app.releases
                .iter()
                .find(|r| r["current"] == true)
                .and_then(|r| r["slug"]["id"].as_str().map(String::from))
        });
        let (app_id, app_name) = (app.id.clone(), app.name.clone());
        app.releases.push(json!({
            "id": id, "version": version, "description": description, "status": status,
            "current": false, "created_at": stamp(at), "updated_at": stamp(at),
            "app": {"id": app_id, "name": app_name}, "user": user,
            "slug": slug.map(|s| json!({"id": s})), "addon_plan_names": ["heroku-postgresql:essential-0"],
            "output_stream_url": format!("https://release-output.heroku.com/streams/{id}?token=signed"),
        }));
        if status == "succeeded" {
            recompute_current(app);
        }
        id
    }

    /// A slug of `app` built from `commit`.
    fn add_slug(&mut self, app: &str, commit: &str) -> String {
        let id = self.id();
        let at = self.tick();
        self.app(app).slugs.push(json!({
            "id": id, "commit": commit, "commit_description": "Scripted",
            "blob": {"method": "get", "url": format!("https://s3.amazonaws.com/heroku-slugs/{id}.tgz?X-Amz-Signature=s3cr3t")},
            "buildpack_provided_description": "Node.js", "checksum": null,
            "process_types": {"web": "npm start"}, "size": 2048,
            "stack": {"id": "s1", "name": "heroku-24"},
            "created_at": stamp(at), "updated_at": stamp(at),
        }));
        id
    }
}

/// Exactly one release is current: the succeeded one with the highest version.
fn recompute_current(app: &mut App) {
    let current = app
        .releases
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .filter_map(|r| r["version"].as_i64())
        .max();
    for release in &mut app.releases {
        release["current"] = json!(release["version"].as_i64() == current);
    }
}

impl FakeHeroku {
    pub async fn start(key: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            apps: Vec::new(),
            next_id: 0,
            // Recent enough that builds are still watched for their release (a day).
            clock: Utc::now() - Duration::hours(12),
            bucket: Bucket {
                tokens: 4500.0,
                capacity: 4500.0,
                refill_per_second: 1.25,
                at: Instant::now(),
            },
            requests: 0,
            throttled: 0,
            lowest_remaining: u64::MAX,
            ranges_seen: Vec::new(),
            not_satisfiable: 0,
            refuse_next_continuation: false,
            refuse_ranges: false,
            full_pages_claim_more: false,
            repeat_next_ranges: false,
            paths: Vec::new(),
        }));
        let (addr, server) = serve_state(Arc::clone(&state), handle).await?;
        Ok(Self {
            state,
            addr,
            _server: server,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For `HEROKU_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_app(&self, name: &str) -> String {
        let mut state = self.lock();
        let id = state.id();
        state.apps.push(App {
            id: id.clone(),
            name: name.to_string(),
            releases: Vec::new(),
            builds: Vec::new(),
            slugs: Vec::new(),
            coupling: None,
        });
        id
    }

    /// Couples `app` to the pipeline `pipeline` (created on first use) at `stage`.
    pub fn couple(&self, app: &str, pipeline: &str, stage: &str) {
        let mut state = self.lock();
        let pipeline_id = format!("{:08x}-0000-4000-8000-{:012x}", pipeline.len(), {
            pipeline
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                & 0xffff_ffff_ffff
        });
        let coupling_id = state.id();
        let at = state.clock.to_rfc3339_opts(SecondsFormat::Secs, true);
        if let Some(entry) = state.apps.iter_mut().find(|a| a.name == app) {
            entry.coupling = Some(json!({
                "app": {"id": entry.id},
                "created_at": at,
                "id": coupling_id,
                "pipeline": {"id": pipeline_id},
                "stage": stage,
                "updated_at": at,
            }));
        }
    }

    /// A config change or add-on release (no build): the current slug, succeeded at once.
    pub fn add_config_release(&self, app: &str) -> String {
        self.lock()
            .add_release(app, "Set FEATURE_FLAG config vars", "succeeded", None)
    }

    /// A pipeline promotion: `to` gets `from`'s current slug in a new release, with no
    /// build of its own. Returns the release id.
    pub fn promote(&self, from: &str, to: &str) -> String {
        let mut state = self.lock();
        let source = state.app(from);
        let slug_id = source
            .releases
            .iter()
            .find(|r| r["current"] == true)
            .and_then(|r| r["slug"]["id"].as_str().map(String::from))
            .expect("the source app has a current release");
        let slug = source
            .slugs
            .iter()
            .find(|s| s["id"] == slug_id.as_str())
            .cloned()
            .expect("the source app has the slug");
        state.app(to).slugs.push(slug);
        let name = state.app(from).name.clone();
        state.add_release(to, &format!("Promote {name}"), "succeeded", Some(slug_id))
    }

    /// A rollback to `version`: a new release of that version's slug.
    pub fn rollback(&self, app: &str, version: i64) -> String {
        let mut state = self.lock();
        let slug = state
            .app(app)
            .releases
            .iter()
            .find(|r| r["version"] == version)
            .and_then(|r| r["slug"]["id"].as_str().map(String::from));
        state.add_release(app, &format!("Rollback to v{version}"), "succeeded", slug)
    }

    /// The next request that continues a list (sends a Next-Range) is answered 416.
    pub fn refuse_next_continuation(&self) {
        self.lock().refuse_next_continuation = true;
    }

    /// Full pages carry a Next-Range even when nothing follows.
    pub fn full_pages_claim_more(&self, claim: bool) {
        self.lock().full_pages_claim_more = claim;
    }

    /// Truncated pages send back the request's own Range as their Next-Range. No Heroku
    /// contract allows it (Next-Range names the page after this one, platform API
    /// reference, "Ranges"); it stands for a proxy or an API change that would otherwise
    /// end a list early, or loop on one page, without an error.
    pub fn repeat_next_ranges(&self, repeat: bool) {
        self.lock().repeat_next_ranges = repeat;
    }

    /// Answers every list request 416, as for a Range field the list does not accept.
    pub fn refuse_ranges(&self, refuse: bool) {
        self.lock().refuse_ranges = refuse;
    }

    /// Paths requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.lock().paths.clone()
    }

    /// `count` builds created in the same second (timestamps have second precision);
    /// returns that second.
    pub fn push_in_one_second(&self, app: &str, count: usize) -> DateTime<Utc> {
        let at = self.lock().tick();
        self.push_at(app, count, at);
        at
    }

    /// `count` failed builds created at `at` (final: not watched for a release).
    pub fn push_at(&self, app: &str, count: usize, at: DateTime<Utc>) {
        let mut state = self.lock();
        for _ in 0..count {
            let id = state.id();
            let user = state.user();
            let version = format!("{:040x}", state.next_id * 104_729);
            let app = state.app(app);
            let app_id = app.id.clone();
            app.builds.push(json!({
                "id": id, "app": {"id": app_id}, "status": "failed", "stack": "heroku-24",
                "created_at": stamp(at), "updated_at": stamp(at),
                "source_blob": {"checksum": null, "url": "https://example.com/source.tgz", "version": version, "version_description": null},
                "release": null, "slug": null, "user": user, "buildpacks": [],
            }));
        }
    }

    /// `count` pushes: builds that start pending.
    pub fn push(&self, app: &str, count: usize) {
        let mut state = self.lock();
        for _ in 0..count {
            let id = state.id();
            let at = state.tick();
            let user = state.user();
            let version = format!("{:040x}", state.next_id * 104_729);
            let app = state.app(app);
            let app_id = app.id.clone();
            app.builds.push(json!({
                "id": id, "app": {"id": app_id}, "status": "pending", "stack": "heroku-24",
                "created_at": stamp(at), "updated_at": stamp(at),
                "source_blob": {"checksum": null, "url": "https://s3.amazonaws.com/heroku-sources/source.tgz?X-Amz-Signature=s3cr3t",
                                "version": version, "version_description": "Change things"},
                "release": null, "slug": null, "user": user,
                "buildpacks": [{"url": "heroku/nodejs", "name": "heroku/nodejs"}],
                "output_stream_url": format!("https://build-output.heroku.com/streams/{id}/logs/s3cr3t.log"),
            }));
        }
    }

    /// A deploy of `sha` released at `at`: a succeeded build and its succeeded release,
    /// which becomes current. Returns the release id.
    pub fn deploy(&self, app: &str, sha: &str, at: DateTime<Utc>) -> String {
        let mut state = self.lock();
        let build_id = state.id();
        let user = state.user();
        state.clock = at;
        let slug = state.add_slug(app, sha);
        let release_id = state.add_release(
            app,
            &format!("Deploy {}", &sha[..sha.len().min(8)]),
            "succeeded",
            Some(slug.clone()),
        );
        let app = state.app(app);
        let app_id = app.id.clone();
        app.builds.push(json!({
            "id": build_id, "app": {"id": app_id}, "status": "succeeded", "stack": "heroku-24",
            "created_at": stamp(at - Duration::minutes(3)), "updated_at": stamp(at - Duration::minutes(1)),
            "source_blob": {"checksum": null, "url": null, "version": sha, "version_description": "Scripted"},
            "release": {"id": release_id}, "slug": {"id": slug}, "user": user, "buildpacks": [],
        }));
        // The release is stamped at `at` exactly.
        if let Some(release) = app
            .releases
            .iter_mut()
            .find(|r| r["id"] == release_id.as_str())
        {
            release["created_at"] = json!(stamp(at));
            release["updated_at"] = json!(stamp(at));
        }
        release_id
    }

    /// [`FakeHeroku::promote`] stamped at `at` exactly (a scripted day).
    pub fn promote_at(&self, from: &str, to: &str, at: DateTime<Utc>) -> String {
        let id = self.promote(from, to);
        self.stamp_release(to, &id, at);
        id
    }

    /// [`FakeHeroku::rollback`] stamped at `at` exactly.
    pub fn rollback_at(&self, app: &str, version: i64, at: DateTime<Utc>) -> String {
        let id = self.rollback(app, version);
        self.stamp_release(app, &id, at);
        id
    }

    /// [`FakeHeroku::add_config_release`] stamped at `at` exactly.
    pub fn config_release_at(&self, app: &str, at: DateTime<Utc>) -> String {
        let id = self.add_config_release(app);
        self.stamp_release(app, &id, at);
        id
    }

    fn stamp_release(&self, app: &str, id: &str, at: DateTime<Utc>) {
        let mut state = self.lock();
        state.clock = at;
        if let Some(release) = state.app(app).releases.iter_mut().find(|r| r["id"] == id) {
            release["created_at"] = json!(stamp(at));
            release["updated_at"] = json!(stamp(at));
        }
    }

    /// Pending builds end (one in six fails); succeeded ones have no release yet.
    pub fn finish_builds(&self, app: &str) {
        let mut state = self.lock();
        let at = stamp(state.tick());
        let pending: Vec<(usize, String)> = state
            .app(app)
            .builds
            .iter()
            .enumerate()
            .filter(|(_, b)| b["status"] == "pending")
            .map(|(n, b)| {
                (
                    n,
                    b["source_blob"]["version"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        for (n, commit) in pending {
            let failed = n % 6 == 5;
            let slug = (!failed).then(|| state.add_slug(app, &commit));
            let build = &mut state.app(app).builds[n];
            build["status"] = json!(if failed { "failed" } else { "succeeded" });
            build["updated_at"] = json!(at);
            build["slug"] = slug.map_or(Value::Null, |s| json!({"id": s}));
        }
    }

    /// Succeeded builds gain their release (pending until `finish_releases`).
    pub fn release_builds(&self, app: &str) {
        let mut state = self.lock();
        let waiting: Vec<usize> = state
            .app(app)
            .builds
            .iter()
            .enumerate()
            .filter(|(_, b)| b["status"] == "succeeded" && b["release"].is_null())
            .map(|(i, _)| i)
            .collect();
        for index in waiting {
            let sha = state.app(app).builds[index]["source_blob"]["version"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(8)
                .collect::<String>();
            let slug = state.app(app).builds[index]["slug"]["id"]
                .as_str()
                .map(String::from);
            let release = state.add_release(app, &format!("Deploy {sha}"), "pending", slug);
            state.app(app).builds[index]["release"] = json!({"id": release});
        }
    }

    /// Pending releases end (one in eight fails); the newest succeeded becomes current.
    pub fn finish_releases(&self, app: &str) {
        let mut state = self.lock();
        let at = stamp(state.tick());
        let app = state.app(app);
        for release in &mut app.releases {
            if release["status"] == "pending" {
                let version = release["version"].as_i64().unwrap_or(0);
                release["status"] = json!(if version % 8 == 7 {
                    "failed"
                } else {
                    "succeeded"
                });
                release["updated_at"] = json!(at);
            }
        }
        recompute_current(app);
    }

    /// The token bucket: `tokens` now, refilled at `per_second` up to `capacity`.
    pub fn set_rate_budget(&self, tokens: f64, capacity: f64, per_second: f64) {
        self.lock().bucket = Bucket {
            tokens,
            capacity,
            refill_per_second: per_second,
            at: Instant::now(),
        };
    }

    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The lowest RateLimit-Remaining it has answered with.
    pub fn lowest_remaining(&self) -> u64 {
        self.lock().lowest_remaining
    }

    /// How many 416 answers it gave.
    pub fn not_satisfiable(&self) -> u64 {
        self.lock().not_satisfiable
    }

    /// Every Range header it was sent.
    pub fn ranges_seen(&self) -> Vec<String> {
        self.lock().ranges_seen.clone()
    }

    pub fn truth(&self) -> Truth {
        let state = self.lock();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut truth = Truth {
            apps: state
                .apps
                .iter()
                .map(|a| (a.id.clone(), a.name.clone()))
                .collect(),
            builds: state
                .apps
                .iter()
                .flat_map(|a| {
                    a.builds.iter().map(|b| {
                        (
                            text(&b["id"]),
                            a.id.clone(),
                            text(&b["status"]),
                            b["release"]["id"].as_str().map(String::from),
                            text(&b["source_blob"]["version"]),
                        )
                    })
                })
                .collect(),
            releases: state
                .apps
                .iter()
                .flat_map(|a| {
                    a.releases.iter().map(|r| {
                        let commit = a
                            .slugs
                            .iter()
                            .find(|s| r["slug"]["id"].is_string() && s["id"] == r["slug"]["id"])
                            .and_then(|s| s["commit"].as_str().map(String::from));
                        (
                            text(&r["id"]),
                            a.id.clone(),
                            r["version"].as_i64().unwrap_or(0),
                            text(&r["status"]),
                            r["current"].as_bool().unwrap_or(false),
                            commit,
                        )
                    })
                })
                .collect(),
        };
        truth.apps.sort();
        truth.builds.sort();
        truth.releases.sort();
        truth
    }
}

/// `<field> [ ] start .. ; max=N, order=asc|desc`
struct Range {
    field: String,
    start: Option<String>,
    exclusive: bool,
    max: usize,
    desc: bool,
}

fn parse_range(header: &str) -> Option<Range> {
    let (spec, options) = header.split_once(';').unwrap_or((header, ""));
    let (field, bounds) = spec.trim().split_once(' ').unwrap_or((spec.trim(), ".."));
    let bounds = bounds.trim();
    let (start, _end) = bounds.split_once("..")?;
    let (exclusive, start) = match start.strip_prefix(']') {
        Some(rest) => (true, rest),
        None => (false, start),
    };
    let mut range = Range {
        field: field.to_string(),
        start: (!start.is_empty()).then(|| start.to_string()),
        exclusive,
        max: DEFAULT_PAGE,
        desc: false,
    };
    for option in options.split(',') {
        match option.trim().split_once('=') {
            Some(("max", n)) => range.max = n.trim().parse::<usize>().ok()?.clamp(1, MAX_PAGE),
            Some(("order", o)) => range.desc = o.trim() == "desc",
            None if option.trim().is_empty() => {}
            _ => return None,
        }
    }
    Some(range)
}

/// The value a list sorts on: builds sort on when they started, which they do not show
/// (here: when they were created).
fn field_value<'a>(item: &'a Value, field: &str) -> &'a Value {
    match field {
        "started_at" => &item["created_at"],
        other => &item[other],
    }
}

/// A value's sort key for a Range field, the id breaking ties: numbers as numbers, the
/// rest as text.
fn key_of(item: &Value, field: &str) -> (i64, String, String) {
    let id = item["id"].as_str().unwrap_or_default().to_string();
    match field_value(item, field) {
        Value::Number(n) => (n.as_i64().unwrap_or(0), String::new(), id),
        other => (0, other.as_str().unwrap_or_default().to_string(), id),
    }
}

/// The key a range starts at: `value` or, from this fake's Next-Range, `value|last id`.
fn start_key(range: &Range) -> Option<(i64, String, String)> {
    let start = range.start.as_ref()?;
    let (value, id) = start.split_once('|').unwrap_or((start, ""));
    let id = if id.is_empty() && range.desc && range.exclusive {
        // `]v..` descending: everything below v, ties included as lower than v.
        String::new()
    } else {
        id.to_string()
    };
    Some(match value.parse::<i64>() {
        Ok(n) if range.field == "version" => (n, String::new(), id),
        _ => (0, value.to_string(), id),
    })
}

fn list(items: &[Value], request: &Request, fields: &[&str], state: &mut State) -> Reply {
    let accept_ranges = fields.join(", ");
    let header = request
        .header("range")
        .map(String::from)
        .unwrap_or_else(|| format!("{} ..", fields[0]));
    state.ranges_seen.push(header.clone());
    let Some(range) = parse_range(&header) else {
        return Reply::json(
            400,
            &json!({"id": "bad_request", "message": "Invalid `Range` header. Please use format like `id ..; max=10, order=desc`. "}),
        );
    };
    let refuse = |state: &mut State| {
        state.not_satisfiable += 1;
        Reply::json(
            416,
            &json!({"id": "requested_range_not_satisfiable", "message": "Requested range not satisfiable"}),
        )
        .with_header("accept-ranges", &accept_ranges)
    };
    if !fields.contains(&range.field.as_str()) || state.refuse_ranges {
        return refuse(state);
    }
    if range.start.is_some() && std::mem::take(&mut state.refuse_next_continuation) {
        return refuse(state);
    }
    let mut sorted: Vec<&Value> = items.iter().collect();
    sorted.sort_by_key(|item| key_of(item, &range.field));
    if range.desc {
        sorted.reverse();
    }
    let start = start_key(&range);
    let in_range: Vec<&Value> = sorted
        .into_iter()
        .filter(|item| match &start {
            None => true,
            Some(start) => {
                let key = key_of(item, &range.field);
                // A bare value (no id) compares on the value alone.
                let key = if start.2.is_empty() {
                    (key.0, key.1, String::new())
                } else {
                    key
                };
                match (range.desc, range.exclusive) {
                    (true, true) => key < *start,
                    (true, false) => key <= *start,
                    (false, true) => key > *start,
                    (false, false) => key >= *start,
                }
            }
        })
        .collect();
    if in_range.is_empty() && range.start.is_some() {
        return refuse(state);
    }
    let page: Vec<Value> = in_range
        .iter()
        .take(range.max)
        .map(|v| (*v).clone())
        .collect();
    let truncated =
        in_range.len() > range.max || (state.full_pages_claim_more && in_range.len() == range.max);
    let mut reply = Reply::json(
        if truncated { 206 } else { 200 },
        &Value::Array(page.clone()),
    )
    .with_header("accept-ranges", &accept_ranges);
    if truncated && state.repeat_next_ranges {
        return reply.with_header("next-range", &header);
    }
    if truncated {
        let last = page.last().map(|l| {
            let value = match field_value(l, &range.field) {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if range.field == "id" {
                value
            } else {
                format!("{value}|{}", l["id"].as_str().unwrap_or_default())
            }
        });
        let order = if range.desc { "desc" } else { "asc" };
        reply = reply.with_header(
            "next-range",
            &format!(
                "{} ]{}..; max={}, order={order}",
                range.field,
                last.unwrap_or_default(),
                range.max
            ),
        );
    }
    reply
}

fn not_found(what: &str) -> Reply {
    Reply::json(
        404,
        &json!({"id": "not_found", "resource": what, "message": format!("Couldn't find that {what}.")}),
    )
}

fn handle(state: &mut State, request: Request) -> Reply {
    state.requests += 1;
    if request.header("accept") != Some("application/vnd.heroku+json; version=3") {
        return Reply::json(
            400,
            &json!({"id": "bad_request", "message": "Accept must be application/vnd.heroku+json; version=3"}),
        );
    }
    if request.header("authorization") != Some(format!("Bearer {}", state.key).as_str()) {
        return Reply::json(
            401,
            &json!({"id": "unauthorized", "message": "Invalid credentials provided."}),
        );
    }
    // The account's shared budget: a token bucket; empty means 429, without Retry-After.
    let bucket = &mut state.bucket;
    let now = Instant::now();
    bucket.tokens = (bucket.tokens + (now - bucket.at).as_secs_f64() * bucket.refill_per_second)
        .min(bucket.capacity);
    bucket.at = now;
    if bucket.tokens < 1.0 {
        state.throttled += 1;
        return Reply::json(
            429,
            &json!({"id": "rate_limit", "message": "Your account reached the API rate limit"}),
        )
        .with_header("ratelimit-remaining", "0");
    }
    bucket.tokens -= 1.0;
    let remaining = bucket.tokens.floor() as u64;
    state.lowest_remaining = state.lowest_remaining.min(remaining);
    state.paths.push(request.path.clone());
    let reply = route(state, &request);
    reply.with_header("ratelimit-remaining", &remaining.to_string())
}

fn route(state: &mut State, request: &Request) -> Reply {
    let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let find =
        |state: &State, key: &str| state.apps.iter().position(|a| a.name == key || a.id == key);
    match parts.as_slice() {
        ["apps"] => {
            let apps: Vec<Value> = state.apps.iter().map(app_json).collect();
            list(&apps, request, &["id", "name", "updated_at"], state)
        }
        ["apps", key] => match find(state, key) {
            Some(i) => Reply::json(200, &app_json(&state.apps[i])),
            None => not_found("app"),
        },
        ["apps", key, "releases"] => match find(state, key) {
            Some(i) => {
                let releases = state.apps[i].releases.clone();
                list(&releases, request, &["id", "version"], state)
            }
            None => not_found("app"),
        },
        ["apps", key, "pipeline-couplings"] => match find(state, key) {
            Some(i) => match &state.apps[i].coupling {
                Some(coupling) => Reply::json(200, coupling),
                None => not_found("pipeline coupling"),
            },
            None => not_found("app"),
        },
        ["apps", key, "slugs", id] => match find(state, key) {
            Some(i) => match state.apps[i].slugs.iter().find(|s| s["id"] == *id) {
                Some(slug) => Reply::json(200, slug),
                None => not_found("slug"),
            },
            None => not_found("app"),
        },
        ["apps", key, "releases", id] => match find(state, key) {
            Some(i) => match state.apps[i]
                .releases
                .iter()
                .find(|r| r["id"] == *id || id.parse::<i64>().ok() == r["version"].as_i64())
            {
                Some(release) => Reply::json(200, release),
                None => not_found("release"),
            },
            None => not_found("app"),
        },
        ["apps", key, "builds"] => match find(state, key) {
            Some(i) => {
                let builds = state.apps[i].builds.clone();
                list(&builds, request, &["id", "started_at"], state)
            }
            None => not_found("app"),
        },
        ["apps", key, "builds", id] => match find(state, key) {
            Some(i) => match state.apps[i].builds.iter().find(|b| b["id"] == *id) {
                Some(build) => Reply::json(200, build),
                None => not_found("build"),
            },
            None => not_found("app"),
        },
        _ => not_found("resource"),
    }
}

fn app_json(app: &App) -> Value {
    json!({
        "id": app.id, "name": app.name, "region": {"id": "r1", "name": "eu"},
        "build_stack": {"id": "s1", "name": "heroku-24"}, "stack": {"id": "s1", "name": "heroku-24"},
        "web_url": format!("https://{}.herokuapp.com/", app.name),
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-11-01T00:00:00Z",
        "released_at": app.releases.last().map_or(Value::Null, |r| r["created_at"].clone()),
        "owner": {"id": "o1", "email": "owner@example.com"},
    })
}
