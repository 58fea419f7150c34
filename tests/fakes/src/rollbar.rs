//! A fake Rollbar API (`/api/1`): keyset and page-number paging of occurrences, items that
//! change in place, occurrences that keep arriving during a sync, and injected faults
//! (429 with Retry-After, 500/503, slow answers, bodies cut short, connection resets).
//!
//! Rules, from Rollbar's API reference (docs.rollbar.com/reference, "List all occurrences"
//! and "List all items"; quoted in the export spenserhale/rollbar-ai-toolkit):
//! - `/instances/`: "descending by occurrence ID"; `lastId` "Overrides the page number if
//!   both are present"; `limit` "Default is 20 and the max is 5000".
//! - `/items/`: "100 items are returned per page"; `ids` is a "comma-separated list of
//!   integers"; `status` takes active, resolved, muted or archived and may be repeated.
//!   What an omitted `status` returns is not documented: the fake takes the narrowest
//!   reading (active items only), so a client that wants every status must name them.
//! - `/deploys/` ("List all deploys"): "Returns all deploys in the project, most recent
//!   first, in pages of 20"; `page` "starting from 1"; `limit` as for instances (the
//!   assembled spec's shared parameter, max 5000). The end of the list is an empty page
//!   (Rollbar's example `list_occurrences_since_last_deploy.py` loops until `deploys` is
//!   empty). A deploy's `status` is started, succeeded, failed or timed_out, and one that
//!   started is updated when it finishes (`PATCH /deploy/{id}`).
//! - Errors are `{"err": 1, "message": ...}`; an unknown path is a 404.
//! - Rate-limit headers as recorded from the real API (terraform-provider-rollbar's
//!   fixtures): `X-Rate-Limit-Limit: 5000`, `-Remaining`, `-Reset` (Unix seconds) and
//!   `-Remaining-Seconds`.

use crate::http::{serve_state, Reply, Request, ServerTask};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Faults injected at random, each with its own probability per request.
#[derive(Debug, Clone, Default)]
pub struct FaultRates {
    pub rate_limited: f64,
    pub server_error: f64,
    pub slow: f64,
    pub cut_short: f64,
    pub reset: f64,
}

impl FaultRates {
    /// Every kind of fault, each on `rate` of requests.
    pub fn all(rate: f64) -> Self {
        Self {
            rate_limited: rate,
            server_error: rate,
            slow: rate,
            cut_short: rate,
            reset: rate,
        }
    }
}

#[derive(Debug)]
struct Project {
    id: i64,
    occurrences: BTreeMap<i64, Value>,
    /// Occurrences that have their id but are not listed yet, until this instant: Rollbar
    /// lists by id "which is approximately descending by timestamp", and one can become
    /// listable after ids above it were served.
    unlisted_until: BTreeMap<i64, Instant>,
    items: BTreeMap<i64, Value>,
    deploys: BTreeMap<i64, Value>,
}

#[derive(Debug)]
struct World {
    rng: StdRng,
    projects: BTreeMap<String, Project>,
    revoked: BTreeMap<String, Project>,
    next_occurrence_id: i64,
    next_item_id: i64,
    next_deploy_id: i64,
    faults: FaultRates,
    /// New occurrences added to every project before each occurrences request.
    arrivals_per_request: usize,
    requests: u64,
    faults_served: u64,
    /// Every request's path and query, in order.
    log: Vec<String>,
    /// Answer as if behind a proxy that drops `lastId` (the newest page, every time).
    ignore_last_id: bool,
    /// Answer item lists as if `ids` were not there.
    ignore_ids: bool,
    /// Items per page of the item list (Rollbar's: 100).
    items_page: usize,
    /// Pages asking for more than this many occurrences time out (answer after `slow_for`).
    slow_above: Option<(usize, Duration)>,
    /// Added to every answer: a real round trip.
    latency: Duration,
    /// Sizes (bytes of each occurrence as served) drawn uniformly from this range; the
    /// payload is padded with stack-frame locals and a request body, as real SDK payloads
    /// with locals and bodies are (commonly 20-100 KB; Rollbar accepts about 128 KB).
    occurrence_bytes: Option<(usize, usize)>,
    /// This share of new occurrences becomes listable only this long after it arrived.
    listing_delay: Option<(f64, Duration)>,
    /// Timestamps are the wall clock's (else derived from the id, ten ids a second).
    wall_clock: bool,
}

/// Handle on a running fake; cloneable, shared with the server task.
#[derive(Clone)]
pub struct FakeRollbar {
    world: Arc<Mutex<World>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

const ENVIRONMENTS: &[&str] = &["production", "staging"];
const CODE_VERSIONS: &[&str] = &[
    "9f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d",
    "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
    "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
];
const MESSAGES: &[&str] = &[
    "undefined method `name' for nil:NilClass",
    "Ошибка соединения с базой данных",
    "timeout after 30s 😀 while calling payments",
    "x'); DROP TABLE rollbar_items; --",
    "KeyError: 'user_id'",
];

impl FakeRollbar {
    /// Starts an empty fake on a free loopback port.
    pub async fn start(seed: u64) -> std::io::Result<Self> {
        let world = Arc::new(Mutex::new(World {
            rng: StdRng::seed_from_u64(seed),
            projects: BTreeMap::new(),
            revoked: BTreeMap::new(),
            next_occurrence_id: 400_000_000_000,
            next_item_id: 800_000_000,
            next_deploy_id: 20_000_000,
            faults: FaultRates::default(),
            arrivals_per_request: 0,
            requests: 0,
            faults_served: 0,
            log: Vec::new(),
            ignore_last_id: false,
            ignore_ids: false,
            items_page: 100,
            slow_above: None,
            latency: Duration::ZERO,
            occurrence_bytes: None,
            listing_delay: None,
            wall_clock: false,
        }));
        let (addr, server) = serve_state(Arc::clone(&world), handle).await?;
        Ok(Self {
            world,
            addr,
            _server: server,
        })
    }

    /// `ROLLBAR_API_URL` for this fake.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/1", self.addr)
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a project reachable with `token`, with `items` items and `occurrences` occurrences.
    pub fn add_project(&self, token: &str, project_id: i64, items: usize, occurrences: usize) {
        let mut world = self.world();
        world.projects.insert(
            token.to_string(),
            Project {
                id: project_id,
                occurrences: BTreeMap::new(),
                unlisted_until: BTreeMap::new(),
                items: BTreeMap::new(),
                deploys: BTreeMap::new(),
            },
        );
        for _ in 0..items.max(1) {
            world.new_item(token);
        }
        world.arrive(token, occurrences);
    }

    /// Records a deploy of `revision` to `environment` that started at `start_time` (Unix
    /// seconds), as `POST /deploy` would; returns its id.
    pub fn add_deploy(
        &self,
        token: &str,
        environment: &str,
        revision: &str,
        status: &str,
        start_time: i64,
    ) -> i64 {
        let mut world = self.world();
        world.next_deploy_id += 1;
        let id = world.next_deploy_id;
        let Some(project) = world.projects.get_mut(token) else {
            return id;
        };
        let finished = status != "started";
        project.deploys.insert(
            id,
            json!({
                "id": id,
                "project_id": project.id,
                "environment": environment,
                "revision": revision,
                "status": status,
                "local_username": "deploy-bot ✓",
                "user_id": null,
                "comment": format!("deploy {id}"),
                "start_time": start_time,
                "finish_time": if finished { json!(start_time + 90) } else { Value::Null },
            }),
        );
        id
    }

    /// A started deploy finishes (`PATCH /deploy/{id}`).
    pub fn finish_deploy(&self, token: &str, id: i64, status: &str) {
        let mut world = self.world();
        if let Some(deploy) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.deploys.get_mut(&id))
        {
            let start = deploy["start_time"].as_i64().unwrap_or(0);
            deploy["status"] = json!(status);
            deploy["finish_time"] = json!(start + 300);
        }
    }

    /// Ground truth: every deploy of the project, by id.
    pub fn deploys(&self, token: &str) -> BTreeMap<i64, Value> {
        self.world()
            .projects
            .get(token)
            .map(|p| p.deploys.clone())
            .unwrap_or_default()
    }

    /// A new item in `environment` (for scripted scenarios).
    pub fn new_item(&self, token: &str, environment: &str) -> i64 {
        let mut world = self.world();
        let id = world.new_item(token);
        if let Some(item) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.items.get_mut(&id))
        {
            item["environment"] = json!(environment);
        }
        id
    }

    /// Sets a scripted item's level and title (as Rollbar shows them in the item's JSON).
    pub fn set_item_details(&self, token: &str, item: i64, level: &str, title: &str) {
        let mut world = self.world();
        if let Some(entry) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.items.get_mut(&item))
        {
            entry["level"] = json!(level);
            entry["title"] = json!(title);
        }
    }

    /// One scripted occurrence of `item` at `at` (Unix seconds); the item's counters,
    /// first/last occurrence and (when it was resolved) reactivation follow, as in Rollbar.
    pub fn occur(
        &self,
        token: &str,
        item: i64,
        at: i64,
        environment: &str,
        person: Option<&str>,
        code_version: Option<&str>,
    ) -> i64 {
        let mut world = self.world();
        world.next_occurrence_id += 7;
        let id = world.next_occurrence_id;
        let Some(project) = world.projects.get_mut(token) else {
            return id;
        };
        let mut data = json!({
            "environment": environment,
            "level": "error",
            "timestamp": at,
            "body": {"message": {"body": format!("scripted occurrence {id}")}},
            "language": "ruby",
        });
        if let Some(person) = person {
            data["person"] = json!({"id": person});
        }
        // Every Rollbar SDK sends a UUID per occurrence (the API reference's "uuid": "a
        // UUID4 that identifies this occurrence"); Rollbar links to it at /item/uuid/.
        data["uuid"] = json!(format!(
            "{:08x}-{:04x}-4{:03x}-8000-{:012x}",
            id >> 32,
            (id >> 16) & 0xffff,
            id & 0xfff,
            id
        ));
        if let Some(version) = code_version {
            data["code_version"] = json!(version);
        }
        project.occurrences.insert(
            id,
            json!({"id": id, "project_id": project.id, "timestamp": at, "item_id": item, "data": data}),
        );
        if let Some(entry) = project.items.get_mut(&item) {
            let total = entry["total_occurrences"].as_i64().unwrap_or(0) + 1;
            entry["total_occurrences"] = json!(total);
            entry["last_occurrence_id"] = json!(id);
            entry["last_occurrence_timestamp"] = json!(at);
            if entry["first_occurrence_id"].is_null() {
                entry["first_occurrence_id"] = json!(id);
                entry["first_occurrence_timestamp"] = json!(at);
            }
            if entry["status"] == json!("resolved") {
                entry["status"] = json!("active");
                entry["last_activated_timestamp"] = json!(at);
                entry["activating_occurrence_id"] = json!(id);
            }
        }
        id
    }

    /// `count` new occurrences arrive in the project of `token`.
    pub fn arrive(&self, token: &str, count: usize) {
        self.world().arrive(token, count);
    }

    /// Occurrences that arrive in every project before each occurrences request.
    pub fn set_arrivals_per_request(&self, count: usize) {
        self.world().arrivals_per_request = count;
    }

    pub fn set_faults(&self, faults: FaultRates) {
        self.world().faults = faults;
    }

    /// Answers every occurrence page as if `lastId` were not there (a proxy dropping it).
    pub fn ignore_last_id(&self, ignore: bool) {
        self.world().ignore_last_id = ignore;
    }

    /// Answers item lists as if `ids` were not there (a proxy dropping it).
    pub fn ignore_ids(&self, ignore: bool) {
        self.world().ignore_ids = ignore;
    }

    /// Item lists in pages of `size` (Rollbar's are 100): with `ids`, an answer can then
    /// hold fewer items than `total_count` says, and the next `page` holds the rest.
    pub fn set_items_page_size(&self, size: usize) {
        self.world().items_page = size.max(1);
    }

    /// Deletes an item (its occurrences stay, as after a merge into another item): asked
    /// for by id, it is not in the answer.
    pub fn delete_item(&self, token: &str, item_id: i64) {
        if let Some(project) = self.world().projects.get_mut(token) {
            project.items.remove(&item_id);
        }
    }

    /// Occurrence pages of more than `limit` take `delay` to answer (past a timeout).
    pub fn slow_pages_above(&self, limit: usize, delay: Duration) {
        self.world().slow_above = Some((limit, delay));
    }

    /// Every answer waits `latency` first, as over the internet.
    pub fn set_latency(&self, latency: Duration) {
        self.world().latency = latency;
    }

    /// New occurrences weigh between `min` and `max` bytes each (as served).
    pub fn set_occurrence_bytes(&self, min: usize, max: usize) {
        self.world().occurrence_bytes = Some((min.min(max), max.max(min)));
    }

    /// A `share` of new occurrences is listed only `delay` after it arrived (below ids
    /// listed meanwhile).
    pub fn set_listing_delay(&self, share: f64, delay: Duration) {
        self.world().listing_delay = Some((share, delay));
    }

    /// New occurrences carry the wall clock's time, as Rollbar's do.
    pub fn use_wall_clock(&self) {
        self.world().wall_clock = true;
    }

    /// Paths and queries requested so far, in order.
    pub fn request_log(&self) -> Vec<String> {
        self.world().log.clone()
    }

    /// An occurrence with the given `id`, below ids already served: Rollbar's ids are only
    /// approximately in time order, so one can appear below a walk's high-water mark.
    pub fn arrive_late(&self, token: &str, id: i64) {
        let mut world = self.world();
        assert!(
            world
                .projects
                .get(token)
                .is_some_and(|p| !p.occurrences.contains_key(&id)),
            "occurrence {id} exists already"
        );
        world.arrive_with_id(token, id);
    }

    /// Mutes an item in place.
    pub fn mute_item(&self, token: &str, item_id: i64) {
        let mut world = self.world();
        if let Some(item) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.items.get_mut(&item_id))
        {
            item["status"] = json!("muted");
        }
    }

    /// Resolves an item in place (status, resolved time and version; counters restart).
    pub fn resolve_item(&self, token: &str, item_id: i64) {
        let mut world = self.world();
        if let Some(item) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.items.get_mut(&item_id))
        {
            item["status"] = json!("resolved");
            item["last_resolved_timestamp"] = json!(1_795_700_000);
            item["resolved_in_version"] = json!(CODE_VERSIONS[2]);
            item["total_occurrences"] = json!(0);
        }
    }

    /// Changes an item's assignment and level in place.
    pub fn reassign_item(&self, token: &str, item_id: i64, user: i64) {
        let mut world = self.world();
        if let Some(item) = world
            .projects
            .get_mut(token)
            .and_then(|p| p.items.get_mut(&item_id))
        {
            item["assigned_user_id"] = json!(user);
            item["level"] = json!(50);
        }
    }

    /// Adds an occurrence that the sync cannot store as is (no numeric id).
    pub fn add_unstorable_occurrence(&self, token: &str) {
        let mut world = self.world();
        world.next_occurrence_id += 1;
        let id = world.next_occurrence_id;
        if let Some(project) = world.projects.get_mut(token) {
            // Keyed by id for paging, but the payload carries a non-numeric id.
            project.occurrences.insert(
                id,
                json!({"id": "not-a-number", "data": {"level": "error"}}),
            );
        }
    }

    /// The project of `token` stops accepting it (401 from now on).
    pub fn revoke_token(&self, token: &str) {
        let mut world = self.world();
        if let Some(project) = world.projects.remove(token) {
            world.revoked.insert(token.to_string(), project);
        }
    }

    /// `new_token` now reaches the project `old_token` reached (a rotated token).
    pub fn add_token_alias(&self, new_token: &str, old_token: &str) {
        let mut world = self.world();
        if let Some(project) = world
            .revoked
            .remove(old_token)
            .or_else(|| world.projects.remove(old_token))
        {
            world.projects.insert(new_token.to_string(), project);
        }
    }

    /// Ground truth: every occurrence of the project, by id.
    pub fn occurrences(&self, token: &str) -> BTreeMap<i64, Value> {
        self.world()
            .projects
            .get(token)
            .map(|p| p.occurrences.clone())
            .unwrap_or_default()
    }

    /// Ground truth: every item of the project, by id.
    pub fn items(&self, token: &str) -> BTreeMap<i64, Value> {
        self.world()
            .projects
            .get(token)
            .map(|p| p.items.clone())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> u64 {
        self.world().requests
    }

    pub fn faults_served(&self) -> u64 {
        self.world().faults_served
    }
}

impl World {
    fn new_item(&mut self, token: &str) -> i64 {
        let id = self.next_item_id;
        self.next_item_id += 1;
        let level = ["error", "warning", "critical"][self.rng.random_range(0..3)];
        let Some(project) = self.projects.get_mut(token) else {
            return id;
        };
        let counter = project.items.len() as i64 + 1;
        // Older payload shapes send level and status as numbers.
        let numeric = counter % 4 == 0;
        project.items.insert(
            id,
            json!({
                "id": id,
                "project_id": project.id,
                "counter": counter,
                "environment": ENVIRONMENTS[counter as usize % ENVIRONMENTS.len()],
                "framework": if numeric { json!(2) } else { json!("rails") },
                "hash": format!("{:040x}", id),
                "level": if numeric { json!(40) } else { json!(level) },
                "status": if numeric { json!(1) } else { json!("active") },
                "platform": "linux",
                "title": format!("{} #{counter}", MESSAGES[counter as usize % MESSAGES.len()]),
                "total_occurrences": 0,
                "unique_occurrences": null,
                "first_occurrence_id": null,
                "first_occurrence_timestamp": null,
                "last_occurrence_id": null,
                "last_occurrence_timestamp": null,
                "last_activated_timestamp": null,
                "last_resolved_timestamp": null,
                "activating_occurrence_id": null,
                "resolved_in_version": null,
                "assigned_user_id": null,
                "group_item_id": null,
            }),
        );
        id
    }

    fn arrive(&mut self, token: &str, count: usize) {
        for _ in 0..count {
            // Ids grow with gaps, as Rollbar's global ids do.
            self.next_occurrence_id += self.rng.random_range(1..40);
            let id = self.next_occurrence_id;
            self.arrive_with_id(token, id);
        }
    }

    /// One occurrence with this id, of a random item of the project.
    fn arrive_with_id(&mut self, token: &str, id: i64) {
        {
            let Some(project) = self.projects.get(token) else {
                return;
            };
            let item_ids: Vec<i64> = project.items.keys().copied().collect();
            let project_id = project.id;
            let item_id = item_ids[self.rng.random_range(0..item_ids.len())];
            let timestamp = if self.wall_clock {
                chrono::Utc::now().timestamp()
            } else {
                1_795_000_000 + (id - 400_000_000_000) / 10
            };
            let person = match self.rng.random_range(0..4) {
                0 => Value::Null,
                1 => {
                    json!({"id": self.rng.random_range(1..500), "username": "numeric-user", "email": "n@example.com"})
                }
                _ => {
                    json!({"id": format!("user-{}", self.rng.random_range(1..500)), "username": "ann ✓", "email": "ann@example.com"})
                }
            };
            let message = MESSAGES[self.rng.random_range(0..MESSAGES.len())];
            let body = match id % 3 {
                0 => json!({"trace_chain": [
                    {"exception": {"class": "RuntimeError", "message": message}, "frames": frames(id)},
                    {"exception": {"class": "KeyError", "message": "inner"}, "frames": frames(id + 1)}
                ]}),
                1 => json!({"message": {"body": message}}),
                _ => {
                    json!({"trace": {"exception": {"class": "NoMethodError", "message": message}, "frames": frames(id)}})
                }
            };
            let mut data = json!({
                "environment": ENVIRONMENTS[(id % 2) as usize],
                "level": if id % 5 == 0 { json!(40) } else { json!("error") },
                "timestamp": timestamp - 2,
                "code_version": CODE_VERSIONS[(id % 3) as usize],
                "framework": "rails",
                "language": "ruby",
                "platform": "linux",
                "uuid": format!("00000000-0000-4000-8000-{:012x}", id % 0xffff_ffff_ffff),
                "context": "orders#create",
                "body": body,
                "request": {"url": format!("https://shop.example.com/orders/{id}"), "method": "POST", "user_ip": "203.0.113.7"},
                "server": {"host": "web-1", "root": "/srv/app"},
                "notifier": {"name": "rollbar-gem", "version": "3.5.0"},
            });
            if !person.is_null() {
                data["person"] = person;
            }
            let mut instance = json!({
                "id": id,
                "project_id": project_id,
                "timestamp": timestamp,
                "version": 2,
                "billable": 1,
                "item_id": item_id,
                "data": data,
            });
            if let Some((min, max)) = self.occurrence_bytes {
                let target = self.rng.random_range(min..=max);
                pad_occurrence(&mut instance, target);
            }
            let unlisted = match self.listing_delay {
                Some((share, delay)) if share > 0.0 && self.rng.random_bool(share.min(1.0)) => {
                    Some(Instant::now() + delay)
                }
                _ => None,
            };
            let Some(project) = self.projects.get_mut(token) else {
                return;
            };
            project.occurrences.insert(id, instance);
            if let Some(until) = unlisted {
                project.unlisted_until.insert(id, until);
            }
            if let Some(item) = project.items.get_mut(&item_id) {
                let total = item["total_occurrences"].as_i64().unwrap_or(0) + 1;
                item["total_occurrences"] = json!(total);
                item["last_occurrence_id"] = json!(id);
                item["last_occurrence_timestamp"] = json!(timestamp);
                if item["first_occurrence_id"].is_null() {
                    item["first_occurrence_id"] = json!(id);
                    item["first_occurrence_timestamp"] = json!(timestamp);
                }
                if item["status"] == json!("resolved") {
                    item["status"] = json!("active");
                    item["last_activated_timestamp"] = json!(timestamp);
                    item["activating_occurrence_id"] = json!(id);
                }
            }
        }
    }

    fn draw_fault(&mut self) -> Option<Reply> {
        let faults = self.faults.clone();
        let roll = |rng: &mut StdRng, p: f64| p > 0.0 && rng.random_bool(p.min(1.0));
        let reply = if roll(&mut self.rng, faults.rate_limited) {
            Reply::json(429, &json!({"err": 1, "message": "rate limit reached"}))
                .with_header("retry-after", "1")
        } else if roll(&mut self.rng, faults.server_error) {
            let status = if self.rng.random_bool(0.5) { 500 } else { 503 };
            Reply::json(status, &json!({"err": 1, "message": "internal error"}))
        } else if roll(&mut self.rng, faults.reset) {
            Reply::Reset
        } else {
            return None;
        };
        self.faults_served += 1;
        Some(reply)
    }
}

/// Pads an occurrence to about `target` bytes as served, the way large real payloads are
/// large: stack-frame locals (`rollbar-gem` and `pyrollbar` send `locals` per frame) and a
/// request body.
fn pad_occurrence(instance: &mut Value, target: usize) {
    let size = instance.to_string().len();
    if target <= size + 64 {
        return;
    }
    let fill = target - size - 64;
    let locals = fill / 2;
    let line = "order_line = {'sku': 'A-1042', 'qty': 3, 'price': '19.99', 'note': 'gift wrap'}; ";
    let text = |n: usize| line.repeat(n / line.len() + 1)[..n].to_string();
    instance["data"]["request"]["body"] = json!(text(fill - locals));
    let frame_locals = json!({"locals": {"order": text(locals)}});
    match instance["data"]["body"]["trace"]["frames"].as_array_mut() {
        Some(frames) if !frames.is_empty() => {
            frames[0]["locals"] = frame_locals["locals"].clone();
        }
        _ => instance["data"]["custom"] = frame_locals,
    }
}

fn frames(seed: i64) -> Value {
    json!((0..8)
        .map(|i| json!({
            "filename": format!("/srv/app/app/models/order_{}.rb", (seed + i) % 17),
            "lineno": 10 + i,
            "method": format!("step_{i}"),
            "code": "total = line_items.sum(&:price)",
        }))
        .collect::<Vec<_>>())
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({"err": 1, "message": message}))
}

fn handle(world: &mut World, request: Request) -> Reply {
    world.requests += 1;
    let query: Vec<String> = request
        .query_pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    world
        .log
        .push(format!("{}?{}", request.path, query.join("&")));
    let token = request
        .header("x-rollbar-access-token")
        .unwrap_or_default()
        .to_string();
    if !world.projects.contains_key(&token) {
        return error(401, "invalid access token");
    }
    if let Some(fault) = world.draw_fault() {
        return fault;
    }
    let (slow_rate, cut_rate) = (world.faults.slow.min(1.0), world.faults.cut_short.min(1.0));
    let slow = slow_rate > 0.0 && world.rng.random_bool(slow_rate);
    let cut = cut_rate > 0.0 && world.rng.random_bool(cut_rate);
    let reply = route(world, &token, &request);
    let reply = match reply {
        Reply::Response {
            status: 200, body, ..
        } if cut => {
            world.faults_served += 1;
            Reply::CutShort { body }
        }
        other => other,
    };
    let reply = reply
        .with_header("x-rate-limit-limit", "5000")
        .with_header("x-rate-limit-remaining", "4999")
        .with_header("x-rate-limit-reset", "0")
        .with_header("x-rate-limit-remaining-seconds", "60");
    let mut delay = world.latency;
    if slow {
        world.faults_served += 1;
        delay += Duration::from_millis(300);
    }
    if let (Some((above, slow_for)), Some(Ok(limit))) = (
        world.slow_above,
        request.query("limit").map(str::parse::<usize>),
    ) {
        if request.path.starts_with("/api/1/instances") && limit > above {
            delay += slow_for;
        }
    }
    if delay.is_zero() {
        reply
    } else {
        Reply::Delayed(delay, Box::new(reply))
    }
}

/// Whether the occurrence `id` is listed yet (see `Project::unlisted_until`).
fn listed(project: &Project, id: i64, now: Instant) -> bool {
    project
        .unlisted_until
        .get(&id)
        .is_none_or(|until| *until <= now)
}

/// An item's status as a name (older payloads send 1 to 4).
fn status_name(item: &Value) -> &str {
    match &item["status"] {
        Value::String(s) => s.as_str(),
        Value::Number(n) => match n.as_i64() {
            Some(1) => "active",
            Some(2) => "resolved",
            Some(3) => "muted",
            Some(4) => "archived",
            _ => "unknown",
        },
        _ => "unknown",
    }
}

fn route(world: &mut World, token: &str, request: &Request) -> Reply {
    let path = request.path.trim_end_matches('/');
    if path == "/api/1/instances" {
        let arrivals = world.arrivals_per_request;
        if arrivals > 0 {
            let tokens: Vec<String> = world.projects.keys().cloned().collect();
            for t in tokens {
                world.arrive(&t, arrivals);
            }
        }
        let Some(project) = world.projects.get(token) else {
            return error(401, "invalid access token");
        };
        let limit = match request.query("limit").map(str::parse::<usize>) {
            None => 20,
            Some(Ok(limit)) if (1..=5000).contains(&limit) => limit,
            Some(_) => return error(422, "limit must be between 1 and 5000"),
        };
        let last_id = request.query("lastId").filter(|_| !world.ignore_last_id);
        let page: Vec<Value> = if let Some(last_id) = last_id {
            let Ok(last_id) = last_id.parse::<i64>() else {
                return error(422, "lastId must be an integer");
            };
            let now = Instant::now();
            project
                .occurrences
                .range(..last_id)
                .rev()
                .filter(|(id, _)| listed(project, **id, now))
                .take(limit)
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            // Page-number paging (20 a page by default) shifts as occurrences arrive.
            let page = request
                .query("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let now = Instant::now();
            project
                .occurrences
                .iter()
                .rev()
                .filter(|(id, _)| listed(project, **id, now))
                .map(|(_, v)| v)
                .skip((page - 1) * limit)
                .take(limit)
                .cloned()
                .collect()
        };
        return Reply::json(
            200,
            &json!({"err": 0, "result": {"instances": page, "page": 1}}),
        );
    }
    let Some(project) = world.projects.get(token) else {
        return error(401, "invalid access token");
    };
    if path == "/api/1/items" {
        let page = request
            .query("page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let mut statuses = request.query_all("status");
        if statuses.is_empty() {
            statuses.push("active"); // undocumented: the narrowest reading (module docs)
        }
        if let Some(bad) = statuses
            .iter()
            .find(|s| !["active", "resolved", "muted", "archived"].contains(s))
        {
            return error(422, &format!("invalid status: {bad}"));
        }
        let ids: Option<Vec<i64>> = match request.query("ids").filter(|_| !world.ignore_ids) {
            None => None,
            Some(list) => match list.split(',').map(|id| id.trim().parse::<i64>()).collect() {
                Ok(ids) => Some(ids),
                Err(_) => return error(422, "ids must be a comma-separated list of integers"),
            },
        };
        // Most recently active first, like Rollbar's list: an item moves up the pages
        // when it gets a new occurrence.
        let mut items: Vec<&Value> = project
            .items
            .values()
            .filter(|item| statuses.contains(&status_name(item)))
            .filter(|item| {
                ids.as_ref()
                    .is_none_or(|ids| ids.contains(&item["id"].as_i64().unwrap_or(0)))
            })
            .collect();
        items.sort_by_key(|item| {
            (
                std::cmp::Reverse(item["last_occurrence_timestamp"].as_i64().unwrap_or(0)),
                item["id"].as_i64().unwrap_or(0),
            )
        });
        let total = items.len();
        let size = world.items_page;
        let page_items: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .cloned()
            .collect();
        return Reply::json(
            200,
            &json!({"err": 0, "result": {"items": page_items, "page": page, "total_count": total}}),
        );
    }
    if path == "/api/1/deploys" {
        let page = match request.query("page").map(str::parse::<usize>) {
            None => 1,
            Some(Ok(page)) if page >= 1 => page,
            Some(_) => return error(422, "page must be a positive integer"),
        };
        let limit = match request.query("limit").map(str::parse::<usize>) {
            None => 20,
            Some(Ok(limit)) if (1..=5000).contains(&limit) => limit,
            Some(_) => return error(422, "limit must be between 1 and 5000"),
        };
        // Most recent first: by start time, newest id first within a second.
        let mut deploys: Vec<&Value> = project.deploys.values().collect();
        deploys.sort_by_key(|d| {
            std::cmp::Reverse((
                d["start_time"].as_i64().unwrap_or(0),
                d["id"].as_i64().unwrap_or(0),
            ))
        });
        let page_deploys: Vec<Value> = deploys
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .cloned()
            .collect();
        return Reply::json(
            200,
            &json!({"err": 0, "result": {"page": page, "deploys": page_deploys}}),
        );
    }
    if let Some(id) = path.strip_prefix("/api/1/item/") {
        return match id.parse::<i64>().ok().and_then(|id| project.items.get(&id)) {
            Some(item) => Reply::json(200, &json!({"err": 0, "result": item})),
            None => error(404, "Item not found"),
        };
    }
    error(404, "Not found")
}
