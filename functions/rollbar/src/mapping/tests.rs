use super::*;
use heimdallr_core::schema::ROLLBAR_OCCURRENCES;
use heimdallr_core::warehouse::prepare_row;
use serde_json::json;

const OCCURRENCE_FIXTURES: [&str; 6] = [
    "sdk_trace",
    "sdk_trace_chain",
    "sdk_message",
    "older_crash_report",
    "injection_and_nul",
    "huge_multibyte_message",
];

fn fixture_text(name: &str) -> String {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> Json {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An occurrence as the API client hands it over: its text as Rollbar sent it.
fn raw(text: &str) -> RawOccurrence {
    let raw: &serde_json::value::RawValue = serde_json::from_str(text).unwrap();
    RawOccurrence::new(raw)
}

fn data_of(row: &Row) -> Json {
    let Value::Json(data) = cell(row, "data") else {
        panic!("data is JSON")
    };
    data.to_value()
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

fn text_of(row: &Row, column: &str) -> Option<String> {
    match cell(row, column) {
        Value::Text(t) => Some(t.clone()),
        Value::Null => None,
        other => panic!("{column} is {other:?}"),
    }
}

fn occurrence(name: &str, pii: &PiiPolicy) -> (Row, OccurrenceMeta) {
    let (row, meta) = occurrence_row(&raw(&fixture_text(name)), pii, synced()).unwrap();
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
    assert_eq!(text_of(&row, "person_id").as_deref(), Some("12345"));
    assert_eq!(text_of(&row, "person_username").as_deref(), Some("ann"));
    assert_eq!(
        text_of(&row, "person_email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(text_of(&row, "body_type").as_deref(), Some("trace"));
    assert_eq!(
        text_of(&row, "exception_class").as_deref(),
        Some("ValueError")
    );
    assert!(text_of(&row, "exception_message")
        .unwrap()
        .contains("bad value ✗"));
    assert_eq!(text_of(&row, "environment").as_deref(), Some("production"));
    assert_eq!(text_of(&row, "level").as_deref(), Some("error"));
    assert_eq!(
        text_of(&row, "code_version").as_deref(),
        Some("3f2a9c1d0e5b7a8c9d0e1f2a3b4c5d6e7f8a9b0c")
    );
    assert_eq!(text_of(&row, "request_method").as_deref(), Some("POST"));
    assert_eq!(
        text_of(&row, "request_url").as_deref(),
        Some("https://shop.example.com/cart?x=1")
    );
    assert_eq!(
        text_of(&row, "request_user_ip").as_deref(),
        Some("203.0.113.9")
    );
    assert!(text_of(&row, "language").unwrap().starts_with("python"));
    assert!(text_of(&row, "server_host").is_some());
    assert_eq!(text_of(&row, "uuid").unwrap().len(), 36);
    let data = data_of(&row);
    assert_eq!(data["body"]["trace"]["exception"]["class"], "ValueError");
}

#[test]
fn trace_chain_reports_the_outermost_exception() {
    let (row, _) = occurrence("sdk_trace_chain", &PiiPolicy::Keep);
    assert_eq!(text_of(&row, "body_type").as_deref(), Some("trace_chain"));
    assert_eq!(
        text_of(&row, "exception_class").as_deref(),
        Some("RuntimeError")
    );
    assert_eq!(
        text_of(&row, "exception_message").as_deref(),
        Some("outer failure")
    );
    assert_eq!(
        text_of(&row, "person_id"),
        None,
        "no person in this payload"
    );
}

#[test]
fn message_body_becomes_the_message_column() {
    let (row, _) = occurrence("sdk_message", &PiiPolicy::Keep);
    assert_eq!(text_of(&row, "body_type").as_deref(), Some("message"));
    assert_eq!(text_of(&row, "exception_class"), None);
    assert_eq!(
        text_of(&row, "exception_message").as_deref(),
        Some("Deploy finished")
    );
    assert_eq!(text_of(&row, "level").as_deref(), Some("info"));
}

#[test]
fn older_payloads_with_numeric_level_string_timestamp_and_crash_report() {
    let (row, meta) = occurrence("older_crash_report", &PiiPolicy::Keep);
    assert_eq!(text_of(&row, "level").as_deref(), Some("error"));
    assert_eq!(text_of(&row, "body_type").as_deref(), Some("crash_report"));
    assert!(text_of(&row, "exception_message")
        .unwrap()
        .contains("EXC_BAD_ACCESS"));
    assert_eq!(text_of(&row, "person_id").as_deref(), Some("user-abc"));
    assert_eq!(
        text_of(&row, "person_username").as_deref(),
        Some("émile 😀")
    );
    assert_eq!(
        cell(&row, "client_timestamp"),
        &Value::Timestamp(DateTime::from_timestamp(1795667000, 0).unwrap())
    );
    assert_eq!(meta.occurred_at, DateTime::from_timestamp(1795667001, 0));
    assert_eq!(
        text_of(&row, "code_version").as_deref(),
        Some("ignored-when-top-level-missing")
    );
    let data = data_of(&row);
    assert_eq!(
        data["unknown_future_field"]["nested"][2], 3,
        "unknown fields are kept"
    );
}

#[test]
fn injection_looking_text_is_data_and_nul_is_replaced() {
    let (row, _) = occurrence("injection_and_nul", &PiiPolicy::Keep);
    let message = text_of(&row, "exception_message").unwrap();
    assert!(message.starts_with("x'); DROP TABLE rollbar_items; --"));
    assert!(!message.contains('\0'));
    assert!(message.contains("\u{FFFD} nul\u{FFFD}inside"));
    assert_eq!(
        text_of(&row, "title").as_deref(),
        Some("Robert'); DROP TABLE students;--")
    );
    let Value::Json(data) = cell(&row, "data") else {
        panic!("data is JSON")
    };
    assert!(!data.as_str().contains("\\u0000"));
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
    let cut = text_of(&row, "exception_message").unwrap();
    assert!(cut.len() <= 65_535 && cut.len() > 65_500);
    assert!(full.starts_with(&cut));
    let data = data_of(&row);
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
    assert_eq!(text_of(&row, "person_email"), None);
    assert_eq!(text_of(&row, "person_username"), None);
    assert_eq!(text_of(&row, "request_user_ip"), None);
    assert_eq!(
        text_of(&row, "person_id").as_deref(),
        Some("12345"),
        "the join key stays"
    );
    let data = data_of(&row);
    let stored = data.to_string();
    assert!(!stored.contains("ann@example.com") && !stored.contains("203.0.113.9"));

    let hash = PiiPolicy::from_config("hash", Some("pepper")).unwrap();
    let (row, _) = occurrence("sdk_trace", &hash);
    let email = text_of(&row, "person_email").unwrap();
    assert_eq!(Some(email.clone()), hash.apply("ann@example.com"));
    let data = data_of(&row);
    assert_eq!(data["person"]["email"], json!(email));
}

#[test]
fn occurrences_without_id_are_refused_with_a_reason() {
    let nameless = raw(r#"{"data": {}}"#);
    assert_eq!(nameless.id, None);
    let err = occurrence_row(&nameless, &PiiPolicy::Keep, synced()).unwrap_err();
    assert!(err.contains("no numeric id"));
    let odd = raw(r#"{"id": "77", "data": "not an object"}"#);
    assert_eq!(odd.id, Some(77));
    let (row, meta) = occurrence_row(&odd, &PiiPolicy::Keep, synced()).unwrap();
    assert_eq!(meta.id, 77);
    assert_eq!(cell(&row, "data"), &Value::json(&json!({})));
}

#[test]
fn reading_only_the_mapped_fields_gives_the_row_of_a_full_parse() {
    for name in OCCURRENCE_FIXTURES {
        for pii in [PiiPolicy::Keep, PiiPolicy::Drop] {
            let occurrence = raw(&fixture_text(name));
            let (row, meta) = occurrence_row(&occurrence, &pii, synced()).unwrap();
            let Value::Json(data) = cell(&row, "data").clone() else {
                panic!("data is JSON")
            };
            let full = fixture(name);
            let (expected, expected_meta) = row_from_fields(&full, data, &pii, synced()).unwrap();
            // As stored: U+0000 is replaced in both (in the text before the read, or after).
            let stored = |row| prepare_row(&ROLLBAR_OCCURRENCES, row).unwrap();
            assert_eq!(stored(row), stored(expected), "{name}");
            assert_eq!(meta, expected_meta, "{name}");
        }
    }
}

#[test]
fn data_is_stored_as_sent_with_only_personal_members_rewritten() {
    let text = fixture_text("sdk_trace");
    let occurrence = raw(&text);
    let (kept, _) = occurrence_row(&occurrence, &PiiPolicy::Keep, synced()).unwrap();
    let members: std::collections::HashMap<String, Box<RawValue>> =
        serde_json::from_str(&text).unwrap();
    let sent = members["data"].get();
    assert_eq!(
        cell(&kept, "data"),
        &Value::Json(JsonText::parse(sent).unwrap())
    );
    let (dropped, _) = occurrence_row(&occurrence, &PiiPolicy::Drop, synced()).unwrap();
    let mut expected = fixture("sdk_trace")["data"].clone();
    for path in PERSONAL_PATHS {
        PiiPolicy::Drop.apply_in_json(&mut expected, path);
    }
    assert_eq!(data_of(&dropped), expected);
}

#[test]
fn unpaired_surrogates_and_escaped_nul_become_replacement_characters() {
    // JavaScript clients can send strings a strict JSON parser refuses.
    let text = r#"{"id": 5, "data": {"title": "cut \ud83d", "bad\u0000key": "\udc00",
        "body": {"message": {"body": "a\u0000b"}}}}"#;
    assert!(serde_json::from_str::<Json>(text).is_err());
    let occurrence = raw(text);
    assert_eq!(occurrence.id, Some(5));
    let (row, _) = occurrence_row(&occurrence, &PiiPolicy::Keep, synced()).unwrap();
    let row = prepare_row(&ROLLBAR_OCCURRENCES, row).unwrap();
    assert_eq!(text_of(&row, "title").as_deref(), Some("cut \u{FFFD}"));
    assert_eq!(
        text_of(&row, "exception_message").as_deref(),
        Some("a\u{FFFD}b")
    );
    assert_eq!(data_of(&row)["bad\u{FFFD}key"], json!("\u{FFFD}"));
}

#[test]
fn a_repeated_member_counts_once_the_last_as_in_a_full_parse() {
    let occurrence = raw(r#"{"id": 1, "data": {"level": "info", "level": "error"}, "id": 2}"#);
    assert_eq!(occurrence.id, Some(2));
    let (row, meta) = occurrence_row(&occurrence, &PiiPolicy::Keep, synced()).unwrap();
    assert_eq!(meta.id, 2);
    assert_eq!(text_of(&row, "level").as_deref(), Some("error"));
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

#[test]
fn an_occurrence_that_cannot_be_read_is_refused_with_the_reason() {
    // serde_json holds no number beyond f64: the mapped timestamp cannot be read.
    let unreadable = raw(r#"{"id": 9, "data": {"timestamp": 1e400}}"#);
    assert_eq!(unreadable.id, None);
    assert!(
        unreadable.missing_id_reason().contains("cannot be read"),
        "{}",
        unreadable.missing_id_reason()
    );
    let err = occurrence_row(&unreadable, &PiiPolicy::Keep, synced()).unwrap_err();
    assert!(err.contains("cannot be read"), "{err}");
    // The same number where nothing reads it is stored as sent.
    let ignored = raw(r#"{"id": 9, "data": {"extra": 1e400}}"#);
    let (row, _) = occurrence_row(&ignored, &PiiPolicy::Keep, synced()).unwrap();
    let Value::Json(data) = cell(&row, "data") else {
        panic!("data is JSON")
    };
    assert_eq!(data.as_str(), r#"{"extra": 1e400}"#);
}

#[test]
fn rejected_occurrences_keep_no_personal_data_the_policy_drops() {
    let nameless = raw(
        r#"{"data": {"person": {"id": 1, "email": "ann@example.com"}, "request": {"user_ip": "1.2.3.4"}}}"#,
    );
    assert_eq!(nameless.id, None);
    let kept = nameless.reject_document(&PiiPolicy::Keep);
    assert!(kept.as_str().contains("ann@example.com"));
    let dropped = nameless.reject_document(&PiiPolicy::Drop).to_value();
    assert_eq!(
        dropped,
        json!({"data": {"person": {"id": 1}, "request": {}}})
    );
    let unreadable =
        raw(r#"{"data": {"timestamp": 1e400, "person": {"email": "ann@example.com"}}}"#);
    let omitted = unreadable.reject_document(&PiiPolicy::Drop);
    assert!(!omitted.as_str().contains("ann@"), "{omitted}");
    assert!(omitted.as_str().contains("could not be read"), "{omitted}");
}
