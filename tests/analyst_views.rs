//! The analyst views on known data: a scripted day of deploys (production and staging
//! Heroku apps, the same shas reaching staging first; a Rollbar deploy record; a CircleCI
//! pipeline that is not a deploy) and errors (Rollbar items and occurrences in both
//! environments, one item resolved and reactivated, items first seen before any deploy
//! and before their version reached production), landed by `heimdallr sync all` through
//! the fake APIs with the environments setting, then every view compared with answers
//! worked out by hand, on PostgreSQL and the embedded file.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use heimdallr_fakes::circleci::FakeCircleCi;
use heimdallr_fakes::heroku::FakeHeroku;
use heimdallr_fakes::rollbar::FakeRollbar;

const ROLLBAR: &str = "tok-views-0123456789";
/// The second repository's Rollbar project (the API).
const ROLLBAR_API: &str = "tok-views-api-0123456789";
const CIRCLECI: &str = "cci-views-0123456789";
const HEROKU: &str = "hrku-views-0123456789";
const SHA_A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
const SHA_B: &str = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222";
const SHA_C: &str = "cccc3333cccc3333cccc3333cccc3333cccc3333";
const SHA_D: &str = "dddd4444dddd4444dddd4444dddd4444dddd4444";
/// A hotfix deployed outside Heroku's pipeline: only Rollbar's deploy record knows it.
const SHA_H: &str = "eeee5555eeee5555eeee5555eeee5555eeee5555";

/// 2026-11-20 at hh:mm UTC.
fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, hour, minute, 0).unwrap()
}

fn secs(hour: u32, minute: u32) -> i64 {
    at(hour, minute).timestamp()
}

struct Day {
    items: [i64; 6],
    api_item: i64,
    api_release: String,
    config_release: String,
    releases: [String; 3],
    staging_releases: [String; 2],
    staging_pipeline: String,
    rollback: String,
    rollbar_deploy: i64,
}

/// Production runs on acme-web and staging on acme-web-staging; CircleCI builds main for
/// production but does not deploy (Heroku does), and deploys the staging branch.
const ENVIRONMENTS: &str = r#"[
  {"name": "production", "rollbar": {"project_id": 901, "environment": "production"},
   "heroku": {"app": "acme-web"},
   "circleci": {"project": "gh/acme/web", "branch": "main", "deploys": false}},
  {"name": "staging", "rollbar": {"project_id": 901, "environment": "staging"},
   "heroku": {"app": "acme-web-staging"},
   "circleci": {"project": "gh/acme/web", "branch": "staging", "deploys": true}},
  {"name": "api-production", "rollbar": {"project_id": 902, "environment": "production"},
   "heroku": {"app": "acme-api"}}
]"#;

/// The scripted day (times UTC):
/// - Heroku acme-web (production): R1 deploys SHA_A at 09:00, R2 promotes staging's SHA_B
///   slug at 12:00, R3 deploys SHA_C at 15:00. acme-web-staging: S1 SHA_B at 11:00, S2
///   SHA_C at 14:00.
/// - Rollbar deploy records: production, SHA_A at 09:01 (R1's rollout: folded into it), and
///   a hotfix SHA_H from 12:04:30 to 12:06 that only Rollbar knows.
/// - CircleCI gh/acme/web: pipeline P1 of SHA_B at 11:50 on main, successful (a build,
///   not a deploy: the environments setting says so); P2 of SHA_C at 13:00 on a feature
///   branch; P3 of SHA_C at 13:30 on the staging branch, whose workflow failed at 13:35
///   and was re-run from 13:40 to success at 13:45 (a staging deploy, done at 13:45).
/// - Item A (production): 10:00 u1 (code_version SHA_A), 10:30 u2, 12:30 u1 (SHA_B).
/// - Item B (production): 12:10 u3, 13:00 u3; no code_version.
/// - Item C (staging): 15:30 u4, code_version the 7-character prefix of SHA_C.
/// - Item D (production): 09:30 u5; resolved; 16:00 u5 reactivates it.
/// - Item E (production): 08:30 u6, before any deploy.
/// - Item F (production): 14:30 u1 carrying SHA_C, which only staging has by then.
/// - The second repository, the API (Rollbar project 902, Heroku acme-api): release
///   API1 of SHA_D at 13:00; item G (its production) at 13:05 u3, no code version.
/// - On the 28th at 09:00: a rollback of acme-web to v2 (R4, SHA_B), then at 09:10 a
///   config change (R5, same slug).
async fn scripted_day() -> (FakeRollbar, FakeCircleCi, FakeHeroku, Day) {
    let heroku = FakeHeroku::start(HEROKU).await.unwrap();
    heroku.add_app("acme-web");
    heroku.add_app("acme-web-staging");
    let staging_first = heroku.deploy("acme-web-staging", SHA_B, at(11, 0));
    let releases = [
        heroku.deploy("acme-web", SHA_A, at(9, 0)),
        // SHA_B reaches production by promotion of staging's slug: no build of its own.
        heroku.promote_at("acme-web-staging", "acme-web", at(12, 0)),
        heroku.deploy("acme-web", SHA_C, at(15, 0)),
    ];
    // A week later, a rollback to v2 (SHA_B): it ends R3's time as the current release;
    // then a config change (same slug).
    let week_later = Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap();
    let rollback = heroku.rollback_at("acme-web", 2, week_later);
    let config_release =
        heroku.config_release_at("acme-web", week_later + chrono::Duration::minutes(10));
    heroku.add_app("acme-api");
    let api_release = heroku.deploy("acme-api", SHA_D, at(13, 0));
    let staging_releases = [
        staging_first,
        heroku.deploy("acme-web-staging", SHA_C, at(14, 0)),
    ];
    let circleci = FakeCircleCi::start(CIRCLECI, 91).await.unwrap();
    circleci.add_finished_pipeline("gh/acme/web", SHA_B, at(11, 50));
    circleci.add_branch_pipeline("gh/acme/web", SHA_C, "feature/search", at(13, 0));
    let staging_pipeline = circleci.add_rerun_pipeline("gh/acme/web", SHA_C, "staging", at(13, 30));
    let rollbar = FakeRollbar::start(91).await.unwrap();
    rollbar.add_project(ROLLBAR, 901, 0, 0);
    // Rollbar's record of R1 (the same rollout: folded into it), and of a hotfix.
    rollbar.add_deploy(ROLLBAR, "production", SHA_A, "succeeded", secs(9, 1));
    let rollbar_deploy =
        rollbar.add_deploy(ROLLBAR, "production", SHA_H, "succeeded", secs(12, 4) + 30);
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
    let e = rollbar.new_item(ROLLBAR, "production");
    rollbar.occur(ROLLBAR, e, secs(8, 30), "production", Some("u6"), None);
    let f = rollbar.new_item(ROLLBAR, "production");
    rollbar.occur(
        ROLLBAR,
        f,
        secs(14, 30),
        "production",
        Some("u1"),
        Some(SHA_C),
    );
    rollbar.add_project(ROLLBAR_API, 902, 0, 0);
    let g = rollbar.new_item(ROLLBAR_API, "production");
    rollbar.occur(ROLLBAR_API, g, secs(13, 5), "production", Some("u3"), None);
    (
        rollbar,
        circleci,
        heroku,
        Day {
            items: [a, b, c, d, e, f],
            api_item: g,
            api_release,
            config_release,
            releases,
            staging_releases,
            staging_pipeline,
            rollback,
            rollbar_deploy,
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

/// The environment map as text: app, project id, environment, origin, shared versions.
async fn environment_map(target: &Target) -> Vec<Vec<String>> {
    let s = target.schema();
    rows(
        target,
        format!("SELECT heroku_app, CAST(rollbar_project_id AS VARCHAR), rollbar_environment, origin, CAST(shared_versions AS VARCHAR) FROM {s}.heimdallr_environment_map"),
    )
    .await
}

fn expect(rows: &[&[&str]]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    rows.sort();
    rows
}

/// The company's activity table, as docs/analysts.md asks for it: one row per user and
/// active day. Everyone but u4 was active on the 20th; u1 came back the next day; u2, u3
/// and u7 a week later (D7); u7 thirty days later (D30); u8 on the 25th of December, the
/// last day observed.
async fn create_activity(target: &Target) -> String {
    let schema = format!("{}_app", target.schema());
    let table = format!("{schema}.activity");
    let days: &[(&str, &[&str])] = &[
        ("2026-11-20", &["u1", "u2", "u3", "u5", "u6", "u7", "u8"]),
        ("2026-11-21", &["u1"]),
        ("2026-11-27", &["u2", "u3", "u7"]),
        ("2026-12-20", &["u7"]),
        ("2026-12-25", &["u8"]),
    ];
    let values: Vec<String> = days
        .iter()
        .flat_map(|(day, users)| users.iter().map(move |u| format!("('{u}', DATE '{day}')")))
        .collect();
    for sql in [
        format!("CREATE SCHEMA {schema}"),
        format!("CREATE TABLE {table} (user_id VARCHAR(64), active_on DATE)"),
        format!("INSERT INTO {table} VALUES {}", values.join(", ")),
    ] {
        execute(target, sql).await;
    }
    table
}

/// The scripted day, synced into `target` with the environments and activity settings;
/// returns the activity table's name.
async fn sync_scripted_day(target: &Target) -> String {
    sync_day(target, Some(ENVIRONMENTS)).await.1
}

async fn sync_day(target: &Target, environments: Option<&str>) -> (Day, String) {
    let (rollbar, circleci, heroku, day) = scripted_day().await;
    // The warehouse first (a DuckDB file is created in the format every supported client
    // reads), then the company's table in it.
    let migrated = run_args(target, &rollbar.api_url(), ROLLBAR, &["migrate"]).await;
    assert_eq!(migrated.code, Some(0), "{}", migrated.stderr);
    let activity = create_activity(target).await;
    let mut command = heimdallr(
        target,
        &rollbar.api_url(),
        &format!("web={ROLLBAR},api={ROLLBAR_API}"),
    );
    command
        .env("CIRCLECI_TOKEN", CIRCLECI)
        .env("CIRCLECI_API_URL", circleci.api_url())
        .env("CIRCLECI_PROJECTS", "gh/acme/web")
        .env("HEROKU_API_KEY", HEROKU)
        .env("HEROKU_API_URL", heroku.api_url())
        .env("HEROKU_APPS", "acme-web,acme-web-staging,acme-api")
        .env("HEIMDALLR_ACTIVITY_TABLE", &activity)
        .env("ROLLBAR_DEPLOYS", "true")
        .args(["sync", "all", "--once", "--pii", "keep"]);
    if let Some(environments) = environments {
        command.env("HEIMDALLR_ENVIRONMENTS", environments);
    }
    let finished = run(command).await;
    assert_eq!(
        finished.code,
        Some(0),
        "{}\n{}",
        finished.stdout,
        finished.stderr
    );
    // The analyst settings and views are stored at the start: a failure there is logged
    // and the sync goes on, so look for it.
    assert!(
        !finished.stderr.contains("could not be stored")
            && !finished.stderr.contains("could not be refreshed"),
        "{}",
        finished.stderr
    );
    (day, activity)
}

async fn check_every_view(target: Target) {
    let (day, _) = sync_day(&target, Some(ENVIRONMENTS)).await;
    let s = target.schema().to_string();
    let [a, b, c, d, e, f] = day.items.map(|i| i.to_string());
    let g = day.api_item.to_string();
    let api1 = day.api_release.clone();
    let config = day.config_release.clone();
    let [r1, r2, r3] = day.releases.clone();
    let [s1, s2] = day.staging_releases.clone();
    let rollbar_deploy = day.rollbar_deploy.to_string();
    let t = |h, m| secs(h, m).to_string();

    // The environments setting is stored whole.
    let environments = rows(
        &target,
        format!("SELECT name, CAST(rollbar_project_id AS VARCHAR), rollbar_environment, heroku_app, circleci_project_slug, circleci_branch, CAST(circleci_deploys AS VARCHAR) FROM {s}.heimdallr_environments"),
    )
    .await;
    assert_eq!(
        environments,
        expect(&[
            &[
                "production",
                "901",
                "production",
                "acme-web",
                "gh/acme/web",
                "main",
                "false"
            ],
            &[
                "staging",
                "901",
                "staging",
                "acme-web-staging",
                "gh/acme/web",
                "staging",
                "true"
            ],
            &[
                "api-production",
                "902",
                "production",
                "acme-api",
                "-",
                "-",
                "false"
            ],
        ])
    );

    // Impact per item per day, by environment; the item's level beside it.
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
            &[&e, "production", "2026-11-20", "1", "1"],
            &[&f, "production", "2026-11-20", "1", "1"],
            &[&g, "production", "2026-11-20", "1", "1"],
        ])
    );
    let levels_differ = rows(
        &target,
        format!(
            "SELECT CAST(COUNT(*) AS VARCHAR) FROM {s}.rollbar_item_daily_impact AS v JOIN {s}.rollbar_items AS i ON i.id = v.item_id WHERE v.level IS NULL OR v.level <> i.level \
             UNION ALL SELECT CAST(COUNT(*) AS VARCHAR) FROM {s}.rollbar_person_exposure AS v JOIN {s}.rollbar_items AS i ON i.id = v.item_id WHERE v.level IS NULL OR v.level <> i.level OR v.environment <> i.environment"
        ),
    )
    .await;
    assert_eq!(levels_differ, expect(&[&["0"], &["0"]]));

    // Person exposure: first and last seen, occurrences, in the item's environment.
    let exposure = rows(
        &target,
        format!(
            "SELECT person_id, CAST(item_id AS VARCHAR), {}, {}, CAST(occurrences AS VARCHAR), environment FROM {s}.rollbar_person_exposure",
            epoch(&target, "first_seen_at"),
            epoch(&target, "last_seen_at")
        ),
    )
    .await;
    assert_eq!(
        exposure,
        expect(&[
            &["u1", &a, &t(10, 0), &t(12, 30), "2", "production"],
            &["u2", &a, &t(10, 30), &t(10, 30), "1", "production"],
            &["u3", &b, &t(12, 10), &t(13, 0), "2", "production"],
            &["u4", &c, &t(15, 30), &t(15, 30), "1", "staging"],
            &["u5", &d, &t(9, 30), &t(16, 0), "2", "production"],
            &["u6", &e, &t(8, 30), &t(8, 30), "1", "production"],
            &["u1", &f, &t(14, 30), &t(14, 30), "1", "production"],
            &["u3", &g, &t(13, 5), &t(13, 5), "1", "production"],
        ])
    );

    // Deploys only, each in its environment: the releases of both apps, Rollbar's deploy
    // record, and the staging branch's pipeline (its re-run succeeded); main's and the
    // feature branch's pipelines are builds, not deploys.
    let deploys = rows(
        &target,
        format!(
            "SELECT environment, source, target, deploy_id, CAST(number AS VARCHAR), {}, git_sha, status, CAST(succeeded AS VARCHAR) FROM {s}.deploys",
            epoch(&target, "deployed_at")
        ),
    )
    .await;
    let hotfix_at = (secs(12, 4) + 30).to_string();
    let config_at = rows(
        &target,
        format!(
            "SELECT {} FROM {s}.heroku_releases WHERE id = '{config}'",
            epoch(&target, "created_at")
        ),
    )
    .await[0][0]
        .clone();
    let rollback_at = Utc
        .with_ymd_and_hms(2026, 11, 28, 9, 0, 0)
        .unwrap()
        .timestamp()
        .to_string();
    assert_eq!(
        deploys,
        expect(&[
            &[
                "production",
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
                "production",
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
                "production",
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
                "production",
                "heroku",
                "acme-web",
                &day.rollback,
                "4",
                &rollback_at,
                SHA_B,
                "succeeded",
                "true"
            ],
            &[
                "production",
                "rollbar",
                "production",
                &rollbar_deploy,
                "-",
                &hotfix_at,
                SHA_H,
                "succeeded",
                "true"
            ],
            &[
                "staging",
                "heroku",
                "acme-web-staging",
                &s1,
                "1",
                &t(11, 0),
                SHA_B,
                "succeeded",
                "true"
            ],
            &[
                "staging",
                "heroku",
                "acme-web-staging",
                &s2,
                "2",
                &t(14, 0),
                SHA_C,
                "succeeded",
                "true"
            ],
            &[
                "staging",
                "circleci",
                "gh/acme/web",
                &day.staging_pipeline,
                "3",
                // When its last attempt's workflow stopped: the re-run, at 13:45.
                &t(13, 45),
                SHA_C,
                "success",
                "true"
            ],
            // The API's release, in its own environment.
            &[
                "api-production",
                "heroku",
                "acme-api",
                &api1,
                "1",
                &t(13, 0),
                SHA_D,
                "succeeded",
                "true"
            ],
            // A config change has no build: its sha is its slug's, the rollback's.
            &[
                "production",
                "heroku",
                "acme-web",
                &config,
                "5",
                &config_at,
                SHA_B,
                "succeeded",
                "true"
            ],
        ])
    );

    // The suspect deploy of each item, in its own environment, never after it appeared.
    let suspects = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), {}, matched_by, deploy_source, deploy_id FROM {s}.rollbar_item_suspect_deploy WHERE item_id IN ({a}, {b}, {c}, {d}, {e}, {f}, {g})",
            epoch(&target, "first_seen_at")
        ),
    )
    .await;
    assert_eq!(
        suspects,
        expect(&[
            // First seen at 10:00 carrying SHA_A: R1, by its code version.
            &[&a, &t(10, 0), "code_version", "heroku", &r1],
            // No code version; first seen 12:10: the last production deploy before it is
            // the hotfix Rollbar recorded at 12:04:30 (R2 was at 12:00).
            &[&b, &t(12, 10), "time", "rollbar", &rollbar_deploy],
            // Staging: its short sha matches S2 (staging, 14:00) and the staging pipeline
            // (13:45); the latest wins. Not production's R3.
            &[&c, &t(15, 30), "code_version", "heroku", &s2],
            // First seen at 09:30 (its reactivation at 16:00 does not move it): R1.
            &[&d, &t(9, 30), "time", "heroku", &r1],
            // Before any deploy: none.
            &[&e, &t(8, 30), "-", "-", "-"],
            // SHA_C reached production only at 15:00, after F appeared: by time.
            &[&f, &t(14, 30), "time", "rollbar", &rollbar_deploy],
            // The API's item: its own environment's release, not the web's later deploys.
            &[&g, &t(13, 5), "time", "heroku", &api1],
        ])
    );
    // Who deployed, the commit range, and for the regression the deploy that brought it
    // back: D, reactivated at 16:00, after R3 (SHA_C, 15:00), whose previous production
    // deploy is the hotfix Rollbar recorded at 12:04:30 (SHA_H), after R2.
    let blame = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), deploy_actor, commit_range, {}, reactivation_matched_by, \
             reactivation_deploy_source, reactivation_deploy_id, reactivation_git_sha, \
             reactivation_commit_range FROM {s}.rollbar_item_suspect_deploy WHERE item_id IN ({a}, {d})",
            epoch(&target, "reactivated_at")
        ),
    )
    .await;
    let hc = format!("{SHA_H}..{SHA_C}");
    assert_eq!(
        blame,
        expect(&[
            // R1 is the first production deploy: no range.
            &[&a, "dev@example.com", "-", "-", "-", "-", "-", "-", "-"],
            &[
                &d,
                "dev@example.com",
                "-",
                &t(16, 0),
                "time",
                "heroku",
                &r3,
                SHA_C,
                &hc
            ],
        ])
    );

    // The fix-next list: open error and critical items only, ranked with a total order.
    let listed = rows(
        &target,
        format!(
            "SELECT CAST(rank AS VARCHAR), CAST(item_id AS VARCHAR), level, status, trend, \
             CAST(people_all AS VARCHAR), suspect_source, CAST(reactivated AS VARCHAR), \
             estimate_note, rollbar_url FROM {s}.fix_next"
        ),
    )
    .await;
    assert!(!listed.is_empty());
    let ranks: Vec<String> = listed.iter().map(|r| r[0].clone()).collect();
    let mut expected_ranks: Vec<String> = (1..=listed.len()).map(|r| r.to_string()).collect();
    expected_ranks.sort();
    assert_eq!(ranks, expected_ranks, "ranks are 1..n");
    for row in &listed {
        assert!(matches!(row[2].as_str(), "error" | "critical"), "{row:?}");
        assert_eq!(row[3], "active", "{row:?}");
        // A day in the past: nobody this week or the week before.
        assert_eq!(row[4], "quiet", "{row:?}");
        // The stand-in's project starts with an item no occurrence has reached (Rollbar
        // makes items from occurrences; the stand-in makes one up front): no one hit, no
        // link.
        if row[5] == "0" {
            assert_eq!(
                row[8..],
                ["not estimated: no person it hit is in the activity table, or it is newer than the estimate", "-"]
            );
            continue;
        }
        // Seven people at most: too few for an estimate, and it says so; C hit only u4,
        // whom the activity table does not know.
        let note = if row[1] == c {
            "not estimated: no person it hit is in the activity table, or it is newer than the estimate"
        } else {
            "fewer than 30 people hit"
        };
        assert_eq!(row[8], note, "{row:?}");
        assert!(
            row[9].starts_with("https://rollbar.com/item/uuid/?uuid="),
            "{row:?}"
        );
    }

    // Per release, in its own environment: new and reactivated items, people hit.
    let releases = rows(
        &target,
        format!(
            "SELECT environment, release_id, CAST(version AS VARCHAR), {}, git_sha, CAST(new_items AS VARCHAR), CAST(reactivated_items AS VARCHAR), CAST(affected_people AS VARCHAR) FROM {s}.release_impact",
            epoch(&target, "window_end")
        ),
    )
    .await;
    let day_after = |h| (secs(h, 0) + 24 * 3600).to_string();
    assert_eq!(
        releases,
        expect(&[
            // 09:00-12:00: A and D appear (E at 08:30 is before); u1, u2 and u5 are hit.
            &["production", &r1, "1", &t(12, 0), SHA_A, "2", "0", "3"],
            // 12:00-15:00: B and F appear; u1 (A again, F) and u3.
            &["production", &r2, "2", &t(15, 0), SHA_B, "2", "0", "2"],
            // 15:00 + 24 h: D comes back (u5); C is staging's.
            &["production", &r3, "3", &day_after(15), SHA_C, "0", "1", "1"],
            // The rollback a week later, until the config change right after it.
            &[
                "production",
                &day.rollback,
                "4",
                &config_at,
                SHA_B,
                "0",
                "0",
                "0"
            ],
            &[
                "production",
                &config,
                "5",
                &(config_at.parse::<i64>().unwrap() + 24 * 3600).to_string(),
                SHA_B,
                "0",
                "0",
                "0"
            ],
            // The API: G appears at 13:05 and hits u3; web's items are not its.
            &[
                "api-production",
                &api1,
                "1",
                &day_after(13),
                SHA_D,
                "1",
                "0",
                "1"
            ],
            // Staging: nothing until C at 15:30, after S2.
            &["staging", &s1, "1", &t(14, 0), SHA_B, "0", "0", "0"],
            &["staging", &s2, "2", &day_after(14), SHA_C, "1", "0", "1"],
        ])
    );

    // All-time impact per item.
    let item_impact = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), environment, {}, {}, CAST(occurrences AS VARCHAR), CAST(affected_people AS VARCHAR) FROM {s}.rollbar_item_impact WHERE item_id IN ({a}, {b}, {c}, {d}, {e}, {f}, {g}) \
             UNION ALL SELECT CAST(COUNT(*) AS VARCHAR), 'items without occurrences', '-', '-', CAST(SUM(occurrences) AS VARCHAR), CAST(SUM(affected_people) AS VARCHAR) \
             FROM {s}.rollbar_item_impact WHERE item_id NOT IN ({a}, {b}, {c}, {d}, {e}, {f}, {g})",
            epoch(&target, "first_seen_at"),
            epoch(&target, "last_seen_at")
        ),
    )
    .await;
    assert_eq!(
        item_impact,
        expect(&[
            &[&a, "production", &t(10, 0), &t(12, 30), "3", "2"],
            &[&b, "production", &t(12, 10), &t(13, 0), "2", "1"],
            &[&c, "staging", &t(15, 30), &t(15, 30), "1", "1"],
            &[&d, "production", &t(9, 30), &t(16, 0), "2", "1"],
            &[&e, "production", &t(8, 30), &t(8, 30), "1", "1"],
            &[&f, "production", &t(14, 30), &t(14, 30), "1", "1"],
            &[&g, "production", &t(13, 5), &t(13, 5), "1", "1"],
            // The project's placeholder item (the fake makes one): listed, with nothing.
            &["2", "items without occurrences", "-", "-", "0", "0"],
        ])
    );

    // Per item and code version: new in it, or seen in earlier versions.
    let versions = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), code_version, {}, CAST(occurrences AS VARCHAR), CAST(earlier_versions AS VARCHAR), CAST(new_in_version AS VARCHAR) FROM {s}.rollbar_item_versions",
            epoch(&target, "first_seen_at")
        ),
    )
    .await;
    assert_eq!(
        versions,
        expect(&[
            &[&a, SHA_A, &t(10, 0), "1", "0", "true"],
            &[&a, SHA_B, &t(12, 30), "1", "1", "false"],
            &[&c, &SHA_C[..7], &t(15, 30), "1", "0", "true"],
            &[&f, SHA_C, &t(14, 30), "1", "0", "true"],
        ])
    );

    // Release health over the activity table: per release of an environment and per day it
    // was current (days after the 27th depend on today's date: not asserted), active users,
    // users an error hit that day, and the crash-free share (x 1000).
    let health = rows(
        &target,
        format!(
            "SELECT environment, release_id, CAST(day AS VARCHAR), CAST(active_users AS VARCHAR), CAST(affected_users AS VARCHAR), \
             CAST(CAST(ROUND(crash_free_users * 1000) AS BIGINT) AS VARCHAR) FROM {s}.release_health WHERE day <= DATE '2026-11-27'"
        ),
    )
    .await;
    assert_eq!(
        health,
        expect(&[
            // 09:00-12:00: u1, u2 (A) and u5 (D) of 7 active.
            &["production", &r1, "2026-11-20", "7", "3", "571"],
            // 12:00-15:00: u3 (B) and u1 (A, F).
            &["production", &r2, "2026-11-20", "7", "2", "714"],
            // From 15:00 until the rollback: u5 (D again) on the 20th, no one after.
            &["production", &r3, "2026-11-20", "7", "1", "857"],
            &["production", &r3, "2026-11-21", "1", "0", "1000"],
            &["production", &r3, "2026-11-27", "3", "0", "1000"],
            // Staging: C hit u4, who is not in the activity table.
            &["staging", &s1, "2026-11-20", "7", "0", "1000"],
            &["staging", &s2, "2026-11-20", "7", "0", "1000"],
            &["staging", &s2, "2026-11-21", "1", "0", "1000"],
            &["staging", &s2, "2026-11-27", "3", "0", "1000"],
            // The API, current since 13:00: G hit u3 on the 20th.
            &["api-production", &api1, "2026-11-20", "7", "1", "857"],
            &["api-production", &api1, "2026-11-21", "1", "0", "1000"],
            &["api-production", &api1, "2026-11-27", "3", "0", "1000"],
        ])
    );

    // Retention impact per item: D7 (the 27th) and D30 (December 20th) retention of the
    // people it hit on the 20th against the others active that day (x 1000); with seven
    // people no item has enough for an estimate of what it cost, and each says so.
    let r = |column: &str| format!("CAST(CAST(ROUND({column} * 1000) AS BIGINT) AS VARCHAR)");
    let retention = rows(
        &target,
        format!(
            "SELECT CAST(item_id AS VARCHAR), CAST(hit_people AS VARCHAR), CAST(other_people AS VARCHAR), {}, {}, {}, {}, {}, \
             estimate_note FROM {s}.rollbar_item_retention_impact",
            r("d7_retention_hit"),
            r("d7_retention_others"),
            r("d30_retention_hit"),
            r("d30_retention_others"),
            r("d7_retention_lost"),
        ),
    )
    .await;
    assert_eq!(
        retention,
        expect(&[
            // A hit u1 and u2: u2 came back on D7; of u3, u5, u6, u7, u8, u3 and u7 did.
            &[
                &a,
                "2",
                "5",
                "500",
                "400",
                "0",
                "200",
                "-",
                "fewer than 30 people hit"
            ],
            &[
                &b,
                "1",
                "6",
                "1000",
                "333",
                "0",
                "167",
                "-",
                "fewer than 30 people hit"
            ],
            // C (staging) hit u4, whom the activity table does not know: no cohort, no row
            // (a person the table does not show active is neither hit nor other).
            &[
                &d,
                "1",
                "6",
                "0",
                "500",
                "0",
                "167",
                "-",
                "fewer than 30 people hit"
            ],
            &[
                &e,
                "1",
                "6",
                "0",
                "500",
                "0",
                "167",
                "-",
                "fewer than 30 people hit"
            ],
            &[
                &f,
                "1",
                "6",
                "0",
                "500",
                "0",
                "167",
                "-",
                "fewer than 30 people hit"
            ],
            &[
                &g,
                "1",
                "6",
                "1000",
                "333",
                "0",
                "167",
                "-",
                "fewer than 30 people hit"
            ],
        ])
    );

    // `heimdallr top` reads the same list from this warehouse.
    let top = run_args(
        &target,
        "http://127.0.0.1:9",
        ROLLBAR,
        &["top", "--limit", "3"],
    )
    .await;
    assert_eq!(top.code, Some(0), "{}", top.stderr);
    assert!(top.stdout.starts_with("Fix next: "), "{}", top.stdout);
    let ranked = top
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(ranked, 3, "{}", top.stdout);
    assert!(
        top.stdout.contains("fewer than 30 people hit"),
        "{}",
        top.stdout
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

/// Redshift's dialect of every view (late-binding activity views, DATEDIFF, GETDATE),
/// created and read through the Data API stand-in, gives the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_answers_the_scripted_day_on_redshift() {
    let Some(pg_url) = postgres_url() else { return };
    let standin = heimdallr_fakes::redshift_data::FakeRedshiftData::start(Some(pg_url.clone()))
        .await
        .expect("Data API stand-in");
    check_every_view(Target::Redshift {
        endpoint: standin.endpoint(),
        pg_url,
        schema: unique_schema("rsviews"),
        s3: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_answers_the_scripted_day_in_the_duckdb_file() {
    let dir = TempDir::new("views-duck");
    check_every_view(Target::Duck(dir.path().join("w.duckdb"))).await;
}

/// The `sql` blocks of docs/analysts.md's "Worked queries" section, one statement each.
fn worked_queries() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/analysts.md"))
        .expect("docs/analysts.md");
    let start = doc
        .find("\n## Worked queries\n")
        .expect("docs/analysts.md has a Worked queries section");
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| {
            block
                .split("```")
                .next()
                .unwrap_or_default()
                .trim()
                .trim_end_matches(';')
                .to_string()
        })
        .collect()
}

/// A cell as the same text whichever backend and client read it: numbers to six decimals,
/// booleans as true/false, timestamps to the second in UTC.
fn normalized(cell: Option<&serde_json::Value>) -> String {
    match cell {
        None | Some(serde_json::Value::Null) => "NULL".into(),
        Some(serde_json::Value::Bool(b)) => b.to_string(),
        Some(serde_json::Value::Number(n)) => format!("{:.6}", n.as_f64().unwrap_or_default()),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "t" => "true".into(),
            "f" => "false".into(),
            _ if s.parse::<f64>().is_ok() && !s.contains('-') => {
                format!("{:.6}", s.parse::<f64>().unwrap_or_default())
            }
            _ if s.len() >= 19 && s.as_bytes()[10] == b' ' && s.as_bytes()[13] == b':' => {
                s[..19].to_string()
            }
            _ => s.clone(),
        },
        Some(other) => other.to_string(),
    }
}

fn for_target(sql: &str, schema: &str, activity: &str) -> String {
    sql.replace("heimdallr.", &format!("{schema}."))
        .replace("app.user_activity", activity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_queries_run_unchanged_and_agree_on_every_backend() {
    let Some(url) = postgres_url() else { return };
    let clients = duckdb_clients();
    if clients.is_empty() {
        return;
    }
    let queries = worked_queries();
    assert!(queries.len() >= 6, "{queries:?}");
    let postgres = Target::Postgres {
        url: url.clone(),
        schema: unique_schema("worked"),
    };
    let dir = TempDir::new("worked-duck");
    let file = dir.path().join("w.duckdb");
    let duck = Target::Duck(file.clone());
    let mut activities = Vec::new();
    for target in [&postgres, &duck] {
        activities.push(sync_scripted_day(target).await);
    }
    let client = heimdallr_fakes::postgres::connect(&url).await;
    // Queries about "this week" find nothing in a day scripted in the past; the others
    // must answer.
    let mut answered = 0;
    for sql in &queries {
        let on_postgres: Vec<Vec<String>> = client
            .simple_query(&for_target(sql, postgres.schema(), &activities[0]))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL: {e}\n{sql}"))
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| normalized(row.get(i).map(|s| serde_json::json!(s)).as_ref()))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        for python in &clients {
            let script = format!(
                "import duckdb, json, sys\n\
                 con = duckdb.connect({file:?}, read_only=True)\n\
                 rows = con.sql('SELECT COLUMNS(*)::VARCHAR FROM (' + sys.stdin.read() + ') AS q').fetchall()\n\
                 print(json.dumps(rows))",
                file = file.display().to_string()
            );
            let printed = run_python(
                python,
                dir.path(),
                &script,
                &for_target(sql, duck.schema(), &activities[1]),
            )
            .await;
            let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(printed.trim())
                .unwrap_or_else(|e| panic!("{python}: {e}: {printed}"));
            let on_duckdb: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(|v| normalized(Some(v))).collect())
                .collect();
            assert_eq!(
                on_duckdb, on_postgres,
                "{python} and PostgreSQL differ on\n{sql}"
            );
        }
        answered += usize::from(!on_postgres.is_empty());
    }
    assert!(
        answered >= 4,
        "{answered} of {} worked queries returned rows",
        queries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_environments_are_inferred_from_the_shas_and_status_says_so() {
    let dir = TempDir::new("views-inferred");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    sync_day(&target, None).await;
    let s = target.schema().to_string();
    let map = environment_map(&target).await;
    // acme-web released every version production reported (3); staging's app shares two of
    // them with production (promotions) and one with staging: it is matched once
    // production has its best app, never by a guess between equals.
    assert_eq!(
        map,
        expect(&[
            &["acme-web", "901", "production", "inferred", "3"],
            &["acme-web-staging", "901", "staging", "inferred", "1"],
        ])
    );
    let staging_deploys = rows(
        &target,
        format!("SELECT source, target FROM {s}.deploys WHERE environment = 'staging'"),
    )
    .await;
    assert_eq!(
        staging_deploys,
        expect(&[
            &["heroku", "acme-web-staging"],
            &["heroku", "acme-web-staging"]
        ])
    );
    let status = run_args(&target, "http://127.0.0.1:9", ROLLBAR, &["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains(
            "acme-web-staging             -> 901/staging  inferred from 1 shared code versions"
        ),
        "{}",
        status.stdout
    );
    for line in status.stdout.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
}

/// Heroku's standard pipeline flow: staging builds every sha and production is promoted
/// from staging, so both apps share every sha and the shas alone pair neither app with an
/// environment. Their pipeline stages do, and status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_standard_pipeline_flow_each_app_is_mapped_by_its_heroku_stage() {
    let dir = TempDir::new("views-pipeline");
    let target = Target::Duck(dir.path().join("w.duckdb"));
    let heroku = FakeHeroku::start(HEROKU).await.unwrap();
    heroku.add_app("shop");
    heroku.add_app("shop-staging");
    heroku.add_app("shop-pr-7");
    heroku.couple("shop", "shop-pipeline", "production");
    heroku.couple("shop-staging", "shop-pipeline", "staging");
    heroku.couple("shop-pr-7", "shop-pipeline", "review");
    heroku.deploy("shop-staging", SHA_A, at(9, 0));
    let first = heroku.promote_at("shop-staging", "shop", at(10, 0));
    heroku.deploy("shop-staging", SHA_B, at(11, 0));
    let second = heroku.promote_at("shop-staging", "shop", at(12, 0));
    heroku.deploy("shop-pr-7", SHA_B, at(10, 30));
    let rollbar = FakeRollbar::start(92).await.unwrap();
    rollbar.add_project(ROLLBAR, 901, 0, 0);
    let mut items = Vec::new();
    for (environment, sha, (hour, minute)) in [
        ("production", SHA_A, (10, 30)),
        ("production", SHA_B, (12, 30)),
        ("staging", SHA_A, (9, 30)),
        ("staging", SHA_B, (11, 30)),
    ] {
        let item = rollbar.new_item(ROLLBAR, environment);
        rollbar.set_item_details(ROLLBAR, item, "error", &format!("{environment} {hour}"));
        rollbar.occur(
            ROLLBAR,
            item,
            secs(hour, minute),
            environment,
            Some("u1"),
            Some(sha),
        );
        items.push(item);
    }
    let mut command = heimdallr(&target, &rollbar.api_url(), ROLLBAR);
    command
        .env("HEROKU_API_KEY", HEROKU)
        .env("HEROKU_API_URL", heroku.api_url())
        .env("HEROKU_APPS", "shop,shop-staging,shop-pr-7")
        .args(["sync", "all", "--once"]);
    let finished = run(command).await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let s = target.schema().to_string();
    let map = environment_map(&target).await;
    // The review app has no environment of its own.
    assert_eq!(
        map,
        expect(&[
            &[
                "shop",
                "901",
                "production",
                "pipeline stage production",
                "2"
            ],
            &[
                "shop-staging",
                "901",
                "staging",
                "pipeline stage staging",
                "2"
            ],
        ])
    );
    // Production's second item is blamed on the promotion that brought SHA_B there.
    let suspect = rows(
        &target,
        format!(
            "SELECT matched_by, deploy_target, deploy_id FROM {s}.rollbar_item_suspect_deploy WHERE item_id = {}",
            items[1]
        ),
    )
    .await;
    assert_eq!(suspect, expect(&[&["code_version", "shop", &second]]));
    assert_ne!(first, second);
    let status = run_args(&target, "http://127.0.0.1:9", ROLLBAR, &["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains(
            "shop                         -> 901/production  Heroku stage production (2 shared code versions)"
        ),
        "{}",
        status.stdout
    );
}
