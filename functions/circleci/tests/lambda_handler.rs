//! The CircleCI Lambda handler called directly, with a constructed event and Context,
//! against the Secrets Manager and CircleCI stand-ins and the suite's PostgreSQL.

#[path = "../../../tests/support/lambda.rs"]
mod support;
use support::{event, secrets_client};

use heimdallr_circleci::{CircleCi, Settings};
use heimdallr_core::lambda::function::SourceFunction;
use heimdallr_core::lambda::function::{CommonSettings, HandlerError};
use heimdallr_core::source::{Common, Source};
use heimdallr_core::warehouse::WarehouseTarget;
use heimdallr_fakes::circleci::FakeCircleCi;
use heimdallr_fakes::postgres::{test_postgres_url, unique_schema};
use heimdallr_fakes::secrets_manager::FakeSecretsManager;
use std::time::Duration;

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:circleci";
const TOKEN: &str = "cci-lambda-0b1c2d3e4f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_syncs_each_project_and_fails_typed() {
    let Some(postgres) = test_postgres_url() else {
        return;
    };
    let circleci = FakeCircleCi::start(TOKEN, 71).await.unwrap();
    circleci.add_pipelines("gh/acme/web", 30, 2);
    circleci.add_pipelines("gh/acme/api", 5, 0);
    let secrets = FakeSecretsManager::start().await.unwrap();
    secrets.put(ARN, &format!(r#"{{"token": "{TOKEN}"}}"#));
    let settings = CommonSettings {
        function_name: "heimdallr-circleci".into(),
        secret_arn: ARN.into(),
        warehouse: WarehouseTarget::parse(&postgres).unwrap(),
        schema: unique_schema("ccihandler"),
        time_margin: Duration::from_secs(2),
        pii: "drop".into(),
        batch_rows: 300,
        batch_bytes: heimdallr_core::engine::DEFAULT_BATCH_BYTES,
        http: Default::default(),
        environments: None,
        activity_table: None,
    };
    let source = |projects: &str| {
        CircleCi::new(
            &Settings {
                api_url: circleci.api_url(),
                projects: projects.into(),
                lookback: Duration::from_secs(24 * 3600),
                sweep_window: Duration::from_secs(7 * 24 * 3600),
                sweep_interval: Duration::from_secs(6 * 3600),
                give_up_after: Duration::from_secs(24 * 3600),
                insights_interval: Duration::from_secs(3600),
            },
            &Common::default(),
        )
        .unwrap()
    };
    let function = SourceFunction::new(
        settings,
        secrets_client(&secrets.endpoint()),
        source("gh/acme/web,gh/acme/api"),
    );

    let report = function.handle(event("inv-1", 60)).await.unwrap();
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{report}");
    assert_eq!(streams[0]["stream"], "circleci/pipelines/gh/acme/web");
    assert_eq!(streams[0]["status"], "succeeded");
    assert!(
        streams[0]["rows"].as_u64().unwrap() > 30,
        "pipelines, workflows and jobs"
    );

    // A secret without a token is a configuration error naming the secret, not a value.
    secrets.put(ARN, r#"{"tokn": "typo"}"#);
    let fresh = SourceFunction::new(
        function.settings().clone(),
        secrets_client(&secrets.endpoint()),
        source("gh/acme/web"),
    );
    match fresh.handle(event("inv-2", 60)).await {
        Err(HandlerError::Configuration(message)) => {
            assert!(
                message.contains(ARN) && message.contains("token"),
                "{message}"
            );
            assert!(!message.contains("typo"));
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
