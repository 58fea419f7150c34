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
        format!("SELECT id, app_id, CAST(version AS VARCHAR), status, CAST(current AS VARCHAR), slug_commit FROM {schema}.heroku_releases"),
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
                    r[5].clone(),
                )
            })
            .collect(),
    };
    truth.apps.sort();
    truth.builds.sort();
    truth.releases.sort();
    truth
}

/// The items of `a` not in `b`.
fn missing<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

fn assert_equal(stored: &Truth, truth: &Truth, when: &str) {
    assert!(
        stored.builds == truth.builds,
        "{when}: builds differ: stored only {:?}; source only {:?}",
        missing(&stored.builds, &truth.builds),
        missing(&truth.builds, &stored.builds)
    );
    assert!(
        stored.releases == truth.releases,
        "{when}: releases differ: stored only {:?}; source only {:?}",
        missing(&stored.releases, &truth.releases),
        missing(&truth.releases, &stored.releases)
    );
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
    fake.rollback(WEB, 150);
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
            .any(|r| r == "started_at ..; max=100, order=desc"),
        "builds walk by a Range field the schema allows: {ranges:?}"
    );
    assert_eq!(fake.not_satisfiable(), 0, "no range was refused");
    // Every release has its slug's commit, the rollback and config change included, and
    // each slug was read once.
    let stored_now = stored(&target).await;
    assert!(stored_now
        .releases
        .iter()
        .filter(|r| r.3 == "succeeded")
        .all(|r| r.5.is_some()));
    let slug_reads = fake
        .paths()
        .iter()
        .filter(|p| p.contains("/slugs/"))
        .count();
    let distinct: std::collections::BTreeSet<String> = fake
        .paths()
        .into_iter()
        .filter(|p| p.contains("/slugs/"))
        .collect();
    assert_eq!(slug_reads, distinct.len(), "one read per slug");
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

    // Releases succeed: the current flag moves, on both apps; API gets WEB's slug by a
    // pipeline promotion (a release with no build of its own in API).
    fake.finish_releases(WEB);
    fake.finish_releases(API);
    fake.add_config_release(API);
    fake.promote(WEB, API);
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
    // This test is about kills, not the hourly budget: plenty of it.
    fake.set_rate_budget(100_000.0, 100_000.0, 1000.0);
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
    assert_eq!(first.headers()["accept-ranges"], "id, started_at");
    let next = first.headers()["next-range"].to_str().unwrap().to_string();
    assert!(
        next.starts_with("id ]") && next.ends_with("; max=200, order=asc"),
        "{next}"
    );
    assert_eq!(
        first.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        200
    );
    // A field the list does not accept is a 416, as the real API answers created_at.
    let refused = get(Some("created_at ..; max=10, order=desc"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 416);
    // A header that does not parse is a 400.
    let malformed = get(Some("started_at ..; max=10; order=desc"))
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    // max is capped at 1000.
    let big = get(Some("started_at ..; max=5000, order=desc"))
        .await
        .unwrap();
    assert_eq!(big.status(), 206);
    assert_eq!(
        big.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        1000
    );
    // The last page is a 200; a range past the end is a 416.
    let last = get(Some("started_at ..; max=1000, order=asc"))
        .await
        .unwrap();
    let tail = last.headers()["next-range"].to_str().unwrap().to_string();
    let rest = get(Some(&tail)).await.unwrap();
    assert_eq!(rest.status(), 200);
    assert_eq!(
        rest.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        205
    );
    let other_list_field = get(Some("version ]1..; max=10, order=desc")).await.unwrap();
    assert_eq!(
        other_list_field.status(),
        416,
        "version is not a range field of builds"
    );
    // Exactly a page left: a 200 without Next-Range (the list is not truncated).
    fake.add_app(API);
    fake.push(API, 10);
    let exact = client
        .get(format!("{}/apps/{API}/builds", fake.api_url()))
        .header("accept", "application/vnd.heroku+json; version=3")
        .header("authorization", format!("Bearer {KEY}"))
        .header("range", "started_at ..; max=10, order=desc")
        .send()
        .await
        .unwrap();
    assert_eq!(exact.status(), 200);
    assert!(exact.headers().get("next-range").is_none());
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
async fn a_refused_range_fails_the_stream_naming_it_and_a_stale_next_range_restarts_the_walk() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hk416"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.add_app(API);
    fake.push(WEB, 25);
    // A run that stops after the first page of builds (the rate headroom) saves its
    // Next-Range; Heroku refuses it next time: the walk starts over from the newest page
    // and everything lands.
    // 43 - 40 + 1: the app, its pipeline coupling, a page of releases and one of builds.
    fake.set_rate_budget(43.0, 4500.0, 0.0);
    let stops_early = ["--heroku-page-size", "10", "--heroku-rate-headroom", "40"];
    let partial = sync(&target, &fake, &stops_early).await;
    assert!(
        partial.stdout.contains("heroku/builds/acme-web: partial"),
        "{}",
        partial.stdout
    );
    fake.set_rate_budget(4500.0, 4500.0, 0.0);
    fake.refuse_next_continuation();
    sync(&target, &fake, &["--heroku-page-size", "10"]).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after a restarted walk",
    );

    // A 416 on a range of our own is an error naming the range, never an empty list:
    // the run fails and says so.
    fake.refuse_ranges(true);
    let finished = run(heroku(&target, &fake, &["--heroku-page-size", "10"])).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished
            .stderr
            .contains("refused the range \"started_at ..; max=10, order=desc\""),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stdout.contains("heroku/builds/acme-web: failed"),
        "{}",
        finished.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_created_in_the_same_second_as_the_last_stored_one_are_not_skipped() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hksecond"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.add_app(API);
    let second = fake.push_in_one_second(WEB, 2);
    sync(&target, &fake, &[]).await;
    assert_equal(&stored(&target).await, &fake.truth(), "two in one second");
    // A third build in that same second, seen by the next run.
    fake.push_at(WEB, 1, second);
    let finished = sync(&target, &fake, &[]).await;
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "the third of that second",
    );
    assert!(
        finished
            .stdout
            .contains("heroku/builds/acme-web: succeeded - 1 rows"),
        "only the new one is written: {}",
        finished.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_are_not_stored() {
    let dir = TempDir::new("hk-signed");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeHeroku::start(KEY).await.unwrap();
    deployed_apps(&fake);
    sync(&target, &fake, &[]).await;
    let schema = target.schema();
    for table in ["heroku_builds", "heroku_releases"] {
        let leaked = query_text(
            &target,
            format!("SELECT id FROM {schema}.{table} WHERE CAST(data AS VARCHAR) LIKE '%s3cr3t%' OR CAST(data AS VARCHAR) LIKE '%X-Amz-Signature%'"),
        )
        .await;
        assert!(leaked.is_empty(), "{table}: {leaked:?}");
    }
    let urls = query_text(
        &target,
        format!("SELECT CAST(data->'source_blob'->>'url' AS VARCHAR) FROM {schema}.heroku_builds"),
    )
    .await;
    assert!(urls
        .iter()
        .flatten()
        .flatten()
        .any(|u| u == "https://s3.amazonaws.com/heroku-sources/source.tgz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_last_page_whose_next_range_is_refused_ends_the_list() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkfull"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.add_app(API);
    fake.push(WEB, 20);
    // Pages of 10: the second is full and carries a Next-Range; the range after it is a
    // 416. Read as the end of the list, not as an error, and nothing is missing.
    fake.full_pages_claim_more(true);
    sync(&target, &fake, &["--heroku-page-size", "10"]).await;
    assert!(fake.not_satisfiable() > 0, "the fake answered 416");
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after a full last page",
    );
}

/// A Next-Range that repeats the range sent must fail the run, in the list of apps as in
/// the walks: read as the end of the list it would copy some apps and say `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_range_that_does_not_move_fails_the_run_instead_of_ending_the_list() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkrepeat"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    // Three apps with nothing in them yet: only the list of apps takes two pages.
    for app in ["acme-a", "acme-b", "acme-c"] {
        fake.add_app(app);
    }
    fake.repeat_next_ranges(true);

    let mut every_app = heroku(&target, &fake, &["--heroku-page-size", "2"]);
    every_app.env("HEROKU_APPS", "*");
    let finished = run(every_app).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stderr.contains("/apps: Heroku answered the range")
            && finished.stderr.contains("with the same Next-Range"),
        "{}",
        finished.stderr
    );

    // An app whose builds and releases take more than a page: both walks fail.
    fake.push("acme-a", 3);
    fake.finish_builds("acme-a");
    fake.release_builds("acme-a");
    let mut one_app = heroku(&target, &fake, &["--heroku-page-size", "2"]);
    one_app.env("HEROKU_APPS", "acme-a");
    let finished = run(one_app).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stdout.contains("heroku/releases/acme-a: failed")
            && finished.stdout.contains("heroku/builds/acme-a: failed"),
        "{}",
        finished.stdout
    );
}

/// A quiet run of an app with more builds than a page reads one page of builds: the
/// page's last build is already older than the mark by the margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_of_an_app_with_many_builds_reads_one_page_of_them() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkbuildpage"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    fake.add_app(WEB);
    fake.add_app(API);
    let now = chrono::Utc::now();
    for minutes in (1..=1500).rev() {
        fake.push_at(WEB, 1, now - chrono::Duration::minutes(minutes));
    }
    sync(&target, &fake, &[]).await;
    assert_equal(&stored(&target).await, &fake.truth(), "after the backfill");
    let before = fake.paths().len();
    sync(&target, &fake, &[]).await;
    let builds_pages = fake.paths()[before..]
        .iter()
        .filter(|p| p.ends_with(&format!("/apps/{WEB}/builds")))
        .count();
    assert_eq!(builds_pages, 1, "{:?}", &fake.paths()[before..]);
}

/// 150 apps, `HEROKU_APPS=*`, and about 100 requests of budget per run (the account's
/// other clients use the rest): every app gets its turn, and at the end of a quiet period
/// every one is current. Run in the same order every time, the first apps would take the
/// whole budget and the last ones would never get a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_150_apps_and_a_small_budget_every_app_gets_its_turn() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("hkmany"),
    };
    let fake = FakeHeroku::start(KEY).await.unwrap();
    let apps: Vec<String> = (0..150).map(|n| format!("acme-{n:03}")).collect();
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    for (n, app) in apps.iter().enumerate() {
        fake.add_app(app);
        let at = start + chrono::Duration::seconds(n as i64);
        fake.deploy(app, &format!("{:040x}", n + 1), at);
    }
    let headroom: u64 = 50;
    let args = ["--heroku-rate-headroom", "50"];
    let every_app = |command: &mut Command| {
        command.env("HEROKU_APPS", "*");
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(150);
    for round in 0..20 {
        fake.set_rate_budget((headroom + 100) as f64, 4500.0, 0.0);
        let mut command = heroku(&target, &fake, &args);
        every_app(&mut command);
        run_ok(command, KEY).await;
        // Deploys keep coming to a few apps.
        if round < 10 {
            let app = &apps[rng.random_range(0..apps.len())];
            fake.deploy(app, &format!("{:040x}", 1000 + round), chrono::Utc::now());
        }
    }
    let synced = query_text(
        &target,
        format!(
            "SELECT CAST(COUNT(DISTINCT app_id) AS VARCHAR) FROM {}.heroku_releases",
            target.schema()
        ),
    )
    .await;
    assert_eq!(
        synced[0][0].as_deref(),
        Some("150"),
        "every app has its releases after 20 runs"
    );
    // The last ten runs were a quiet period on the same small budget: all current.
    assert_equal(
        &stored(&target).await,
        &fake.truth(),
        "after the quiet period",
    );
}
