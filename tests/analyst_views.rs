//! The analyst views on known data: a scripted day of deploys (Heroku releases, a CircleCI
//! pipeline) and errors (Rollbar items and occurrences, one item resolved and reactivated),
//! landed by `heimdallr sync all` through the fake APIs, then every view compared with
//! answers worked out by hand, on PostgreSQL and the embedded file.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use heimdallr_fakes::circleci::FakeCircleCi;
use heimdallr_fakes::heroku::FakeHeroku;
use heimdallr_fakes::rollbar::FakeRollbar;

const ROLLBAR: &str = "tok-views-0123456789";
const CIRCLECI: &str = "cci-views-0123456789";
const HEROKU: &str = "hrku-views-0123456789";
const SHA_A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
const SHA_B: &str = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222";
const SHA_C: &str = "cccc3333cccc3333cccc3333cccc3333cccc3333";

/// 2026-11-20 at hh:mm UTC.
fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, hour, minute, 0).unwrap()
}

fn secs(hour: u32, minute: u32) -> i64 {
    at(hour, minute).timestamp()
}

struct Day {
    items: [i64; 4],
    releases: [String; 3],
    pipeline: String,
}

/// The scripted day (times UTC):
/// - Heroku acme-web: R1 deploys SHA_A at 09:00, R2 SHA_B at 12:00, R3 SHA_C at 15:00.
/// - CircleCI gh/acme/web: pipeline P1 of SHA_B at 11:50, its workflow successful.
/// - Item A (production): 10:00 u1 (code_version SHA_A), 10:30 u2, 12:30 u1 (SHA_B).
/// - Item B (production): 12:10 u3, 13:00 u3; no code_version.
/// - Item C (staging): 15:30 u4, code_version the 7-character prefix of SHA_C.
/// - Item D (production): 09:30 u5; resolved; 16:00 u5 reactivates it.
async fn scripted_day() -> (FakeRollbar, FakeCircleCi, FakeHeroku, Day) {
    let heroku = FakeHeroku::start(HEROKU).await.unwrap();
    heroku.add_app("acme-web");
    let releases = [
        heroku.deploy("acme-web", SHA_A, at(9, 0)),
        heroku.deploy("acme-web", SHA_B, at(12, 0)),
        heroku.deploy("acme-web", SHA_C, at(15, 0)),
    ];
    let circleci = FakeCircleCi::start(CIRCLECI, 91).await.unwrap();
    let pipeline = circleci.add_finished_pipeline("gh/acme/web", SHA_B, at(11, 50));
    let rollbar = FakeRollbar::start(91).await.unwrap();
    rollbar.add_project(ROLLBAR, 901, 0, 0);
    let a = rollbar.new_item(ROLLBAR, "production");
    rollbar.occur(
        ROLLBAR,
        a,
        secs(10, 0),
        "production",
        Some("u1"),
        Some(SHA_A),
    );
    rollbar.occur(ROLLBAR, a, secs(10, 30), "production", Some("u2"), None);
    rollbar.occur(
        ROLLBAR,
        a,
        secs(12, 30),
        "production",
        Some("u1"),
        Some(SHA_B),
    );
    let b = rollbar.new_item(ROLLBAR, "production");
    rollbar.occur(ROLLBAR, b, secs(12, 10), "production", Some("u3"), None);
    rollbar.occur(ROLLBAR, b, secs(13, 0), "production", Some("u3"), None);
    let c = rollbar.new_item(ROLLBAR, "staging");
    rollbar.occur(
        ROLLBAR,
        c,
        secs(15, 30),
        "staging",
        Some("u4"),
        Some(&SHA_C[..7]),
    );
    let d = rollbar.new_item(ROLLBAR, "production");
    rollbar.occur(ROLLBAR, d, secs(9, 30), "production", Some("u5"), None);
    rollbar.resolve_item(ROLLBAR, d);
    rollbar.occur(ROLLBAR, d, secs(16, 0), "production", Some("u5"), None);
    (
        rollbar,
        circleci,
        heroku,
        Day {
            items: [a, b, c, d],
            releases,
            pipeline,
        },
    )
}

fn epoch(target: &Target, expr: &str) -> String {
    match target {
        Target::Duck(_) => format!("CAST(epoch_us({expr}) // 1000000 AS VARCHAR)"),
        _ => format!("CAST(CAST(EXTRACT(EPOCH FROM {expr}) AS BIGINT) AS VARCHAR)"),
    }
}

/// Rows of `sql` as text, `NULL` as "-".
async fn rows(target: &Target, sql: String) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = query_text(target, sql)
        .await
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|c| c.unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

fn expect(rows: &[&[&str]]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    rows.sort();
    rows
}

async fn check_every_view(target: Target) {
    let (rollbar, circleci, heroku, day) = scripted_day().await;
    let mut command = heimdallr(&target, &rollbar.api_url(), ROLLBAR);
    command
        .env("CIRCLECI_TOKEN", CIRCLECI)
        .env("CIRCLECI_API_URL", circleci.api_url())
        .env("CIRCLECI_PROJECTS", "gh/acme/web")
        .env("HEROKU_API_KEY", HEROKU)
        .env("HEROKU_API_URL", heroku.api_url())
        .env("HEROKU_APPS", "acme-web")
        .args(["sync", "all", "--once", "--pii", "keep"]);
    let finished = run(command).await;
    assert_eq!(
        finished.code,
        Some(0),
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );

    let s = target.schema().to_string();
    let [a, b, c, d] = day.items.map(|i| i.to_string());
    let [r1, r2, r3] = day.releases.clone();
    let t = |h, m| secs(h, m).to_string();

    // Impact per item per day, by environment.
    let impact = rows(
        &target,
        format!("SELECT CAST(item_id AS VARCHAR), environment, CAST(day AS VARCHAR), CAST(occurrences AS VARCHAR), CAST(affected_people AS VARCHAR) FROM {s}.rollbar_item_daily_impact"),
    )
    .await;
    assert_eq!(
        impact,
        expect(&[
            &[&a, "production", "2026-11-20", "3", "2"],
            &[&b, "production", "2026-11-20", "2", "1"],
            &[&c, "staging", "2026-11-20", "1", "1"],
            &[&d, "production", "2026-11-20", "2", "1"],
        ])
    );

    // Person exposure: first and last seen, occurrences.
    let exposure = rows(
        &target,
        format!(
            "SELECT person_id, CAST(item_id AS VARCHAR), {}, {}, CAST(occurrences AS VARCHAR) FROM {s}.rollbar_person_exposure",
            epoch(&target, "first_seen_at"),
            epoch(&target, "last_seen_at")
        ),
    )
    .await;
    assert_eq!(
        exposure,
        expect(&[
            &["u1", &a, &t(10, 0), &t(12, 30), "2"],
            &["u2", &a, &t(10, 30), &t(10, 30), "1"],
            &["u3", &b, &t(12, 10), &t(13, 0), "2"],
            &["u4", &c, &t(15, 30), &t(15, 30), "1"],
            &["u5", &d, &t(9, 30), &t(16, 0), "2"],
        ])
    );

    // Deploys: Heroku releases and CircleCI pipelines in one view.
    let deploys = rows(
        &target,
        format!(
            "SELECT source, target, deploy_id, CAST(number AS VARCHAR), {}, git_sha, status, CAST(succeeded AS VARCHAR) FROM {s}.deploys",
            epoch(&target, "deployed_at")
        ),
    )
    .await;
    assert_eq!(
        deploys,
        expect(&[
            &[
                "heroku",
                "acme-web",
                &r1,
                "1",
                &t(9, 0),
                SHA_A,
                "succeeded",
                "true"
            ],
            &[
                "heroku",
                "acme-web",
                &r2,
                "2",
                &t(12, 0),
                SHA_B,
                "succeeded",
                "true"
            ],
            &[
                "heroku",
                "acme-web",
                &r3,
                "3",
                &t(15, 0),
                SHA_C,
                "succeeded",
                "true"
            ],
            &[
                "circleci",
                "gh/acme/web",
                &day.pipeline,
                "1",
                &t(11, 50),
                SHA_B,
                "success",
                "true"
            ],
        ])
    );

    // The suspect deploy of each item.
    let suspects = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), {}, matched_by, deploy_source, deploy_id FROM {s}.rollbar_item_suspect_deploy WHERE item_id IN ({a}, {b}, {c}, {d})",
            epoch(&target, "appeared_at")
        ),
    )
    .await;
    assert_eq!(
        suspects,
        expect(&[
            // First seen at 10:00 carrying SHA_A: R1, by its code version.
            &[&a, &t(10, 0), "code_version", "heroku", &r1],
            // No code version; first seen 12:10: the last deploy before is R2 (12:00),
            // later than the CircleCI pipeline (11:50).
            &[&b, &t(12, 10), "time", "heroku", &r2],
            // A short sha matches R3's full one.
            &[&c, &t(15, 30), "code_version", "heroku", &r3],
            // Reactivated at 16:00: the last deploy before that is R3.
            &[&d, &t(16, 0), "time", "heroku", &r3],
        ])
    );

    // Per release: new items, reactivated items, affected people until the next release.
    let releases = rows(
        &target,
        format!(
            "SELECT release_id, CAST(version AS VARCHAR), {}, git_sha, CAST(new_items AS VARCHAR), CAST(reactivated_items AS VARCHAR), CAST(affected_people AS VARCHAR) FROM {s}.release_impact",
            epoch(&target, "window_end")
        ),
    )
    .await;
    let day_after = (secs(15, 0) + 24 * 3600).to_string();
    assert_eq!(
        releases,
        expect(&[
            // 09:00-12:00: A and D appear; u1, u2 and u5 are hit.
            &[&r1, "1", &t(12, 0), SHA_A, "2", "0", "3"],
            // 12:00-15:00: B appears; u1 (A again) and u3.
            &[&r2, "2", &t(15, 0), SHA_B, "1", "0", "2"],
            // 15:00 + 24 h: C appears, D comes back; u4 and u5.
            &[&r3, "3", &day_after, SHA_C, "1", "1", "2"],
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_answers_the_scripted_day_on_postgres() {
    let Some(url) = postgres_url() else { return };
    check_every_view(Target::Postgres {
        url,
        schema: unique_schema("views"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_answers_the_scripted_day_in_the_duckdb_file() {
    let dir = TempDir::new("views-duck");
    check_every_view(Target::Duck(dir.path().join("w.duckdb"))).await;
}
