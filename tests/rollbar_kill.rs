//! Faults of the process itself: SIGKILL at random points of a backfill while occurrences
//! keep arriving, and two syncs of the same project at once. The warehouse must still
//! equal the source: nothing lost, nothing doubled, items current.

mod common;

use common::*;
use heimdallr_fakes::redshift_data::FakeRedshiftData;
use heimdallr_fakes::rollbar::{FakeRollbar, FaultRates};
use heimdallr_fakes::s3::FakeS3;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

const TOKEN: &str = "tok-kill-0123456789abcdef";

async fn kill_repeatedly_then_finish(target: Target, kills: usize, seed: u64) {
    let fake = FakeRollbar::start(seed).await.unwrap();
    fake.add_project(TOKEN, 301, 60, 12_000);
    fake.set_faults(FaultRates::all(0.01));
    fake.set_arrivals_per_request(3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let args = [
        "sync",
        "rollbar",
        "--once",
        "--rollbar-page-limit",
        "150",
        "--batch-rows",
        "150",
    ];
    let mut killed = 0;
    for _ in 0..kills {
        let mut command = heimdallr(&target, &fake.api_url(), TOKEN);
        command.args(args);
        let mut child = spawn(command);
        let wait = Duration::from_millis(rng.random_range(50..1_500));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => {
                // It finished before the kill: fine, more arrive for the next one.
                assert!(status.expect("wait").success(), "a run failed on its own");
            }
            Err(_) => {
                child.start_kill().expect("SIGKILL");
                let _ = child.wait().await;
                killed += 1;
            }
        }
    }
    // Later runs may finish before their kill once caught up; the backfill's were not.
    assert!(
        killed >= 3,
        "only {killed} of {kills} runs were killed mid-way"
    );
    // Arrivals stop; runs go on until one finishes (each resumes where the last got to).
    fake.set_arrivals_per_request(0);
    sync_once(&target, &fake.api_url(), TOKEN, &args[3..]).await;
    let snap = final_pass(&target, &fake).await;
    assert!(
        snap.runs.iter().any(|(_, _, status)| status == "running"),
        "some runs were killed after they started (their record never ended)"
    );
    assert_matches_source(&snap, &fake.occurrences(TOKEN), &fake.items(TOKEN), 50);
}

/// A last pass that also sweeps every item, then what the warehouse holds.
async fn final_pass(target: &Target, fake: &FakeRollbar) -> Snapshot {
    sync_once(
        target,
        &fake.api_url(),
        TOKEN,
        &["--rollbar-items-sweep-interval", "0s"],
    )
    .await;
    snapshot(target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_at_random_points() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("kill"),
    };
    kill_repeatedly_then_finish(target, 14, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_file_survives_sigkill_at_random_points() {
    let dir = TempDir::new("duck-kill");
    kill_repeatedly_then_finish(Target::Duck(dir.path().join("w.duckdb")), 8, 22).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_through_the_data_api_survives_sigkill_at_random_points() {
    let Some(pg_url) = postgres_url() else { return };
    let standin = FakeRedshiftData::start(Some(pg_url.clone()))
        .await
        .expect("Data API stand-in");
    let target = Target::Redshift {
        endpoint: standin.endpoint(),
        pg_url,
        schema: unique_schema("rskill"),
        s3: None,
    };
    kill_repeatedly_then_finish(target.clone(), 8, 23).await;
    // Every batch went through BatchExecuteStatement inside the real limits.
    let stats = standin.stats();
    assert!(stats.committed_batches > 10, "{stats:?}");
    assert!(stats.batch_sizes.iter().all(|&n| n <= 40));
    let status = run_args(&target, "http://127.0.0.1:9", TOKEN, &["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(status.stdout.contains("occurrences"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_of_one_project_at_once_still_give_the_source() {
    let Some(url) = postgres_url() else { return };
    let target = Target::Postgres {
        url,
        schema: unique_schema("overlap"),
    };
    let fake = FakeRollbar::start(31).await.unwrap();
    fake.add_project(TOKEN, 302, 30, 6_000);
    fake.set_arrivals_per_request(2);
    let args = ["sync", "rollbar", "--once", "--rollbar-page-limit", "200"];
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut command = heimdallr(&target, &fake.api_url(), TOKEN);
            command.args(args);
            tokio::spawn(run(command))
        })
        .collect();
    for handle in runs {
        let finished = handle.await.expect("join");
        assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    }
    fake.set_arrivals_per_request(0);
    // One more pass picks up what arrived after the two walks began.
    let snap = final_pass(&target, &fake).await;
    assert_matches_source(&snap, &fake.occurrences(TOKEN), &fake.items(TOKEN), 40);
}

/// The bulk path under SIGKILL: runs die while objects are uploaded, while COPY runs and
/// while the stage merges; the warehouse still equals the source, and what the killed
/// runs left in the staging prefix is only what the bucket's lifecycle rule expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_bulk_loading_through_s3_survives_sigkill_at_random_points() {
    let Some(pg_url) = postgres_url() else { return };
    let standin = FakeRedshiftData::start(Some(pg_url.clone()))
        .await
        .expect("Data API stand-in");
    let s3 = FakeS3::start(&[STAGING_BUCKET]).await.expect("S3 stand-in");
    standin.attach_s3(&s3);
    standin.associate_role(COPY_ROLE, false);
    let target = Target::Redshift {
        endpoint: standin.endpoint(),
        pg_url,
        schema: unique_schema("rsbulk"),
        s3: Some(s3.endpoint()),
    };
    kill_repeatedly_then_finish(target, 8, 24).await;
    let stats = standin.stats();
    assert!(
        stats.copies > 10,
        "the backfill's batches went through COPY: {stats:?}"
    );
    let s3_stats = s3.stats();
    let puts = s3_stats.requests.get("PutObject").copied().unwrap_or(0);
    let left = s3.keys(STAGING_BUCKET).len() as u64;
    assert!(
        left < puts,
        "finished loads delete their objects: {left} of {puts} left"
    );
}
