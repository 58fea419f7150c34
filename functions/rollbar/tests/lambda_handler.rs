//! The Lambda handler called directly, with a constructed event and Context, against the
//! Secrets Manager and Rollbar stand-ins and the suite's PostgreSQL.

#[path = "../../../tests/support/lambda.rs"]
mod support;
use support::{event, secrets_client};

use heimdallr_core::lambda::function::SourceFunction;
use heimdallr_core::lambda::function::{CommonSettings, HandlerError};
use heimdallr_core::source::{Common, Source};
use heimdallr_core::warehouse::WarehouseTarget;
use heimdallr_fakes::postgres::{test_postgres_url, unique_schema};
use heimdallr_fakes::rollbar::FakeRollbar;
use heimdallr_fakes::secrets_manager::FakeSecretsManager;
use heimdallr_rollbar::{Rollbar, Settings};
use std::time::Duration;

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:handler";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_syncs_reports_and_fails_typed() {
    let Some(postgres) = test_postgres_url() else {
        return;
    };
    let rollbar = FakeRollbar::start(51).await.unwrap();
    rollbar.add_project("tok-a", 601, 5, 250);
    rollbar.add_project("tok-b", 602, 5, 120);
    let secrets = FakeSecretsManager::start().await.unwrap();
    secrets.put(
        ARN,
        r#"{"tokens": {"a": "tok-a", "b": "tok-b"}, "pii_salt": "pepper"}"#,
    );
    let settings = CommonSettings {
        function_name: "heimdallr-rollbar".into(),
        secret_arn: ARN.into(),
        warehouse: WarehouseTarget::parse(&postgres).unwrap(),
        schema: unique_schema("handler"),
        time_margin: Duration::from_secs(2),
        pii: "hash".into(),
        batch_rows: 300,
        batch_bytes: heimdallr_core::engine::DEFAULT_BATCH_BYTES,
        http: Default::default(),
        environments: None,
        activity_table: None,
    };
    let source = Rollbar::new(
        &Settings {
            api_url: rollbar.api_url(),
            page_limit: 100,
            items_sweep_interval: Duration::from_secs(3600),
            overlap_window: Duration::from_secs(120),
            deploys: false,
        },
        &Common::default(),
    )
    .unwrap();
    let function = SourceFunction::new(settings, secrets_client(&secrets.endpoint()), source);

    let report = function.handle(event("inv-1", 60)).await.unwrap();
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(report["run_id"], "inv-1");
    assert_eq!(streams.len(), 4, "two streams for each of two projects");
    assert_eq!(streams[0]["stream"], "rollbar/occurrences/a");
    assert_eq!(streams[0]["rows"], 250);
    assert_eq!(streams[2]["stream"], "rollbar/occurrences/b");
    assert_eq!(streams[2]["rows"], 120);

    // No time left: nothing starts, and that is not an error.
    let report = function.handle(event("inv-2", 1)).await.unwrap();
    // (Items had nothing due, so they are done; occurrences could not look.)
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams[0]["status"], "partial", "{report}");
    assert_eq!(streams[2]["status"], "partial", "{report}");
    assert!(streams.iter().all(|s| s["rows"] == 0));

    // The token of project a is revoked and a new one put in the secret: the cached
    // token fails once (typed error, naming the stream, not the token), then the secret
    // is read again and the next invocation works.
    rollbar.revoke_token("tok-a");
    secrets.put(
        ARN,
        r#"{"tokens": {"a": "tok-a2", "b": "tok-b"}, "pii_salt": "pepper"}"#,
    );
    rollbar.add_token_alias("tok-a2", "tok-a");
    match function.handle(event("inv-3", 60)).await {
        Err(HandlerError::SyncFailed(message)) => {
            assert!(
                message.contains("rollbar/occurrences/a") && message.contains("HTTP 401"),
                "{message}"
            );
            assert!(!message.contains("tok-a"));
        }
        other => panic!("expected a sync failure, got {other:?}"),
    }
    let reads = secrets.reads();
    function.handle(event("inv-4", 60)).await.unwrap();
    assert_eq!(
        secrets.reads(),
        reads + 1,
        "the rotated secret was read again"
    );
}
