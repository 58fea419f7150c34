//! Serves the Redshift Data API stand-in on loopback, running statements on PostgreSQL, for
//! benchmarks and manual runs. Usage: redshift-data-standin POSTGRES_URL
//! Prints AWS_ENDPOINT_URL_REDSHIFT_DATA=...; on SIGINT prints its statistics as JSON.

use heimdallr_fakes::redshift_data::FakeRedshiftData;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let Some(pg_url) = std::env::args().nth(1) else {
        eprintln!("usage: redshift-data-standin POSTGRES_URL");
        std::process::exit(2);
    };
    let fake = FakeRedshiftData::start(Some(pg_url)).await?;
    println!("AWS_ENDPOINT_URL_REDSHIFT_DATA={}", fake.endpoint());
    tokio::signal::ctrl_c().await?;
    heimdallr_fakes::redshift_data::settle(&fake, std::time::Duration::from_secs(30)).await;
    let stats = fake.stats();
    println!(
        "STATS={}",
        json!({
            "calls": stats.calls,
            "batch_sizes": stats.batch_sizes,
            "statement_bytes": stats.statement_bytes,
            "batch_millis": stats.batch_millis,
            "committed_batches": stats.committed_batches,
        })
    );
    Ok(())
}
