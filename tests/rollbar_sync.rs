//! End to end: the `heimdallr` binary syncs a fake Rollbar into a DuckDB file and into
//! PostgreSQL, through faults, changes between runs and bad settings.

mod common;

use common::*;
use heimdallr_fakes::rollbar::{FakeRollbar, FaultRates};
use std::time::Duration;

const WEB: &str = "tok-web-0123456789abcdef";
const WORKER: &str = "tok-worker-0123456789abcdef";

fn tokens() -> String {
    format!("web={WEB},worker={WORKER}")
}

/// Two projects, a backfill through every kind of fault, then changes in place and new
/// occurrences between runs: after each run the warehouse equals the source.
async fn backfill_then_follow_changes(target: Target) {
    let fake = FakeRollbar::start(11).await.unwrap();
    fake.add_project(WEB, 101, 40, 2_500);
    fake.add_project(WORKER, 102, 15, 700);
    fake.set_faults(FaultRates::all(0.03));
    let page = ["--rollbar-page-limit", "200"];

    let first = sync_once(&target, &fake.api_url(), &tokens(), &page).await;
    assert!(fake.faults_served() > 0, "the fake injected faults");
    assert!(
        first.stdout.contains("rollbar/occurrences/web: succeeded"),
        "{}",
        first.stdout
    );
    let snap = snapshot(&target).await;
    assert_matches_source(
        &snap,
        &merged(&fake, |f, t| f.occurrences(t)),
        &merged(&fake, |f, t| f.items(t)),
        7,
    );

    // In place: resolve one item (its counter restarts); new occurrences arrive; then
    // reassign an item that none of them touched.
    let items_before = fake.items(WEB);
    let items: Vec<i64> = items_before.keys().copied().collect();
    fake.resolve_item(WEB, items[0]);
    fake.arrive(WEB, 30);
    fake.arrive(WORKER, 50);
    let untouched = *fake
        .items(WEB)
        .iter()
        .find(|(id, item)| {
            **id != items[0]
                && item["last_occurrence_id"] == items_before[*id]["last_occurrence_id"]
        })
        .expect("an item the new occurrences did not touch")
        .0;
    fake.reassign_item(WEB, untouched, 4242);
    sync_once(&target, &fake.api_url(), &tokens(), &page).await;
    let snap = snapshot(&target).await;
    let source_occurrences = merged(&fake, |f, t| f.occurrences(t));
    assert_eq!(snap.occurrences.len(), source_occurrences.len());
    // Items touched by the new occurrences are current (the resolved one reactivated)...
    for (id, item) in fake.items(WEB) {
        if item["last_occurrence_id"] != items_before[&id]["last_occurrence_id"] {
            assert_eq!(snap.items[&id], expected_item(&item), "touched item {id}");
        }
    }
    // ...an untouched item changed in place waits for the hourly sweep...
    assert_ne!(
        snap.items[&untouched].assigned_user_id,
        Some(4242),
        "not swept yet"
    );
    // ...which a shorter cadence brings forward.
    sync_once(
        &target,
        &fake.api_url(),
        &tokens(),
        &["--rollbar-items-sweep-interval", "0s"],
    )
    .await;
    let snap = snapshot(&target).await;
    assert_matches_source(
        &snap,
        &source_occurrences,
        &merged(&fake, |f, t| f.items(t)),
        5,
    );
    assert_eq!(snap.items[&untouched].assigned_user_id, Some(4242));
    assert!(snap.rejects.is_empty(), "{:?}", snap.rejects);

    // A run with nothing new writes nothing and still succeeds.
    let quiet = sync_once(&target, &fake.api_url(), &tokens(), &page).await;
    assert!(
        quiet
            .stdout
            .contains("rollbar/occurrences/web: succeeded - 0 rows"),
        "{}",
        quiet.stdout
    );
}

fn merged(
    fake: &FakeRollbar,
    read: impl Fn(&FakeRollbar, &str) -> std::collections::BTreeMap<i64, serde_json::Value>,
) -> std::collections::BTreeMap<i64, serde_json::Value> {
    let mut all = read(fake, WEB);
    all.extend(read(fake, WORKER));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_file_equals_the_source_through_faults_and_changes() {
    let dir = TempDir::new("duck-e2e");
    backfill_then_follow_changes(Target::Duck(dir.path().join("w.duckdb"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_equals_the_source_through_faults_and_changes() {
    let Some(url) = postgres_url() else { return };
    backfill_then_follow_changes(Target::Postgres {
        url,
        schema: unique_schema("e2e"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstorable_occurrence_is_rejected_with_its_reason_and_the_sync_goes_on() {
    let dir = TempDir::new("duck-reject");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(12).await.unwrap();
    fake.add_project(WEB, 101, 5, 100);
    fake.add_unstorable_occurrence(WEB);
    fake.arrive(WEB, 100);
    sync_once(&target, &fake.api_url(), &format!("web={WEB}"), &[]).await;
    let snap = snapshot(&target).await;
    let source: Vec<i64> = fake
        .occurrences(WEB)
        .iter()
        .filter(|(_, o)| o["id"].is_i64())
        .map(|(id, _)| *id)
        .collect();
    let stored: Vec<i64> = snap.occurrences.keys().copied().collect();
    assert_eq!(stored, source, "every other occurrence landed");
    assert_eq!(snap.occurrences.len(), 200);
    assert_eq!(snap.rejects.len(), 1);
    assert_eq!(snap.rejects[0].0, "rollbar_occurrences");
    assert!(
        snap.rejects[0].1.contains("no numeric id"),
        "{:?}",
        snap.rejects
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_kept_or_hashed_when_asked() {
    let dir = TempDir::new("duck-pii");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(13).await.unwrap();
    fake.add_project(WEB, 101, 5, 60);
    let mut command = heimdallr(&target, &fake.api_url(), WEB);
    command
        .args(["sync", "rollbar", "--once"])
        .env("HEIMDALLR_PII", "hash");
    let refused = run(command).await;
    assert_eq!(refused.code, Some(2), "hash without a salt is refused");
    assert!(
        refused.stderr.contains("HEIMDALLR_PII_SALT"),
        "{}",
        refused.stderr
    );

    let mut command = heimdallr(&target, &fake.api_url(), WEB);
    command
        .args(["sync", "rollbar", "--once", "--pii", "hash"])
        .env("HEIMDALLR_PII_SALT", "pepper-for-tests");
    assert_eq!(run(command).await.code, Some(0));
    let snap = snapshot(&target).await;
    let with_person: Vec<_> = snap
        .occurrences
        .values()
        .filter(|o| o.person_id.is_some())
        .collect();
    assert!(!with_person.is_empty());
    for occurrence in with_person {
        let email = occurrence.person_email.as_deref().unwrap();
        assert!(email.starts_with("sha256:"), "{email}");
        assert_eq!(occurrence.data["person"]["email"], serde_json::json!(email));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_fails_clearly_without_showing_the_token() {
    let dir = TempDir::new("duck-401");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(14).await.unwrap();
    fake.add_project(WEB, 101, 5, 10);
    let secret = "wrong-token-5f4dcc3b5aa765d61d8327deb882cf99";
    let finished = run_args(
        &target,
        &fake.api_url(),
        &format!("web={secret}"),
        &["sync", "rollbar", "--once"],
    )
    .await;
    assert_eq!(finished.code, Some(1));
    assert!(
        finished.stderr.contains("unauthorized (HTTP 401)"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains(secret) && !finished.stdout.contains(secret));

    // The failure is recorded for `heimdallr status`.
    let status = run_args(&target, &fake.api_url(), "", &["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains("rollbar/occurrences/web"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("failed"), "{}", status.stdout);
    assert!(status.stdout.contains("last error:"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_and_bad_settings_fail_with_one_clear_line() {
    let dir = TempDir::new("duck-bad");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    // Nothing listens on port 9 of loopback.
    let unreachable = run_args(
        &target,
        "http://127.0.0.1:9/api/1",
        WEB,
        &["sync", "rollbar", "--once"],
    )
    .await;
    assert_eq!(unreachable.code, Some(1));
    assert!(
        unreachable.stderr.contains("unreachable after"),
        "{}",
        unreachable.stderr
    );

    let bad_url = run_args(
        &target,
        "http://127.0.0.1:9/api/1",
        WEB,
        &[
            "sync",
            "rollbar",
            "--once",
            "--warehouse",
            "mysql://u:hunter2@h/db",
        ],
    )
    .await;
    assert_eq!(bad_url.code, Some(2));
    assert!(
        bad_url.stderr.contains("unknown scheme"),
        "{}",
        bad_url.stderr
    );
    assert!(!bad_url.stderr.contains("hunter2"));

    let no_token = run_args(
        &target,
        "http://127.0.0.1:9/api/1",
        "",
        &["sync", "rollbar", "--once"],
    )
    .await;
    assert_eq!(no_token.code, Some(2));
    assert!(
        no_token.stderr.contains("ROLLBAR_ACCESS_TOKEN is not set"),
        "{}",
        no_token.stderr
    );

    let no_db = run_args(
        &target,
        "http://127.0.0.1:9/api/1",
        WEB,
        &["migrate", "--warehouse", "postgres://nobody@127.0.0.1:9/db"],
    )
    .await;
    assert_eq!(no_db.code, Some(2));
    assert!(
        no_db
            .stderr
            .contains("cannot connect to postgres://nobody@127.0.0.1:9/db"),
        "{}",
        no_db.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = TempDir::new("duck-json");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(15).await.unwrap();
    fake.add_project(WEB, 101, 3, 30);
    let finished = sync_once(&target, &fake.api_url(), WEB, &["--log-format", "json"]).await;
    let lines: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty());
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            parsed["level"].is_string() && parsed["message"].is_string(),
            "{line}"
        );
    }
}

/// The highest occurrence id the warehouse holds.
async fn stored_ids(target: &Target) -> std::collections::BTreeSet<i64> {
    snapshot(target).await.occurrences.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_appears_below_the_mark_lands_through_the_overlap() {
    let dir = TempDir::new("duck-overlap");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(21).await.unwrap();
    fake.add_project(WEB, 101, 5, 300);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    let stored = stored_ids(&target).await;
    let mark = *stored.iter().max().unwrap();
    // Two ids below the mark that were free when the walk passed: they arrive late.
    // At least two seconds below the mark's time (the fake's ids are ten a second), so
    // that a window of 0 does not reach them.
    let free: Vec<i64> = (mark - 200..mark - 20)
        .rev()
        .filter(|id| !stored.contains(id))
        .take(2)
        .collect();
    fake.arrive_late(WEB, free[0]);
    let without = sync_once(
        &target,
        &fake.api_url(),
        WEB,
        &["--rollbar-overlap-window", "0s"],
    )
    .await;
    assert!(
        !stored_ids(&target).await.contains(&free[0]),
        "without the overlap the late id is skipped: {}",
        without.stdout
    );
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        stored_ids(&target).await.contains(&free[0]),
        "the overlap re-reads below the mark and finds it"
    );
    // A quiet run re-reads the overlap and writes nothing: the ids it knows are stored.
    let quiet = sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        quiet
            .stdout
            .contains("rollbar/occurrences/default: succeeded - 0 rows"),
        "{}",
        quiet.stdout
    );
    // Another late one: only it is written.
    fake.arrive_late(WEB, free[1]);
    let late = sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        late.stdout
            .contains("rollbar/occurrences/default: succeeded - 1 rows"),
        "{}",
        late.stdout
    );
    let snap = snapshot(&target).await;
    assert_matches_source(&snap, &fake.occurrences(WEB), &fake.items(WEB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_drops_last_id_stops_the_walk_with_a_clear_error() {
    let dir = TempDir::new("duck-lastid");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(22).await.unwrap();
    fake.add_project(WEB, 101, 5, 500);
    fake.ignore_last_id(true);
    let finished = run_args(
        &target,
        &fake.api_url(),
        WEB,
        &["sync", "rollbar", "--once", "--rollbar-page-limit", "100"],
    )
    .await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stderr.contains("did not honour lastId"),
        "{}",
        finished.stderr
    );
    assert!(
        fake.requests() < 10,
        "it did not ask for the same page for ever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touched_items_are_read_by_id_in_hundreds_and_the_sweep_sees_every_status() {
    let dir = TempDir::new("duck-items");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(23).await.unwrap();
    fake.add_project(WEB, 101, 250, 50);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    // New occurrences touch many items: they are re-read a hundred per call, by id.
    fake.arrive(WEB, 900);
    let log_before = fake.request_log().len();
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    let log = fake.request_log();
    let item_reads: Vec<&String> = log[log_before..]
        .iter()
        .filter(|r| r.starts_with("/api/1/item"))
        .collect();
    assert!(!item_reads.is_empty());
    for read in &item_reads {
        assert!(read.starts_with("/api/1/items/?ids="), "{read}");
        let ids = read
            .split("ids=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(ids.split(',').count() <= 100, "{read}");
        for status in ["active", "resolved", "muted", "archived"] {
            assert!(read.contains(&format!("status={status}")), "{read}");
        }
    }
    assert_matches_source(
        &snapshot(&target).await,
        &fake.occurrences(WEB),
        &fake.items(WEB),
        1,
    );
    // Resolved and muted in place, untouched by occurrences: the sweep brings them.
    let items: Vec<i64> = fake.items(WEB).keys().copied().collect();
    fake.resolve_item(WEB, items[1]);
    fake.mute_item(WEB, items[2]);
    sync_once(
        &target,
        &fake.api_url(),
        WEB,
        &["--rollbar-items-sweep-interval", "0s"],
    )
    .await;
    let snap = snapshot(&target).await;
    assert_eq!(snap.items[&items[1]].status.as_deref(), Some("resolved"));
    assert_eq!(snap.items[&items[2]].status.as_deref(), Some("muted"));
    assert_matches_source(&snap, &fake.occurrences(WEB), &fake.items(WEB), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_times_out_is_asked_for_again_smaller() {
    let dir = TempDir::new("duck-timeout");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(24).await.unwrap();
    fake.add_project(WEB, 101, 5, 450);
    // Pages of more than 100 take longer than the request timeout.
    fake.slow_pages_above(100, Duration::from_secs(3));
    let finished = sync_once(
        &target,
        &fake.api_url(),
        WEB,
        &[
            "--rollbar-page-limit",
            "400",
            "--http-timeout",
            "1s",
            "--http-retry-budget",
            "0",
        ],
    )
    .await;
    assert!(
        finished.stderr.contains("asking for smaller pages"),
        "{}",
        finished.stderr
    );
    let limits: Vec<String> = fake
        .request_log()
        .iter()
        .filter(|r| r.starts_with("/api/1/instances"))
        .filter_map(|r| r.split("limit=").nth(1).map(String::from))
        .collect();
    // The first page assumes the largest occurrences Rollbar accepts (64 of 128 KB in the
    // 8 MiB budget); the next is sized from what it held, up to the setting, and times out.
    assert_eq!(&limits[..4], ["64", "400", "200", "100"], "{limits:?}");
    assert_matches_source(
        &snapshot(&target).await,
        &fake.occurrences(WEB),
        &fake.items(WEB),
        0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_running_command_gets_its_retry_budget_back_every_pass() {
    let dir = TempDir::new("duck-passes");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(25).await.unwrap();
    fake.add_project(WEB, 101, 5, 100);
    fake.set_arrivals_per_request(2);
    // One request in four fails (429 and 5xx), retried quickly: a pass needs a few retries,
    // more than the whole budget over several passes.
    fake.set_faults(FaultRates {
        server_error: 0.25,
        ..FaultRates::default()
    });
    let mut command = heimdallr(&target, &fake.api_url(), WEB);
    command
        .args([
            "sync",
            "rollbar",
            "--interval",
            "1s",
            "--http-retry-budget",
            "6",
            "--rollbar-page-limit",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("heimdallr starts");
    tokio::time::sleep(Duration::from_secs(12)).await;
    child.start_kill().expect("stop it");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("it stops")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let passes = stdout
        .lines()
        .filter(|l| l.starts_with("rollbar/occurrences/default:"))
        .collect::<Vec<_>>();
    assert!(passes.len() >= 5, "{stdout}");
    assert!(
        fake.faults_served() > 6,
        "more faults than one pass's budget"
    );
    assert!(
        passes.iter().skip(1).all(|l| l.contains("succeeded")),
        "every pass succeeds with its own budget:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_ignores_ids_fails_the_items_stream_instead_of_forgetting_them() {
    let dir = TempDir::new("duck-ids");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(26).await.unwrap();
    fake.add_project(WEB, 101, 150, 50);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    fake.ignore_ids(true);
    fake.arrive(WEB, 300);
    let finished = run_args(
        &target,
        &fake.api_url(),
        WEB,
        &["sync", "rollbar", "--once"],
    )
    .await;
    assert_eq!(finished.code, Some(1), "{}", finished.stdout);
    assert!(
        finished.stdout.contains("rollbar/items/default: failed"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("did not honour ids"),
        "{}",
        finished.stderr
    );
    // Nothing was forgotten: once the API behaves, the touched items are refreshed.
    fake.ignore_ids(false);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert_matches_source(
        &snapshot(&target).await,
        &fake.occurrences(WEB),
        &fake.items(WEB),
        5,
    );
}

/// Stored deploys as (id, environment, revision, status, local_username).
async fn stored_deploys(target: &Target) -> Vec<Vec<Option<String>>> {
    query_text(
        target,
        format!(
            "SELECT CAST(id AS VARCHAR), environment, revision, status, local_username \
             FROM {}.rollbar_deploys ORDER BY id",
            target.schema()
        ),
    )
    .await
}

fn expected_deploys(fake: &FakeRollbar) -> Vec<Vec<Option<String>>> {
    fake.deploys(WEB)
        .values()
        .map(|d| {
            vec![
                Some(d["id"].to_string()),
                d["environment"].as_str().map(String::from),
                d["revision"].as_str().map(String::from),
                d["status"].as_str().map(String::from),
                None, // a person's login: dropped by the default PII policy
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_land_whole_and_a_deploy_that_finishes_is_updated() {
    let dir = TempDir::new("duck-deploys");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(31).await.unwrap();
    fake.add_project(WEB, 101, 3, 10);
    let newest = 1_800_000_000;
    // 130 deploys an hour apart: more than one page of 100.
    for i in 0..130 {
        let environment = if i % 2 == 0 { "production" } else { "staging" };
        // Two still running: one an hour below the newest, one 110 hours below (page 2).
        let status = if i == 1 || i == 110 {
            "started"
        } else {
            "succeeded"
        };
        fake.add_deploy(
            WEB,
            environment,
            &format!("{:040x}", 0xabc + i),
            status,
            newest - i * 3600,
        );
    }
    // Off unless asked: the default sync has no deploys stream.
    let without = sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        !without.stdout.contains("rollbar/deploys"),
        "{}",
        without.stdout
    );
    let deploys = ["--rollbar-deploys", "true"];
    let first = sync_once(&target, &fake.api_url(), WEB, &deploys).await;
    assert!(
        first
            .stdout
            .contains("rollbar/deploys/default: succeeded - 130 rows"),
        "{}",
        first.stdout
    );
    assert_eq!(stored_deploys(&target).await, expected_deploys(&fake));

    // The deploys that were running finish, and a new one starts.
    let running: Vec<i64> = fake
        .deploys(WEB)
        .iter()
        .filter(|(_, d)| d["status"] == "started")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(running.len(), 2);
    for id in &running {
        fake.finish_deploy(WEB, *id, "failed");
    }
    fake.add_deploy(WEB, "production", &"f".repeat(40), "started", newest + 600);
    let deploy_requests = |from: usize| -> Vec<String> {
        fake.request_log()[from..]
            .iter()
            .filter(|r| r.starts_with("/api/1/deploys"))
            .cloned()
            .collect()
    };
    let before = fake.request_log().len();
    sync_once(&target, &fake.api_url(), WEB, &deploys).await;
    assert_eq!(stored_deploys(&target).await, expected_deploys(&fake));
    assert_eq!(
        deploy_requests(before),
        vec![
            "/api/1/deploys/?page=1&limit=100".to_string(),
            "/api/1/deploys/?page=2&limit=100".to_string()
        ],
        "the walk goes below the day of look-back to the deploy still started on page 2"
    );
    // Only the new one is still running, an hour above the rest: one page.
    let before = fake.request_log().len();
    sync_once(&target, &fake.api_url(), WEB, &deploys).await;
    assert_eq!(
        deploy_requests(before),
        vec!["/api/1/deploys/?page=1&limit=100".to_string()],
        "the next run reads the day below the newest deploy: one page"
    );
}

/// Items asked for by id come back over several pages when `total_count` says so; an item
/// that is no longer there (deleted, merged) is kept as a reject with its reason, not
/// silently dropped from the refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_by_id_follow_their_pages_and_a_missing_item_is_recorded() {
    let dir = TempDir::new("duck-items-pages");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(27).await.unwrap();
    fake.add_project(WEB, 101, 60, 10);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    // New occurrences touch 30 items; Rollbar answers 7 items a page.
    fake.set_items_page_size(7);
    let items: Vec<i64> = fake.items(WEB).keys().copied().collect();
    let now = chrono::Utc::now().timestamp();
    for (n, item) in items.iter().take(30).enumerate() {
        fake.occur(WEB, *item, now + n as i64, "production", None, None);
    }
    let gone = items[3];
    fake.delete_item(WEB, gone);
    sync_once(&target, &fake.api_url(), WEB, &[]).await;
    let snap = snapshot(&target).await;
    for item in items.iter().take(30).filter(|i| **i != gone) {
        assert_eq!(
            snap.items[item].total_occurrences,
            fake.items(WEB)[item]["total_occurrences"].as_i64(),
            "item {item} is refreshed from a later page"
        );
    }
    assert!(
        snap.rejects
            .iter()
            .any(|(table, reason)| table == "rollbar_items"
                && reason.contains("did not return this item")),
        "{:?}",
        snap.rejects
    );
}

/// Runs every `every` while occurrences arrive at 5 000 a minute for `arrivals`, a fifth
/// of them listable only `delay` after they took their id, then until all are listed.
/// Returns how many the source holds and how many the warehouse missed.
async fn late_listing(delay: Duration, window: &str, every: Duration) -> (usize, usize) {
    let dir = TempDir::new("duck-late");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let fake = FakeRollbar::start(28).await.unwrap();
    fake.use_wall_clock();
    fake.add_project(WEB, 101, 30, 0);
    fake.set_listing_delay(0.2, delay);
    let per_run = (5000.0 * every.as_secs_f64() / 60.0).round() as usize;
    let args = ["--rollbar-overlap-window", window];
    let arrivals_end = std::time::Instant::now() + Duration::from_secs(10);
    let all_listed = arrivals_end + delay + every * 2;
    while std::time::Instant::now() < all_listed {
        let started = std::time::Instant::now();
        if started < arrivals_end {
            fake.arrive(WEB, per_run);
        }
        sync_once(&target, &fake.api_url(), WEB, &args).await;
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    sync_once(&target, &fake.api_url(), WEB, &args).await;
    let stored: std::collections::BTreeSet<i64> = snapshot(&target)
        .await
        .occurrences
        .keys()
        .copied()
        .collect();
    let truth = fake.occurrences(WEB);
    let missed = truth.keys().filter(|id| !stored.contains(id)).count();
    (truth.len(), missed)
}

/// Occurrences listed 6 s after ids above them were served, at 5 000 a minute: the
/// default two-minute overlap window re-reads far enough below the mark to catch them;
/// without a window they are lost while every run says succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_listed_six_seconds_late_all_land_and_without_a_window_they_do_not() {
    let every = Duration::from_secs(2);
    let (total, missed) = late_listing(Duration::from_secs(6), "2m", every).await;
    assert!(total > 700, "{total}");
    assert_eq!(
        missed, 0,
        "{missed} of {total} lost with the default window"
    );
    let (total, missed) = late_listing(Duration::from_secs(6), "0s", every).await;
    assert!(
        missed > total / 20,
        "only {missed} of {total} lost without a window: the test would not see a loss"
    );
}

/// The same a minute late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_listed_a_minute_late_all_land_with_the_default_window() {
    let (total, missed) = late_listing(Duration::from_secs(60), "2m", Duration::from_secs(5)).await;
    assert!(total > 700, "{total}");
    assert_eq!(missed, 0, "{missed} of {total} lost");
}

/// A view the warehouse refuses (here: a table of the user's where the `deploys` view
/// goes) does not stop the tables from migrating or the rows from syncing: the failure is
/// logged at error level, `heimdallr migrate` says so and fails, and every start tries the
/// views again until they are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_the_warehouse_refuses_does_not_stop_the_sync() {
    let Some(url) = postgres_url() else { return };
    let schema = unique_schema("viewfail");
    let target = Target::Postgres {
        url,
        schema: schema.clone(),
    };
    execute(
        &target,
        format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.deploys (note TEXT)"),
    )
    .await;
    let fake = FakeRollbar::start(29).await.unwrap();
    fake.add_project(WEB, 101, 20, 300);
    let first = sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        first
            .stderr
            .contains("the analyst views could not be created"),
        "{}",
        first.stderr
    );
    assert_matches_source(
        &snapshot(&target).await,
        &fake.occurrences(WEB),
        &fake.items(WEB),
        5,
    );
    let migrate = run_args(&target, &fake.api_url(), WEB, &["migrate"]).await;
    assert_eq!(migrate.code, Some(1), "{}", migrate.stdout);
    assert!(
        migrate
            .stderr
            .contains("analyst views could not be created"),
        "{}",
        migrate.stderr
    );
    // The user moves their table away: the next start creates every view.
    execute(&target, format!("DROP TABLE {schema}.deploys")).await;
    let second = sync_once(&target, &fake.api_url(), WEB, &[]).await;
    assert!(
        !second.stderr.contains("could not be created"),
        "{}",
        second.stderr
    );
    let views = query_text(
        &target,
        format!(
            "SELECT CAST(COUNT(*) AS VARCHAR) FROM information_schema.views WHERE table_schema = '{schema}' AND table_name IN ('deploys', 'rollbar_item_suspect_deploy', 'heimdallr_environment_map')"
        ),
    )
    .await;
    assert_eq!(views[0][0].as_deref(), Some("3"));
    let pending = query_text(
        &target,
        format!("SELECT CAST(COUNT(*) AS VARCHAR) FROM {schema}._heimdallr_migrations WHERE version < 0"),
    )
    .await;
    assert_eq!(
        pending[0][0].as_deref(),
        Some("0"),
        "the pending marker is gone"
    );
}
