//! The bulk path's text: a table's rows as gzipped JSON lines for `COPY ... FORMAT JSON
//! 'auto'`, the COPY statement itself, and the query that reads why a load failed. Plain
//! logic, built without the SDK; the S3 transport is `staging`.
//!
//! Redshift's limits on this path (Database Developer Guide):
//! - "The maximum size of a single JSON object or array, including braces or brackets, is
//!   4 MB" (COPY data format parameters, JSON): one line, so one row, stays under it.
//! - "An individual SUPER field or object can hold up to 16 MB of data", but "a single
//!   string value loaded to SUPER is limited to the maximum VARCHAR length of 65535 bytes"
//!   (SUPER limitations). COPY's 4 MB line is therefore the whole-document limit here, and
//!   a longer string inside a document is cut to fit, with a reject record saying so.

use super::sql::STAGE_SEQUENCE_COLUMN;
use crate::schema::Table;
use crate::warehouse::dialect::quote;
use crate::warehouse::{Row, Value};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

/// COPY's limit on one JSON object (one row), in bytes.
pub const MAX_COPY_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Redshift's limit on one string value inside a SUPER document (unless the cluster opted
/// in to large strings).
pub const MAX_SUPER_STRING_BYTES: usize = 65_535;

/// One row as a JSON object keyed by column name (what `FORMAT JSON 'auto'` matches), with
/// the stage's sequence number, and no newline.
pub fn json_line(table: &Table, row: &Row, sequence: usize) -> String {
    let mut line = String::with_capacity(256);
    line.push('{');
    for (value, column) in row.0.iter().zip(table.columns) {
        if value.is_null() {
            continue;
        }
        push_json_string(&mut line, column.name);
        line.push(':');
        match value {
            Value::Null => {}
            Value::BigInt(v) => line.push_str(&v.to_string()),
            Value::Integer(v) => line.push_str(&v.to_string()),
            Value::Bool(v) => line.push_str(if *v { "true" } else { "false" }),
            // Finite by check_row; serde_json writes the shortest exact form.
            Value::Double(v) => line.push_str(
                &serde_json::Number::from_f64(*v).map_or_else(|| "null".into(), |n| n.to_string()),
            ),
            Value::Text(v) => push_json_string(&mut line, v),
            // With its offset, as inline literals: never read in a session's time zone.
            Value::Timestamp(v) => {
                push_json_string(&mut line, &v.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
            }
            // Already JSON text: loaded into the SUPER column as the document itself, on
            // this one line (a raw line break in JSON text is whitespace, never data).
            Value::Json(v) if v.as_str().contains(['\n', '\r']) => {
                line.push_str(&v.as_str().replace(['\n', '\r'], " "))
            }
            Value::Json(v) => line.push_str(v.as_str()),
        }
        line.push(',');
    }
    push_json_string(&mut line, STAGE_SEQUENCE_COLUMN);
    line.push(':');
    line.push_str(&sequence.to_string());
    line.push('}');
    line
}

fn push_json_string(out: &mut String, text: &str) {
    // A String serialises infallibly.
    out.push_str(&serde_json::Value::from(text).to_string());
}

/// The object COPY loads for one table: its rows as JSON lines, gzipped.
pub fn gzip_lines(lines: &[String]) -> std::io::Result<Vec<u8>> {
    let raw: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut encoder = GzEncoder::new(Vec::with_capacity(raw / 6 + 64), Compression::fast());
    for line in lines {
        encoder.write_all(line.as_bytes())?;
        encoder.write_all(b"\n")?;
    }
    encoder.finish()
}

/// Loads one staged object into a stage table. The FROM path is the object's whole key: no
/// other object of the batch starts with it. Statistics and compression analysis are off,
/// as Redshift recommends for staging tables that live one transaction.
pub fn copy_statement(stage: &str, bucket: &str, key: &str, copy_role: &str) -> String {
    let role = if copy_role == "default" {
        "default".to_string()
    } else {
        format!("'{}'", copy_role.replace('\'', "''"))
    };
    format!(
        "COPY {} FROM 's3://{bucket}/{}' IAM_ROLE {role} FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto' STATUPDATE OFF COMPUPDATE OFF",
        quote(stage),
        key.replace('\'', "''"),
    )
}

/// Why the loads of these objects failed, most recent first (SYS_LOAD_ERROR_DETAIL, which
/// provisioned clusters and Serverless both have). `:file` is the object's s3:// URL.
pub fn load_errors_query() -> &'static str {
    "SELECT TRIM(file_name), line_number, TRIM(column_name), TRIM(column_type), error_code, TRIM(error_message) \
     FROM sys_load_error_detail WHERE TRIM(file_name) = :file ORDER BY start_time DESC LIMIT 5"
}

/// Cuts every string inside `document` whose value is longer than `max` bytes to at most
/// `max` (at a character, never inside an escape). Works on the text itself, so key order,
/// numbers and the other strings stay exactly as they were. Returns the new text and how
/// many strings were cut, or None when none was. `document` is valid JSON (a JsonText).
pub fn cut_long_strings(document: &str, max: usize) -> Option<(String, usize)> {
    // Cheap test first: no string value can be longer than the document.
    if document.len() <= max {
        return None;
    }
    let bytes = document.as_bytes();
    let mut out = String::with_capacity(document.len());
    let mut copied_to = 0;
    let mut cut = 0;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'"' {
            at += 1;
            continue;
        }
        // A string from here to its closing quote: count its value's bytes.
        let mut next = at + 1;
        let mut value_bytes = 0;
        let mut cut_from = None;
        while next < bytes.len() && bytes[next] != b'"' {
            let (raw, decoded) = string_unit(bytes, next);
            if cut_from.is_none() && value_bytes + decoded > max {
                cut_from = Some(next);
            }
            value_bytes += decoded;
            next += raw;
        }
        if let Some(from) = cut_from {
            out.push_str(&document[copied_to..from]);
            copied_to = next;
            cut += 1;
        }
        at = next + 1;
    }
    out.push_str(&document[copied_to..]);
    (cut > 0).then_some((out, cut))
}

/// (bytes of text, bytes of value) of the character or escape at `at` inside a string.
fn string_unit(bytes: &[u8], at: usize) -> (usize, usize) {
    let hex = |from: usize| {
        bytes
            .get(from..from + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    match bytes[at] {
        b'\\' if bytes.get(at + 1) == Some(&b'u') => match hex(at + 2) {
            // A surrogate pair is one character of four bytes: never split it.
            Some(0xD800..=0xDBFF) if bytes.get(at + 6..at + 8) == Some(b"\\u") => (12, 4),
            Some(code) => (6, char::from_u32(code).map_or(3, char::len_utf8)),
            None => (2, 1),
        },
        b'\\' => (2, 1),
        lead => {
            let width = match lead {
                0xF0..=0xFF => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            (width, width)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::STATE;
    use chrono::TimeZone;

    #[test]
    fn a_row_is_one_json_object_keyed_by_column_with_its_sequence() {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 13, 5, 7)
            .unwrap();
        let row = Row(vec![
            Value::Text("rollbar".into()),
            Value::Text("occurrences".into()),
            Value::Text("project 1 \"main\"".into()),
            Value::json(&serde_json::json!({"page": 3})),
            Value::Timestamp(at),
            Value::Text("run".into()),
            Value::Timestamp(at),
            Value::Null,
        ]);
        let line = json_line(&STATE, &row, 7);
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["source"], "rollbar");
        assert_eq!(parsed["scope"], "project 1 \"main\"");
        assert_eq!(parsed["cursor"], serde_json::json!({"page": 3}));
        assert_eq!(parsed["updated_at"], "2026-11-30 13:05:07.000000+00");
        assert_eq!(parsed[STAGE_SEQUENCE_COLUMN], 7);
        assert!(parsed.get("caught_up_at").is_none(), "NULL is left out");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_copy_statement_names_the_object_role_and_format() {
        let sql = copy_statement("stage_x_1", "b", "p/1/x.jsonl.gz", "arn:aws:iam::1:role/c");
        assert_eq!(
            sql,
            "COPY \"stage_x_1\" FROM 's3://b/p/1/x.jsonl.gz' IAM_ROLE 'arn:aws:iam::1:role/c' FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto' STATUPDATE OFF COMPUPDATE OFF"
        );
        assert!(copy_statement("s", "b", "k", "default").contains("IAM_ROLE default FORMAT"));
    }

    #[test]
    fn only_strings_over_the_limit_are_cut_at_a_character_boundary() {
        let long = "é".repeat(40);
        let document = format!(
            r#"{{"z": "{long}", "b": ["short", {{"c": "{long}"}}], "n": 123456789012345678901234567890, "a": 1}}"#
        );
        let (cut, count) = cut_long_strings(&document, 11).expect("two cut");
        assert_eq!(count, 2);
        let parsed: serde_json::Value = serde_json::from_str(&cut).expect("JSON");
        assert_eq!(parsed["z"], "é".repeat(5));
        assert_eq!(parsed["b"][0], "short");
        assert_eq!(parsed["b"][1]["c"], "é".repeat(5));
        // The rest is the same text: key order, and a number no f64 holds.
        assert!(cut.starts_with(r#"{"z": ""#), "{cut}");
        assert!(
            cut.contains(r#""n": 123456789012345678901234567890, "a": 1}"#),
            "{cut}"
        );
        assert_eq!(cut_long_strings(r#"{"a":"short"}"#, 11), None);
    }

    #[test]
    fn escapes_count_as_the_bytes_they_stand_for_and_are_never_split() {
        // Eight escaped newlines are eight bytes of value: under a limit of 10, not cut.
        let escaped = format!(r#"{{"m": "{}", "pad": "xxxx"}}"#, r"\n".repeat(8));
        assert_eq!(cut_long_strings(&escaped, 10), None);
        let padded = escaped.replace("xxxx", &"x".repeat(20));
        let (cut, count) = cut_long_strings(&padded, 10).expect("pad cut");
        assert_eq!(count, 1);
        let parsed: serde_json::Value = serde_json::from_str(&cut).expect("JSON");
        assert_eq!(parsed["m"], "\n".repeat(8));
        assert_eq!(parsed["pad"], "x".repeat(10));
        // An emoji's surrogate pair (four bytes) stays whole.
        let emoji = format!(r#"{{"m": "{}"}}"#, r"\ud83d\ude00".repeat(3));
        let (cut, _) = cut_long_strings(&emoji, 9).expect("cut");
        let parsed: serde_json::Value = serde_json::from_str(&cut).expect("JSON");
        assert_eq!(parsed["m"], "😀😀");
    }

    #[test]
    fn gzipped_lines_read_back_whole() {
        use std::io::Read;
        let lines = vec!["{\"a\":1}".to_string(), "{\"a\":2}".to_string()];
        let body = gzip_lines(&lines).expect("gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_string(&mut text)
            .expect("gunzip");
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
    }
}
