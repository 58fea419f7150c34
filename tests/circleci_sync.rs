//! `heimdallr sync circleci` end to end: the real binary against the fake CircleCI API,
//! into PostgreSQL and the embedded file, over several runs with changes in between
//! (workflows finishing, holds approved, reruns of old pipelines, new pipelines, 429s),
//! and killed at random points. The warehouse must equal the fake's truth.

mod common;

use common::*;
use heimdallr_fakes::circleci::{FakeCircleCi, Truth};
use rand::{RngExt, SeedableRng};
use std::time::Duration;
use tokio::process::Command;

const TOKEN: &str = "cci-token-7d3f1e9a0b2c4d5e6f";
const WEB: &str = "gh/acme/web";
const API: &str = "circleci/8e4zQwXy/1a2b3c4d";

fn circleci(target: &Target, fake: &FakeCircleCi, extra: &[&str]) -> Command {
    let mut command = heimdallr(target, "http://127.0.0.1:9/unused", "");
    command
        .env("CIRCLECI_TOKEN", TOKEN)
        .env("CIRCLECI_API_URL", fake.api_url())
        .env("CIRCLECI_PROJECTS", format!("{WEB},{API}"))
        .args(["sync", "circleci", "--once"])
        .args(extra);
    command
}

async fn sync(target: &Target, fake: &FakeCircleCi, extra: &[&str]) -> Finished {
    run_ok(circleci(target, fake, extra), TOKEN).await
}

/// What the warehouse holds, in the fake's terms.
async fn stored(target: &Target) -> Truth {
    let schema = target.schema();
    let cell = |c: &Option<String>| c.clone().unwrap_or_default();
    let number = |c: &Option<String>| c.as_deref().map(|n| n.parse::<i64>().expect("a number"));
    let pipelines = query_text(
        target,
        format!("SELECT id, project_slug, CAST(number AS VARCHAR), revision FROM {schema}.circleci_pipelines"),
    )
    .await;
    let workflows = query_text(
        target,
        format!("SELECT id, pipeline_id, name, status FROM {schema}.circleci_workflows"),
    )
    .await;
    let jobs = query_text(
        target,
        format!("SELECT id, workflow_id, CAST(job_number AS VARCHAR), type, status FROM {schema}.circleci_jobs"),
    )
    .await;
    let mut truth = Truth {
        pipelines: pipelines
            .iter()
            .map(|r| {
                (
                    cell(&r[0]),
                    cell(&r[1]),
                    number(&r[2]).unwrap_or(0),
                    cell(&r[3]),
                )
            })
            .collect(),
        workflows: workflows
            .iter()
            .map(|r| (cell(&r[0]), cell(&r[1]), cell(&r[2]), cell(&r[3])))
            .collect(),
        jobs: jobs
            .iter()
            .map(|r| {
                (
                    cell(&r[0]),
                    cell(&r[1]),
                    number(&r[2]),
                    cell(&r[3]),
                    cell(&r[4]),
                )
            })
            .collect(),
    };
    truth.pipelines.sort();
    truth.workflows.sort();
    truth.jobs.sort();
    truth
}

fn assert_equal(stored: &Truth, truth: &Truth, when: &str) {
    assert_eq!(
        stored.pipelines.len(),
        truth.pipelines.len(),
        "{when}: pipelines"
    );
    assert_eq!(stored.pipelines, truth.pipelines, "{when}: pipelines");
    assert_eq!(stored.workflows, truth.workflows, "{when}: workflows");
    assert_eq!(stored.jobs, truth.jobs, "{when}: jobs");
}

async fn series_of_runs(target: Target, args: &[&str], seed: u64) {
    let fake = FakeCircleCi::start(TOKEN, seed).await.unwrap();
    fake.add_pipelines(WEB, 65, 5);
    fake.add_pipelines(API, 25, 3);
    fake.set_throttle_every(Some(40));

    sync(&target, &fake, args).await;
    let first = fake.truth();
    assert!(
        first
            .jobs
            .iter()
            .any(|j| j.2.is_none() && j.3 == "approval"),
        "approval jobs without numbers"
    );
    assert!(first
        .workflows
        .iter()
        .any(|w| w.3 == "running" || w.3 == "on_hold"));
    assert_equal(&stored(&target).await, &first, "after the backfill");

    // Workflows finish and holds are approved; new pipelines arrive; a recent pipeline
    // (inside the look-back window) is re-run.
    fake.finish_everything();
    let web = fake.pipeline_ids(WEB);
    fake.rerun(&web[web.len() - 3]);
    fake.add_pipelines(WEB, 4, 2);
    sync(&target, &fake, args).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after the second run",
    );

    fake.finish_everything();
    let api = fake.pipeline_ids(API);
    fake.rerun(&api[api.len() - 1]);
    sync(&target, &fake, args).await;
    let truth = fake.truth();
    assert_equal(&stored(&target).await, &truth, "after the third run");
    assert!(truth
        .workflows
        .iter()
        .all(|w| w.3 == "success" || w.3 == "failed"));
    assert!(fake.throttled() > 0, "429s were served and retried");

    // Nothing moves: one more run changes nothing and leaves nothing pending.
    let finished = sync(&target, &fake, args).await;
    assert_equal(&stored(&target).await, &truth, "after a quiet run");
    assert!(
        finished
            .stdout
            .contains("circleci/pipelines/gh/acme/web: succeeded"),
        "{}",
        finished.stdout
    );
    let state = query_text(
        &target,
        format!(
            "SELECT CAST(cursor AS VARCHAR) FROM {}._heimdallr_state WHERE source = 'circleci'",
            target.schema()
        ),
    )
    .await;
    assert_eq!(state.len(), 2);
    // Both streams caught up after their last commit: their heartbeats say so.
    let fresh_heartbeats = query_text(
        &target,
        format!(
            "SELECT CAST(COUNT(*) AS VARCHAR) FROM {}._heimdallr_state WHERE source = 'circleci' \
             AND caught_up_at >= updated_at",
            target.schema()
        ),
    )
    .await;
    assert_eq!(fresh_heartbeats[0][0].as_deref(), Some("2"));
    for row in state {
        let cursor: serde_json::Value = serde_json::from_str(row[0].as_deref().unwrap()).unwrap();
        assert_eq!(
            cursor["pending_workflows"],
            serde_json::json!([]),
            "{cursor}"
        );
        assert!(
            cursor["high_water"].is_string() && cursor["walk"].is_null(),
            "{cursor}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_equals_the_source_after_runs_with_changes_between_them() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cci"),
    };
    // A short window and a sweep every run.
    series_of_runs(
        target,
        &[
            "--circleci-lookback",
            "30m",
            "--circleci-sweep-interval",
            "0s",
        ],
        61,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_file_equals_the_source_after_runs_with_changes_between_them() {
    let dir = TempDir::new("cci-duck");
    series_of_runs(
        Target::Duck(dir.path().join("w.duckdb")),
        &["--circleci-lookback", "24h"],
        62,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_whose_workflows_appear_later_are_picked_up() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cci404"),
    };
    let fake = FakeCircleCi::start(TOKEN, 63).await.unwrap();
    fake.add_pipelines(WEB, 40, 0);
    fake.add_pipelines(API, 2, 0);
    sync(&target, &fake, &[]).await;
    let before = fake.truth();
    // Some pipelines had no workflow (404 on their children): not an error, no rows.
    let with_workflows: std::collections::BTreeSet<_> =
        before.workflows.iter().map(|w| w.1.clone()).collect();
    assert!(
        before
            .pipelines
            .iter()
            .any(|p| !with_workflows.contains(&p.0)),
        "the seed gives some 404 children"
    );
    fake.start_waiting_pipelines();
    sync(&target, &fake, &[]).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after the workflows appeared",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_it_still_ends_equal_to_the_source() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccikill"),
    };
    let fake = FakeCircleCi::start(TOKEN, 64).await.unwrap();
    fake.add_pipelines(WEB, 400, 6);
    fake.add_pipelines(API, 60, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(64);
    // A day of look-back: every run re-lists every pipeline, so runs last long enough to
    // be killed at any point.
    let args = ["--batch-rows", "40", "--circleci-lookback", "24h"];
    let mut killed = 0;
    for round in 0..8 {
        let mut child = spawn(circleci(&target, &fake, &args));
        let wait = Duration::from_millis(rng.random_range(50..900));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => assert!(status.expect("wait").success(), "a run failed on its own"),
            Err(_) => {
                child.start_kill().expect("SIGKILL");
                let _ = child.wait().await;
                killed += 1;
            }
        }
        if round == 3 {
            // Things change between the kills too.
            fake.finish_everything();
            fake.add_pipelines(WEB, 3, 1);
        }
    }
    eprintln!("{killed} of 8 runs killed mid-way");
    assert!(killed >= 3, "only {killed} runs were killed mid-way");
    fake.finish_everything();
    sync(&target, &fake, &args).await;
    sync(&target, &fake, &args).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_fails_the_run_with_a_clear_message() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccibad"),
    };
    let fake = FakeCircleCi::start("a-different-token", 65).await.unwrap();
    fake.add_pipelines(WEB, 3, 0);
    fake.add_pipelines(API, 3, 0);
    let finished = run(circleci(&target, &fake, &[])).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(finished.stderr.contains("HTTP 401"), "{}", finished.stderr);
    assert!(!finished.stderr.contains(TOKEN));
    // The token is refused once; the second project shares it and is not tried.
    let streams: Vec<&str> = finished
        .stdout
        .lines()
        .filter(|l| l.starts_with("circleci/pipelines/"))
        .collect();
    assert_eq!(streams.len(), 1, "{}", finished.stdout);
    assert_eq!(fake.requests(), 1, "one request, refused");

    let mut missing = circleci(&target, &fake, &[]);
    missing.env_remove("CIRCLECI_TOKEN");
    let finished = run(missing).await;
    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("CIRCLECI_TOKEN is not set"),
        "{}",
        finished.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_project_fails_its_stream_naming_the_slug_and_the_likely_causes() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cci404p"),
    };
    let fake = FakeCircleCi::start(TOKEN, 66).await.unwrap();
    fake.add_pipelines(WEB, 3, 0);
    // The GitHub App project written the OAuth way: CircleCI does not know that slug.
    let mut command = circleci(&target, &fake, &[]);
    command.env("CIRCLECI_PROJECTS", format!("{WEB},gh/acme/api"));
    let finished = run(command).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished
            .stdout
            .contains("circleci/pipelines/gh/acme/api: failed - 0 rows"),
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains("circleci/pipelines/gh/acme/web: succeeded"),
        "the other project still ran: {}",
        finished.stdout
    );
    for hint in [
        "project \"gh/acme/api\" not found",
        "circleci/<org-id>/<project-id>",
        "personal API token",
    ] {
        assert!(
            finished.stderr.contains(hint),
            "{hint}: {}",
            finished.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workflow_with_blocked_jobs_is_final_and_not_polled_again() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cciblocked"),
    };
    let fake = FakeCircleCi::start(TOKEN, 67).await.unwrap();
    let web = fake.add_pipelines(WEB, 5, 0);
    fake.add_pipelines(API, 1, 0);
    fake.finish_everything();
    fake.fail_leaving_blocked_jobs(&web[4]);
    sync(&target, &fake, &[]).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the first run");
    let polls_before = fake
        .requests_by_kind()
        .get("workflow")
        .copied()
        .unwrap_or(0);
    sync(&target, &fake, &[]).await;
    sync(&target, &fake, &[]).await;
    assert_eq!(
        fake.requests_by_kind()
            .get("workflow")
            .copied()
            .unwrap_or(0),
        polls_before,
        "no workflow is re-polled by id"
    );
    let cursors = query_text(
        &target,
        format!(
            "SELECT CAST(cursor AS VARCHAR) FROM {}._heimdallr_state WHERE source = 'circleci'",
            target.schema()
        ),
    )
    .await;
    for row in cursors {
        let cursor: serde_json::Value = serde_json::from_str(row[0].as_deref().unwrap()).unwrap();
        assert_eq!(
            cursor["pending_workflows"],
            serde_json::json!([]),
            "{cursor}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_older_than_the_look_back_lands_with_the_sweep() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccisweep"),
    };
    let fake = FakeCircleCi::start(TOKEN, 68).await.unwrap();
    let web = fake.add_pipelines(WEB, 60, 0);
    fake.add_pipelines(API, 2, 0);
    fake.finish_everything();
    let short = ["--circleci-lookback", "2m"];
    sync(&target, &fake, &short).await;
    // A pipeline from about 25 minutes ago is re-run: outside the 2-minute look-back.
    let rerun = fake.rerun(&web[10]);
    sync(&target, &fake, &short).await;
    let stored_now = stored(&target).await;
    assert!(
        !stored_now.workflows.iter().any(|w| w.0 == rerun),
        "the look-back alone does not reach it"
    );
    // The sweep (due at once here) re-lists a week of pipelines and finds it.
    let mut sweep = short.to_vec();
    sweep.extend(["--circleci-sweep-interval", "0s"]);
    sync(&target, &fake, &sweep).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the sweep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_listing_reads_only_workflows_created_since_the_last_listing() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccirelist"),
    };
    let fake = FakeCircleCi::start(TOKEN, 69).await.unwrap();
    // Two hours of history, every workflow final, all inside a 24-hour look-back.
    fake.set_time(Some(chrono::Utc::now() - chrono::Duration::hours(2)));
    let web = fake.add_pipelines(WEB, 30, 0);
    fake.add_pipelines(API, 5, 0);
    fake.finish_everything();
    fake.set_time(None);
    let args = ["--circleci-lookback", "24h"];
    sync(&target, &fake, &args).await;
    let before = fake.requests_by_kind();
    let finished = sync(&target, &fake, &args).await;
    let after = fake.requests_by_kind();
    let delta =
        |kind: &str| after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0);
    assert_eq!(
        delta("jobs"),
        0,
        "stored final workflows are not read again"
    );
    assert_eq!(
        delta("workflows"),
        35,
        "every pipeline in the window is re-listed"
    );
    assert!(
        finished
            .stdout
            .contains("circleci/pipelines/gh/acme/web: succeeded - 0 rows"),
        "a quiet run writes nothing: {}",
        finished.stdout
    );
    // A re-run now is new: it and its jobs are read.
    let rerun = fake.rerun(&web[3]);
    sync(&target, &fake, &args).await;
    assert!(stored(&target).await.workflows.iter().any(|w| w.0 == rerun));
    assert_equal(&stored(&target).await, &fake.truth(), "after the re-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_that_does_not_move_is_an_error_not_a_loop() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccistuck"),
    };
    let fake = FakeCircleCi::start(TOKEN, 70).await.unwrap();
    fake.add_pipelines(WEB, 45, 0);
    fake.add_pipelines(API, 1, 0);
    fake.repeat_page_tokens(true);
    let finished = run(circleci(&target, &fake, &[])).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stderr.contains("does not move on"),
        "{}",
        finished.stderr
    );
}

/// A 404 on a later page of a workflow or job list (an expired token, a list gone
/// mid-walk) is an error: read as the end of the list, the jobs after the first page
/// would be missing and the run would say succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_a_later_page_of_a_list_fails_the_run_instead_of_ending_the_list() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccilost"),
    };
    let fake = FakeCircleCi::start(TOKEN, 71).await.unwrap();
    fake.set_page_sizes(1, 1);
    fake.add_pipelines(WEB, 3, 0);
    fake.add_pipelines(API, 1, 0);
    fake.lose_continuations(true);
    let finished = run(circleci(&target, &fake, &[])).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stderr.contains("not found (HTTP 404)"),
        "{}",
        finished.stderr
    );
}

/// A walk cut short saves its page token; the real list can later answer that token with
/// 404 `{"message": "Not Found"}` (circleci/circleci-docs#6472). The next run restarts the
/// walk from the newest pipeline, with a warning, instead of failing on it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_saved_page_token_restarts_the_walk_and_nothing_is_lost() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccistale"),
    };
    let fake = FakeCircleCi::start(TOKEN, 72).await.unwrap();
    fake.add_pipelines(WEB, 45, 0);
    fake.add_pipelines(API, 1, 0);
    fake.finish_everything();
    // The first walk stores its first page, then the service fails: the token is saved.
    fake.fail_pipeline_continuations(true);
    let cut_short = run(circleci(
        &target,
        &fake,
        &["--batch-rows", "5", "--http-retry-budget", "0"],
    ))
    .await;
    assert_eq!(cut_short.code, Some(1), "{}", cut_short.stderr);
    let saved = query_text(
        &target,
        format!(
            "SELECT CAST(cursor AS VARCHAR) FROM {}._heimdallr_state WHERE scope = '{WEB}'",
            target.schema()
        ),
    )
    .await;
    let cursor = saved[0][0].clone().unwrap_or_default();
    assert!(cursor.contains("~g0"), "a page token is saved: {cursor}");
    // The token goes stale; new pipelines arrive meanwhile.
    fake.fail_pipeline_continuations(false);
    fake.expire_page_tokens();
    fake.add_pipelines(WEB, 2, 0);
    fake.finish_everything();
    let resumed = sync(&target, &fake, &[]).await;
    assert!(
        resumed
            .stderr
            .contains("saved page token refused (HTTP 404); restarting the walk"),
        "{}",
        resumed.stderr
    );
    assert_equal(&stored(&target).await, &fake.truth(), "after the restart");
    // And the runs after it are ordinary.
    let quiet = sync(&target, &fake, &[]).await;
    assert!(!quiet.stderr.contains("refused"), "{}", quiet.stderr);
}

/// One pending workflow whose job list keeps failing does not hold up the others or the
/// walk: it is retried every run, and given up after `--circleci-give-up-after` with an
/// error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_workflow_that_keeps_failing_does_not_stop_the_project() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("ccibroken"),
    };
    let fake = FakeCircleCi::start(TOKEN, 73).await.unwrap();
    fake.add_pipelines(WEB, 8, 4);
    fake.add_pipelines(API, 1, 0);
    let fast = ["--http-retry-budget", "0"];
    sync(&target, &fake, &fast).await;
    let running = fake.workflows_with_status("running");
    assert!(running.len() >= 2, "{running:?}");
    let broken = running[0].clone();
    fake.break_workflow_jobs(&broken, true);
    fake.finish_everything();
    let newer = fake.add_pipelines(WEB, 2, 0);
    fake.finish_everything();
    // The broken one is reported and retried; everything else lands.
    let retried = sync(&target, &fake, &fast).await;
    assert!(
        retried
            .stderr
            .contains(&format!("pending workflow {broken} could not be read")),
        "{}",
        retried.stderr
    );
    let now = stored(&target).await;
    let truth = fake.truth();
    for workflow in truth.workflows.iter().filter(|w| w.0 != broken) {
        assert!(now.workflows.contains(workflow), "{workflow:?} is current");
    }
    for pipeline in &newer {
        assert!(now.pipelines.iter().any(|p| &p.0 == pipeline), "{pipeline}");
    }
    // Its jobs could not be read: it stays pending, to be read again.
    let cursor = query_text(
        &target,
        format!(
            "SELECT CAST(cursor AS VARCHAR) FROM {}._heimdallr_state WHERE scope = '{WEB}'",
            target.schema()
        ),
    )
    .await;
    let cursor = cursor[0][0].clone().unwrap_or_default();
    assert!(cursor.contains(&broken), "still pending: {cursor}");
    // Past the give-up time, the run fails naming it; the next one is clean.
    let mut give_up = fast.to_vec();
    give_up.extend(["--circleci-give-up-after", "0s"]);
    let given_up = run(circleci(&target, &fake, &give_up)).await;
    assert_eq!(given_up.code, Some(1), "{}", given_up.stderr);
    assert!(
        given_up.stderr.contains("gave up on 1 pending workflow")
            && given_up.stderr.contains(&broken),
        "{}",
        given_up.stderr
    );
    let after = sync(&target, &fake, &fast).await;
    assert!(!after.stderr.contains(&broken), "{}", after.stderr);
}

/// A re-run of a pipeline older than the sweep window (9 days) lands within the Insights
/// interval: Insights lists each named workflow's recent runs, re-runs included, and
/// the ones not stored yet are read by id. A quiet check reads none again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_pipeline_older_than_the_sweep_window_lands_through_insights() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cciinsights"),
    };
    let fake = FakeCircleCi::start(TOKEN, 74).await.unwrap();
    let old = fake.add_pipeline_at(WEB, chrono::Utc::now() - chrono::Duration::days(9), 1);
    fake.add_pipelines(WEB, 5, 0);
    fake.add_pipelines(API, 1, 0);
    fake.finish_everything();
    let every_run = ["--circleci-insights-interval", "0s"];
    sync(&target, &fake, &every_run).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the backfill");
    // A sweep is not due (it ran with the backfill) and would not reach 9 days anyway.
    let rerun = fake.rerun(&old);
    fake.finish_everything();
    let before = fake.requests_by_kind();
    sync(&target, &fake, &every_run).await;
    assert!(
        stored(&target).await.workflows.iter().any(|w| w.0 == rerun),
        "the re-run landed"
    );
    assert_equal(&stored(&target).await, &fake.truth(), "after the re-run");
    let after = fake.requests_by_kind();
    let read_by_id =
        after.get("workflow").copied().unwrap_or(0) - before.get("workflow").copied().unwrap_or(0);
    assert_eq!(read_by_id, 1, "only the re-run is read by id");
    // A quiet check asks Insights and reads nothing by id.
    sync(&target, &fake, &every_run).await;
    let quiet = fake.requests_by_kind();
    assert_eq!(quiet.get("workflow"), after.get("workflow"), "{quiet:?}");
    assert!(quiet["insights"] > after["insights"], "Insights was asked");
}

/// Insights is a help, not the source of record: when it fails, the run still lands what
/// the walk found and succeeds with a warning; the next run asks again from the same point
/// and finds the re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insights_failure_is_reported_and_the_next_check_finds_what_it_missed() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("cciinsfail"),
    };
    let fake = FakeCircleCi::start(TOKEN, 75).await.unwrap();
    let old = fake.add_pipeline_at(WEB, chrono::Utc::now() - chrono::Duration::days(9), 1);
    fake.add_pipelines(API, 1, 0);
    fake.finish_everything();
    let args = [
        "--circleci-insights-interval",
        "0s",
        "--http-retry-budget",
        "0",
    ];
    sync(&target, &fake, &args).await;
    let rerun = fake.rerun(&old);
    fake.finish_everything();
    fake.fail_insights(true);
    let failed = sync(&target, &fake, &args).await;
    assert!(
        failed
            .stderr
            .contains("CircleCI Insights could not be read"),
        "{}",
        failed.stderr
    );
    assert!(!stored(&target).await.workflows.iter().any(|w| w.0 == rerun));
    fake.fail_insights(false);
    sync(&target, &fake, &args).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after Insights came back",
    );
}
