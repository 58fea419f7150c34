//! Pins every kind of statement the Redshift dialect emits in `tests/golden/redshift.sql`,
//! which `scripts/check-redshift-sql.sh` parses with sqlfluff's Redshift dialect.
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p heimdallr-core --test redshift_golden`.

use chrono::{DateTime, Utc};
use heimdallr_core::schema::{
    MIGRATIONS, MIGRATIONS_TABLE, ROLLBAR_ITEMS, ROLLBAR_OCCURRENCES, RUNS, STATE,
};
use heimdallr_core::warehouse::redshift::plan::{plan_batch, plan_batch_with, Bulk, Limits};
use heimdallr_core::warehouse::redshift::sql;
use heimdallr_core::warehouse::{Batch, Dialect, Row, Value};

const SCHEMA: &str = "heimdallr";

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 250_000_000).expect("a valid time")
}

fn occurrence(id: i64, payload_bytes: usize) -> Row {
    let mut values = vec![Value::Null; ROLLBAR_OCCURRENCES.columns.len()];
    let set = |values: &mut Vec<Value>, name: &str, value: Value| {
        let index = ROLLBAR_OCCURRENCES
            .column_index(name)
            .expect("known column");
        values[index] = value;
    };
    set(&mut values, "id", Value::BigInt(id));
    set(&mut values, "item_id", Value::BigInt(77));
    set(&mut values, "occurred_at", Value::Timestamp(at()));
    set(
        &mut values,
        "title",
        Value::Text("O'Brien's \\ path".into()),
    );
    set(&mut values, "person_id", Value::Text("42".into()));
    set(
        &mut values,
        "data",
        Value::json(
            &serde_json::json!({"body": {"trace": {"frames": []}}, "pad": "x".repeat(payload_bytes)}),
        ),
    );
    Row(values)
}

fn item() -> Row {
    let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
    values[0] = Value::BigInt(77);
    values[ROLLBAR_ITEMS.column_index("status").unwrap()] = Value::Text("active".into());
    Row(values)
}

fn engine_rows(batch: &mut Batch) {
    batch.push(
        &STATE,
        Row(vec![
            Value::Text("rollbar".into()),
            Value::Text("occurrences".into()),
            Value::Text("web".into()),
            Value::json(&serde_json::json!({"high_water": 2})),
            Value::Timestamp(at()),
            Value::Text("run-1".into()),
            Value::Timestamp(at()),
            Value::Timestamp(at()),
        ]),
    );
    let mut run = vec![Value::Null; RUNS.columns.len()];
    run[0] = Value::Text("run-1".into());
    run[1] = Value::Text("rollbar".into());
    run[2] = Value::Text("occurrences".into());
    run[3] = Value::Text("web".into());
    run[4] = Value::Timestamp(at());
    run[6] = Value::Text("running".into());
    run[7] = Value::BigInt(2);
    run[8] = Value::Double(1.5);
    batch.push(&RUNS, Row(run));
}

/// Every statement kind, in a stable order; long inserts shortened to their first tuple.
fn rendered() -> String {
    let dialect = Dialect::Redshift;
    let mut statements = vec![
        dialect.create_schema(SCHEMA),
        dialect.create_migrations_table(SCHEMA),
        dialect.select_migrations(SCHEMA),
        sql::lock(SCHEMA, MIGRATIONS_TABLE),
    ];
    for migration in MIGRATIONS {
        statements.extend(heimdallr_core::warehouse::migration_statements(
            dialect, SCHEMA, migration,
        ));
        statements.push(sql::record_migration(
            SCHEMA,
            migration.version,
            migration.name,
            &at(),
        ));
    }
    statements.extend(heimdallr_core::warehouse::view_statements(dialect, SCHEMA));
    statements.extend(dialect.activity_views(SCHEMA, "app.user_activity"));
    statements.push(dialect.select_last_turns(SCHEMA));
    statements.push(dialect.select_state(SCHEMA));
    statements.push(dialect.count_environment_map());
    statements.push(dialect.select_environment_map(SCHEMA));
    statements.push(dialect.status(SCHEMA));
    statements.push(dialect.count_status_tables());

    // A small batch (direct) and a large one (staged).
    let mut small = Batch::default();
    small.push(&ROLLBAR_OCCURRENCES, occurrence(1, 10));
    small.push(&ROLLBAR_ITEMS, item());
    engine_rows(&mut small);
    small.heartbeats.push(heimdallr_core::warehouse::Heartbeat {
        source: "rollbar".into(),
        stream: "items".into(),
        scope: "it's web".into(),
        at: at(),
    });
    let mut large = Batch::default();
    for id in 0..3 {
        large.push(&ROLLBAR_OCCURRENCES, occurrence(id, 40_000));
    }
    engine_rows(&mut large);
    for batch in [small, large] {
        for transaction in plan_batch(SCHEMA, &batch, at(), Limits::for_cluster(false)) {
            statements.extend(transaction.statements.into_iter().map(shorten));
        }
    }
    // The bulk path: the occurrences COPY'd from S3 (over the threshold), the rest inline;
    // and the query that reads why a load failed.
    let mut bulk = Batch::default();
    for id in 0..3 {
        bulk.push(&ROLLBAR_OCCURRENCES, occurrence(id, 10));
    }
    engine_rows(&mut bulk);
    let staging = Bulk {
        bucket: "heimdallr-staging".into(),
        key_prefix: "rollbar/batch-1/".into(),
        copy_role: "arn:aws:iam::123456789012:role/heimdallr-copy".into(),
        rows: 2,
    };
    for transaction in plan_batch_with(
        SCHEMA,
        &bulk,
        at(),
        Limits::for_cluster(false),
        Some(&staging),
    ) {
        statements.extend(transaction.statements.into_iter().map(shorten));
    }
    statements.push(heimdallr_core::warehouse::redshift::bulk::load_errors_query().to_string());
    let mut text = String::from("-- Generated by functions/core/tests/redshift_golden.rs: every statement kind the\n-- Redshift dialect emits. Checked by scripts/check-redshift-sql.sh (sqlfluff, redshift).\n\n");
    for statement in statements {
        text.push_str(&statement);
        text.push_str(";\n\n");
    }
    text
}

/// A multi-row insert keeps its first tuple (with a short payload); the rest is noise.
fn shorten(statement: String) -> String {
    let Some(values_at) = statement.find(" VALUES ") else {
        return statement;
    };
    let (head, tuples) = statement.split_at(values_at + " VALUES ".len());
    let first_end = tuples.find("), (").map_or(tuples.len(), |i| i + 1);
    let first = &tuples[..first_end];
    let first = match first.find("\"pad\":\"") {
        Some(pad) => {
            let rest = &first[pad + 7..];
            let pad_end = rest.find('"').unwrap_or(0);
            format!("{}\"pad\":\"xxx{}", &first[..pad], &rest[pad_end..])
        }
        None => first.to_string(),
    };
    format!("{head}{first}")
}

#[test]
fn redshift_statements_match_the_golden_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/redshift.sql");
    let actual = rendered();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .expect("tests/golden/redshift.sql exists (UPDATE_GOLDEN=1 writes it)");
    assert!(
        actual == expected,
        "the Redshift SQL changed; review the diff and rerun with UPDATE_GOLDEN=1\n{}",
        first_difference(&expected, &actual)
    );
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (number, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}:\n- {e}\n+ {a}", number + 1);
        }
    }
    format!(
        "lengths differ: {} lines expected, {} actual",
        expected.lines().count(),
        actual.lines().count()
    )
}
