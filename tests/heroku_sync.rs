//! `heimdallr sync heroku` end to end: the real binary against the fake Heroku API, into
//! PostgreSQL and the embedded file, over several runs with changes in between (builds
//! finishing, gaining their release, releases succeeding and the current flag moving),
//! inside the rate-limit headroom, through 429s, and killed at random points.

mod common;

use common::*;
use heimdallr_fakes::heroku::{FakeHeroku, Truth};
use rand::{RngExt, SeedableRng};
use std::time::Duration;
use tokio::process::Command;

const KEY: &str = "hrku-5f4dcc3b-5aa7-65d6-1d83-27deb882cf99";
const WEB: &str = "acme-web";
const API: &str = "acme-api";

fn heroku(target: &Target, fake: &FakeHeroku, extra: &[&str]) -> Command {
    let mut command = heimdallr(target, "http://127.0.0.1:9/unused", "");
    command
        .env("HEROKU_API_KEY", KEY)
        .env("HEROKU_API_URL", fake.api_url())
        .env("HEROKU_APPS", format!("{WEB},{API}"))
        .args(["sync", "heroku", "--once"])
        .args(extra);
    command
}

async fn sync(target: &Target, fake: &FakeHeroku, extra: &[&str]) -> Finished {
    run_ok(heroku(target, fake, extra), KEY).await
}

async fn stored(target: &Target) -> Truth {
    let schema = target.schema();
    let cell = |c: &Option<String>| c.clone().unwrap_or_default();
    let apps = query_text(target, format!("SELECT id, name FROM {schema}.heroku_apps")).await;
    let builds = query_text(
        target,
        format!(
            "SELECT id, app_id, status, release_id, source_version FROM {schema}.heroku_builds"
        ),
    )
    .await;
    let releases = query_text(
        target,
        format!("SELECT id, app_id, CAST(version AS VARCHAR), status, CAST(current AS VARCHAR) FROM {schema}.heroku_releases"),
    )
    .await;
    let mut truth = Truth {
        apps: apps.iter().map(|r| (cell(&r[0]), cell(&r[1]))).collect(),
        builds: builds
            .iter()
            .map(|r| {
                (
                    cell(&r[0]),
                    cell(&r[1]),
                    cell(&r[2]),
                    r[3].clone(),
                    cell(&r[4]),
                )
            })
            .collect(),
        releases: releases
            .iter()
            .map(|r| {
                let version = r[2].as_deref().unwrap_or("0").parse().expect("a version");
                (
                    cell(&r[0]),
                    cell(&r[1]),
                    version,
                    cell(&r[3]),
                    r[4].as_deref() == Some("true"),
                )
            })
            .collect(),
    };
    truth.apps.sort();
    truth.builds.sort();
    truth.releases.sort();
    truth
}

fn assert_equal(stored: &Truth, truth: &Truth, when: &str) {
    assert_eq!(stored.apps, truth.apps, "{when}: apps");
    assert_eq!(stored.builds.len(), truth.builds.len(), "{when}: builds");
    assert_eq!(stored.builds, truth.builds, "{when}: builds");
    assert_eq!(stored.releases, truth.releases, "{when}: releases");
    for (app, _) in &truth.apps {
        let current = stored
            .releases
            .iter()
            .filter(|r| &r.1 == app && r.4)
            .count();
        let any_succeeded = truth
            .releases
            .iter()
            .any(|r| &r.1 == app && r.3 == "succeeded");
        assert_eq!(
            current,
            usize::from(any_succeeded),
            "{when}: one current release for {app}"
        );
    }
}

fn deployed_apps(fake: &FakeHeroku) {
    fake.add_app(WEB);
    fake.add_app(API);
    fake.push(WEB, 230);
    fake.finish_builds(WEB);
    fake.release_builds(WEB);
    fake.finish_releases(WEB);
    fake.add_config_release(WEB);
    fake.push(WEB, 3);
    fake.push(API, 4);
    fake.finish_builds(API);
    fake.release_builds(API);
}

async fn series_of_runs(target: Target) {
    let fake = FakeHeroku::start(KEY).await.unwrap();
    deployed_apps(&fake);
    let args = ["--heroku-page-size", "100"];
    sync(&target, &fake, &args).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the backfill");
    let ranges = fake.ranges_seen();
    assert!(
        ranges
            .iter()
            .any(|r| r == "version ..; max=100, order=desc"),
        "{ranges:?}"
    );
    assert!(
        ranges
            .iter()
            .any(|r| r == "created_at ..; max=100, order=desc"),
        "{ranges:?}"
    );
    assert!(
        ranges
            .iter()
            .any(|r| r.starts_with("version ]") && r.ends_with("; max=100, order=desc")),
        "Next-Range sent back verbatim: {ranges:?}"
    );

    // Pending builds end; succeeded ones have no release yet.
    fake.finish_builds(WEB);
    sync(&target, &fake, &args).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after builds finished",
    );

    // Builds gain their (pending) releases.
    fake.release_builds(WEB);
    sync(&target, &fake, &args).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after builds gained releases",
    );

    // Releases succeed: the current flag moves, on both apps.
    fake.finish_releases(WEB);
    fake.finish_releases(API);
    fake.add_config_release(API);
    sync(&target, &fake, &args).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after the current release moved",
    );

    // A quiet run: nothing left to watch.
    let finished = sync(&target, &fake, &args).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after a quiet run");
    assert!(
        finished
            .stdout
            .contains("heroku/releases/acme-web: succeeded"),
        "{}",
        finished.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_equals_the_source_after_runs_with_changes_between_them() {
    let Some(url) = postgres_url() else { return };
    series_of_runs(Target::Postgres {
        url,
        schema: unique_schema("hk"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_file_equals_the_source_after_runs_with_changes_between_them() {
    let dir = TempDir::new("hk-duck");
    series_of_runs(Target::Duck(dir.path().join("w.duckdb"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_at_the_headroom_and_the_next_resumes() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkroom"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    deployed_apps(&fake);
    // 60 requests left in the account's hour, none coming back; keep 40 for others.
    fake.set_rate_budget(60.0, 4500.0, 0.0);
    let args = ["--heroku-page-size", "10", "--heroku-rate-headroom", "40"];
    let finished = sync(&target, &fake, &args).await;
    assert!(finished.stdout.contains("partial"), "{}", finished.stdout);
    assert!(
        fake.lowest_remaining() >= 38,
        "went down to {}",
        fake.lowest_remaining()
    );
    assert_eq!(fake.throttled(), 0, "never drained the budget");
    // The hour passes: the next runs resume where it stopped and finish.
    fake.set_rate_budget(4500.0, 4500.0, 0.0);
    sync(&target, &fake, &args).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after resuming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_bucket_answers_429_and_the_run_backs_off_until_it_refills() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hk429"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    deployed_apps(&fake);
    fake.set_rate_budget(3.0, 3.0, 15.0);
    sync(
        &target,
        &fake,
        &["--heroku-page-size", "100", "--heroku-rate-headroom", "0"],
    )
    .await;
    assert!(fake.throttled() > 0, "the bucket ran dry");
    assert_equal(&stored(&target).await, &fake.truth(), "through 429s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_it_still_ends_equal_to_the_source() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkkill"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    deployed_apps(&fake);
    fake.push(API, 900);
    let mut rng = rand::rngs::StdRng::seed_from_u64(81);
    let args = ["--heroku-page-size", "20", "--batch-rows", "20"];
    let mut killed = 0;
    for round in 0..8 {
        let mut child = spawn(heroku(&target, &fake, &args));
        let wait = Duration::from_millis(rng.random_range(40..600));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => assert!(status.expect("wait").success(), "a run failed on its own"),
            Err(_) => {
                child.start_kill().expect("SIGKILL");
                let _ = child.wait().await;
                killed += 1;
            }
        }
        if round == 4 {
            fake.finish_builds(API);
            fake.release_builds(API);
        }
    }
    assert!(killed >= 3, "only {killed} runs were killed mid-way");
    fake.finish_releases(API);
    sync(&target, &fake, &args).await;
    sync(&target, &fake, &args).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_fails_the_run_with_a_clear_message() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkbad"),
    };
    let fake = FakeHeroku::start("another-key").await.unwrap();
    fake.add_app(WEB);
    let finished = run(heroku(&target, &fake, &[])).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(finished.stderr.contains("HTTP 401"), "{}", finished.stderr);
    assert!(!finished.stderr.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_pages_as_the_platform_api_does() {
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.push(WEB, 1_205);
    let client = reqwest::Client::new();
    let get = |range: Option<&str>| {
        let mut request = client
            .get(format!("{}/apps/{WEB}/builds", fake.api_url()))
            .header("accept", "application/vnd.heroku+json; version=3")
            .header("authorization", format!("Bearer {KEY}"));
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    // No Range: the default page of 200, and what ranges the list accepts.
    let first = get(None).await.unwrap();
    assert_eq!(first.status(), 206);
    assert_eq!(
        first.headers()["accept-ranges"],
        "id, created_at, started_at, updated_at"
    );
    let next = first.headers()["next-range"].to_str().unwrap().to_string();
    assert!(
        next.starts_with("id ]") && next.ends_with("; max=200, order=asc"),
        "{next}"
    );
    assert_eq!(
        first.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        200
    );
    // max is capped at 1000.
    let big = get(Some("created_at ..; max=5000, order=desc"))
        .await
        .unwrap();
    assert_eq!(big.status(), 206);
    assert_eq!(
        big.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        1000
    );
    // The last page is a 200; a range past the end is a 416.
    let last = get(Some("created_at ..; max=1000, order=asc"))
        .await
        .unwrap();
    let tail = last.headers()["next-range"].to_str().unwrap().to_string();
    let rest = get(Some(&tail)).await.unwrap();
    assert_eq!(rest.status(), 200);
    assert_eq!(
        rest.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        205
    );
    let beyond = get(Some("version ]1..; max=10, order=desc")).await.unwrap();
    assert_eq!(
        beyond.status(),
        400,
        "version is not a range field of builds"
    );
    let releases = client
        .get(format!("{}/apps/{WEB}/releases", fake.api_url()))
        .header("accept", "application/vnd.heroku+json; version=3")
        .header("authorization", format!("Bearer {KEY}"))
        .header("range", "version ]1..; max=10, order=desc")
        .send()
        .await
        .unwrap();
    assert_eq!(releases.status(), 416);
    // Without the versioned Accept header the API refuses.
    let unversioned = client
        .get(format!("{}/apps", fake.api_url()))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_page_exactly_full_ends_with_a_416_that_is_not_an_error() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hk416"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.add_app(API);
    fake.push(WEB, 20);
    sync(&target, &fake, &["--heroku-page-size", "10"]).await;
    assert!(
        fake.not_satisfiable() > 0,
        "the page after two full pages is a 416"
    );
    assert_equal(&stored(&target).await, &fake.truth(), "after a 416");
}
