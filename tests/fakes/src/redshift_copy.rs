//! COPY for the Data API stand-in (the rules are listed in `redshift_data`'s header): reads
//! the objects under the FROM prefix from the S3 stand-in, checks every row as Redshift
//! would for the stage's column types, and inserts them in the batch's transaction, or
//! records why not in `sys_load_error_detail` and fails the statement.

use crate::s3::FakeS3;
use serde_json::{Map, Value};
use std::io::Read;

/// COPY's 4 MB limit on one JSON object.
const MAX_JSON_OBJECT_BYTES: usize = 4 * 1024 * 1024;
const MAX_SUPER_STRING_BYTES: usize = 65_535;
/// Load errors recorded per COPY at most.
const MAX_RECORDED_ERRORS: usize = 10;

pub(crate) struct CopyContext<'a> {
    pub s3: Option<&'a FakeS3>,
    pub roles: &'a [String],
    pub default_role: Option<&'a str>,
    pub large_strings: bool,
}

struct Command {
    /// As written (quoted).
    table: String,
    bucket: String,
    prefix: String,
    role: String,
    gzip: bool,
}

struct Column {
    name: String,
    ty: String,
    not_null: bool,
}

struct LoadError {
    file: String,
    line: usize,
    column: String,
    column_type: String,
    code: i32,
    message: String,
}

/// Runs one COPY in `tx`; returns the bytes of the objects read.
pub(crate) async fn run_copy(
    tx: &tokio_postgres::Transaction<'_>,
    url: &str,
    sql: &str,
    context: CopyContext<'_>,
) -> Result<u64, String> {
    let command = parse(sql)?;
    let role_known = if command.role == "default" {
        context.default_role.is_some()
    } else {
        context.roles.contains(&command.role)
    };
    if !role_known {
        return Err(format!(
            "ERROR: User arn:aws:redshift:us-east-1:123456789012:dbuser:test-cluster/awsuser is not authorized to assume IAM Role {}",
            command.role
        ));
    }
    let Some(s3) = context.s3 else {
        return Err("ERROR: this stand-in has no S3 attached (FakeRedshiftData::attach_s3)".into());
    };
    let objects = s3
        .objects_with_prefix(&command.bucket, &command.prefix)
        .map_err(|e| format!("ERROR: S3ServiceException:{e},Status 404,Error NoSuchBucket"))?;
    if objects.is_empty() {
        return Err(format!(
            "ERROR: The specified S3 prefix '{}' does not exist\n  DETAIL:\n  error:  The specified S3 prefix '{}' does not exist\n  code:      8001",
            command.prefix, command.prefix
        ));
    }
    let columns = stage_columns(tx, &command.table).await?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut bytes = 0;
    for (key, body) in &objects {
        bytes += body.len() as u64;
        let file = format!("s3://{}/{key}", command.bucket);
        let text = if command.gzip {
            let mut text = String::new();
            if let Err(e) = flate2::read::GzDecoder::new(body.as_slice()).read_to_string(&mut text)
            {
                return Err(format!("ERROR: gzip decompression of {file} failed: {e}"));
            }
            text
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        for (number, line) in text.split('\n').enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match check_line(line, &columns, context.large_strings) {
                Ok(row) => rows.push(Value::Object(row)),
                Err((column, column_type, code, message)) => errors.push(LoadError {
                    file: file.clone(),
                    line: number + 1,
                    column,
                    column_type,
                    code,
                    message,
                }),
            }
            if errors.len() >= MAX_RECORDED_ERRORS {
                break;
            }
        }
    }
    if !errors.is_empty() {
        record_errors(url, &errors).await;
        return Err(format!(
            "ERROR: Load into table '{}' failed.  Check 'stl_load_errors' system table for details.",
            command.table.trim_matches('"')
        ));
    }
    for chunk in rows.chunks(500) {
        let array = Value::Array(chunk.to_vec()).to_string();
        tx.execute(
            &format!(
                "INSERT INTO {0} SELECT * FROM json_populate_recordset(NULL::{0}, $1::text::json)",
                command.table
            ),
            &[&array],
        )
        .await
        .map_err(|e| {
            format!(
                "ERROR: {}",
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            )
        })?;
    }
    Ok(bytes)
}

fn parse(sql: &str) -> Result<Command, String> {
    let unsupported = |what: &str| {
        format!("ERROR: this stand-in runs COPY .. FROM 's3://..' IAM_ROLE .. FORMAT AS JSON 'auto' only: {what}")
    };
    let rest = sql.strip_prefix("COPY ").unwrap_or(sql);
    let (table, rest) = rest
        .split_once(" FROM '")
        .ok_or_else(|| unsupported("no FROM 's3://..'"))?;
    let (from, options) = rest
        .split_once('\'')
        .ok_or_else(|| unsupported("unterminated FROM"))?;
    let path = from
        .strip_prefix("s3://")
        .ok_or_else(|| unsupported("FROM is not an s3:// path"))?;
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let role = match options.split_once("IAM_ROLE ") {
        Some((_, after)) if after.starts_with("default") => "default".to_string(),
        Some((_, after)) if after.starts_with('\'') => after[1..]
            .split('\'')
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => {
            return Err(
                "ERROR: No credentials were given: specify IAM_ROLE or CREDENTIALS for COPY from Amazon S3".into(),
            )
        }
    };
    if !options.contains("JSON 'auto'") {
        return Err(unsupported("not FORMAT AS JSON 'auto'"));
    }
    Ok(Command {
        table: table.trim().to_string(),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        role,
        gzip: options.split_whitespace().any(|w| w == "GZIP"),
    })
}

async fn stage_columns(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<Column>, String> {
    let rows = tx
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .map_err(|e| format!("ERROR: {}", e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())))?;
    Ok(rows
        .iter()
        .map(|row| Column {
            name: row.get(0),
            ty: row.get(1),
            not_null: row.get(2),
        })
        .collect())
}

type Refusal = (String, String, i32, String);

/// The row COPY would load from `line`, or why it refuses it.
fn check_line(
    line: &str,
    columns: &[Column],
    large_strings: bool,
) -> Result<Map<String, Value>, Refusal> {
    let refuse = |column: &Column, code: i32, message: String| {
        (column.name.clone(), column.ty.clone(), code, message)
    };
    if line.len() > MAX_JSON_OBJECT_BYTES {
        return Err((
            String::new(),
            String::new(),
            1224,
            format!(
                "JSON object of {} bytes exceeds the maximum of {MAX_JSON_OBJECT_BYTES}",
                line.len()
            ),
        ));
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return Err((
            String::new(),
            String::new(),
            1224,
            "Invalid JSON object".into(),
        ));
    };
    let mut row = Map::new();
    for column in columns {
        let value = object.get(&column.name).cloned().unwrap_or(Value::Null);
        if value.is_null() {
            if column.not_null {
                return Err(refuse(
                    column,
                    1213,
                    "Missing data for not-null field".into(),
                ));
            }
            continue;
        }
        let ty = column.ty.as_str();
        let stored = if let Some(limit) = ty
            .strip_prefix("character varying(")
            .and_then(|t| t.strip_suffix(')'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            let text = match &value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => {
                    return Err(refuse(
                        column,
                        1224,
                        "Invalid value for VARCHAR: a JSON object or array".into(),
                    ))
                }
            };
            if text.len() > limit {
                return Err(refuse(
                    column,
                    1204,
                    format!(
                        "String length exceeds DDL length ({} > {limit})",
                        text.len()
                    ),
                ));
            }
            Value::String(text)
        } else {
            match ty {
                "bigint" | "integer" if value.is_i64() => value,
                "bigint" | "integer" => {
                    return Err(refuse(
                        column,
                        1207,
                        format!("Invalid digit, Value '{value}', Pos 0, Type: {ty}"),
                    ))
                }
                "boolean" if value.is_boolean() => value,
                "double precision" if value.is_number() => value,
                "timestamp with time zone" => match value.as_str().and_then(timestamp) {
                    Some(at) => Value::String(at),
                    None => {
                        return Err(refuse(
                            column,
                            1206,
                            format!("Invalid timestamp format or value [{value}]"),
                        ))
                    }
                },
                "super" => {
                    if !large_strings {
                        if let Some(long) =
                            longest_string(&value).filter(|n| *n > MAX_SUPER_STRING_BYTES)
                        {
                            return Err(refuse(
                                column,
                                1224,
                                format!("String value of {long} bytes exceeds the maximum of {MAX_SUPER_STRING_BYTES} inside SUPER"),
                            ));
                        }
                    }
                    value
                }
                _ => {
                    return Err(refuse(
                        column,
                        1224,
                        format!("Invalid value for {ty}: {value}"),
                    ))
                }
            }
        };
        row.insert(column.name.clone(), stored);
    }
    Ok(row)
}

/// TIMEFORMAT 'auto': `YYYY-MM-DD HH:MI:SS[.ffffff]` (or with `T`), UTC unless an offset
/// is given; returned as RFC 3339 for PostgreSQL.
fn timestamp(text: &str) -> Option<String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.to_rfc3339());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(at) = chrono::DateTime::parse_from_str(text, format) {
            return Some(at.to_rfc3339());
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc().to_rfc3339());
        }
    }
    None
}

fn longest_string(value: &Value) -> Option<usize> {
    match value {
        Value::String(s) => Some(s.len()),
        Value::Array(items) => items.iter().filter_map(longest_string).max(),
        Value::Object(map) => map.values().filter_map(longest_string).max(),
        _ => None,
    }
}

/// Load errors are logged whatever happens to the transaction (a connection of their own).
async fn record_errors(url: &str, errors: &[LoadError]) {
    let Ok(client) = crate::redshift_data::connect(url, false).await else {
        return;
    };
    for error in errors {
        let _ = client
            .execute(
                "INSERT INTO public.sys_load_error_detail (query_id, file_name, line_number, column_name, column_type, error_code, error_message) \
                 VALUES (0, $1, $2, $3, $4, $5, $6)",
                &[
                    &error.file,
                    &(error.line as i64),
                    &error.column,
                    &error.column_type,
                    &error.code,
                    &error.message,
                ],
            )
            .await;
    }
}
