use super::*;
use heimdallr_core::schema::ROLLBAR_OCCURRENCES;
use heimdallr_core::warehouse::prepare_row;
use serde_json::json;

fn fixture(name: &str) -> Json {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn synced() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn cell<'a>(row: &'a Row, column: &str) -> &'a Value {
    let index = ROLLBAR_OCCURRENCES
        .column_index(column)
        .or_else(|| ROLLBAR_ITEMS.column_index(column))
        .unwrap();
    &row.0[index]
}

fn text(row: &Row, column: &str) -> Option<String> {
    match cell(row, column) {
        Value::Text(t) => Some(t.clone()),
        Value::Null => None,
        other => panic!("{column} is {other:?}"),
    }
}

fn occurrence(name: &str, pii: &PiiPolicy) -> (Row, OccurrenceMeta) {
    let (row, meta) = occurrence_row(fixture(name), pii, synced()).unwrap();
    (prepare_row(&ROLLBAR_OCCURRENCES, row).unwrap(), meta)
}

#[test]
fn sdk_trace_with_numeric_person_id_maps_every_column() {
    let (row, meta) = occurrence("sdk_trace", &PiiPolicy::Keep);
    assert_eq!(meta.id, 900000001);
    assert_eq!(meta.item_id, Some(700000001));
    assert_eq!(cell(&row, "project_id"), &Value::BigInt(4242));
    assert_eq!(
        cell(&row, "occurred_at"),
        &Value::Timestamp(DateTime::from_timestamp(1795667222, 0).unwrap())
    );
    assert_eq!(text(&row, "person_id").as_deref(), Some("12345"));
    assert_eq!(text(&row, "person_username").as_deref(), Some("ann"));
    assert_eq!(
        text(&row, "person_email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(text(&row, "body_type").as_deref(), Some("trace"));
    assert_eq!(text(&row, "exception_class").as_deref(), Some("ValueError"));
    assert!(text(&row, "exception_message")
        .unwrap()
        .contains("bad value ✗"));
    assert_eq!(text(&row, "environment").as_deref(), Some("production"));
    assert_eq!(text(&row, "level").as_deref(), Some("error"));
    assert_eq!(
        text(&row, "code_version").as_deref(),
        Some("3f2a9c1d0e5b7a8c9d0e1f2a3b4c5d6e7f8a9b0c")
    );
    assert_eq!(text(&row, "request_method").as_deref(), Some("POST"));
    assert_eq!(
        text(&row, "request_url").as_deref(),
        Some("https://shop.example.com/cart?x=1")
    );
    assert_eq!(
        text(&row, "request_user_ip").as_deref(),
        Some("203.0.113.9")
    );
    assert!(text(&row, "language").unwrap().starts_with("python"));
    assert!(text(&row, "server_host").is_some());
    assert_eq!(text(&row, "uuid").unwrap().len(), 36);
    let Value::Json(data) = cell(&row, "data") else {
        panic!("data is JSON")
    };
    assert_eq!(data["body"]["trace"]["exception"]["class"], "ValueError");
}

#[test]
fn trace_chain_reports_the_outermost_exception() {
    let (row, _) = occurrence("sdk_trace_chain", &PiiPolicy::Keep);
    assert_eq!(text(&row, "body_type").as_deref(), Some("trace_chain"));
    assert_eq!(
        text(&row, "exception_class").as_deref(),
        Some("RuntimeError")
    );
    assert_eq!(
        text(&row, "exception_message").as_deref(),
        Some("outer failure")
    );
    assert_eq!(text(&row, "person_id"), None, "no person in this payload");
}

#[test]
fn message_body_becomes_the_message_column() {
    let (row, _) = occurrence("sdk_message", &PiiPolicy::Keep);
    assert_eq!(text(&row, "body_type").as_deref(), Some("message"));
    assert_eq!(text(&row, "exception_class"), None);
    assert_eq!(
        text(&row, "exception_message").as_deref(),
        Some("Deploy finished")
    );
    assert_eq!(text(&row, "level").as_deref(), Some("info"));
}

#[test]
fn older_payloads_with_numeric_level_string_timestamp_and_crash_report() {
    let (row, meta) = occurrence("older_crash_report", &PiiPolicy::Keep);
    assert_eq!(text(&row, "level").as_deref(), Some("error"));
    assert_eq!(text(&row, "body_type").as_deref(), Some("crash_report"));
    assert!(text(&row, "exception_message")
        .unwrap()
        .contains("EXC_BAD_ACCESS"));
    assert_eq!(text(&row, "person_id").as_deref(), Some("user-abc"));
    assert_eq!(text(&row, "person_username").as_deref(), Some("émile 😀"));
    assert_eq!(
        cell(&row, "client_timestamp"),
        &Value::Timestamp(DateTime::from_timestamp(1795667000, 0).unwrap())
    );
    assert_eq!(meta.occurred_at, DateTime::from_timestamp(1795667001, 0));
    assert_eq!(
        text(&row, "code_version").as_deref(),
        Some("ignored-when-top-level-missing")
    );
    let Value::Json(data) = cell(&row, "data") else {
        panic!()
    };
    assert_eq!(
        data["unknown_future_field"]["nested"][2], 3,
        "unknown fields are kept"
    );
}

#[test]
fn injection_looking_text_is_data_and_nul_is_replaced() {
    let (row, _) = occurrence("injection_and_nul", &PiiPolicy::Keep);
    let message = text(&row, "exception_message").unwrap();
    assert!(message.starts_with("x'); DROP TABLE rollbar_items; --"));
    assert!(!message.contains('\0'));
    assert!(message.contains("\u{FFFD} nul\u{FFFD}inside"));
    assert_eq!(
        text(&row, "title").as_deref(),
        Some("Robert'); DROP TABLE students;--")
    );
    let Value::Json(data) = cell(&row, "data") else {
        panic!()
    };
    assert!(!data.to_string().contains("\\u0000"));
}

#[test]
fn a_huge_multibyte_message_is_cut_in_the_column_and_whole_in_data() {
    let raw = fixture("huge_multibyte_message");
    let full = raw["data"]["body"]["trace"]["exception"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(full.len() > 70_000);
    let (row, _) = occurrence("huge_multibyte_message", &PiiPolicy::Keep);
    let cut = text(&row, "exception_message").unwrap();
    assert!(cut.len() <= 65_535 && cut.len() > 65_500);
    assert!(full.starts_with(&cut));
    let Value::Json(data) = cell(&row, "data") else {
        panic!()
    };
    assert_eq!(
        data["body"]["trace"]["exception"]["message"]
            .as_str()
            .unwrap(),
        full
    );
}

#[test]
fn pii_policy_applies_to_columns_and_raw_data() {
    let (row, _) = occurrence("sdk_trace", &PiiPolicy::Drop);
    assert_eq!(text(&row, "person_email"), None);
    assert_eq!(text(&row, "person_username"), None);
    assert_eq!(text(&row, "request_user_ip"), None);
    assert_eq!(
        text(&row, "person_id").as_deref(),
        Some("12345"),
        "the join key stays"
    );
    let Value::Json(data) = cell(&row, "data") else {
        panic!()
    };
    let raw = data.to_string();
    assert!(!raw.contains("ann@example.com") && !raw.contains("203.0.113.9"));

    let hash = PiiPolicy::from_config("hash", Some("pepper")).unwrap();
    let (row, _) = occurrence("sdk_trace", &hash);
    let email = text(&row, "person_email").unwrap();
    assert_eq!(Some(email.clone()), hash.apply("ann@example.com"));
    let Value::Json(data) = cell(&row, "data") else {
        panic!()
    };
    assert_eq!(data["person"]["email"], json!(email));
}

#[test]
fn occurrences_without_id_are_refused_with_a_reason() {
    let err = occurrence_row(json!({"data": {}}), &PiiPolicy::Keep, synced()).unwrap_err();
    assert!(err.contains("no numeric id"));
    let (row, meta) = occurrence_row(
        json!({"id": "77", "data": "not an object"}),
        &PiiPolicy::Keep,
        synced(),
    )
    .unwrap();
    assert_eq!(meta.id, 77);
    assert_eq!(cell(&row, "data"), &Value::Json(json!({})));
}

#[test]
fn items_map_numeric_and_named_codes() {
    let row = item_row(&fixture("item_numeric_codes"), synced()).unwrap();
    let row = prepare_row(&ROLLBAR_ITEMS, row).unwrap();
    let get = |c: &str| row.0[ROLLBAR_ITEMS.column_index(c).unwrap()].clone();
    assert_eq!(get("status"), Value::Text("active".into()));
    assert_eq!(get("level"), Value::Text("error".into()));
    assert_eq!(get("framework"), Value::Text("2".into()));
    assert_eq!(get("counter"), Value::BigInt(17));
    assert_eq!(get("total_occurrences"), Value::BigInt(33));
    assert_eq!(get("unique_occurrences"), Value::Null);
    assert_eq!(get("group_item_id"), Value::BigInt(700000099));
    assert_eq!(get("fingerprint"), Value::Text("c0ffee".into()));

    let row = item_row(&fixture("item_named_codes"), synced()).unwrap();
    let get = |c: &str| row.0[ROLLBAR_ITEMS.column_index(c).unwrap()].clone();
    assert_eq!(get("status"), Value::Text("resolved".into()));
    assert_eq!(get("resolved_in_version"), Value::Text("3f2a9c1".into()));
    assert!(matches!(get("last_resolved_at"), Value::Timestamp(_)));
}
