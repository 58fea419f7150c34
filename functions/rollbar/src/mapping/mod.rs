//! Rollbar payloads to rows. Rollbar's fields vary with SDK and age: ids and levels arrive as
//! numbers or strings, bodies take four shapes, most fields may be missing.

use chrono::{DateTime, Utc};
use heimdallr_core::json::{read_fields, read_fields_and_spans, Fields, JsonText, Spans, LEAF};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::schema::{ROLLBAR_DEPLOYS, ROLLBAR_ITEMS, ROLLBAR_OCCURRENCES};
use heimdallr_core::time::from_unix_seconds;
use heimdallr_core::{Row, Value};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::ops::Range;

/// What the stream logic needs from an occurrence besides its row.
#[derive(Debug, Clone, PartialEq)]
pub struct OccurrenceMeta {
    pub id: i64,
    pub item_id: Option<i64>,
    pub occurred_at: Option<DateTime<Utc>>,
}

fn at<'a>(value: &'a Json, path: &[&str]) -> Option<&'a Json> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

/// An integer sent as a number or as a numeric string.
pub fn lenient_i64(value: Option<&Json>) -> Option<i64> {
    match value? {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Text sent as a string, a number or a boolean (e.g. person.id).
pub fn lenient_text(value: Option<&Json>) -> Option<String> {
    match value? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Unix seconds as a number or numeric string.
fn lenient_time(value: Option<&Json>) -> Option<DateTime<Utc>> {
    let seconds = match value? {
        Json::Number(n) => n.as_f64()?,
        Json::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    from_unix_seconds(seconds)
}

/// A name sent as text, or as one of the numeric `codes` of older payloads (an unknown
/// code is kept as its number).
fn named_code(value: Option<&Json>, codes: &[(i64, &str)]) -> Option<String> {
    match value? {
        Json::Number(n) => {
            let code = n.as_i64()?;
            Some(
                codes
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map_or_else(|| code.to_string(), |(_, name)| name.to_string()),
            )
        }
        other => lenient_text(Some(other)).map(|s| s.to_ascii_lowercase()),
    }
}

/// Levels: names, or the numeric codes of older payloads.
pub fn level_name(value: Option<&Json>) -> Option<String> {
    named_code(
        value,
        &[
            (10, "debug"),
            (20, "info"),
            (30, "warning"),
            (40, "error"),
            (50, "critical"),
        ],
    )
}

/// Item statuses: names, or the numeric codes of older payloads.
pub fn status_name(value: Option<&Json>) -> Option<String> {
    named_code(
        value,
        &[
            (1, "active"),
            (2, "resolved"),
            (3, "muted"),
            (4, "archived"),
        ],
    )
}

/// (body type, exception class, exception message) of the four body shapes.
fn body_summary(body: Option<&Json>) -> (Option<String>, Option<String>, Option<String>) {
    let Some(body) = body else {
        return (None, None, None);
    };
    let exception = |trace: &Json| {
        (
            lenient_text(at(trace, &["exception", "class"])),
            lenient_text(at(trace, &["exception", "message"])),
        )
    };
    if let Some(trace) = body.get("trace").filter(|t| t.is_object()) {
        let (class, message) = exception(trace);
        return (Some("trace".into()), class, message);
    }
    if let Some(chain) = body.get("trace_chain").and_then(Json::as_array) {
        // The first trace is the outermost exception, the one people see.
        let (class, message) = chain.first().map(exception).unwrap_or((None, None));
        return (Some("trace_chain".into()), class, message);
    }
    if let Some(message) = body.get("message") {
        let text = lenient_text(message.get("body")).or_else(|| lenient_text(Some(message)));
        return (Some("message".into()), None, text);
    }
    if let Some(crash) = body.get("crash_report") {
        let text = lenient_text(crash.get("raw")).or_else(|| lenient_text(Some(crash)));
        return (Some("crash_report".into()), None, text);
    }
    (None, None, None)
}

fn code_version(data: &Json) -> Option<String> {
    [
        &["code_version"][..],
        &["server", "code_version"],
        &["client", "javascript", "code_version"],
        &["server", "sha"],
    ]
    .iter()
    .find_map(|path| lenient_text(at(data, path)))
}

/// One occurrence as Rollbar sent it (made storable), read once when its page arrives: its
/// id (the walk needs the page's ids first), the fields its row is made of, and where its
/// `data` document and that document's personal members are.
#[derive(Debug, Clone)]
pub struct RawOccurrence {
    pub id: Option<i64>,
    pub json: JsonText,
    /// The fields of [`OCCURRENCE_FIELDS`], or why they cannot be read.
    fields: Result<Json, String>,
    /// Where the values at [`SPANS`] are in `json`.
    spans: Spans,
}

impl RawOccurrence {
    pub fn new(raw: &RawValue) -> Self {
        let json = JsonText::from_raw(raw);
        match read_fields_and_spans(json.as_str(), &OCCURRENCE_FIELDS, &SPANS) {
            Ok((fields, spans)) => Self {
                id: lenient_i64(fields.get("id")),
                json,
                fields: Ok(fields),
                spans,
            },
            Err(e) => Self {
                id: None,
                json,
                fields: Err(format!("occurrence cannot be read: {e}")),
                spans: Vec::new(),
            },
        }
    }

    /// Why this occurrence has no id.
    pub fn missing_id_reason(&self) -> String {
        match &self.fields {
            Err(reason) => reason.clone(),
            Ok(_) => "occurrence has no numeric id".into(),
        }
    }

    /// The occurrence as kept with a reject record: as sent under `keep`; otherwise with the
    /// policy applied to its personal fields, or, if it could not be read, only its size
    /// (personal data cannot be found in what cannot be read).
    pub fn reject_document(&self, pii: &PiiPolicy) -> JsonText {
        if *pii == PiiPolicy::Keep {
            return self.json.clone();
        }
        if self.fields.is_ok() {
            if let Some(kept) =
                pii.apply_in_spans(&self.json, 0..self.json.len(), &self.personal_members())
            {
                return kept;
            }
        }
        JsonText::from_value(&serde_json::json!({
            "heimdallr_omitted": format!(
                "{} bytes that could not be read; not kept under the PII policy",
                self.json.len()
            ),
        }))
    }

    /// The `data.person` and `data.request` members and the personal fields inside each.
    fn personal_members(&self) -> Vec<(Range<usize>, Paths)> {
        const PERSON: Paths = &[&["username"], &["email"]];
        const REQUEST: Paths = &[&["user_ip"]];
        [(self.span(1), PERSON), (self.span(2), REQUEST)]
            .into_iter()
            .filter_map(|(span, paths)| Some((span?, paths)))
            .collect()
    }

    fn span(&self, index: usize) -> Option<Range<usize>> {
        self.spans.get(index).cloned().flatten()
    }
}

/// The id of an occurrence and its `timestamp` (Unix seconds, when Rollbar received it),
/// read on their own (the rest is read by [`RawOccurrence::new`]).
pub fn occurrence_key(raw: &RawValue) -> (Option<i64>, Option<i64>) {
    static KEY: Fields = Fields(&[("id", LEAF), ("timestamp", LEAF)]);
    let Ok(fields) = read_fields(raw.get(), &KEY) else {
        return (None, None);
    };
    (
        lenient_i64(fields.get("id")),
        lenient_i64(fields.get("timestamp")),
    )
}

/// Unix seconds at 3000-01-01: a `timestamp` past it is not seconds (milliseconds, most
/// likely) and would store a row in the far future.
const YEAR_3000_SECONDS: f64 = 32_503_680_000.0;

/// Paths inside a document.
type Paths = &'static [&'static [&'static str]];

/// The stored document and its personal members, as paths in an occurrence.
const SPANS: [&[&str]; 3] = [&["data"], &["data", "person"], &["data", "request"]];

/// The body fields naming an exception.
const EXCEPTION: Fields = Fields(&[("exception", Fields(&[("class", LEAF), ("message", LEAF)]))]);

/// Every field of an occurrence that [`row_from_fields`] reads (a test maps each recorded
/// payload through these and through a full parse, and expects the same row).
static OCCURRENCE_FIELDS: Fields = Fields(&[
    ("id", LEAF),
    ("item_id", LEAF),
    ("project_id", LEAF),
    ("timestamp", LEAF),
    (
        "data",
        Fields(&[
            ("timestamp", LEAF),
            ("environment", LEAF),
            ("level", LEAF),
            ("title", LEAF),
            (
                "body",
                Fields(&[
                    ("trace", EXCEPTION),
                    ("trace_chain", EXCEPTION),
                    ("message", Fields(&[("body", LEAF)])),
                    ("crash_report", Fields(&[("raw", LEAF)])),
                ]),
            ),
            (
                "person",
                Fields(&[("id", LEAF), ("username", LEAF), ("email", LEAF)]),
            ),
            (
                "request",
                Fields(&[("url", LEAF), ("method", LEAF), ("user_ip", LEAF)]),
            ),
            (
                "server",
                Fields(&[("host", LEAF), ("code_version", LEAF), ("sha", LEAF)]),
            ),
            (
                "client",
                Fields(&[("javascript", Fields(&[("code_version", LEAF)]))]),
            ),
            ("code_version", LEAF),
            ("framework", LEAF),
            ("platform", LEAF),
            ("language", LEAF),
            ("uuid", LEAF),
            ("context", LEAF),
        ]),
    ),
]);

/// Personal fields inside `data`, under the PII policy in the columns and the document alike.
const PERSONAL_PATHS: [&[&str]; 3] = [
    &["person", "username"],
    &["person", "email"],
    &["request", "user_ip"],
];

/// Maps one occurrence (`/instances/` element) to a `rollbar_occurrences` row. The typed
/// columns come from the fields read with the page; `data` is stored as Rollbar sent it,
/// with the PII policy applied inside its `person` and `request` members only.
pub fn occurrence_row(
    occurrence: &RawOccurrence,
    pii: &PiiPolicy,
    synced_at: DateTime<Utc>,
) -> Result<(Row, OccurrenceMeta), String> {
    let fields = occurrence.fields.as_ref().map_err(Clone::clone)?;
    let document = &occurrence.json;
    let data_span = occurrence
        .span(0)
        .filter(|span| document.as_str()[span.clone()].starts_with('{'));
    let data = match data_span {
        Some(span) => pii
            .apply_in_spans(document, span, &occurrence.personal_members())
            .ok_or("occurrence data cannot be sliced")?,
        None => JsonText::from_value(&Json::Object(Default::default())),
    };
    row_from_fields(fields, data, pii, synced_at)
}

/// The row of an occurrence whose fields (at least [`OCCURRENCE_FIELDS`]) are in `instance`;
/// `data` is the document to store.
fn row_from_fields(
    instance: &Json,
    data: JsonText,
    pii: &PiiPolicy,
    synced_at: DateTime<Utc>,
) -> Result<(Row, OccurrenceMeta), String> {
    let id = lenient_i64(instance.get("id")).ok_or("occurrence has no numeric id")?;
    let empty = Json::Object(Default::default());
    let fields = instance
        .get("data")
        .filter(|d| d.is_object())
        .unwrap_or(&empty);
    for (name, value) in [
        ("timestamp", instance.get("timestamp")),
        ("data.timestamp", fields.get("timestamp")),
    ] {
        if let Some(seconds) = value
            .and_then(Json::as_f64)
            .filter(|s| *s >= YEAR_3000_SECONDS)
        {
            return Err(format!(
                "{name} {seconds} reads as a date after the year 3000: Rollbar sends Unix \
                 seconds (is it milliseconds?)"
            ));
        }
    }
    let occurred_at =
        lenient_time(instance.get("timestamp")).or_else(|| lenient_time(fields.get("timestamp")));
    let item_id = lenient_i64(instance.get("item_id"));
    let (body_type, class, message) = body_summary(fields.get("body"));
    let personal = |path: &[&str]| lenient_text(at(fields, path)).and_then(|v| pii.apply(&v));
    let text = |path: &[&str]| lenient_text(at(fields, path));
    let row = Row(vec![
        Value::BigInt(id),
        Value::bigint(item_id),
        Value::bigint(lenient_i64(instance.get("project_id"))),
        Value::timestamp(occurred_at),
        Value::timestamp(lenient_time(fields.get("timestamp"))),
        Value::text(text(&["environment"])),
        Value::text(level_name(fields.get("level"))),
        Value::text(body_type),
        Value::text(text(&["title"])),
        Value::text(class),
        Value::text(message),
        Value::text(text(&["person", "id"])),
        Value::text(personal(PERSONAL_PATHS[0])),
        Value::text(personal(PERSONAL_PATHS[1])),
        Value::text(code_version(fields)),
        Value::text(text(&["framework"])),
        Value::text(text(&["platform"])),
        Value::text(text(&["language"])),
        Value::text(text(&["request", "url"])),
        Value::text(text(&["request", "method"])),
        Value::text(personal(PERSONAL_PATHS[2])),
        Value::text(text(&["server", "host"])),
        Value::text(text(&["uuid"])),
        Value::text(text(&["context"])),
        Value::Json(data),
        Value::Timestamp(synced_at),
    ]);
    debug_assert_eq!(row.0.len(), ROLLBAR_OCCURRENCES.columns.len());
    Ok((
        row,
        OccurrenceMeta {
            id,
            item_id,
            occurred_at,
        },
    ))
}

/// Maps one item (`/items/` element or `/item/{id}/` result) to a `rollbar_items` row.
pub fn item_row(item: &Json, synced_at: DateTime<Utc>) -> Result<Row, String> {
    let id = lenient_i64(item.get("id")).ok_or("item has no numeric id")?;
    let int = |field: &str| Value::bigint(lenient_i64(item.get(field)));
    let time = |field: &str| Value::timestamp(lenient_time(item.get(field)));
    let text = |field: &str| Value::text(lenient_text(item.get(field)));
    let row = Row(vec![
        Value::BigInt(id),
        int("project_id"),
        int("counter"),
        text("environment"),
        Value::text(level_name(item.get("level"))),
        Value::text(status_name(item.get("status"))),
        text("title"),
        text("framework"),
        text("platform"),
        text("hash"),
        int("total_occurrences"),
        int("unique_occurrences"),
        int("first_occurrence_id"),
        time("first_occurrence_timestamp"),
        int("last_occurrence_id"),
        time("last_occurrence_timestamp"),
        time("last_activated_timestamp"),
        time("last_resolved_timestamp"),
        int("activating_occurrence_id"),
        text("resolved_in_version"),
        int("assigned_user_id"),
        int("group_item_id"),
        Value::json(item),
        Value::Timestamp(synced_at),
    ]);
    debug_assert_eq!(row.0.len(), ROLLBAR_ITEMS.columns.len());
    Ok(row)
}

/// Maps one deploy (`/deploys/` element) to a `rollbar_deploys` row. `local_username` is a
/// person's login: the PII policy applies to it, in the column and in the raw document.
pub fn deploy_row(deploy: &Json, pii: &PiiPolicy, synced_at: DateTime<Utc>) -> Result<Row, String> {
    let id = lenient_i64(deploy.get("id")).ok_or("deploy has no numeric id")?;
    let username = lenient_text(deploy.get("local_username")).and_then(|name| pii.apply(&name));
    let mut document = deploy.clone();
    if let Some(fields) = document.as_object_mut() {
        match &username {
            Some(kept) => {
                fields.insert("local_username".into(), Json::String(kept.clone()));
            }
            None => {
                fields.remove("local_username");
            }
        }
    }
    let row = Row(vec![
        Value::BigInt(id),
        Value::bigint(lenient_i64(deploy.get("project_id"))),
        Value::text(lenient_text(deploy.get("environment"))),
        Value::text(lenient_text(deploy.get("revision"))),
        Value::text(lenient_text(deploy.get("status"))),
        Value::timestamp(lenient_time(deploy.get("start_time"))),
        Value::timestamp(lenient_time(deploy.get("finish_time"))),
        Value::bigint(lenient_i64(deploy.get("user_id"))),
        Value::text(username),
        Value::text(lenient_text(deploy.get("comment"))),
        Value::json(&document),
        Value::Timestamp(synced_at),
    ]);
    debug_assert_eq!(row.0.len(), ROLLBAR_DEPLOYS.columns.len());
    Ok(row)
}

/// A deploy's `start_time` (Unix seconds), the walk's mark.
pub fn deploy_start(deploy: &Json) -> Option<i64> {
    lenient_time(deploy.get("start_time")).map(|t| t.timestamp())
}

#[cfg(test)]
mod tests;
