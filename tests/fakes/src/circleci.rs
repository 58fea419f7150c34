//! A fake CircleCI API v2 on loopback: projects' pipelines newest first in pages of 20
//! behind opaque `next_page_token`s, workflows that finish later, reruns added to old
//! pipelines, approval jobs without numbers, job lists over several pages, 404 for a
//! pipeline with no workflows yet, and 429s with Retry-After.
//!
//! Rules and where they come from (CircleCI's API v2 OpenAPI spec, circleci/circleci-docs):
//! - Lists are `{"items": [...], "next_page_token": ...}`, the token `null` on the last page;
//!   `/workflow/{id}/job` pages with `page-token` although its parameters omit it.
//! - A project it does not know (a wrong slug or VCS prefix, a GitHub App project asked for
//!   as `gh/org/repo` instead of `circleci/<org-id>/<project-id>`, a token that cannot see
//!   it) is a 404 `{"message": "Project not found"}` (circleci/api-preview-docs#44).
//! - Workflow statuses are the spec's enum (success, running, not_run, failed, error,
//!   failing, on_hold, canceled, unauthorized); a failed workflow can leave jobs `blocked`
//!   or `not_run` for ever.
//! - 429 with `Retry-After` (the API docs' rate-limit section; no figure is published).
//! - Timestamps are the server's clock: a workflow re-run now is created now.
//! - Insights (`/insights/{slug}/workflows[/{name}]`) reports completed runs of named
//!   workflows, newest first, the default branch unless `all-branches=true`, `start-date`
//!   at most 90 days back (the spec's parameter descriptions).

use crate::http::{serve_state, Reply, Request, ServerTask};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const PIPELINE_PAGE: usize = 20;
/// Small pages by default, so that the tests cross page boundaries; a benchmark sets the
/// API's own (`set_page_sizes`).
pub const JOB_PAGE: usize = 3;
const WORKFLOW_PAGE: usize = 2;

#[derive(Default)]
struct State {
    token: String,
    /// Pipeline ids per project slug, oldest first.
    projects: BTreeMap<String, Vec<String>>,
    pipelines: HashMap<String, Value>,
    /// Workflow ids per pipeline, in creation order.
    pipeline_workflows: HashMap<String, Vec<String>>,
    workflows: HashMap<String, Value>,
    jobs: HashMap<String, Vec<Value>>,
    next_id: u64,
    clock: Option<DateTime<Utc>>,
    /// The time a simulation set (a benchmark's day in fast motion).
    simulated: Option<DateTime<Utc>>,
    requests: u64,
    /// Requests per path kind (`pipelines`, `workflows`, `workflow`, `jobs`).
    requests_by_kind: BTreeMap<&'static str, u64>,
    /// Page sizes of a pipeline's workflows and a workflow's jobs (None: the small defaults).
    page_sizes: Option<(usize, usize)>,
    /// A project's pipeline list hands back the token it was sent (a stuck service).
    repeat_tokens: bool,
    /// Every request that continues a list (sends a page token) answers 404.
    lose_continuations: bool,
    /// Pipeline-list page tokens carry the generation they were issued in; one from an
    /// older generation is stale.
    token_generation: u64,
    /// Continuations of pipeline lists answer 500 (a service failing mid-walk).
    fail_pipeline_continuations: bool,
    /// Workflows whose job list answers 500, for ever.
    broken_workflows: std::collections::HashSet<String>,
    /// Insights answers 500 while set.
    fail_insights: bool,
    /// Every n-th request answers 429.
    throttle_every: Option<u64>,
    throttled: u64,
    rng: Option<StdRng>,
}

/// What the fake holds, in the fields the tests compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Truth {
    /// (id, project slug, number, revision)
    pub pipelines: Vec<(String, String, i64, String)>,
    /// (id, pipeline id, name, status)
    pub workflows: Vec<(String, String, String, String)>,
    /// (id, workflow id, job number, type, status)
    pub jobs: Vec<(String, String, Option<i64>, String, String)>,
}

#[derive(Clone)]
pub struct FakeCircleCi {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl State {
    /// A pipeline of `slug` created at `at`, last in its project, as the API serves one
    /// (`revision`: a made-up sha when none is given).
    fn add_pipeline(&mut self, slug: &str, at: DateTime<Utc>, revision: Option<&str>) -> String {
        let id = self.id("p");
        let number = self.projects.get(slug).map_or(0, Vec::len) as i64 + 1;
        let revision =
            revision.map_or_else(|| format!("{:040x}", self.next_id * 7919), String::from);
        self.pipelines.insert(
            id.clone(),
            json!({
                "id": id, "errors": [], "project_slug": slug, "number": number,
                "state": "created", "created_at": stamp(at), "updated_at": stamp(at),
                "trigger_parameters": {},
                "trigger": {"type": "webhook", "received_at": stamp(at), "actor": {"login": "ann", "avatar_url": null}},
                "vcs": {"provider_name": "GitHub", "origin_repository_url": format!("https://github.com/{slug}"),
                        "target_repository_url": format!("https://github.com/{slug}"), "revision": revision,
                        "branch": "main", "commit": {"subject": format!("Change {number}"), "body": ""}},
            }),
        );
        self.projects
            .entry(slug.to_string())
            .or_default()
            .push(id.clone());
        id
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!(
            "{prefix}{:04x}-0000-4000-8000-{:012x}",
            self.next_id % 0xffff,
            self.next_id
        )
    }

    /// The server's clock: the time a simulation set, else the wall clock (never going
    /// back, so that each event has its own instant).
    fn now(&mut self) -> DateTime<Utc> {
        let now = match self.simulated {
            Some(at) => at,
            None => Utc::now(),
        };
        let now = self
            .clock
            .map_or(now, |last| now.max(last + Duration::milliseconds(1)));
        self.clock = Some(now);
        now
    }

    fn rng(&mut self) -> &mut StdRng {
        self.rng.get_or_insert_with(|| StdRng::seed_from_u64(1))
    }

    fn add_workflow(
        &mut self,
        pipeline_id: &str,
        name: &str,
        running: bool,
        rerun_of: Option<&str>,
        created: DateTime<Utc>,
    ) -> String {
        let pipeline = self.pipelines[pipeline_id].clone();
        let id = self.id("w");
        let approval = self.rng().random_range(0..4) == 0;
        let job_count = self.rng().random_range(1..8);
        let mut jobs = Vec::new();
        for n in 0..job_count {
            let job_id = self.id("j");
            let number = self.next_id as i64;
            let status = if running && n == job_count - 1 {
                "running"
            } else {
                "success"
            };
            jobs.push(json!({
                "id": job_id, "job_number": number, "name": format!("job-{n}"), "type": "build",
                "status": status, "project_slug": pipeline["project_slug"],
                "started_at": stamp(created + Duration::seconds(n as i64)),
                "stopped_at": if status == "success" { json!(stamp(created + Duration::seconds(60 + n as i64))) } else { Value::Null },
                "dependencies": [],
            }));
        }
        let mut status = if running { "running" } else { "success" };
        if approval {
            // A hold: an approval job with no number, the workflow on_hold until approved.
            let job_id = self.id("a");
            jobs.push(json!({
                "id": job_id, "name": "hold-for-approval", "type": "approval", "status": "on_hold",
                "approval_request_id": job_id, "dependencies": [], "project_slug": pipeline["project_slug"],
                "started_at": null, "stopped_at": null,
            }));
            status = "on_hold";
        }
        self.workflows.insert(
            id.clone(),
            json!({
                "id": id, "pipeline_id": pipeline_id, "pipeline_number": pipeline["number"],
                "project_slug": pipeline["project_slug"], "name": name, "status": status,
                "created_at": stamp(created), "stopped_at": Value::Null,
                "started_by": "5e9c1a2b-0000-4000-8000-000000000001", "canceled_by": null,
                "errored_by": null, "tag": if rerun_of.is_some() { json!("rerun") } else { Value::Null },
                "auto_rerun_number": 0, "max_auto_reruns": 0,
            }),
        );
        self.jobs.insert(id.clone(), jobs);
        self.pipeline_workflows
            .entry(pipeline_id.to_string())
            .or_default()
            .push(id.clone());
        id
    }
}

impl FakeCircleCi {
    pub async fn start(token: &str, seed: u64) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            rng: Some(StdRng::seed_from_u64(seed)),
            ..State::default()
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

    /// For `CIRCLECI_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v2", self.addr)
    }

    /// The pipeline list hands back the page token it was sent, for ever.
    pub fn repeat_page_tokens(&self, repeat: bool) {
        self.lock().repeat_tokens = repeat;
    }

    /// Every request that continues a list (sends a `page-token`) answers 404. CircleCI's
    /// spec documents no 404 for a page token (its lists answer `default`: an error); this
    /// stands for a token that expired or a list gone mid-walk, which must not read as
    /// the end of the list.
    pub fn lose_continuations(&self, lose: bool) {
        self.lock().lose_continuations = lose;
    }

    /// Every pipeline-list page token handed out so far goes stale: sent back, it answers
    /// 404 `{"message": "Not Found"}`, as users report the real list does
    /// (circleci/circleci-docs#6472, "Get all Pipelines sometimes gives an invalid
    /// next-page-token"). Tokens handed out later work.
    pub fn expire_page_tokens(&self) {
        self.lock().token_generation += 1;
    }

    /// Continuations of the pipeline lists answer 500 (the spec's `default` error) while set.
    pub fn fail_pipeline_continuations(&self, fail: bool) {
        self.lock().fail_pipeline_continuations = fail;
    }

    /// Insights answers 500 (the spec's `default` error) while set.
    pub fn fail_insights(&self, fail: bool) {
        self.lock().fail_insights = fail;
    }

    /// The job list of `workflow` answers 500 while broken.
    pub fn break_workflow_jobs(&self, workflow: &str, broken: bool) {
        let mut state = self.lock();
        if broken {
            state.broken_workflows.insert(workflow.to_string());
        } else {
            state.broken_workflows.remove(workflow);
        }
    }

    /// Ids of the workflows whose status is `status`.
    pub fn workflows_with_status(&self, status: &str) -> Vec<String> {
        let state = self.lock();
        let mut ids: Vec<String> = state
            .workflows
            .values()
            .filter(|w| w["status"] == status)
            .filter_map(|w| w["id"].as_str().map(String::from))
            .collect();
        ids.sort();
        ids
    }

    /// Pages of `workflows` workflows and `jobs` jobs (the API's lists hold about 20).
    pub fn set_page_sizes(&self, workflows: usize, jobs: usize) {
        self.lock().page_sizes = Some((workflows, jobs));
    }

    /// Sets the server's clock (None: the wall clock again).
    pub fn set_time(&self, at: Option<DateTime<Utc>>) {
        self.lock().simulated = at;
    }

    /// Adds `count` pipelines to a project, newest last, up to now: 30 s apart, or closer
    /// when they must fit after what the fake already holds (newer pipelines are always
    /// created later, as the list's order says). About one in eight has no workflow yet
    /// (its workflow list is a 404); `running` of them are still running.
    pub fn add_pipelines(&self, slug: &str, count: usize, running: usize) -> Vec<String> {
        let mut state = self.lock();
        let previous = state.clock;
        let now = state.now();
        let step = match previous {
            Some(previous) => ((now - previous) / (count as i32 + 1)).min(Duration::seconds(30)),
            None => Duration::seconds(30),
        };
        let mut ids = Vec::new();
        for n in 0..count {
            let created = now - step * (count - n) as i32;
            let id = state.add_pipeline(slug, created, None);
            let without_workflows = state.rng().random_range(0..8) == 0;
            if !without_workflows {
                let is_running = n + running >= count;
                let at = created + Duration::milliseconds(1);
                state.add_workflow(&id, "build-and-test", is_running, None, at);
                if state.rng().random_range(0..3) == 0 {
                    let at = created + Duration::milliseconds(2);
                    state.add_workflow(&id, "deploy", is_running, None, at);
                }
            }
            ids.push(id);
        }
        ids
    }

    /// A pipeline created at `at` with `workflows` running workflows (for simulations).
    pub fn add_pipeline_at(&self, slug: &str, at: DateTime<Utc>, workflows: usize) -> String {
        let mut state = self.lock();
        let id = state.add_pipeline(slug, at, None);
        for n in 0..workflows {
            let name = if n == 0 { "build-and-test" } else { "deploy" };
            state.add_workflow(&id, name, true, None, at + Duration::seconds(n as i64 + 1));
        }
        id
    }

    /// Running and on-hold workflows created before `before` finish, with their jobs.
    pub fn finish_created_before(&self, before: DateTime<Utc>) {
        let mut state = self.lock();
        let ids: Vec<String> = state
            .workflows
            .iter()
            .filter(|(_, w)| {
                (w["status"] == "running" || w["status"] == "on_hold")
                    && w["created_at"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t < before)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let clock = state.now();
            if let Some(workflow) = state.workflows.get_mut(&id) {
                workflow["status"] = json!("success");
                workflow["stopped_at"] = json!(stamp(clock));
            }
            for job in state.jobs.get_mut(&id).into_iter().flatten() {
                if job["status"] == "running" || job["status"] == "on_hold" {
                    job["status"] = json!("success");
                    job["stopped_at"] = json!(stamp(clock));
                }
            }
        }
    }

    /// A pipeline of `revision` created at `at`, with one successful workflow.
    pub fn add_finished_pipeline(&self, slug: &str, revision: &str, at: DateTime<Utc>) -> String {
        let mut state = self.lock();
        let id = state.add_pipeline(slug, at, Some(revision));
        let workflow = state.add_workflow(&id, "build-and-test", false, None, at);
        if let Some(w) = state.workflows.get_mut(&workflow) {
            w["status"] = json!("success");
        }
        for job in state.jobs.get_mut(&workflow).into_iter().flatten() {
            job["status"] = json!("success");
        }
        id
    }

    /// A pipeline of `revision` on `branch` whose workflow failed and was re-run to success
    /// ten minutes later (the re-run is a new workflow of the same name, `rerun_of` the
    /// first, as "Rerun a workflow" makes one). Returns the pipeline's id.
    pub fn add_rerun_pipeline(
        &self,
        slug: &str,
        revision: &str,
        branch: &str,
        at: DateTime<Utc>,
    ) -> String {
        let mut state = self.lock();
        let id = state.add_pipeline(slug, at, Some(revision));
        if let Some(p) = state.pipelines.get_mut(&id) {
            p["vcs"]["branch"] = json!(branch);
        }
        let first = state.add_workflow(&id, "build-and-deploy", false, None, at);
        if let Some(w) = state.workflows.get_mut(&first) {
            w["status"] = json!("failed");
        }
        let rerun = state.add_workflow(
            &id,
            "build-and-deploy",
            false,
            Some(&first),
            at + Duration::minutes(10),
        );
        for workflow in [&first, &rerun] {
            let (status, took) = if workflow == &first {
                ("failed", 5)
            } else {
                ("success", 15)
            };
            if let Some(w) = state.workflows.get_mut(workflow) {
                w["status"] = json!(status);
                // Final workflows say when they stopped: 13:35 and 13:45 for a 13:30 one.
                w["stopped_at"] = json!(stamp(at + Duration::minutes(took)));
            }
            for job in state.jobs.get_mut(workflow).into_iter().flatten() {
                if job["status"] == "on_hold" || job["status"] == "running" {
                    job["status"] = json!("success");
                }
            }
        }
        id
    }

    /// A finished, successful pipeline of `revision` on another branch than main.
    pub fn add_branch_pipeline(
        &self,
        slug: &str,
        revision: &str,
        branch: &str,
        at: DateTime<Utc>,
    ) -> String {
        let id = self.add_finished_pipeline(slug, revision, at);
        if let Some(p) = self.lock().pipelines.get_mut(&id) {
            p["vcs"]["branch"] = json!(branch);
        }
        id
    }

    /// Every running or on-hold workflow finishes (holds approved), with all its jobs.
    pub fn finish_everything(&self) {
        let mut state = self.lock();
        let ids: Vec<String> = state.workflows.keys().cloned().collect();
        for id in ids {
            let clock = state.now();
            let failed = state.rng().random_range(0..5) == 0;
            let workflow = state.workflows.get_mut(&id).expect("known workflow");
            // Only workflows still moving change; a final one stays as it ended.
            if workflow["status"] != "running" && workflow["status"] != "on_hold" {
                continue;
            }
            workflow["status"] = json!(if failed { "failed" } else { "success" });
            workflow["stopped_at"] = json!(stamp(clock));
            for job in state.jobs.get_mut(&id).into_iter().flatten() {
                if job["status"] == "on_hold" {
                    job["status"] = json!("success");
                    job["approved_by"] = json!("5e9c1a2b-0000-4000-8000-000000000002");
                } else if job["status"] == "running" {
                    job["status"] = json!(if failed { "failed" } else { "success" });
                    job["stopped_at"] = json!(stamp(clock));
                }
            }
        }
    }

    /// A rerun: a new workflow on an existing pipeline (the pipeline itself does not change).
    pub fn rerun(&self, pipeline_id: &str) -> String {
        let mut state = self.lock();
        let now = state.now();
        state.add_workflow(pipeline_id, "build-and-test", false, Some(pipeline_id), now)
    }

    /// A workflow that failed and left its other jobs `blocked` and `not_run` (final: its
    /// status decides, the jobs never move again). Returns its id.
    pub fn fail_leaving_blocked_jobs(&self, pipeline_id: &str) -> String {
        let mut state = self.lock();
        let now = state.now();
        let id = state.add_workflow(pipeline_id, "build-and-test", false, None, now);
        if let Some(workflow) = state.workflows.get_mut(&id) {
            workflow["status"] = json!("failed");
            workflow["stopped_at"] = json!(stamp(now));
        }
        let jobs = state.jobs.entry(id.clone()).or_default();
        for (n, job) in jobs.iter_mut().enumerate() {
            job["status"] = json!(match n {
                0 => "failed",
                1 => "blocked",
                _ => "not_run",
            });
        }
        if jobs.len() < 2 {
            jobs.push(json!({"id": format!("{id}-blocked"), "job_number": null, "name": "deploy",
                "type": "build", "status": "blocked", "dependencies": [], "started_at": null, "stopped_at": null}));
        }
        id
    }

    /// Requests answered so far per kind of path: `pipelines` (a project's list),
    /// `workflows` (a pipeline's), `workflow` (one by id) and `jobs` (a workflow's).
    pub fn requests_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.lock().requests_by_kind.clone()
    }

    /// Pipelines that have no workflow yet get one (the 404 turns into a list).
    pub fn start_waiting_pipelines(&self) {
        let mut state = self.lock();
        let waiting: Vec<String> = state
            .pipelines
            .keys()
            .filter(|id| !state.pipeline_workflows.contains_key(*id))
            .cloned()
            .collect();
        for id in waiting {
            let now = state.now();
            state.add_workflow(&id, "build-and-test", false, None, now);
        }
    }

    /// The project's pipeline ids, oldest first.
    pub fn pipeline_ids(&self, slug: &str) -> Vec<String> {
        self.lock().projects.get(slug).cloned().unwrap_or_default()
    }

    pub fn set_throttle_every(&self, every: Option<u64>) {
        self.lock().throttle_every = every;
    }

    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    pub fn truth(&self) -> Truth {
        let state = self.lock();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut truth = Truth {
            pipelines: state
                .pipelines
                .values()
                .map(|p| {
                    (
                        text(&p["id"]),
                        text(&p["project_slug"]),
                        p["number"].as_i64().unwrap_or(0),
                        text(&p["vcs"]["revision"]),
                    )
                })
                .collect(),
            workflows: state
                .workflows
                .values()
                .map(|w| {
                    (
                        text(&w["id"]),
                        text(&w["pipeline_id"]),
                        text(&w["name"]),
                        text(&w["status"]),
                    )
                })
                .collect(),
            jobs: state
                .jobs
                .iter()
                .flat_map(|(workflow, jobs)| {
                    jobs.iter().map(move |j| {
                        (
                            text(&j["id"]),
                            workflow.clone(),
                            j["job_number"].as_i64(),
                            text(&j["type"]),
                            text(&j["status"]),
                        )
                    })
                })
                .collect(),
        };
        truth.pipelines.sort();
        truth.workflows.sort();
        truth.jobs.sort();
        truth
    }
}

/// The project's workflows Insights reports: final ones (its run statuses are success,
/// failed, error, canceled and unauthorized), of `name` when given, on the default branch
/// (`main` here) unless every branch is asked for; each with its pipeline's branch.
fn insight_runs(state: &State, slug: &str, name: Option<&str>, all_branches: bool) -> Vec<Value> {
    let final_statuses = ["success", "failed", "error", "canceled", "unauthorized"];
    let mut runs = Vec::new();
    for pipeline_id in state.projects.get(slug).into_iter().flatten() {
        let branch = state.pipelines[pipeline_id]["vcs"]["branch"].clone();
        if !all_branches && branch != "main" {
            continue;
        }
        for workflow_id in state
            .pipeline_workflows
            .get(pipeline_id)
            .into_iter()
            .flatten()
        {
            let workflow = &state.workflows[workflow_id];
            let status = workflow["status"].as_str().unwrap_or_default();
            if final_statuses.contains(&status) && name.is_none_or(|n| workflow["name"] == n) {
                let mut run = workflow.clone();
                run["_branch"] = branch.clone();
                runs.push(run);
            }
        }
    }
    runs
}

fn time_of(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn not_found() -> Reply {
    Reply::json(404, &json!({"message": "Not found."}))
}

fn project_not_found() -> Reply {
    Reply::json(404, &json!({"message": "Project not found"}))
}

/// A page of `items` starting after the item whose id is in `token` (ids, not offsets:
/// pages do not shift when new items arrive at the top).
fn page_after(items: &[Value], token: Option<&str>, size: usize) -> Reply {
    let start = match token {
        None => 0,
        Some(token) => match token
            .strip_prefix("after:")
            .and_then(|id| items.iter().position(|i| i["id"] == id))
        {
            Some(position) => position + 1,
            None => return Reply::json(400, &json!({"message": "Invalid page token."})),
        },
    };
    let page: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len())
        .then(|| {
            page.last()
                .map(|last| format!("after:{}", last["id"].as_str().unwrap_or_default()))
        })
        .flatten();
    Reply::json(200, &json!({"items": page, "next_page_token": next}))
}

fn handle(state: &mut State, request: Request) -> Reply {
    state.requests += 1;
    if request.header("circle-token") != Some(state.token.as_str()) {
        return Reply::json(401, &json!({"message": "Invalid token provided."}));
    }
    if let Some(every) = state.throttle_every {
        if state.requests.is_multiple_of(every) {
            state.throttled += 1;
            return Reply::json(429, &json!({"message": "Rate limit exceeded"}))
                .with_header("retry-after", "1");
        }
    }
    let Some(path) = request.path.strip_prefix("/api/v2/") else {
        return not_found();
    };
    let token = request.query("page-token");
    if token.is_some() && state.lose_continuations {
        return not_found();
    }
    let parts: Vec<&str> = path.split('/').collect();
    let kind = match parts.as_slice() {
        ["project", ..] => "pipelines",
        ["pipeline", _, "workflow"] => "workflows",
        ["workflow", _, "job"] => "jobs",
        ["workflow", _] => "workflow",
        ["insights", ..] => "insights",
        _ => "other",
    };
    *state.requests_by_kind.entry(kind).or_default() += 1;
    match parts.as_slice() {
        ["project", vcs, org, project, "pipeline"] => {
            let slug = format!("{vcs}/{org}/{project}");
            let Some(ids) = state.projects.get(&slug) else {
                return project_not_found();
            };
            let newest_first: Vec<Value> = ids
                .iter()
                .rev()
                .map(|id| state.pipelines[id].clone())
                .collect();
            if state.repeat_tokens {
                if let Some(token) = token {
                    let page: Vec<Value> =
                        newest_first.iter().take(PIPELINE_PAGE).cloned().collect();
                    return Reply::json(200, &json!({"items": page, "next_page_token": token}));
                }
            }
            if token.is_some() && state.fail_pipeline_continuations {
                return Reply::json(500, &json!({"message": "Internal Server Error"}));
            }
            // Tokens of this list are `<position>~g<generation>`: one from before
            // `expire_page_tokens` is stale.
            let generation = state.token_generation;
            let position = match token.map(|t| t.rsplit_once("~g")) {
                None => None,
                Some(Some((position, issued))) if issued == generation.to_string() => {
                    Some(position)
                }
                Some(Some(_)) => return Reply::json(404, &json!({"message": "Not Found"})),
                Some(None) => return Reply::json(400, &json!({"message": "Invalid page token."})),
            };
            let reply = page_after(&newest_first, position, PIPELINE_PAGE);
            reply.map_json(|body| {
                if let Some(next) = body["next_page_token"].as_str() {
                    body["next_page_token"] = json!(format!("{next}~g{generation}"));
                }
            })
        }
        ["pipeline", id, "workflow"] => match state.pipeline_workflows.get(*id) {
            None => not_found(),
            Some(ids) => {
                let workflows: Vec<Value> =
                    ids.iter().map(|w| state.workflows[w].clone()).collect();
                let size = state.page_sizes.map_or(WORKFLOW_PAGE, |(w, _)| w);
                page_after(&workflows, token, size)
            }
        },
        // Insights (API v2 OpenAPI, "Get summary metrics for a project's workflows" and
        // "Get recent runs of a workflow"): named workflows, then a name's completed runs,
        // newest first, re-runs included; the default branch only unless `all-branches`
        // is true; `start-date` "at most 90 days" back, else refused.
        ["insights", ..] if state.fail_insights => {
            Reply::json(500, &json!({"message": "Internal Server Error"}))
        }
        ["insights", vcs, org, project, "workflows"] => {
            let slug = format!("{vcs}/{org}/{project}");
            let all_branches = request.query("all-branches") == Some("true");
            let mut names: Vec<String> = insight_runs(state, &slug, None, all_branches)
                .iter()
                .filter_map(|w| w["name"].as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            let items: Vec<Value> = names
                .iter()
                .map(|name| json!({"name": name, "project_id": slug, "metrics": {}, "window_start": null, "window_end": null}))
                .collect();
            Reply::json(200, &json!({"items": items, "next_page_token": null}))
        }
        ["insights", vcs, org, project, "workflows", name] => {
            let slug = format!("{vcs}/{org}/{project}");
            let all_branches = request.query("all-branches") == Some("true");
            let since = match request
                .query("start-date")
                .map(DateTime::parse_from_rfc3339)
            {
                None => None,
                Some(Ok(at)) => Some(at.with_timezone(&Utc)),
                Some(Err(_)) => {
                    return Reply::json(400, &json!({"message": "start-date is not a date-time"}))
                }
            };
            if since.is_some_and(|at| state.now() - at > Duration::days(90)) {
                return Reply::json(
                    400,
                    &json!({"message": "start-date must be within 90 days"}),
                );
            }
            let mut runs = insight_runs(state, &slug, Some(name), all_branches);
            runs.retain(|w| since.is_none_or(|at| time_of(&w["created_at"]) >= Some(at)));
            runs.sort_by_key(|w| std::cmp::Reverse(time_of(&w["created_at"])));
            let items: Vec<Value> = runs
                .iter()
                .map(|w| json!({
                    "id": w["id"], "branch": w["_branch"], "duration": 60, "created_at": w["created_at"],
                    "stopped_at": w["stopped_at"], "credits_used": 10, "status": w["status"], "is_approval": false,
                }))
                .collect();
            page_after(&items, token, PIPELINE_PAGE)
        }
        ["workflow", id] => match state.workflows.get(*id) {
            Some(workflow) => Reply::json(200, workflow),
            None => not_found(),
        },
        ["workflow", id, "job"] if state.broken_workflows.contains(*id) => {
            Reply::json(500, &json!({"message": "Internal Server Error"}))
        }
        ["workflow", id, "job"] => match state.jobs.get(*id) {
            Some(jobs) => page_after(jobs, token, state.page_sizes.map_or(JOB_PAGE, |(_, j)| j)),
            None => not_found(),
        },
        _ => not_found(),
    }
}
