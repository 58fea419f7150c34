//! Documents a strict JSON parser refuses (unpaired surrogates, escaped U+0000, numbers
//! beyond f64) are stored by the backends, not lost with their batch.

use heimdallr_core::json::JsonText;
use heimdallr_core::schema::ROLLBAR_ITEMS;
use heimdallr_core::warehouse::{self, Batch, Row, Value, WarehouseTarget};

/// As a JavaScript client might send it.
const AWKWARD: &str =
    r#"{"title": "cut \ud83d", "nul": "a\u0000b", "big": 1e400, "pair": "\ud83d\ude00"}"#;

fn batch() -> Batch {
    let mut values = vec![Value::Null; ROLLBAR_ITEMS.columns.len()];
    values[0] = Value::BigInt(1);
    values[ROLLBAR_ITEMS.column_index("data").unwrap()] =
        Value::Json(JsonText::parse(AWKWARD).expect("valid JSON text"));
    let mut batch = Batch::default();
    batch.push(&ROLLBAR_ITEMS, Row(values));
    batch
}

/// What a backend gives back for `data->>'title'`, `->>'nul'`, `->>'pair'`.
const EXPECTED: [&str; 3] = ["cut \u{FFFD}", "a\u{FFFD}b", "😀"];

#[tokio::test]
async fn postgres_stores_documents_a_strict_parser_refuses() {
    let Some(url) = heimdallr_fakes::postgres::test_postgres_url() else {
        return;
    };
    let schema = heimdallr_fakes::postgres::unique_schema("documents");
    let target = WarehouseTarget::parse(&url).expect("a PostgreSQL URL");
    let warehouse = warehouse::open(&target, &schema).await.expect("connect");
    warehouse.migrate(None).await.expect("migrate");
    warehouse.commit(batch()).await.expect("stored");

    let row = heimdallr_fakes::postgres::connect(&url)
        .await
        .query_one(
            &format!(
                "SELECT data->>'title', data->>'nul', data->>'pair', (data->>'big')::numeric > 1e399
                 FROM \"{schema}\".rollbar_items"
            ),
            &[],
        )
        .await
        .expect("read back");
    let texts: [String; 3] = [row.get(0), row.get(1), row.get(2)];
    assert_eq!(texts, EXPECTED.map(String::from));
    assert!(row.get::<_, bool>(3), "the big number is kept");
}

#[cfg(feature = "duckdb")]
#[tokio::test]
async fn duckdb_stores_documents_a_strict_parser_refuses() {
    let dir = std::env::temp_dir().join(format!("heimdallr-documents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("documents.duckdb");
    let target = WarehouseTarget::parse(path.to_str().unwrap()).expect("a DuckDB path");
    {
        let warehouse = warehouse::open(&target, "heimdallr").await.expect("open");
        warehouse.migrate(None).await.expect("migrate");
        warehouse.commit(batch()).await.expect("stored");
    }
    let connection = duckdb::Connection::open(&path).expect("open the file");
    let texts: [String; 3] = connection
        .query_row(
            "SELECT data->>'title', data->>'nul', data->>'pair' FROM heimdallr.rollbar_items",
            [],
            |row| Ok([row.get(0)?, row.get(1)?, row.get(2)?]),
        )
        .expect("read back");
    assert_eq!(texts, EXPECTED.map(String::from));
    drop(connection);
    std::fs::remove_dir_all(&dir).ok();
}
