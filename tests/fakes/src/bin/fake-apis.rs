//! Serves the fake APIs on loopback for benchmarks and manual runs.
//! Usage: fake-apis <occurrences> [items]   (token: fake-token; prints ROLLBAR_API_URL)

use heimdallr_fakes::rollbar::FakeRollbar;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let occurrences: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let items: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let fake = FakeRollbar::start(7).await?;
    fake.add_project("fake-token", 1, items, occurrences);
    println!("ROLLBAR_API_URL={}", fake.api_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
