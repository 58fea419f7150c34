//! The Redshift write paths measured: inline statements against S3 staging + COPY, for
//! backfills of 10k, 100k and 1M occurrences, through the Data API and S3 stand-ins (the
//! statements run on PostgreSQL). Prints, per 10k rows: Data API calls, statements, status
//! polls, bytes sent, S3 requests, and the time they would take on AWS under the stated
//! per-call latencies (a model: the stand-ins answer in microseconds). Run by
//! scripts/bench-redshift.sh, which starts PostgreSQL and sets HEIMDALLR_TEST_POSTGRES_URL.
//! Usage: bench_redshift [ROWS,ROWS,..] (default 10000,100000,1000000)

use chrono::Utc;
use heimdallr_core::schema::{ROLLBAR_OCCURRENCES, STATE};
use heimdallr_core::warehouse::redshift::target::RedshiftTarget;
use heimdallr_core::warehouse::redshift::RedshiftWarehouse;
use heimdallr_core::warehouse::{Batch, Row, Value, Warehouse};
use heimdallr_fakes::redshift_data::FakeRedshiftData;
use heimdallr_fakes::s3::FakeS3;
use std::time::Instant;

const BUCKET: &str = "heimdallr-staging";
const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/heimdallr-copy";
/// Rows per batch: the sync's default (HEIMDALLR_BATCH_ROWS).
const BATCH_ROWS: usize = 1000;
/// Batch sizes compared to find where COPY starts to pay (10k rows each).
const SWEEP: [usize; 7] = [100, 200, 300, 500, 1000, 2500, 5000];

/// The latency model (milliseconds), from the Data API's and Redshift's published
/// behaviour and typical figures: each call is a round trip to the regional endpoint plus
/// queueing; each statement is compiled (cached shapes) and run; a commit flushes to disk;
/// a COPY starts slices and reads S3.
struct Model {
    call_ms: f64,
    statement_ms: f64,
    statement_ms_per_kb: f64,
    commit_ms: f64,
    copy_ms: f64,
    copy_ms_per_mb: f64,
    s3_request_ms: f64,
    s3_ms_per_mb: f64,
}

const MODEL: Model = Model {
    call_ms: 150.0,
    statement_ms: 100.0,
    statement_ms_per_kb: 0.5,
    commit_ms: 200.0,
    copy_ms: 1_000.0,
    copy_ms_per_mb: 20.0,
    s3_request_ms: 40.0,
    s3_ms_per_mb: 20.0,
};

fn occurrence(id: i64) -> Row {
    let mut values = vec![Value::Null; ROLLBAR_OCCURRENCES.columns.len()];
    let column = |name: &str| ROLLBAR_OCCURRENCES.column_index(name).expect("column");
    values[0] = Value::BigInt(id);
    values[column("item_id")] = Value::BigInt(id % 977);
    values[column("project_id")] = Value::BigInt(1);
    values[column("occurred_at")] = Value::Timestamp(
        chrono::DateTime::from_timestamp(1_790_000_000 + id, 0).unwrap_or_default(),
    );
    values[column("environment")] = Value::Text("production".into());
    values[column("level")] = Value::Text("error".into());
    values[column("title")] = Value::Text(format!(
        "NoMethodError: undefined method `name' for nil ({id})"
    ));
    values[column("person_id")] = Value::Text(format!("user-{}", id % 5000));
    values[column("code_version")] = Value::Text("3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a".into());
    // About 1.5 KB, as a typical Rollbar occurrence with a short trace.
    let frames: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"filename": format!("app/models/order_{i}.rb"), "lineno": 40 + i, "method": "total"}))
        .collect();
    values[column("data")] = Value::json(&serde_json::json!({
        "environment": "production", "level": "error", "uuid": format!("5f0b{id:028x}"),
        "body": {"trace": {"frames": frames, "exception": {"class": "NoMethodError", "message": "undefined method `name' for nil"}}},
        "person": {"id": format!("user-{}", id % 5000)},
        "request": {"url": "https://shop.example.com/orders/42", "method": "POST", "user_ip": "203.0.113.7"},
        "server": {"host": "web.1", "code_version": "3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a"},
    }));
    Row(values)
}

fn state(high_water: i64) -> Row {
    Row(vec![
        Value::Text("rollbar".into()),
        Value::Text("occurrences".into()),
        Value::Text("1".into()),
        Value::json(&serde_json::json!({"high_water": high_water})),
        Value::Timestamp(Utc::now()),
        Value::Text("bench".into()),
        Value::Timestamp(Utc::now()),
        Value::Timestamp(Utc::now()),
    ])
}

struct Figures {
    calls: f64,
    statements: f64,
    polls: f64,
    polls_per_batch: f64,
    bytes: f64,
    s3_requests: f64,
    copies: f64,
    model_seconds: f64,
    wall_seconds: f64,
}

async fn run(
    fake: &FakeRedshiftData,
    s3: &FakeS3,
    schema: &str,
    url: &str,
    rows: usize,
    batch_rows: usize,
) -> Figures {
    let target = RedshiftTarget::parse(url).expect("URL");
    let s3_config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(s3.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDBENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .build();
    let config = aws_sdk_redshiftdata::Config::builder()
        .behavior_version(aws_sdk_redshiftdata::config::BehaviorVersion::latest())
        .region(aws_sdk_redshiftdata::config::Region::new("us-east-1"))
        .endpoint_url(fake.endpoint())
        .credentials_provider(aws_sdk_redshiftdata::config::Credentials::new(
            "AKIDBENCH",
            "bench",
            None,
            None,
            "bench",
        ))
        .build();
    let warehouse = RedshiftWarehouse::with_clients(
        aws_sdk_redshiftdata::Client::from_conf(config),
        aws_sdk_s3::Client::from_conf(s3_config),
        target,
        schema,
    );
    warehouse.migrate(None).await.expect("migrate");
    let before = fake.stats();
    let s3_before = s3.stats();
    let started = Instant::now();
    let mut next = 0;
    while next < rows {
        let end = (next + batch_rows).min(rows);
        let mut batch = Batch::default();
        for id in next..end {
            batch.push(&ROLLBAR_OCCURRENCES, occurrence(id as i64));
        }
        batch.push(&STATE, state(end as i64));
        warehouse.commit(batch).await.expect("commit");
        next = end;
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let after = fake.stats();
    let s3_after = s3.stats();
    let count = |stats: &heimdallr_fakes::redshift_data::Stats, op: &str| {
        stats.calls.get(op).copied().unwrap_or(0) as f64
    };
    let calls: f64 = [
        "BatchExecuteStatement",
        "ExecuteStatement",
        "DescribeStatement",
        "GetStatementResult",
    ]
    .iter()
    .map(|op| count(&after, op) - count(&before, op))
    .sum();
    let polls = count(&after, "DescribeStatement") - count(&before, "DescribeStatement");
    let batches = &after.batch_sizes[before.batch_sizes.len()..];
    let statement_bytes: Vec<usize> =
        after.statement_bytes[before.statement_bytes.len()..].to_vec();
    let statements = batches.iter().sum::<usize>() as f64;
    let s3_requests = |s: &heimdallr_fakes::s3::S3Stats| s.requests.values().sum::<u64>() as f64;
    let s3_put_bytes = (s3_after.bytes_put - s3_before.bytes_put) as f64;
    let copies = (after.copies - before.copies) as f64;
    let copied_mb = (after.copied_bytes - before.copied_bytes) as f64 / 1e6;
    let sql_bytes = statement_bytes.iter().sum::<usize>() as f64;
    let s3_calls = s3_requests(&s3_after) - s3_requests(&s3_before);
    let model_ms = calls * MODEL.call_ms
        + (statements - copies) * MODEL.statement_ms
        + sql_bytes / 1e3 * MODEL.statement_ms_per_kb
        + batches.len() as f64 * MODEL.commit_ms
        + copies * MODEL.copy_ms
        + copied_mb * MODEL.copy_ms_per_mb
        + s3_calls * MODEL.s3_request_ms
        + s3_put_bytes / 1e6 * MODEL.s3_ms_per_mb;
    let per = 10_000.0 / rows as f64;
    Figures {
        calls: calls * per,
        statements: statements * per,
        polls: polls * per,
        polls_per_batch: polls / batches.len().max(1) as f64,
        bytes: (sql_bytes + s3_put_bytes) * per,
        s3_requests: s3_calls * per,
        copies: copies * per,
        model_seconds: model_ms / 1e3 * per,
        wall_seconds,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let Ok(pg_url) = std::env::var("HEIMDALLR_TEST_POSTGRES_URL") else {
        eprintln!(
            "HEIMDALLR_TEST_POSTGRES_URL is not set (scripts/bench-redshift.sh starts PostgreSQL)"
        );
        std::process::exit(2);
    };
    let fake = FakeRedshiftData::start(Some(pg_url))
        .await
        .expect("Data API stand-in");
    let s3 = FakeS3::start(&[BUCKET]).await.expect("S3 stand-in");
    fake.attach_s3(&s3);
    fake.associate_role(COPY_ROLE, false);
    let base = "redshift-data://bench@cluster/bench/dev";
    let paths = [
        ("inline (no staging)", base.to_string(), true),
        (
            "inline, endpoint without long polling",
            base.to_string(),
            false,
        ),
        (
            "bulk (S3 + COPY)",
            format!("{base}?staging=s3://{BUCKET}/bench/&copy_role={COPY_ROLE}"),
            true,
        ),
    ];
    println!(
        "Model per call {} ms, per statement {} ms + {} ms/KB, per commit {} ms, per COPY {} ms + {} ms/MB, per S3 request {} ms + {} ms/MB; batches of {BATCH_ROWS} rows (~1.5 KB documents).",
        MODEL.call_ms, MODEL.statement_ms, MODEL.statement_ms_per_kb, MODEL.commit_ms, MODEL.copy_ms, MODEL.copy_ms_per_mb, MODEL.s3_request_ms, MODEL.s3_ms_per_mb
    );
    println!();
    println!("| rows | path | Data API calls /10k | statements /10k | polls /10k (per batch) | bytes sent /10k | S3 requests /10k | COPYs /10k | modelled time /10k | modelled total | stand-in wall |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (run_index, &rows) in sizes.iter().enumerate() {
        for (path_index, (name, url, long_polling)) in paths.iter().enumerate() {
            // Without long polling, once: the polls it costs do not depend on the size.
            if !long_polling && run_index > 0 {
                continue;
            }
            fake.set_long_polling(*long_polling);
            let schema = format!("bench_{run_index}_{path_index}_{}", std::process::id());
            let f = run(&fake, &s3, &schema, url, rows, BATCH_ROWS).await;
            let total = f.model_seconds * rows as f64 / 10_000.0;
            println!(
                "| {rows} | {name} | {:.0} | {:.0} | {:.1} ({:.1}) | {:.1} MB | {:.0} | {:.0} | {:.1} s | {} | {:.0} s |",
                f.calls, f.statements, f.polls, f.polls_per_batch, f.bytes / 1e6, f.s3_requests, f.copies, f.model_seconds,
                human(total), f.wall_seconds
            );
        }
    }

    // Where COPY starts to pay: 10k rows in batches of each size, the occurrences of each
    // batch inline or through S3.
    println!();
    println!("| batch rows | inline: modelled time /10k | bulk: modelled time /10k | cheaper |");
    println!("|---:|---:|---:|---|");
    let mut threshold = None;
    for (i, &batch_rows) in SWEEP.iter().enumerate() {
        fake.set_long_polling(true);
        let inline = run(
            &fake,
            &s3,
            &format!("sweep_i_{i}_{}", std::process::id()),
            base,
            10_000,
            batch_rows,
        )
        .await;
        // The occurrences (batch_rows of them) through S3; the cursor and run rows inline.
        let bulk_url = format!(
            "{base}?staging=s3://{BUCKET}/bench/&copy_role={COPY_ROLE}&bulk_rows={batch_rows}"
        );
        let bulk = run(
            &fake,
            &s3,
            &format!("sweep_b_{i}_{}", std::process::id()),
            &bulk_url,
            10_000,
            batch_rows,
        )
        .await;
        let cheaper = if bulk.model_seconds < inline.model_seconds {
            "bulk"
        } else {
            "inline"
        };
        if cheaper == "bulk" && threshold.is_none() {
            threshold = Some(batch_rows);
        }
        println!(
            "| {batch_rows} | {:.1} s | {:.1} s | {cheaper} |",
            inline.model_seconds, bulk.model_seconds
        );
    }
    match threshold {
        Some(rows) => println!(
            "\nCOPY is cheaper from {rows} rows a batch (of those compared); bulk_rows defaults to {}.",
            heimdallr_core::warehouse::redshift::target::DEFAULT_BULK_ROWS
        ),
        None => println!("\nCOPY was not cheaper at any batch size compared."),
    }
}

fn human(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}
