//! The PostgreSQL backend's write paths on the suite's PostgreSQL: one upsert per row for a
//! handful of rows, a straight COPY for batches of new keys, the session's stage when any
//! key exists, and recovery after a failed transaction.

use heimdallr_core::schema::{ROLLBAR_ITEMS, STATE};
use heimdallr_core::warehouse::{self, Batch, Row, Value, Warehouse, WarehouseTarget};
use heimdallr_fakes::postgres::{connect, test_postgres_url, unique_schema};
use std::collections::BTreeMap;
use std::sync::Arc;

fn item(id: i64, title: &str) -> Row {
    let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
    values[0] = Value::BigInt(id);
    values[ROLLBAR_ITEMS.column_index("title").unwrap()] = Value::Text(title.into());
    values[ROLLBAR_ITEMS.column_index("data").unwrap()] =
        Value::json(&serde_json::json!({"id": id, "title": title, "nul": "a\u{0}b"}));
    Row(values)
}

fn batch_of(rows: impl IntoIterator<Item = Row>) -> Batch {
    let mut batch = Batch::default();
    for row in rows {
        batch.push(&ROLLBAR_ITEMS, row);
    }
    batch
}

async fn open(url: &str, schema: &str) -> Arc<dyn Warehouse> {
    let target = WarehouseTarget::parse(url).expect("a PostgreSQL URL");
    let warehouse = warehouse::open(&target, schema).await.expect("connect");
    warehouse.migrate(None).await.expect("migrate");
    warehouse
}

async fn stored_titles(url: &str, schema: &str) -> BTreeMap<i64, String> {
    let rows = connect(url)
        .await
        .query(
            &format!(
                "SELECT id, title, data->>'title' FROM \"{schema}\".rollbar_items ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("read items");
    rows.iter()
        .map(|row| {
            let (id, title, in_data): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(title, in_data, "column and document agree for item {id}");
            (id, title)
        })
        .collect()
}

fn expected(entries: &[(std::ops::RangeInclusive<i64>, &str)]) -> BTreeMap<i64, String> {
    let mut map = BTreeMap::new();
    for (ids, title) in entries {
        for id in ids.clone() {
            map.insert(id, title.to_string());
        }
    }
    map
}

#[tokio::test]
async fn new_keys_existing_keys_and_small_writes_all_merge_on_the_key() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let schema = unique_schema("write_paths");
    let warehouse = open(&url, &schema).await;

    // New keys only: the straight copy.
    warehouse
        .commit(batch_of((1..=10).map(|id| item(id, "first"))))
        .await
        .expect("new keys");
    assert_eq!(
        stored_titles(&url, &schema).await,
        expected(&[(1..=10, "first")])
    );

    // Half of the keys exist: the copy meets them, the batch merges through the stage.
    warehouse
        .commit(batch_of((6..=15).map(|id| item(id, "second"))))
        .await
        .expect("existing keys");
    assert_eq!(
        stored_titles(&url, &schema).await,
        expected(&[(1..=5, "first"), (6..=15, "second")])
    );

    // New keys again, while straight copies pause for this table: the stage takes them.
    warehouse
        .commit(batch_of((16..=25).map(|id| item(id, "third"))))
        .await
        .expect("new keys through the stage");
    // A handful of rows: one upsert each.
    warehouse
        .commit(batch_of([item(1, "fourth"), item(26, "fourth")]))
        .await
        .expect("small write");
    assert_eq!(
        stored_titles(&url, &schema).await,
        expected(&[
            (1..=1, "fourth"),
            (2..=5, "first"),
            (6..=15, "second"),
            (16..=25, "third"),
            (26..=26, "fourth")
        ])
    );
}

#[tokio::test]
async fn a_failed_batch_changes_nothing_and_the_next_one_lands() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let schema = unique_schema("failed_batch");
    let warehouse = open(&url, &schema).await;
    warehouse
        .commit(batch_of((1..=10).map(|id| item(id, "first"))))
        .await
        .expect("first batch");

    // Existing keys (so the stage is created in this transaction), then a state row whose
    // cursor is not JSON text PostgreSQL accepts for its column: the whole batch fails.
    let mut failing = batch_of((5..=14).map(|id| item(id, "lost")));
    let mut state = vec![Value::Null; STATE.columns.len()];
    state[0] = Value::Text("rollbar".into());
    state[1] = Value::Text("occurrences".into());
    state[2] = Value::Text("web".into());
    state[3] = Value::BigInt(7); // the cursor column is JSON
    failing.push(&STATE, Row(state));
    let error = warehouse
        .commit(failing)
        .await
        .expect_err("a bad row fails the batch");
    assert!(error.to_string().contains("commit batch"), "{error}");
    assert_eq!(
        stored_titles(&url, &schema).await,
        expected(&[(1..=10, "first")])
    );

    // The stage created by the failed transaction is gone; the next batch creates it again.
    warehouse
        .commit(batch_of((5..=14).map(|id| item(id, "kept"))))
        .await
        .expect("the batch after a failure");
    assert_eq!(
        stored_titles(&url, &schema).await,
        expected(&[(1..=4, "first"), (5..=14, "kept")])
    );
}

#[tokio::test]
async fn concurrent_writers_of_the_same_new_keys_both_land_once() {
    let Some(url) = test_postgres_url() else {
        return;
    };
    let schema = unique_schema("racing_writers");
    let a = open(&url, &schema).await;
    let b = open(&url, &schema).await;
    for round in 0..5_i64 {
        let ids = round * 100 + 1..=round * 100 + 50;
        let rows_a: Vec<Row> = ids.clone().map(|id| item(id, "a")).collect();
        // The other writer sends the same keys in the opposite order.
        let rows_b: Vec<Row> = ids.clone().rev().map(|id| item(id, "b")).collect();
        let (ra, rb) = tokio::join!(a.commit(batch_of(rows_a)), b.commit(batch_of(rows_b)));
        ra.expect("writer a");
        rb.expect("writer b");
    }
    let stored = stored_titles(&url, &schema).await;
    assert_eq!(stored.len(), 250);
    assert!(stored.values().all(|title| title == "a" || title == "b"));
}
