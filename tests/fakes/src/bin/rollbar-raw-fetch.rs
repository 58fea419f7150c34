//! Benchmark helper: fetches every occurrence page of a (fake) Rollbar project as raw bytes,
//! no parsing, no writing, the same page size as the sync; prints pages, bytes, seconds.
//! Usage: rollbar-raw-fetch <api-url> <token> <limit>

use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(api), Some(token), Some(limit)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: rollbar-raw-fetch <api-url> <token> <limit>".into());
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut pages, mut bytes) = (0u64, 0u64);
    for page in 1.. {
        let body = client
            .get(format!("{api}/instances/?page={page}&limit={limit}"))
            .header("X-Rollbar-Access-Token", &token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        pages += 1;
        bytes += body.len() as u64;
        // An empty page is a short body: `"instances": []`.
        if body.len() < 100 {
            break;
        }
    }
    println!(
        "pages={pages} bytes={bytes} seconds={:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
