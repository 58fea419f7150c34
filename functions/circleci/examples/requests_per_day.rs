//! How many CircleCI API requests a day of syncing costs: a simulated project with N
//! pipelines a day (uniformly spread, one or two workflows each, finished ten minutes
//! later, one in twenty re-run two hours later) is synced every CADENCE for two simulated
//! days into the test PostgreSQL, with the fake API and the sync sharing one clock. The
//! first day (the backfill of a week of history included) warms up; the second is
//! measured. It also checks the warehouse equals the source at the end: cheap runs that
//! miss re-runs would not count.
//!
//! Run by scripts/bench-circleci.sh (which starts PostgreSQL):
//!   cargo run -p heimdallr-circleci --example requests_per_day -- [PIPELINES_PER_DAY] [CADENCE...]
//! Settings follow the command's (`CIRCLECI_LOOKBACK`, `CIRCLECI_SWEEP_WINDOW`,
//! `CIRCLECI_SWEEP_INTERVAL`), defaults included.

use chrono::{DateTime, Duration, Utc};
use heimdallr_circleci::{CircleCi, Settings};
use heimdallr_core::engine::{Clock, SyncOptions};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::{settings_from_env, sync_source, Common, Source};
use heimdallr_core::token::Token;
use heimdallr_core::warehouse::{self, WarehouseTarget};
use heimdallr_fakes::circleci::FakeCircleCi;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "bench-token";
const SLUG: &str = "gh/acme/web";

struct Day {
    runs: u64,
    requests: BTreeMap<&'static str, u64>,
    per_run: Vec<u64>,
}

async fn simulate(per_day: u32, cadence: std::time::Duration, url: &str) -> Day {
    let fake = FakeCircleCi::start(TOKEN, 7).await.expect("fake CircleCI");
    // Lists of 20, as the API's pipeline pages.
    fake.set_page_sizes(20, 20);
    let start: DateTime<Utc> = Utc::now() - Duration::days(9);
    let every = Duration::seconds(86_400 / i64::from(per_day.max(1)));
    let now = Arc::new(Mutex::new(start));
    fake.set_time(Some(start));
    // A week of history before the first sync.
    let mut next_pipeline = start - Duration::days(7);
    let mut pipelines: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut reruns_due: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut n = 0u64;
    let add_until = |until: DateTime<Utc>,
                     next: &mut DateTime<Utc>,
                     pipelines: &mut Vec<(DateTime<Utc>, String)>,
                     reruns: &mut Vec<(DateTime<Utc>, String)>,
                     n: &mut u64| {
        while *next <= until {
            *n += 1;
            let id = fake.add_pipeline_at(SLUG, *next, 1 + usize::from((*n).is_multiple_of(3)));
            if (*n).is_multiple_of(20) {
                reruns.push((*next + Duration::hours(2), id.clone()));
            }
            pipelines.push((*next, id));
            *next += every;
        }
    };
    add_until(
        start,
        &mut next_pipeline,
        &mut pipelines,
        &mut reruns_due,
        &mut n,
    );
    fake.finish_created_before(start - Duration::minutes(10));

    // The command's own settings, from the same environment variables and defaults.
    let mut settings: Settings = settings_from_env().expect("settings");
    settings.api_url = fake.api_url();
    settings.projects = SLUG.into();
    let source = CircleCi::new(&settings, &Common::default()).expect("source");
    let mut sweep_now = settings.clone();
    sweep_now.sweep_interval = std::time::Duration::ZERO;
    let sweeper = CircleCi::new(&sweep_now, &Common::default()).expect("source");
    let token = Token::new(TOKEN);
    let schema = format!("bench_cci_{}", std::process::id());
    let target = WarehouseTarget::parse(url).expect("warehouse URL");
    let warehouse = warehouse::open(&target, &schema).await.expect("warehouse");
    warehouse.migrate(None).await.expect("migrate");

    let step = Duration::from_std(cadence).expect("cadence");
    let measured_from = start + Duration::days(1);
    let end = start + Duration::days(2);
    let mut day = Day {
        runs: 0,
        requests: BTreeMap::new(),
        per_run: Vec::new(),
    };
    let mut t = start;
    while t < end {
        add_until(
            t,
            &mut next_pipeline,
            &mut pipelines,
            &mut reruns_due,
            &mut n,
        );
        fake.finish_created_before(t - Duration::minutes(10));
        reruns_due.retain(|(at, id)| {
            if *at <= t {
                fake.rerun(id);
                false
            } else {
                true
            }
        });
        // Re-runs finish ten minutes later too (they are created running or final).
        *now.lock().expect("clock") = t;
        let mut options = SyncOptions::new(None);
        let clock = Arc::clone(&now);
        options.clock = Clock::from_fn(move || *clock.lock().expect("clock"));
        let before = fake.requests_by_kind();
        let outcomes = sync_source(&source, &token, &PiiPolicy::Drop, &warehouse, &options).await;
        for outcome in &outcomes {
            assert!(outcome.error.is_none(), "{:?}", outcome.error);
        }
        if t >= measured_from {
            let after = fake.requests_by_kind();
            let mut run_total = 0;
            for (kind, count) in &after {
                let delta = count - before.get(kind).copied().unwrap_or(0);
                *day.requests.entry(kind).or_default() += delta;
                run_total += delta;
            }
            day.per_run.push(run_total);
            day.runs += 1;
        }
        t += step;
        fake.set_time(Some(t));
    }
    // Correctness: after one more sweep (re-runs older than the look-back wait for one),
    // everything the source has, re-runs included, is in the warehouse.
    let mut options = SyncOptions::new(None);
    let clock = Arc::clone(&now);
    options.clock = Clock::from_fn(move || *clock.lock().expect("clock"));
    sync_source(&sweeper, &token, &PiiPolicy::Drop, &warehouse, &options).await;
    let truth = fake.truth();
    let pg = heimdallr_fakes::postgres::connect(url).await;
    let stored: i64 = pg
        .query_one(
            &format!("SELECT COUNT(*) FROM \"{schema}\".circleci_workflows"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        stored as usize,
        truth.workflows.len(),
        "every workflow landed"
    );
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
    day
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("HEIMDALLR_TEST_POSTGRES_URL")
        .expect("HEIMDALLR_TEST_POSTGRES_URL (scripts/bench-circleci.sh starts PostgreSQL)");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_day: u32 = args
        .first()
        .map_or(100, |a| a.parse().expect("pipelines a day"));
    let cadences: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec!["1m".into(), "5m".into()]
    };
    let settings: Settings = settings_from_env().expect("settings");
    println!(
        "CircleCI requests for {per_day} pipelines a day (look-back {:?}, sweep {:?} every {:?})",
        settings.lookback, settings.sweep_window, settings.sweep_interval,
    );
    println!(
        "{:>8} {:>6} {:>10} {:>9} {:>9} {:>8}  by kind",
        "cadence", "runs", "req/day", "req/min", "mean/run", "max/run"
    );
    for cadence in cadences {
        let every = heimdallr_core::time::parse_duration(&cadence).expect("a cadence");
        let day = simulate(per_day, every, &url).await;
        let total: u64 = day.requests.values().sum();
        let kinds: Vec<String> = day
            .requests
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "{:>8} {:>6} {:>10} {:>9.1} {:>9.1} {:>8}  {}",
            cadence,
            day.runs,
            total,
            total as f64 / 1440.0,
            total as f64 / day.runs.max(1) as f64,
            day.per_run.iter().max().copied().unwrap_or(0),
            kinds.join(", ")
        );
    }
}
