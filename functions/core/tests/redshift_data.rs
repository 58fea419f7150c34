//! The Redshift backend through the real SDK client against the Data API stand-in, which
//! runs the statements on the suite's PostgreSQL (or follows a script of statuses).

use aws_sdk_redshiftdata::config::{BehaviorVersion, Credentials, Region};
use chrono::Utc;
use heimdallr_core::schema::{ROLLBAR_OCCURRENCES, STATE};
use heimdallr_core::warehouse::redshift::target::RedshiftTarget;
use heimdallr_core::warehouse::redshift::RedshiftWarehouse;
use heimdallr_core::warehouse::{Batch, Row, Value, Warehouse};
use heimdallr_fakes::postgres::{connect, test_postgres_url, unique_schema};
use heimdallr_fakes::redshift_data::{FakeRedshiftData, Script, MAX_STATEMENT_BYTES};
use heimdallr_fakes::s3::{FakeS3, S3Failure};
use std::time::{Duration, Instant};

fn client(fake: &FakeRedshiftData) -> aws_sdk_redshiftdata::Client {
    let config = aws_sdk_redshiftdata::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(fake.endpoint())
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_redshiftdata::Client::from_conf(config)
}

fn warehouse(fake: &FakeRedshiftData, schema: &str) -> RedshiftWarehouse {
    let target = RedshiftTarget::parse("redshift-data://awsuser@cluster/test-cluster/dev")
        .expect("a valid URL");
    RedshiftWarehouse::with_client(client(fake), target, schema)
}

fn occurrence(id: i64, title: &str, payload_bytes: usize) -> Row {
    let mut values = vec![Value::Null; ROLLBAR_OCCURRENCES.columns.len()];
    values[0] = Value::BigInt(id);
    values[ROLLBAR_OCCURRENCES.column_index("item_id").unwrap()] = Value::BigInt(id % 7);
    values[ROLLBAR_OCCURRENCES.column_index("title").unwrap()] = Value::Text(title.into());
    values[ROLLBAR_OCCURRENCES.column_index("occurred_at").unwrap()] = Value::Timestamp(
        chrono::DateTime::from_timestamp(1_790_000_000 + id, 123_456_000).unwrap(),
    );
    values[ROLLBAR_OCCURRENCES.column_index("data").unwrap()] = Value::json(&serde_json::json!({
        "body": {"message": {"body": title}},
        "padding": "p".repeat(payload_bytes),
    }));
    Row(values)
}

fn state(cursor: serde_json::Value) -> Row {
    Row(vec![
        Value::Text("rollbar".into()),
        Value::Text("occurrences".into()),
        Value::Text("web".into()),
        Value::json(&cursor),
        Value::Timestamp(Utc::now()),
        Value::Text("run-1".into()),
        Value::Timestamp(Utc::now()),
        Value::Timestamp(Utc::now()),
    ])
}

fn batch(occurrences: impl IntoIterator<Item = Row>, cursor: serde_json::Value) -> Batch {
    let mut batch = Batch::default();
    for row in occurrences {
        batch.push(&ROLLBAR_OCCURRENCES, row);
    }
    batch.push(&STATE, state(cursor));
    batch
}

async fn titles(pg: &tokio_postgres::Client, schema: &str) -> Vec<(i64, String)> {
    pg.query(
        &format!("SELECT id, title FROM \"{schema}\".rollbar_occurrences ORDER BY id"),
        &[],
    )
    .await
    .expect("read occurrences")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The stored `data` document of occurrence `id`.
async fn stored_data(pg: &tokio_postgres::Client, schema: &str, id: i64) -> serde_json::Value {
    pg.query_one(
        &format!("SELECT data FROM \"{schema}\".rollbar_occurrences WHERE id = {id}"),
        &[],
    )
    .await
    .expect("read the occurrence")
    .get(0)
}

/// A migrated schema on the stand-in, or None outside scripts/test.sh.
async fn setup() -> Option<(
    FakeRedshiftData,
    RedshiftWarehouse,
    tokio_postgres::Client,
    String,
)> {
    let url = test_postgres_url()?;
    let fake = FakeRedshiftData::start(Some(url.clone()))
        .await
        .expect("stand-in");
    let schema = unique_schema("rs");
    let warehouse = warehouse(&fake, &schema);
    let migrated = warehouse.migrate(None).await.expect("migrate");
    assert!(!migrated.applied.is_empty());
    assert_eq!(
        migrated.views_failed, None,
        "Redshift's dialect creates every view"
    );
    Some((fake, warehouse, connect(&url).await, schema))
}

#[tokio::test]
async fn batches_merge_on_the_key_with_their_cursor_and_read_back_typed() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    assert!(warehouse
        .migrate(None)
        .await
        .expect("migrate again")
        .applied
        .is_empty());

    let rows = [
        occurrence(1, "it's one", 10),
        occurrence(2, "back\\slash ünïcode", 10),
    ];
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 2})))
        .await
        .expect("commit");
    let rows = [
        occurrence(2, "two, changed", 10),
        occurrence(3, "three", 10),
    ];
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 3})))
        .await
        .expect("commit");

    assert_eq!(
        titles(&pg, &schema).await,
        vec![
            (1, "it's one".to_string()),
            (2, "two, changed".to_string()),
            (3, "three".to_string())
        ]
    );
    let payload: serde_json::Value = stored_data(&pg, &schema, 1).await;
    assert_eq!(payload["body"]["message"]["body"], "it's one");
    let occurred: i64 = pg
        .query_one(&format!("SELECT CAST(EXTRACT(EPOCH FROM occurred_at) * 1000000 AS BIGINT) FROM \"{schema}\".rollbar_occurrences WHERE id = 1"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(occurred, 1_790_000_001_123_456);

    let stored = warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .expect("read state")
        .expect("a state row");
    assert_eq!(stored.cursor, serde_json::json!({"high_water": 3}));
    assert!(stored.source_time.is_some());
    assert!(warehouse
        .read_state("rollbar", "occurrences", "api", None)
        .await
        .unwrap()
        .is_none());

    // Every call named the cluster, database and user; every batch stayed in the limits.
    for request in fake.requests() {
        assert_eq!(request["ClusterIdentifier"], "test-cluster");
        assert_eq!(request["Database"], "dev");
        assert_eq!(request["DbUser"], "awsuser");
    }
    let stats = fake.stats();
    assert!(stats.batch_sizes.iter().all(|&n| n <= 40));
    // Long polling: each call held its answer until the statement ended, so no polls.
    assert!(stats.calls["BatchExecuteStatement"] >= 2);
    assert_eq!(stats.calls.get("DescribeStatement"), None, "{stats:?}");
}

/// A held answer that says FINISHED without `HasResultSet` is asked about again
/// (DescribeStatement), not read as a statement without rows: the stored state is found.
#[tokio::test]
async fn a_finished_answer_without_the_result_flag_is_described_not_read_as_no_rows() {
    let Some((fake, warehouse, _pg, _schema)) = setup().await else {
        return;
    };
    warehouse
        .commit(batch(
            [occurrence(1, "one", 10)],
            serde_json::json!({"high_water": 1}),
        ))
        .await
        .expect("commit");
    fake.omit_result_flag(true);
    let stored = warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .expect("read state");
    assert_eq!(
        stored.map(|s| s.cursor),
        Some(serde_json::json!({"high_water": 1})),
        "the state is there"
    );
    assert!(fake
        .stats()
        .calls
        .get("DescribeStatement")
        .is_some_and(|n| *n >= 1));
}

#[tokio::test]
async fn a_batch_larger_than_one_call_is_split_and_the_cursor_lands_with_the_last_part() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    let before = fake.stats().batch_sizes.len();
    let rows = (0..1500).map(|id| occurrence(id, &format!("title {id}"), 3000));
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 1499})))
        .await
        .expect("commit");
    assert_eq!(titles(&pg, &schema).await.len(), 1500);
    let batches = fake.submitted_batches();
    let parts = &batches[before..];
    assert!(parts.len() >= 2, "{} calls", parts.len());
    for part in parts {
        assert!(part.len() <= 40);
        assert!(part.iter().all(|s| s.len() <= MAX_STATEMENT_BYTES));
    }
    assert!(parts
        .last()
        .unwrap()
        .iter()
        .any(|s| s.contains("_heimdallr_state")));
    assert!(!parts[0].iter().any(|s| s.contains("_heimdallr_state")));
}

#[tokio::test]
async fn status_sequences_are_polled_until_finished() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    fake.script([Script::StatusesThenRun(vec![
        "SUBMITTED",
        "PICKED",
        "STARTED",
        "STARTED",
    ])]);
    let described_before = fake
        .stats()
        .calls
        .get("DescribeStatement")
        .copied()
        .unwrap_or(0);
    warehouse
        .commit(batch(
            [occurrence(5, "five", 1)],
            serde_json::json!({"high_water": 5}),
        ))
        .await
        .expect("commit after a slow start");
    assert_eq!(titles(&pg, &schema).await, vec![(5, "five".to_string())]);
    assert!(fake.stats().calls["DescribeStatement"] - described_before >= 5);
}

#[tokio::test]
async fn a_failed_sub_statement_is_reported_with_redshift_text_and_applies_nothing() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    fake.script([Script::Fail {
        sub_statement: 1,
        error: "ERROR: value too long for type character varying(255)".into(),
    }]);
    let error = warehouse
        .commit(batch(
            [occurrence(9, "nine", 1)],
            serde_json::json!({"high_water": 9}),
        ))
        .await
        .expect_err("the batch fails");
    let text = error.to_string();
    assert!(text.contains("statement 2 of 4 failed"), "{text}");
    assert!(text.contains("value too long"), "{text}");
    assert!(text.contains("INSERT INTO"), "{text}");
    assert!(!text.contains("nine"), "no data in errors: {text}");
    assert!(titles(&pg, &schema).await.is_empty());
    assert!(warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_aborted_batch_is_an_error() {
    let Some((fake, warehouse, _pg, _schema)) = setup().await else {
        return;
    };
    fake.script([Script::Abort]);
    let error = warehouse
        .commit(batch([occurrence(1, "one", 1)], serde_json::json!({})))
        .await
        .expect_err("aborted");
    assert!(error.to_string().contains("aborted"), "{error}");
}

#[tokio::test]
async fn throttling_and_serializable_conflicts_are_retried_with_a_fresh_token() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    fake.script([
        Script::Throttle,
        Script::Fail {
            sub_statement: 2,
            error: "ERROR: 1023 DETAIL: Serializable isolation violation on table - 164312, transactions forming the cycle are: 7384, 7390".into(),
        },
        Script::Throttle,
    ]);
    let before = fake.submitted_batches().len();
    warehouse
        .commit(batch(
            [occurrence(4, "four", 1)],
            serde_json::json!({"high_water": 4}),
        ))
        .await
        .expect("retried until applied");
    assert_eq!(titles(&pg, &schema).await, vec![(4, "four".to_string())]);
    let tokens: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r["ClientToken"].as_str().map(String::from))
        .collect();
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert!(fake.submitted_batches().len() - before >= 2);
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "each accepted submission has its own token"
    );
}

#[tokio::test]
async fn two_writers_on_the_same_keys_both_land_through_conflict_retries() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    let other = self::warehouse(&fake, &schema);
    let rows_a: Vec<Row> = (0..50).map(|id| occurrence(id, "a", 100)).collect();
    let rows_b: Vec<Row> = (0..50).map(|id| occurrence(id, "b", 100)).collect();
    let (a, b) = tokio::join!(
        warehouse.commit(batch(rows_a, serde_json::json!({"w": "a"}))),
        other.commit(batch(rows_b, serde_json::json!({"w": "b"}))),
    );
    a.expect("writer a");
    b.expect("writer b");
    let rows = titles(&pg, &schema).await;
    assert_eq!(rows.len(), 50);
    let winner = &rows[0].1;
    assert!(
        rows.iter().all(|(_, t)| t == winner),
        "one writer's batch wins whole"
    );
}

#[tokio::test]
async fn a_statement_running_past_the_deadline_is_cancelled() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    fake.script([Script::Hang]);
    let mut hanging = batch([occurrence(1, "one", 1)], serde_json::json!({}));
    hanging.cancel_after = Some(Instant::now() + Duration::from_millis(400));
    let started = Instant::now();
    let error = warehouse.commit(hanging).await.expect_err("cancelled");
    assert!(error.to_string().contains("cancelled"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.stats().cancels, 1);
    assert!(titles(&pg, &schema).await.is_empty());
}

#[tokio::test]
async fn the_same_client_token_is_applied_once() {
    let Some((fake, _warehouse, _pg, _schema)) = setup().await else {
        return;
    };
    let client = client(&fake);
    let submit = || {
        client
            .batch_execute_statement()
            .sqls("SELECT 1")
            .database("dev")
            .cluster_identifier("test-cluster")
            .db_user("awsuser")
            .client_token("heimdallr-same-token")
            .send()
    };
    let first = submit().await.expect("first");
    let second = submit().await.expect("second");
    assert_eq!(first.id, second.id);
    assert_eq!(fake.stats().idempotent_replays, 1);
}

#[tokio::test]
async fn the_stand_in_enforces_the_real_limits() {
    let Some((fake, _warehouse, _pg, _schema)) = setup().await else {
        return;
    };
    let client = client(&fake);
    let too_many = client
        .batch_execute_statement()
        .set_sqls(Some(vec!["SELECT 1".to_string(); 41]))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await;
    assert!(too_many.is_err());
    let too_big = client
        .batch_execute_statement()
        .sqls(format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES - 8)))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await;
    assert!(too_big.is_err(), "100 001 bytes are refused");
    let at_the_limit = client
        .batch_execute_statement()
        .sqls(format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES - 9)))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await;
    assert!(at_the_limit.is_ok(), "100 000 bytes are taken");
}

#[tokio::test]
async fn a_70_kb_document_is_stored_without_it_and_a_reject_says_why_unless_large_strings() {
    let Some((fake, warehouse, pg, schema)) = setup().await else {
        return;
    };
    let rows = [occurrence(1, "small", 100), occurrence(2, "large", 70_000)];
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 2})))
        .await
        .expect("the batch lands: the large document is set aside, not the batch");
    let omitted: serde_json::Value = stored_data(&pg, &schema, 2).await;
    assert!(omitted["heimdallr_omitted"].is_string(), "{omitted}");
    let reason: String = pg
        .query_one(
            &format!("SELECT reason FROM \"{schema}\"._heimdallr_rejects WHERE record_key = '2'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("string limit (65535 bytes"), "{reason}");

    // A cluster that opted in to large strings, named so in the URL, takes it whole.
    fake.set_large_strings(true);
    let target = RedshiftTarget::parse(
        "redshift-data://awsuser@cluster/test-cluster/dev?large_strings=true",
    )
    .unwrap();
    let large = RedshiftWarehouse::with_client(client(&fake), target, &schema);
    large
        .commit(batch(
            [occurrence(2, "large", 70_000)],
            serde_json::json!({"high_water": 2}),
        ))
        .await
        .expect("commit");
    let whole: serde_json::Value = stored_data(&pg, &schema, 2).await;
    assert_eq!(whole["padding"].as_str().map(str::len), Some(70_000));
}

#[tokio::test]
async fn the_stand_in_refuses_json_parse_input_over_65535_bytes_like_redshift() {
    let Some((fake, _warehouse, _pg, schema)) = setup().await else {
        return;
    };
    let client = client(&fake);
    let sql = format!(
        "INSERT INTO \"{schema}\"._heimdallr_rejects (source, target_table, record_key, scope, run_id, reason, raw, rejected_at) \
         VALUES ('t', 't', 'k', 's', 'r', 'x', JSON_PARSE('\"{}\"'), CURRENT_TIMESTAMP)",
        "y".repeat(65_534)
    );
    let id = client
        .batch_execute_statement()
        .sqls(sql)
        .database("dev")
        .cluster_identifier("test-cluster")
        .db_user("awsuser")
        .send()
        .await
        .expect("submitted")
        .id
        .expect("an id");
    let mut status = String::new();
    for _ in 0..200 {
        let described = client.describe_statement().id(&id).send().await.unwrap();
        status = described
            .status
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status == "FAILED" {
            assert!(described.error.unwrap_or_default().contains("65535"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "FAILED");
}

// ---- The bulk path: S3 staging and COPY ----------------------------------------------

const BUCKET: &str = "heimdallr-staging";
const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/heimdallr-copy";

fn s3_client(s3: &FakeS3) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(s3.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDTEST",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A warehouse staging tables of `bulk_rows` rows or more (and oversize rows) in S3.
fn bulk_warehouse(
    fake: &FakeRedshiftData,
    s3: &FakeS3,
    schema: &str,
    options: &str,
) -> RedshiftWarehouse {
    let target = RedshiftTarget::parse(&format!(
        "redshift-data://awsuser@cluster/test-cluster/dev?staging=s3://{BUCKET}/rollbar/&copy_role={COPY_ROLE}{options}"
    ))
    .expect("a valid URL");
    RedshiftWarehouse::with_clients(client(fake), s3_client(s3), target, schema)
}

/// The Data API and S3 stand-ins (the role associated with the cluster), a migrated schema
/// and a warehouse with a bulk threshold of 50 rows.
async fn bulk_setup() -> Option<(
    FakeRedshiftData,
    FakeS3,
    RedshiftWarehouse,
    tokio_postgres::Client,
    String,
)> {
    let (fake, _inline, pg, schema) = setup().await?;
    let s3 = FakeS3::start(&[BUCKET]).await.expect("S3 stand-in");
    fake.attach_s3(&s3);
    fake.associate_role(COPY_ROLE, false);
    let warehouse = bulk_warehouse(&fake, &s3, &schema, "&bulk_rows=50");
    Some((fake, s3, warehouse, pg, schema))
}

/// A Rollbar-like document of about `bytes`: a stack of frames with locals, no string in
/// it longer than 2 000 bytes (as deep stack locals are).
fn deep_document(id: i64, bytes: usize) -> serde_json::Value {
    let frames: Vec<serde_json::Value> = (0..bytes / 2_100 + 1)
        .map(|i| {
            serde_json::json!({
                "filename": format!("app/models/thing_{i}.rb"),
                "lineno": i,
                "locals": {"payload": "l".repeat(2_000)},
            })
        })
        .collect();
    serde_json::json!({"id": id, "body": {"trace": {"frames": frames}}})
}

fn occurrence_with(id: i64, document: &serde_json::Value) -> Row {
    let mut row = occurrence(id, &format!("occurrence {id}"), 0);
    row.0[ROLLBAR_OCCURRENCES.column_index("data").unwrap()] = Value::json(document);
    row
}

async fn reject_reasons(pg: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    pg.query(
        &format!("SELECT reason FROM \"{schema}\"._heimdallr_rejects ORDER BY record_key"),
        &[],
    )
    .await
    .expect("read rejects")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn a_backfill_with_documents_of_70_kb_500_kb_and_2_mb_lands_every_document_whole() {
    let Some((fake, s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    let sizes = [70_000, 500_000, 2_000_000, 70_000, 1_000];
    let documents: Vec<serde_json::Value> = sizes
        .iter()
        .enumerate()
        .map(|(i, bytes)| deep_document(i as i64 + 1, *bytes))
        .collect();
    let rows = documents
        .iter()
        .enumerate()
        .map(|(i, d)| occurrence_with(i as i64 + 1, d));
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 5})))
        .await
        .expect("the backfill batch lands");

    for (i, document) in documents.iter().enumerate() {
        let stored = stored_data(&pg, &schema, i as i64 + 1).await;
        assert_eq!(&stored, document, "document {} stored whole", i + 1);
    }
    assert!(reject_reasons(&pg, &schema).await.is_empty());
    let stored = warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .unwrap()
        .expect("the cursor committed with the rows");
    assert_eq!(stored.cursor, serde_json::json!({"high_water": 5}));
    // The occurrences went through S3 and COPY (five rows, under the threshold, but too
    // large inline); the state row inline; the objects are gone after the commit.
    let stats = fake.stats();
    assert_eq!(stats.copies, 1, "{stats:?}");
    assert!(stats.copied_bytes > 0);
    assert_eq!(s3.stats().requests["PutObject"], 1);
    assert!(s3.keys(BUCKET).is_empty(), "{:?}", s3.keys(BUCKET));
    let sql = fake.submitted_batches().concat().join("\n");
    assert!(
        sql.contains(&format!("FROM 's3://{BUCKET}/rollbar/")),
        "{sql}"
    );
    assert!(sql.contains(&format!(
        "IAM_ROLE '{COPY_ROLE}' FORMAT AS JSON 'auto' GZIP"
    )));
    assert!(!sql.contains("padding"), "no document inline");
}

#[tokio::test]
async fn a_quiet_minute_stays_inline_and_a_large_batch_goes_through_s3() {
    let Some((fake, s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    warehouse
        .commit(batch(
            (1..=3).map(|id| occurrence(id, "quiet", 100)),
            serde_json::json!({"high_water": 3}),
        ))
        .await
        .expect("a quiet batch");
    assert_eq!(fake.stats().copies, 0);
    assert!(s3.stats().requests.is_empty(), "no S3 round trip");

    // 120 rows (over the threshold of 50): one object and one COPY, rows replaced on key.
    warehouse
        .commit(batch(
            (2..=121).map(|id| occurrence(id, &format!("bulk {id}"), 100)),
            serde_json::json!({"high_water": 121}),
        ))
        .await
        .expect("a large batch");
    let stored = titles(&pg, &schema).await;
    assert_eq!(stored.len(), 121);
    assert_eq!(stored[0], (1, "quiet".to_string()));
    assert_eq!(stored[1], (2, "bulk 2".to_string()));
    assert_eq!(fake.stats().copies, 1);
    let occurred: i64 = pg
        .query_one(&format!("SELECT CAST(EXTRACT(EPOCH FROM occurred_at) * 1000000 AS BIGINT) FROM \"{schema}\".rollbar_occurrences WHERE id = 7"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        occurred, 1_790_000_007_123_456,
        "timestamps keep microseconds through COPY"
    );
    // Long polling: every transaction was one call, with no status poll.
    let calls = fake.stats().calls;
    assert_eq!(calls.get("DescribeStatement"), None, "{calls:?}");
}

#[tokio::test]
async fn an_object_gone_before_its_copy_is_uploaded_again_not_lost() {
    let Some((fake, s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    s3.lose_next_puts(1);
    warehouse
        .commit(batch(
            (1..=60).map(|id| occurrence(id, "again", 10)),
            serde_json::json!({"high_water": 60}),
        ))
        .await
        .expect("the batch lands after a second upload");
    assert_eq!(titles(&pg, &schema).await.len(), 60);
    assert_eq!(s3.stats().requests["PutObject"], 2);
    assert_eq!(
        fake.stats().copies,
        1,
        "the first COPY found nothing and applied nothing"
    );
    assert!(s3.keys(BUCKET).is_empty());
}

#[tokio::test]
async fn rows_a_copy_refuses_are_reported_from_sys_load_error_detail_and_nothing_is_applied() {
    let Some((fake, s3, _warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    // The URL claims large strings the cluster does not have: the client sends a 70 KB
    // string inside a document, and Redshift's COPY refuses it.
    let claims_large = bulk_warehouse(&fake, &s3, &schema, "&large_strings=true&bulk_rows=1");
    let mut document = deep_document(1, 1_000);
    document["message"] = serde_json::json!("m".repeat(70_000));
    let error = claims_large
        .commit(batch(
            [occurrence_with(1, &document)],
            serde_json::json!({"high_water": 1}),
        ))
        .await
        .expect_err("the load fails");
    let text = error.to_string();
    assert!(text.contains("Load into table"), "{text}");
    assert!(
        text.contains("line 1, column data (super): error 1224"),
        "{text}"
    );
    assert!(text.contains("65535"), "{text}");
    assert!(!text.contains("mmmm"), "no data in errors: {text}");
    assert!(titles(&pg, &schema).await.is_empty());
    assert!(claims_large
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .unwrap()
        .is_none());
    assert!(
        s3.keys(BUCKET).is_empty(),
        "the failed load's object is deleted"
    );
}

#[tokio::test]
async fn a_string_over_65535_bytes_inside_a_document_is_cut_and_the_rest_kept_with_a_reject() {
    let Some((_fake, _s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    let mut document = deep_document(1, 200_000);
    document["message"] = serde_json::json!("m".repeat(70_000));
    warehouse
        .commit(batch(
            [occurrence_with(1, &document)],
            serde_json::json!({"high_water": 1}),
        ))
        .await
        .expect("lands");
    let stored = stored_data(&pg, &schema, 1).await;
    assert_eq!(stored["message"].as_str().map(str::len), Some(65_535));
    assert_eq!(stored["body"], document["body"], "the rest is whole");
    let reasons = reject_reasons(&pg, &schema).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("string(s) inside the document exceed"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_document_over_copys_4_mb_record_is_stored_without_it_and_a_reject_says_why() {
    let Some((_fake, _s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    let rows = [
        occurrence_with(1, &deep_document(1, 4_300_000)),
        occurrence_with(2, &deep_document(2, 3_000_000)),
    ];
    warehouse
        .commit(batch(rows, serde_json::json!({"high_water": 2})))
        .await
        .expect("lands");
    let omitted = stored_data(&pg, &schema, 1).await;
    assert!(omitted["heimdallr_omitted"].is_string(), "{omitted}");
    assert_eq!(
        stored_data(&pg, &schema, 2).await,
        deep_document(2, 3_000_000)
    );
    let reasons = reject_reasons(&pg, &schema).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("COPY's JSON record limit"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_copy_role_the_cluster_does_not_know_says_to_associate_it() {
    let Some((fake, s3, _warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    let target = RedshiftTarget::parse(&format!(
        "redshift-data://awsuser@cluster/test-cluster/dev?staging=s3://{BUCKET}/rollbar/&copy_role=arn:aws:iam::123456789012:role/unknown&bulk_rows=1"
    ))
    .unwrap();
    let unassociated =
        RedshiftWarehouse::with_clients(client(&fake), s3_client(&s3), target, &schema);
    let text = unassociated
        .commit(batch(
            [occurrence(1, "one", 10)],
            serde_json::json!({"high_water": 1}),
        ))
        .await
        .expect_err("COPY cannot assume the role")
        .to_string();
    assert!(text.contains("not authorized to assume IAM Role"), "{text}");
    assert!(
        text.contains("associate the role with the cluster"),
        "{text}"
    );
    assert!(titles(&pg, &schema).await.is_empty());
}

#[tokio::test]
async fn s3_throttling_is_retried_and_a_denied_upload_applies_nothing() {
    let Some((_fake, s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    s3.fail_next("PutObject", [S3Failure::SlowDown, S3Failure::InternalError]);
    warehouse
        .commit(batch(
            (1..=60).map(|id| occurrence(id, "slow", 10)),
            serde_json::json!({"high_water": 60}),
        ))
        .await
        .expect("the SDK retries SlowDown and InternalError");
    assert_eq!(titles(&pg, &schema).await.len(), 60);

    s3.fail_next("PutObject", [S3Failure::AccessDenied]);
    let text = warehouse
        .commit(batch(
            (61..=120).map(|id| occurrence(id, "denied", 10)),
            serde_json::json!({"high_water": 120}),
        ))
        .await
        .expect_err("a denied upload fails the batch")
        .to_string();
    assert!(text.contains("AccessDenied"), "{text}");
    assert!(
        text.contains("s3:PutObject on the staging prefix"),
        "{text}"
    );
    assert_eq!(
        titles(&pg, &schema).await.len(),
        60,
        "nothing of it applied"
    );
    let stored = warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.cursor, serde_json::json!({"high_water": 60}));
}

#[tokio::test]
async fn a_run_killed_while_uploading_copying_or_merging_leaves_what_the_next_run_completes() {
    let Some((fake, s3, warehouse, pg, schema)) = bulk_setup().await else {
        return;
    };
    let rows = |ids: std::ops::RangeInclusive<i64>, tag: &str| {
        ids.map(|id| occurrence(id, &format!("{tag} {id}"), 100))
            .collect::<Vec<_>>()
    };

    // Killed while uploading (the PUT never answers): nothing reaches Redshift.
    s3.fail_next("PutObject", [S3Failure::Stall(Duration::from_secs(30))]);
    let upload = warehouse.commit(batch(
        rows(1..=60, "a"),
        serde_json::json!({"high_water": 60}),
    ));
    assert!(tokio::time::timeout(Duration::from_millis(500), upload)
        .await
        .is_err());
    assert!(titles(&pg, &schema).await.is_empty());
    assert_eq!(stored_cursor(&warehouse).await, None);

    // Killed while the COPY runs: the cluster finishes the transaction without the client
    // (rows and cursor together); its object stays for the bucket's lifecycle rule.
    fake.delay_next_batches(1, Duration::from_millis(800));
    let copying = warehouse.commit(batch(
        rows(1..=60, "b"),
        serde_json::json!({"high_water": 60}),
    ));
    assert!(tokio::time::timeout(Duration::from_millis(300), copying)
        .await
        .is_err());
    heimdallr_fakes::redshift_data::settle(&fake, Duration::from_secs(10)).await;
    let stored = titles(&pg, &schema).await;
    assert_eq!(stored.len(), 60);
    assert!(stored.iter().all(|(_, t)| t.starts_with("b ")));
    assert_eq!(
        stored_cursor(&warehouse).await,
        Some(serde_json::json!({"high_water": 60}))
    );
    assert_eq!(s3.keys(BUCKET).len(), 1, "left to the lifecycle rule");

    // The merge fails (the transaction aborted at its DELETE): nothing of it applied.
    fake.script([Script::Fail {
        sub_statement: 2,
        error: "ERROR: Query (9001) cancelled on user's request".into(),
    }]);
    let error = warehouse
        .commit(batch(
            rows(61..=120, "c"),
            serde_json::json!({"high_water": 120}),
        ))
        .await
        .expect_err("the merge fails");
    assert!(error.to_string().contains("statement 3 of"), "{error}");
    assert_eq!(titles(&pg, &schema).await.len(), 60);
    assert_eq!(
        stored_cursor(&warehouse).await,
        Some(serde_json::json!({"high_water": 60}))
    );

    // The next run, from the committed cursor: everything once, current.
    warehouse
        .commit(batch(
            rows(61..=120, "d"),
            serde_json::json!({"high_water": 120}),
        ))
        .await
        .expect("the next run lands");
    let stored = titles(&pg, &schema).await;
    assert_eq!(stored.len(), 120);
    assert_eq!(stored[0], (1, "b 1".to_string()));
    assert_eq!(stored[119], (120, "d 120".to_string()));
    assert_eq!(
        stored_cursor(&warehouse).await,
        Some(serde_json::json!({"high_water": 120}))
    );
}

async fn stored_cursor(warehouse: &RedshiftWarehouse) -> Option<serde_json::Value> {
    warehouse
        .read_state("rollbar", "occurrences", "web", None)
        .await
        .expect("read state")
        .map(|s| s.cursor)
}
