//! Serves the Redshift Data API stand-in on loopback, running statements on PostgreSQL, with
//! an S3 stand-in for COPY, for benchmarks and manual runs.
//! Usage: redshift-data-standin POSTGRES_URL
//! Prints AWS_ENDPOINT_URL_REDSHIFT_DATA=..., AWS_ENDPOINT_URL_S3=..., STAGING_BUCKET=...
//! and COPY_ROLE=... (associated with the stand-in cluster); on SIGINT prints its
//! statistics as JSON.

use heimdallr_fakes::redshift_data::FakeRedshiftData;
use heimdallr_fakes::s3::FakeS3;
use serde_json::json;

const STAGING_BUCKET: &str = "heimdallr-staging";
const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/heimdallr-copy";

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let Some(pg_url) = std::env::args().nth(1) else {
        eprintln!("usage: redshift-data-standin POSTGRES_URL");
        std::process::exit(2);
    };
    let fake = FakeRedshiftData::start(Some(pg_url)).await?;
    let s3 = FakeS3::start(&[STAGING_BUCKET]).await?;
    fake.attach_s3(&s3);
    fake.associate_role(COPY_ROLE, true);
    println!("AWS_ENDPOINT_URL_REDSHIFT_DATA={}", fake.endpoint());
    println!("AWS_ENDPOINT_URL_S3={}", s3.endpoint());
    println!("STAGING_BUCKET={STAGING_BUCKET}");
    println!("COPY_ROLE={COPY_ROLE}");
    tokio::signal::ctrl_c().await?;
    heimdallr_fakes::redshift_data::settle(&fake, std::time::Duration::from_secs(30)).await;
    let stats = fake.stats();
    let s3_stats = s3.stats();
    println!(
        "STATS={}",
        json!({
            "calls": stats.calls,
            "batch_sizes": stats.batch_sizes,
            "statement_bytes": stats.statement_bytes,
            "batch_millis": stats.batch_millis,
            "committed_batches": stats.committed_batches,
            "copies": stats.copies,
            "copied_bytes": stats.copied_bytes,
            "s3_requests": s3_stats.requests,
            "s3_bytes_put": s3_stats.bytes_put,
            "staged_objects_left": s3.keys(STAGING_BUCKET).len(),
        })
    );
    Ok(())
}
