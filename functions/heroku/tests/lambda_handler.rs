//! The Heroku Lambda handler called directly, with a constructed event and Context,
//! against the Secrets Manager and Heroku stand-ins and the suite's PostgreSQL.

#[path = "../../../tests/support/lambda.rs"]
mod support;
use support::{event, secrets_client};

use heimdallr_core::lambda::function::SourceFunction;
use heimdallr_core::lambda::function::{CommonSettings, HandlerError};
use heimdallr_core::source::{Common, Source};
use heimdallr_core::warehouse::WarehouseTarget;
use heimdallr_fakes::heroku::FakeHeroku;
use heimdallr_fakes::postgres::{test_postgres_url, unique_schema};
use heimdallr_fakes::secrets_manager::FakeSecretsManager;
use heimdallr_heroku::{Heroku, Settings};
use std::time::Duration;

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:heroku";
const KEY: &str = "hrku-lambda-0b1c2d3e4f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_syncs_every_app_the_key_sees_and_fails_typed() {
    let Some(postgres) = test_postgres_url() else {
        return;
    };
    let heroku = FakeHeroku::start(KEY).await.unwrap();
    heroku.add_app("acme-web");
    heroku.add_app("acme-api");
    heroku.push("acme-web", 12);
    heroku.finish_builds("acme-web");
    heroku.release_builds("acme-web");
    heroku.finish_releases("acme-web");
    let secrets = FakeSecretsManager::start().await.unwrap();
    secrets.put(
        ARN,
        &format!(r#"{{"api_key": "{KEY}", "pii_salt": "pepper"}}"#),
    );
    let settings = CommonSettings {
        function_name: "heimdallr-heroku".into(),
        secret_arn: ARN.into(),
        warehouse: WarehouseTarget::parse(&postgres).unwrap(),
        schema: unique_schema("hkhandler"),
        time_margin: Duration::from_secs(2),
        pii: "hash".into(),
        batch_rows: 300,
        batch_bytes: heimdallr_core::engine::DEFAULT_BATCH_BYTES,
        http: Default::default(),
        environments: None,
        activity_table: None,
    };
    let source = || {
        Heroku::new(
            &Settings {
                api_url: heroku.api_url(),
                apps: "*".into(),
                rate_headroom: 100,
                page_size: 1000,
            },
            &Common::default(),
        )
        .unwrap()
    };
    let function = SourceFunction::new(
        settings.clone(),
        secrets_client(&secrets.endpoint()),
        source(),
    );
    let report = function.handle(event("inv-1", 60)).await.unwrap();
    let streams: Vec<String> = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        streams,
        [
            "heroku/releases/acme-api",
            "heroku/builds/acme-api",
            "heroku/releases/acme-web",
            "heroku/builds/acme-web"
        ],
        "{report}"
    );

    secrets.put(ARN, r#"{"key": "misnamed"}"#);
    let fresh = SourceFunction::new(settings, secrets_client(&secrets.endpoint()), source());
    match fresh.handle(event("inv-2", 60)).await {
        Err(HandlerError::Configuration(message)) => {
            assert!(
                message.contains(ARN) && message.contains("api_key"),
                "{message}"
            );
            assert!(!message.contains("misnamed"));
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// The rate-limit count a warm function saw at the end of one invocation is not the count
/// of the next: the window refills between ticks, and a stale count must not stop every
/// later invocation before its first request (they would each report 0 rows, no error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_function_that_ended_at_its_rate_headroom_syncs_on_the_next_tick() {
    let Some(postgres) = test_postgres_url() else {
        return;
    };
    let heroku = FakeHeroku::start(KEY).await.unwrap();
    heroku.add_app("acme-web");
    heroku.push("acme-web", 12);
    heroku.finish_builds("acme-web");
    heroku.release_builds("acme-web");
    heroku.finish_releases("acme-web");
    let secrets = FakeSecretsManager::start().await.unwrap();
    secrets.put(ARN, &format!(r#"{{"api_key": "{KEY}"}}"#));
    let settings = CommonSettings {
        function_name: "heimdallr-heroku".into(),
        secret_arn: ARN.into(),
        warehouse: WarehouseTarget::parse(&postgres).unwrap(),
        schema: unique_schema("hkwarm"),
        time_margin: Duration::from_secs(2),
        pii: "drop".into(),
        batch_rows: 300,
        batch_bytes: heimdallr_core::engine::DEFAULT_BATCH_BYTES,
        http: Default::default(),
        environments: None,
        activity_table: None,
    };
    let source = Heroku::new(
        &Settings {
            api_url: heroku.api_url(),
            apps: "acme-web".into(),
            rate_headroom: 100,
            page_size: 1000,
        },
        &Common::default(),
    )
    .unwrap();
    let function = SourceFunction::new(settings, secrets_client(&secrets.endpoint()), source);

    // The account's budget is at the headroom: the first tick stops early, partial.
    heroku.set_rate_budget(101.0, 4500.0, 0.0);
    let first = function.handle(event("tick-1", 60)).await.unwrap();
    let status_of = |report: &serde_json::Value, stream: &str| -> (String, i64) {
        let found = report["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == stream)
            .unwrap_or_else(|| panic!("no {stream} in {report}"));
        (
            found["status"].as_str().unwrap_or_default().to_string(),
            found["rows"].as_i64().unwrap_or(0),
        )
    };
    assert_eq!(
        status_of(&first, "heroku/builds/acme-web"),
        ("partial".to_string(), 0),
        "{first}"
    );
    let requests_after_first = heroku.requests();

    // A minute later the window has refilled; the same warm function syncs everything.
    heroku.set_rate_budget(4500.0, 4500.0, 0.0);
    let second = function.handle(event("tick-2", 60)).await.unwrap();
    assert!(
        heroku.requests() > requests_after_first,
        "the second tick sent no request: {second}"
    );
    assert_eq!(
        status_of(&second, "heroku/builds/acme-web"),
        ("succeeded".to_string(), heroku.truth().builds.len() as i64),
        "{second}"
    );
    assert_eq!(
        status_of(&second, "heroku/releases/acme-web").0,
        "succeeded",
        "{second}"
    );
}
