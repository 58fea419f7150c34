//! The real `bootstrap` binary against a loopback Lambda Runtime API, a Secrets Manager
//! stand-in, the fake Rollbar API and a real PostgreSQL: what the stack deploys, minus AWS.

use heimdallr_fakes::lambda_box::LambdaBox;
use heimdallr_fakes::lambda_runtime::{scheduled_event, FakeLambdaRuntime, Outcome};
use heimdallr_fakes::postgres::{test_postgres_url, unique_schema};
use heimdallr_fakes::redshift_data::FakeRedshiftData;
use heimdallr_fakes::rollbar::FakeRollbar;
use heimdallr_fakes::secrets_manager::FakeSecretsManager;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const SECRET_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:heimdallr/rollbar-AbCdEf";
const TOKEN: &str = "tok-lambda-5f4dcc3b5aa765d61d8327deb882cf99";
/// What the stack gives every function by default (`memoryMb` in cdk.json).
const FUNCTION_MEMORY_MB: u64 = 128;

struct Harness {
    /// Every bootstrap runs inside the memory the stack gives the function (128 MB).
    lambda_box: Option<LambdaBox>,
    runtime: FakeLambdaRuntime,
    secrets: FakeSecretsManager,
    rollbar: FakeRollbar,
    postgres: String,
    schema: String,
}

impl Harness {
    async fn new(occurrences: usize) -> Option<Self> {
        Self::with_sizes(occurrences, None).await
    }

    /// Occurrences of about `bytes` each as served.
    async fn with_sizes(occurrences: usize, bytes: Option<usize>) -> Option<Self> {
        let postgres = test_postgres_url()?;
        let rollbar = FakeRollbar::start(41).await.unwrap();
        if let Some(bytes) = bytes {
            rollbar.set_occurrence_bytes(bytes, bytes);
        }
        rollbar.add_project(TOKEN, 501, 20, occurrences);
        let secrets = FakeSecretsManager::start().await.unwrap();
        secrets.put(
            SECRET_ARN,
            &format!(r#"{{"tokens": {{"web": "{TOKEN}"}}}}"#),
        );
        Some(Self {
            lambda_box: LambdaBox::for_test(FUNCTION_MEMORY_MB),
            runtime: FakeLambdaRuntime::start().await.unwrap(),
            secrets,
            rollbar,
            postgres,
            schema: unique_schema("lambda"),
        })
    }

    fn bootstrap(&self, extra_env: &[(&str, &str)]) -> Child {
        let program = env!("CARGO_BIN_EXE_rollbar-bootstrap");
        let mut command = match &self.lambda_box {
            Some(boxed) => {
                let (shell, args) = boxed.wrap(program, &[]);
                let mut command = Command::new(shell);
                command.args(args);
                command
            }
            None => Command::new(program),
        };
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime.endpoint())
            .env("AWS_LAMBDA_FUNCTION_NAME", "heimdallr-rollbar")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                FUNCTION_MEMORY_MB.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/heimdallr-rollbar")
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            )
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", self.secrets.endpoint())
            .env("HEIMDALLR_SECRET_ARN", SECRET_ARN)
            .env("HEIMDALLR_WAREHOUSE", &self.postgres)
            .env("HEIMDALLR_SCHEMA", &self.schema)
            .env("ROLLBAR_API_URL", self.rollbar.api_url())
            .env("ROLLBAR_PAGE_LIMIT", "100")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("bootstrap starts")
    }

    async fn invoke(&self, timeout: Duration) -> Outcome {
        let id = self.runtime.invoke(scheduled_event(), timeout);
        self.runtime
            .outcome(&id, Duration::from_secs(120))
            .await
            .expect("the function answered")
    }

    async fn stored_occurrences(&self) -> i64 {
        heimdallr_fakes::postgres::connect(&self.postgres)
            .await
            .query_one(
                &format!("SELECT COUNT(*) FROM {}.rollbar_occurrences", self.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Stops the process and returns what it printed.
async fn output(mut child: Child) -> (String, String) {
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout).await;
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr).await;
    }
    (stdout, stderr)
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_shape_writes_redshift_through_the_data_api() {
    let Some(h) = Harness::new(800).await else {
        return;
    };
    let redshift = FakeRedshiftData::start(Some(h.postgres.clone()))
        .await
        .expect("Data API stand-in");
    let endpoint = redshift.endpoint();
    let child = h.bootstrap(&[
        (
            "HEIMDALLR_WAREHOUSE",
            "redshift-data://heimdallr@cluster/analytics/analytics",
        ),
        ("AWS_ENDPOINT_URL_REDSHIFT_DATA", &endpoint),
        ("HEIMDALLR_BATCH_ROWS", "100"),
        (
            "HEIMDALLR_ENVIRONMENTS",
            r#"[{"name": "production", "rollbar": {"project_id": 501, "environment": "production"}, "heroku": {"app": "acme-web"}}]"#,
        ),
    ]);
    let Outcome::Response(response) = h.invoke(Duration::from_secs(60)).await else {
        panic!("the invocation failed")
    };
    let (stdout, _) = output(child).await;
    assert_eq!(response["streams"][0]["rows"], 800, "{response}");
    assert_eq!(h.stored_occurrences().await, 800);
    // The environments setting, stored whole at the cold start.
    let environment: (String, String) = {
        let row = heimdallr_fakes::postgres::connect(&h.postgres)
            .await
            .query_one(
                &format!(
                    "SELECT name, heroku_app FROM {}.heimdallr_environments",
                    h.schema
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(environment, ("production".into(), "acme-web".into()));
    let stats = redshift.stats();
    // Batches of 100 occurrences (pages are 100 too): at least eight transactions.
    assert!(stats.committed_batches >= 8, "{stats:?}");
    for request in redshift.requests() {
        assert_eq!(request["ClusterIdentifier"], "analytics");
        assert_eq!(request["DbUser"], "heimdallr");
    }
    assert!(!stdout.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_invocations_in_a_row_then_nothing_new() {
    let Some(h) = Harness::new(1_500).await else {
        return;
    };
    let child = h.bootstrap(&[]);
    let Outcome::Response(first) = h.invoke(Duration::from_secs(60)).await else {
        panic!("first invocation failed")
    };
    let Outcome::Response(second) = h.invoke(Duration::from_secs(60)).await else {
        panic!("second invocation failed")
    };
    let (stdout, _) = output(child).await;
    assert_eq!(h.stored_occurrences().await, 1_500);
    let rows = |r: &Value| r["streams"][0]["rows"].as_u64().unwrap();
    assert_eq!(first["streams"][0]["stream"], "rollbar/occurrences/web");
    assert_eq!(rows(&first), 1_500);
    assert_eq!(rows(&second), 0, "the second finds nothing new");
    assert_eq!(
        h.secrets.reads(),
        1,
        "the secret is read once per cold start"
    );

    let lines = json_lines(&stdout);
    let (emf, function_lines): (Vec<&Value>, Vec<&Value>) = lines
        .iter()
        .filter(|l| l.get("_aws").is_some())
        .partition(|l| l.get("Stream").is_some());
    assert_eq!(emf.len(), 4, "one EMF line per stream per invocation");
    // And one per invocation for the function: the analyst views were created.
    assert_eq!(function_lines.len(), 2, "{function_lines:?}");
    assert!(function_lines.iter().all(|l| l["ViewsFailed"] == 0));
    assert_eq!(emf[0]["Function"], "heimdallr-rollbar");
    assert_eq!(emf[0]["Stream"], "occurrences/web");
    assert_eq!(emf[0]["RowsWritten"], 1_500);
    assert!(emf[0]["FreshnessLagSeconds"].is_number());
    for line in &emf {
        let behind = line["SecondsSinceCaughtUp"].as_f64();
        assert!(
            behind.is_some_and(|s| s < 30.0),
            "every stream just caught up: {line}"
        );
    }
    let logs: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_none()).collect();
    assert!(logs
        .iter()
        .any(|l| l["message"] == "stream done" && l["rows"] == 1_500));
    assert!(logs.iter().all(|l| l["level"].is_string()));
    assert!(
        logs.iter()
            .any(|l| l["span"]["run_id"].is_string() || l["run_id"].is_string()),
        "{logs:?}"
    );
    assert!(!stdout.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_too_short_to_finish_resumes_on_the_next_invocation() {
    let Some(h) = Harness::new(6_000).await else {
        return;
    };
    // Slow the API so that one invocation cannot walk every page.
    h.rollbar.set_faults(heimdallr_fakes::rollbar::FaultRates {
        slow: 1.0,
        ..Default::default()
    });
    let child = h.bootstrap(&[("HEIMDALLR_TIME_MARGIN", "1s")]);
    let Outcome::Response(first) = h.invoke(Duration::from_secs(5)).await else {
        panic!("a partial run is not an error")
    };
    assert_eq!(first["streams"][0]["status"], "partial", "{first}");
    let partial = h.stored_occurrences().await;
    assert!(partial > 0 && partial < 6_000, "{partial}");
    h.rollbar.set_faults(Default::default());
    let Outcome::Response(second) = h.invoke(Duration::from_secs(120)).await else {
        panic!("second invocation failed")
    };
    assert_eq!(second["streams"][0]["status"], "succeeded", "{second}");
    let _ = output(child).await;
    assert_eq!(h.stored_occurrences().await, 6_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_the_invocation_with_a_clear_log_and_no_token() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    let wrong = "tok-wrong-8d969eef6ecad3c29a3a629280e686cf";
    h.secrets
        .put(SECRET_ARN, &format!(r#"{{"token": "{wrong}"}}"#));
    let child = h.bootstrap(&[]);
    let Outcome::Error(error) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a rejected token must fail the invocation")
    };
    // The rotated (fixed) secret is read again after the failure.
    h.secrets
        .put(SECRET_ARN, &format!(r#"{{"token": "{TOKEN}"}}"#));
    let Outcome::Response(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("the rotated token works")
    };
    let (stdout, stderr) = output(child).await;
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("unauthorized (HTTP 401)"), "{error}");
    assert_eq!(error["errorType"], "Heimdallr.SyncFailed");
    assert!(!error.to_string().contains(wrong));
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
    assert!(json_lines(&stdout).iter().any(|l| l["level"] == "ERROR"));
    assert_eq!(h.secrets.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_secret_names_the_secret_not_its_value() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    h.secrets
        .put(SECRET_ARN, r#"{"tokens": "s3cr3t-value-not-an-object"}"#);
    let child = h.bootstrap(&[]);
    let Outcome::Error(error) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a malformed secret fails")
    };
    let (stdout, _) = output(child).await;
    let text = error.to_string();
    assert!(
        text.contains(SECRET_ARN) && text.contains("malformed"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t") && !stdout.contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_with_the_service_error() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    let missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing";
    let child = h.bootstrap(&[("HEIMDALLR_SECRET_ARN", missing)]);
    let Outcome::Error(error) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a missing secret fails")
    };
    let _ = output(child).await;
    let text = error.to_string();
    assert!(
        text.contains(missing) && text.contains("ResourceNotFoundException"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_environment_is_an_init_error_in_json_before_any_event() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    for (name, value, named) in [
        ("HEIMDALLR_SECRET_ARN", "", "HEIMDALLR_SECRET_ARN"),
        (
            "HEIMDALLR_WAREHOUSE",
            "mysql://u:hunter2@h/db",
            "HEIMDALLR_WAREHOUSE",
        ),
    ] {
        let runtime = FakeLambdaRuntime::start().await.unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollbar-bootstrap"));
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", runtime.endpoint())
            .env("AWS_LAMBDA_FUNCTION_NAME", "heimdallr-rollbar")
            .env("AWS_REGION", "eu-west-1")
            .env("HEIMDALLR_SECRET_ARN", SECRET_ARN)
            .env("HEIMDALLR_WAREHOUSE", &h.postgres)
            .env(name, value)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let finished = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("the bootstrap exits")
            .expect("the bootstrap starts");
        assert_eq!(finished.status.code(), Some(1), "{name}");
        let error = runtime.init_error().expect("an init error was reported");
        assert_eq!(error["errorType"], "Heimdallr.Configuration", "{error}");
        assert!(
            error["errorMessage"].as_str().unwrap_or("").contains(named),
            "names the setting: {error}"
        );
        assert!(!error.to_string().contains("hunter2"));
        assert_eq!(
            runtime.init_error_type().as_deref(),
            Some("Heimdallr.Configuration")
        );
        let stdout = String::from_utf8_lossy(&finished.stdout);
        let lines = json_lines(&stdout);
        assert!(
            lines
                .iter()
                .any(|l| l["error_type"] == "Heimdallr.Configuration"),
            "a JSON log line says why: {stdout}"
        );
        let stderr = String::from_utf8_lossy(&finished.stderr);
        assert!(stderr.trim().is_empty(), "nothing but JSON lines: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_sent_is_an_authentication_failure_and_the_secret_is_read_again() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    // A token pasted with a control character cannot be an HTTP header value: no request
    // is made, the stream fails as an authentication failure (not by its text), and the
    // frame reads the secret again, so the corrected token is used next time.
    h.secrets
        .put(SECRET_ARN, &format!(r#"{{"token": "{TOKEN}\u0001"}}"#));
    let child = h.bootstrap(&[]);
    let Outcome::Error(error) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a token that cannot be sent fails the invocation")
    };
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid header value"),
        "{error}"
    );
    h.secrets
        .put(SECRET_ARN, &format!(r#"{{"token": "{TOKEN}"}}"#));
    let Outcome::Response(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("the corrected token works")
    };
    let _ = output(child).await;
    assert_eq!(h.secrets.reads(), 2, "read again after the failure");
}

/// The heartbeat the freshness alarm watches, as the deployed function reports it.
fn heartbeats(stdout: &str, stream: &str) -> Vec<Option<f64>> {
    json_lines(stdout)
        .iter()
        .filter(|l| l.get("_aws").is_some() && l["Stream"] == stream)
        .map(|l| l["SecondsSinceCaughtUp"].as_f64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_ages_while_a_token_fails_and_resets_on_a_quiet_run() {
    let Some(h) = Harness::new(50).await else {
        return;
    };
    let child = h.bootstrap(&[]);
    let Outcome::Response(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("first invocation failed")
    };
    // Revoked at Rollbar: the stream cannot reach the head any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.rollbar.revoke_token(TOKEN);
    let Outcome::Error(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a revoked token fails the invocation")
    };
    h.rollbar.add_token_alias(TOKEN, TOKEN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A quiet project: nothing new, yet caught up.
    let Outcome::Response(quiet) = h.invoke(Duration::from_secs(60)).await else {
        panic!("the restored token works")
    };
    assert_eq!(quiet["streams"][0]["rows"], 0, "{quiet}");
    let (stdout, _) = output(child).await;
    let beats = heartbeats(&stdout, "occurrences/web");
    assert_eq!(beats.len(), 3, "{beats:?}");
    assert!(beats[0].is_some_and(|s| s < 2.0), "{beats:?}");
    assert!(
        beats[1].is_some_and(|s| s >= 2.0),
        "a failing run reports the age of the last catch-up: {beats:?}"
    );
    assert!(beats[2].is_some_and(|s| s < 1.0), "{beats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_token_never_worked_ages_from_its_first_attempt() {
    let Some(h) = Harness::new(10).await else {
        return;
    };
    h.rollbar.revoke_token(TOKEN);
    let child = h.bootstrap(&[]);
    let Outcome::Error(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("a revoked token fails the invocation")
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Outcome::Error(_) = h.invoke(Duration::from_secs(60)).await else {
        panic!("and fails again")
    };
    let (stdout, _) = output(child).await;
    let beats = heartbeats(&stdout, "occurrences/web");
    assert_eq!(beats.len(), 2, "{beats:?}");
    assert!(beats[0].is_some_and(|s| s < 2.0), "{beats:?}");
    assert!(
        beats[1].is_some_and(|s| s >= 2.0),
        "ages like any stream behind, so its function's alarm hears it: {beats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_of_100_kb_land_inside_a_128_mb_function_with_default_settings() {
    let Some(h) = Harness::with_sizes(1_200, Some(100_000)).await else {
        return;
    };
    // The stack's defaults: the API's page size setting of 1 000, default batches.
    let child = h.bootstrap(&[("ROLLBAR_PAGE_LIMIT", "1000")]);
    let outcome = h.invoke(Duration::from_secs(110)).await;
    let (stdout, stderr) = output(child).await;
    let Outcome::Response(response) = outcome else {
        panic!("the invocation failed: {outcome:?}\n{stdout}\n{stderr}")
    };
    assert_eq!(response["streams"][0]["status"], "succeeded", "{response}");
    assert_eq!(h.stored_occurrences().await, 1_200);
    if let Some(boxed) = &h.lambda_box {
        assert_eq!(boxed.oom_kills(), 0, "never over the function's memory");
        let peak_mb = boxed.peak_bytes() / (1024 * 1024);
        println!("peak memory of the 128 MB function: {peak_mb} MB");
        assert!(peak_mb < FUNCTION_MEMORY_MB, "{peak_mb} MB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_for_memory_is_reported_by_the_next_which_shrinks_its_pages_and_lands_everything(
) {
    let Some(h) = Harness::with_sizes(1_200, Some(100_000)).await else {
        return;
    };
    if h.lambda_box.is_none() {
        return; // nothing enforces the memory here
    }
    // A byte budget far over what 128 MB holds: the first page alone is 100 MB.
    let mut greedy = h.bootstrap(&[
        ("ROLLBAR_PAGE_LIMIT", "1000"),
        ("HEIMDALLR_BATCH_BYTES", "512MiB"),
    ]);
    let _pending = h
        .runtime
        .invoke(scheduled_event(), Duration::from_secs(110));
    let status = tokio::time::timeout(Duration::from_secs(110), greedy.wait())
        .await
        .expect("the greedy function dies or finishes")
        .expect("its status");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "killed by the kernel for memory: {status:?}"
    );
    assert!(h.lambda_box.as_ref().is_some_and(|b| b.oom_kills() >= 1));
    assert_eq!(
        h.stored_occurrences().await,
        0,
        "nothing of the killed run landed"
    );

    let child = h.bootstrap(&[
        ("ROLLBAR_PAGE_LIMIT", "1000"),
        ("HEIMDALLR_BATCH_BYTES", "64MiB"),
    ]);
    let outcome = h.invoke(Duration::from_secs(110)).await;
    let (stdout, stderr) = output(child).await;
    let Outcome::Response(response) = outcome else {
        panic!("the next invocation failed: {outcome:?}\n{stdout}\n{stderr}")
    };
    assert_eq!(response["streams"][0]["status"], "succeeded", "{response}");
    assert_eq!(h.stored_occurrences().await, 1_200);
    let lines = json_lines(&stdout);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("never finished"))
            && l["unfinished_runs"] == 1),
        "the next run says the last one never finished: {stdout}"
    );
    let emf = lines
        .iter()
        .find(|l| l.get("_aws").is_some() && l["Stream"] == "occurrences/web")
        .expect("an EMF line for the occurrences");
    assert_eq!(emf["UnfinishedRuns"], 1, "{emf}");
}
