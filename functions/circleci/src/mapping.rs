//! CircleCI payloads to rows, and which states are final.

use chrono::{DateTime, Utc};
use heimdallr_core::schema::{CIRCLECI_JOBS, CIRCLECI_PIPELINES, CIRCLECI_WORKFLOWS};
use heimdallr_core::{Row, Value};
use serde_json::Value as Json;

fn at<'a>(value: &'a Json, path: &[&str]) -> Option<&'a Json> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

fn text(value: &Json, path: &[&str]) -> Option<String> {
    match at(value, path)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &Json, path: &[&str]) -> Option<i64> {
    match at(value, path)? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// RFC 3339 timestamps, as CircleCI writes them.
pub fn time(value: &Json, path: &[&str]) -> Option<DateTime<Utc>> {
    let text = at(value, path)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `id` every CircleCI object is keyed on, or why the payload cannot be stored.
pub fn id_of(value: &Json) -> Result<String, String> {
    text(value, &["id"]).ok_or_else(|| "no id".to_string())
}

/// Workflow states that no longer change (the API v2 spec's workflow `status` enum:
/// success, running, not_run, failed, error, failing, on_hold, canceled, unauthorized).
/// A workflow's status decides for its jobs too: a final one can leave jobs `blocked`.
pub fn workflow_is_final(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("success" | "failed" | "error" | "canceled" | "not_run" | "unauthorized")
    )
}

pub fn pipeline_row(pipeline: &Json, synced_at: DateTime<Utc>) -> Result<Row, String> {
    let id = id_of(pipeline)?;
    let row = vec![
        Value::Text(id),
        Value::text(text(pipeline, &["project_slug"])),
        Value::bigint(int(pipeline, &["number"])),
        Value::text(text(pipeline, &["state"])),
        Value::timestamp(time(pipeline, &["created_at"])),
        Value::timestamp(time(pipeline, &["updated_at"])),
        Value::text(text(pipeline, &["trigger", "type"])),
        Value::text(text(pipeline, &["trigger", "actor", "login"])),
        Value::timestamp(time(pipeline, &["trigger", "received_at"])),
        Value::text(text(pipeline, &["vcs", "branch"])),
        Value::text(text(pipeline, &["vcs", "tag"])),
        Value::text(text(pipeline, &["vcs", "revision"])),
        Value::text(text(pipeline, &["vcs", "commit", "subject"])),
        Value::text(
            text(pipeline, &["vcs", "origin_repository_url"])
                .or_else(|| text(pipeline, &["vcs", "target_repository_url"])),
        ),
        Value::json(pipeline),
        Value::Timestamp(synced_at),
    ];
    debug_assert_eq!(row.len(), CIRCLECI_PIPELINES.columns.len());
    Ok(Row(row))
}

pub fn workflow_row(workflow: &Json, synced_at: DateTime<Utc>) -> Result<Row, String> {
    let id = id_of(workflow)?;
    let row = vec![
        Value::Text(id),
        Value::text(text(workflow, &["pipeline_id"])),
        Value::bigint(int(workflow, &["pipeline_number"])),
        Value::text(text(workflow, &["project_slug"])),
        Value::text(text(workflow, &["name"])),
        Value::text(text(workflow, &["status"])),
        Value::timestamp(time(workflow, &["created_at"])),
        Value::timestamp(time(workflow, &["stopped_at"])),
        Value::text(text(workflow, &["started_by"])),
        Value::text(text(workflow, &["canceled_by"])),
        Value::text(text(workflow, &["errored_by"])),
        Value::text(text(workflow, &["tag"])),
        Value::bigint(int(workflow, &["auto_rerun_number"])),
        Value::bigint(int(workflow, &["max_auto_reruns"])),
        Value::json(workflow),
        Value::Timestamp(synced_at),
    ];
    debug_assert_eq!(row.len(), CIRCLECI_WORKFLOWS.columns.len());
    Ok(Row(row))
}

/// A job as listed under its workflow; the listing carries no workflow id, so it is given.
pub fn job_row(job: &Json, workflow_id: &str, synced_at: DateTime<Utc>) -> Result<Row, String> {
    let id = id_of(job)?;
    let started = time(job, &["started_at"]);
    let stopped = time(job, &["stopped_at"]);
    let duration = match (started, stopped) {
        (Some(start), Some(stop)) if stop >= start => Some((stop - start).num_milliseconds()),
        _ => int(job, &["duration"]),
    };
    let row = vec![
        Value::Text(id),
        Value::bigint(int(job, &["job_number"])),
        Value::Text(workflow_id.to_string()),
        Value::text(text(job, &["project_slug"])),
        Value::text(text(job, &["name"])),
        Value::text(text(job, &["type"])),
        Value::text(text(job, &["status"])),
        Value::timestamp(started),
        Value::timestamp(stopped),
        Value::bigint(duration),
        Value::text(text(job, &["approved_by"])),
        Value::json(job),
        Value::Timestamp(synced_at),
    ];
    debug_assert_eq!(row.len(), CIRCLECI_JOBS.columns.len());
    Ok(Row(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(table: &heimdallr_core::schema::Table, row: &Row, name: &str) -> Value {
        row.0[table.column_index(name).unwrap()].clone()
    }

    #[test]
    fn a_pipeline_maps_its_trigger_and_vcs() {
        let pipeline = json!({
            "id": "5034460f-c7c4-4c43-9457-de07e2029e7b",
            "errors": [],
            "project_slug": "gh/acme/web",
            "updated_at": "2026-11-20T10:00:05.123Z",
            "number": 1234,
            "state": "created",
            "created_at": "2026-11-20T10:00:00Z",
            "trigger": {"type": "webhook", "received_at": "2026-11-20T09:59:59Z", "actor": {"login": "ann", "avatar_url": null}},
            "vcs": {"provider_name": "GitHub", "origin_repository_url": "https://github.com/acme/web",
                    "target_repository_url": "https://github.com/acme/web", "revision": "f1e2d3c4b5a6978877665544332211ffeeddccbb",
                    "branch": "main", "commit": {"subject": "Fix the thing", "body": ""}}
        });
        let row = pipeline_row(&pipeline, Utc::now()).unwrap();
        let get = |name| column(&CIRCLECI_PIPELINES, &row, name);
        assert_eq!(get("number"), Value::BigInt(1234));
        assert_eq!(get("trigger_actor"), Value::Text("ann".into()));
        assert_eq!(
            get("revision"),
            Value::Text("f1e2d3c4b5a6978877665544332211ffeeddccbb".into())
        );
        assert_eq!(get("commit_subject"), Value::Text("Fix the thing".into()));
        assert_eq!(get("tag"), Value::Null);
        assert!(
            matches!(get("updated_at"), Value::Timestamp(t) if t.timestamp_subsec_millis() == 123)
        );
    }

    #[test]
    fn an_approval_job_has_no_number_and_a_job_gets_its_duration() {
        let approval = json!({"id": "a1", "name": "hold", "type": "approval", "status": "on_hold",
                              "approval_request_id": "a1", "dependencies": ["b"]});
        let row = job_row(&approval, "wf-1", Utc::now()).unwrap();
        assert_eq!(column(&CIRCLECI_JOBS, &row, "job_number"), Value::Null);
        assert_eq!(
            column(&CIRCLECI_JOBS, &row, "workflow_id"),
            Value::Text("wf-1".into())
        );
        let build = json!({"id": "b1", "job_number": 77, "type": "build", "status": "success",
                           "started_at": "2026-11-20T10:00:00Z", "stopped_at": "2026-11-20T10:01:30.500Z"});
        let row = job_row(&build, "wf-1", Utc::now()).unwrap();
        assert_eq!(
            column(&CIRCLECI_JOBS, &row, "duration_ms"),
            Value::BigInt(90_500)
        );
        assert!(job_row(&json!({"name": "no id"}), "wf-1", Utc::now()).is_err());
    }

    #[test]
    fn final_states() {
        assert!(workflow_is_final(Some("success")) && workflow_is_final(Some("canceled")));
        assert!(!workflow_is_final(Some("on_hold")) && !workflow_is_final(Some("failing")));
        assert!(!workflow_is_final(None));
    }
}
