//! Benchmark helper: starts a `bootstrap` binary against the loopback Lambda Runtime API,
//! Secrets Manager and Rollbar stand-ins, and prints the time from process start to the
//! first event handled (cold start, first sync of 100 occurrences included).
//! Usage: lambda-cold-start <bootstrap> <postgres-url> [runs]

use heimdallr_fakes::lambda_runtime::{scheduled_event, FakeLambdaRuntime, Outcome};
use heimdallr_fakes::rollbar::FakeRollbar;
use heimdallr_fakes::secrets_manager::FakeSecretsManager;
use std::time::{Duration, Instant};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bench";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bootstrap), Some(postgres)) = (args.next(), args.next()) else {
        return Err("usage: lambda-cold-start <bootstrap> <postgres-url> [runs]".into());
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut timings = Vec::new();
    for run in 0..runs {
        let rollbar = FakeRollbar::start(run as u64).await?;
        rollbar.add_project("bench-token", 1, 10, 100);
        let secrets = FakeSecretsManager::start().await?;
        secrets.put(ARN, r#"{"token": "bench-token"}"#);
        let runtime = FakeLambdaRuntime::start().await?;
        let id = runtime.invoke(scheduled_event(), Duration::from_secs(60));
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&bootstrap)
            .env("AWS_LAMBDA_RUNTIME_API", runtime.endpoint())
            .env("AWS_LAMBDA_FUNCTION_NAME", "heimdallr-rollbar")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "example")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.endpoint())
            .env("HEIMDALLR_SECRET_ARN", ARN)
            .env("HEIMDALLR_WAREHOUSE", &postgres)
            .env("HEIMDALLR_SCHEMA", format!("bench_cold_{run}"))
            .env("ROLLBAR_API_URL", rollbar.api_url())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let outcome = runtime.outcome(&id, Duration::from_secs(60)).await;
        let elapsed = started.elapsed();
        let _ = child.kill().await;
        match outcome {
            Some(Outcome::Response(_)) => timings.push(elapsed),
            other => return Err(format!("invocation failed: {other:?}").into()),
        }
    }
    timings.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cold start to first event handled over {runs} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(&timings[0]),
        ms(&timings[timings.len() / 2]),
        ms(&timings[timings.len() - 1])
    );
    Ok(())
}
