//! Serves the fake APIs on loopback for benchmarks and manual runs.
//! Usage: fake-apis <occurrences> [items] [latency-ms] [bytes | min-max]
//! (token: fake-token; prints ROLLBAR_API_URL; every answer waits latency-ms first, as a
//! round trip over the internet does; each occurrence weighs about `bytes` as served, or
//! between min and max)

use heimdallr_fakes::rollbar::FakeRollbar;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let occurrences: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let items: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let sizes: Option<(usize, usize)> = args.next().and_then(|a| match a.split_once('-') {
        Some((min, max)) => Some((min.parse().ok()?, max.parse().ok()?)),
        None => a.parse().ok().map(|n| (n, n)),
    });
    let fake = FakeRollbar::start(7).await?;
    fake.set_latency(std::time::Duration::from_millis(latency_ms));
    if let Some((min, max)) = sizes {
        fake.set_occurrence_bytes(min, max);
    }
    fake.add_project("fake-token", 1, items, occurrences);
    println!("ROLLBAR_API_URL={}", fake.api_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
