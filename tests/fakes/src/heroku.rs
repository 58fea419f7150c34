//! A fake Heroku Platform API v3 on loopback: Range pagination as the API defines it
//! (`Range: <field> ..; max=N, order=desc`, default 200 and at most 1000 a page, 206 with
//! `Next-Range` while pages are full, 200 on the last, 416 when nothing is in range,
//! `Accept-Ranges`), the versioned Accept header, Bearer keys, a token bucket that runs
//! dry with 429 (no Retry-After), builds that finish and gain their release later, and a
//! `current` flag that moves to each newly succeeded release.

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
}

/// What the fake holds, in the fields the tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// (id, name)
    pub apps: Vec<(String, String)>,
    /// (id, app id, status, release id, source version)
    pub builds: Vec<(String, String, String, Option<String>, String)>,
    /// (id, app id, version, status, current)
    pub releases: Vec<(String, String, i64, String, bool)>,
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
    fn add_release(&mut self, app: &str, description: &str, status: &str) -> String {
        let id = self.id();
        let at = self.tick();
        let user = self.user();
        let app = self.app(app);
        let version = app.releases.len() as i64 + 1;
        let (app_id, app_name) = (app.id.clone(), app.name.clone());
        app.releases.push(json!({
            "id": id, "version": version, "description": description, "status": status,
            "current": false, "created_at": stamp(at), "updated_at": stamp(at),
            "app": {"id": app_id, "name": app_name}, "user": user,
            "slug": {"id": format!("slug-{version}")}, "addon_plan_names": ["heroku-postgresql:essential-0"],
            "output_stream_url": null,
        }));
        if status == "succeeded" {
            recompute_current(app);
        }
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
        });
        id
    }

    /// A config change or add-on release (no build), succeeded at once.
    pub fn add_config_release(&self, app: &str) -> String {
        self.lock()
            .add_release(app, "Set FEATURE_FLAG config vars", "succeeded")
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
                "source_blob": {"checksum": null, "url": "https://example.com/source.tgz",
                                "version": version, "version_description": "Change things"},
                "release": null, "slug": null, "user": user,
                "buildpacks": [{"url": "heroku/nodejs", "name": "heroku/nodejs"}],
                "output_stream_url": "https://build-output.heroku.com/streams/x",
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
        let release_id = state.add_release(
            app,
            &format!("Deploy {}", &sha[..sha.len().min(8)]),
            "succeeded",
        );
        let app = state.app(app);
        let app_id = app.id.clone();
        app.builds.push(json!({
            "id": build_id, "app": {"id": app_id}, "status": "succeeded", "stack": "heroku-24",
            "created_at": stamp(at - Duration::minutes(3)), "updated_at": stamp(at - Duration::minutes(1)),
            "source_blob": {"checksum": null, "url": null, "version": sha, "version_description": "Scripted"},
            "release": {"id": release_id}, "slug": {"id": "slug-scripted"}, "user": user, "buildpacks": [],
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

    /// Pending builds end (one in six fails); succeeded ones have no release yet.
    pub fn finish_builds(&self, app: &str) {
        let mut state = self.lock();
        let at = stamp(state.tick());
        let app = state.app(app);
        for (n, build) in app.builds.iter_mut().enumerate() {
            if build["status"] == "pending" {
                build["status"] = json!(if n % 6 == 5 { "failed" } else { "succeeded" });
                build["updated_at"] = json!(at);
                build["slug"] = json!({"id": format!("slug-b{n}")});
            }
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
            let release = state.add_release(app, &format!("Deploy {sha}"), "pending");
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
                        (
                            text(&r["id"]),
                            a.id.clone(),
                            r["version"].as_i64().unwrap_or(0),
                            text(&r["status"]),
                            r["current"].as_bool().unwrap_or(false),
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

/// A value's sort key for a Range field: numbers as numbers, the rest as text.
fn key_of(item: &Value, field: &str) -> (i64, String) {
    match &item[field] {
        Value::Number(n) => (n.as_i64().unwrap_or(0), String::new()),
        other => (0, other.as_str().unwrap_or_default().to_string()),
    }
}

fn list(items: &[Value], request: &Request, fields: &[&str], state: &mut State) -> Reply {
    let accept_ranges = fields.join(", ");
    let header = request
        .header("range")
        .map(String::from)
        .unwrap_or_else(|| format!("{} ..", fields[0]));
    state.ranges_seen.push(header.clone());
    let Some(range) = parse_range(&header).filter(|r| fields.contains(&r.field.as_str())) else {
        return Reply::json(
            400,
            &json!({"id": "bad_request", "message": format!("Invalid range: {header}")}),
        );
    };
    let mut sorted: Vec<&Value> = items.iter().collect();
    sorted.sort_by_key(|item| key_of(item, &range.field));
    if range.desc {
        sorted.reverse();
    }
    let start_key = range.start.as_ref().map(|s| match s.parse::<i64>() {
        Ok(n) if range.field == "version" => (n, String::new()),
        _ => (0, s.clone()),
    });
    let in_range: Vec<&Value> = sorted
        .into_iter()
        .filter(|item| match &start_key {
            None => true,
            Some(start) => {
                let key = key_of(item, &range.field);
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
        state.not_satisfiable += 1;
        return Reply::json(416, &json!({"id": "requested_range_not_satisfiable", "message": "Requested range not satisfiable"}))
            .with_header("accept-ranges", &accept_ranges);
    }
    let page: Vec<Value> = in_range
        .iter()
        .take(range.max)
        .map(|v| (*v).clone())
        .collect();
    let full = page.len() == range.max;
    let mut reply = Reply::json(if full { 206 } else { 200 }, &Value::Array(page.clone()))
        .with_header("accept-ranges", &accept_ranges);
    if full {
        let last = page.last().map(|l| match &l[&range.field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
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
                list(
                    &builds,
                    request,
                    &["id", "created_at", "started_at", "updated_at"],
                    state,
                )
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
