//! Heroku payloads to rows, and which states are final.

use chrono::{DateTime, Utc};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::schema::{HEROKU_APPS, HEROKU_BUILDS, HEROKU_RELEASES};
use heimdallr_core::{Row, Value};
use serde_json::Value as Json;

fn at<'a>(value: &'a Json, path: &[&str]) -> Option<&'a Json> {
    path.iter().try_fold(value, |node, key| node.get(*key))
}

pub fn text(value: &Json, path: &[&str]) -> Option<String> {
    match at(value, path)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn int(value: &Json, path: &[&str]) -> Option<i64> {
    match at(value, path)? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn time(value: &Json, path: &[&str]) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at(value, path)?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A list of names (buildpacks, add-on plans) as one comma-separated text.
fn names(value: &Json, path: &[&str], field: Option<&str>) -> Option<String> {
    let list = at(value, path)?.as_array()?;
    let names: Vec<String> = list
        .iter()
        .filter_map(|item| match field {
            Some(field) => text(item, &[field]),
            None => item.as_str().map(String::from),
        })
        .collect();
    Some(names.join(","))
}

/// `url` without what can carry a credential: the query string (an S3 signature), the
/// fragment and any user:password. What is left still says where the source came from.
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        // Not a URL we can read: keep nothing rather than something secret.
        Err(_) => String::new(),
    }
}

/// A buildpack as named (`heroku/nodejs`) or, when it is a URL, without credentials
/// (private buildpacks are often `https://user:token@github.com/...`).
fn buildpack(name: &str) -> String {
    if name.starts_with("http://") || name.starts_with("https://") {
        without_credentials(name)
    } else {
        name.to_string()
    }
}

/// A build, release or app as it is stored, in its row or with a reject: personal fields
/// under the PII policy, and no credentials. Signed URLs are credentials (DESIGN: "URLs in
/// builds and releases are signed"): `source_blob.url` loses its query string, output
/// stream URLs (whose path grants access to the log) are dropped, buildpack URLs lose
/// their user info.
pub fn stored_document(document: &Json, pii: &PiiPolicy) -> Json {
    let mut document = document.clone();
    pii.apply_in_json(&mut document, &["user", "email"]);
    pii.apply_in_json(&mut document, &["owner", "email"]);
    if let Some(object) = document.as_object_mut() {
        object.remove("output_stream_url");
    }
    if let Some(Json::String(url)) = document.pointer_mut("/source_blob/url") {
        *url = without_credentials(url);
    }
    if let Some(Json::Array(buildpacks)) = document.get_mut("buildpacks") {
        for pack in buildpacks {
            if let Some(Json::String(url)) = pack.get_mut("url") {
                *url = buildpack(url);
            }
        }
    }
    document
}

/// Build states: `pending` moves; `succeeded` and `failed` do not.
pub fn build_is_final(build: &Json) -> bool {
    matches!(
        at(build, &["status"]).and_then(Json::as_str),
        Some("succeeded" | "failed")
    )
}

/// Release states: `pending` moves; `succeeded`, `failed` and `expired` do not.
pub fn release_is_final(release: &Json) -> bool {
    matches!(
        at(release, &["status"]).and_then(Json::as_str),
        Some("succeeded" | "failed" | "expired")
    )
}

/// The app's row; `coupling` is its pipeline coupling (`None`: in no pipeline).
pub fn app_row(
    app: &Json,
    coupling: Option<&Json>,
    pii: &PiiPolicy,
    synced_at: DateTime<Utc>,
) -> Result<Row, String> {
    let id = text(app, &["id"]).ok_or("app has no id")?;
    let row = vec![
        Value::Text(id),
        Value::text(text(app, &["name"])),
        Value::text(text(app, &["region", "name"])),
        Value::text(text(app, &["build_stack", "name"]).or_else(|| text(app, &["stack", "name"]))),
        Value::text(text(app, &["web_url"])),
        Value::timestamp(time(app, &["created_at"])),
        Value::timestamp(time(app, &["updated_at"])),
        Value::timestamp(time(app, &["released_at"])),
        Value::json(&stored_document(app, pii)),
        Value::Timestamp(synced_at),
        Value::text(coupling.and_then(|c| text(c, &["pipeline", "id"]))),
        Value::text(coupling.and_then(|c| text(c, &["stage"]))),
    ];
    debug_assert_eq!(row.len(), HEROKU_APPS.columns.len());
    Ok(Row(row))
}

/// The app of a build or release: the payload's own, else the one being synced.
fn app_of(value: &Json, app: &Json) -> (Option<String>, Option<String>) {
    (
        text(value, &["app", "id"]).or_else(|| text(app, &["id"])),
        text(value, &["app", "name"]).or_else(|| text(app, &["name"])),
    )
}

pub fn build_row(
    build: &Json,
    app: &Json,
    pii: &PiiPolicy,
    synced_at: DateTime<Utc>,
) -> Result<Row, String> {
    let id = text(build, &["id"]).ok_or("build has no id")?;
    let (app_id, app_name) = app_of(build, app);
    let email = text(build, &["user", "email"]).and_then(|e| pii.apply(&e));
    let data = stored_document(build, pii);
    let row = vec![
        Value::Text(id),
        Value::text(app_id),
        Value::text(app_name),
        Value::text(text(build, &["status"])),
        Value::timestamp(time(build, &["created_at"])),
        Value::timestamp(time(build, &["updated_at"])),
        Value::text(text(build, &["stack"])),
        Value::text(text(build, &["source_blob", "version"])),
        Value::text(text(build, &["source_blob", "version_description"])),
        Value::text(text(build, &["release", "id"])),
        Value::text(text(build, &["slug", "id"])),
        Value::text(text(build, &["user", "id"])),
        Value::text(email),
        Value::text(
            names(build, &["buildpacks"], Some("url"))
                .map(|list| list.split(',').map(buildpack).collect::<Vec<_>>().join(",")),
        ),
        Value::json(&data),
        Value::Timestamp(synced_at),
    ];
    debug_assert_eq!(row.len(), HEROKU_BUILDS.columns.len());
    Ok(Row(row))
}

/// A release row; `slug_commit` is the git sha of its slug (read from the slug, since a
/// promotion, rollback or config change has no build of its own in the app).
pub fn release_row(
    release: &Json,
    app: &Json,
    slug_commit: Option<&str>,
    pii: &PiiPolicy,
    synced_at: DateTime<Utc>,
) -> Result<Row, String> {
    let id = text(release, &["id"]).ok_or("release has no id")?;
    let (app_id, app_name) = app_of(release, app);
    let email = text(release, &["user", "email"]).and_then(|e| pii.apply(&e));
    let data = stored_document(release, pii);
    let row = vec![
        Value::Text(id),
        Value::text(app_id),
        Value::text(app_name),
        Value::bigint(int(release, &["version"])),
        Value::text(text(release, &["description"])),
        Value::text(text(release, &["status"])),
        at(release, &["current"])
            .and_then(Json::as_bool)
            .map_or(Value::Null, Value::Bool),
        Value::timestamp(time(release, &["created_at"])),
        Value::timestamp(time(release, &["updated_at"])),
        Value::text(text(release, &["slug", "id"])),
        Value::text(text(release, &["user", "id"])),
        Value::text(email),
        Value::text(names(release, &["addon_plan_names"], None)),
        Value::json(&data),
        Value::Timestamp(synced_at),
        Value::text(slug_commit),
    ];
    debug_assert_eq!(row.len(), HEROKU_RELEASES.columns.len());
    Ok(Row(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_build_maps_its_source_version_and_hides_the_email_by_default() {
        let app = json!({"id": "app-1", "name": "acme-web"});
        let build = json!({
            "id": "b-1", "app": {"id": "app-1"}, "status": "succeeded", "stack": "heroku-24",
            "created_at": "2026-11-20T10:00:00Z", "updated_at": "2026-11-20T10:02:00Z",
            "source_blob": {"version": "f1e2d3c4", "version_description": "Fix it"},
            "release": {"id": "r-9"}, "slug": {"id": "s-1"},
            "user": {"id": "u-1", "email": "ann@example.com"},
            "buildpacks": [{"url": "heroku/nodejs", "name": "heroku/nodejs"}, {"url": "https://x/y.tgz", "name": null}]
        });
        let row = build_row(&build, &app, &PiiPolicy::Drop, Utc::now()).unwrap();
        let get = |name: &str| row.0[HEROKU_BUILDS.column_index(name).unwrap()].clone();
        assert_eq!(get("app_name"), Value::Text("acme-web".into()));
        assert_eq!(get("source_version"), Value::Text("f1e2d3c4".into()));
        assert_eq!(get("release_id"), Value::Text("r-9".into()));
        assert_eq!(get("user_email"), Value::Null);
        assert_eq!(
            get("buildpacks"),
            Value::Text("heroku/nodejs,https://x/y.tgz".into())
        );
        let Value::Json(data) = get("data") else {
            panic!("data is JSON")
        };
        assert!(!data.as_str().contains("ann@example.com"));
        assert!(build_is_final(&build));
        assert!(!build_is_final(&json!({"status": "pending"})));
    }

    #[test]
    fn a_release_maps_current_and_its_add_on_plans() {
        let release = json!({
            "id": "r-1", "version": 42, "status": "succeeded", "current": true,
            "description": "Deploy f1e2d3c4", "addon_plan_names": ["heroku-postgresql:essential-0"],
            "user": {"id": "u-1", "email": "ann@example.com"}, "slug": {"id": "s-1"},
            "created_at": "2026-11-20T10:00:00Z", "updated_at": "2026-11-20T10:00:01Z"
        });
        let row = release_row(
            &release,
            &json!({"id": "app-1", "name": "acme-web"}),
            Some("f1e2d3c4"),
            &PiiPolicy::Keep,
            Utc::now(),
        )
        .unwrap();
        let get = |name: &str| row.0[HEROKU_RELEASES.column_index(name).unwrap()].clone();
        assert_eq!(get("version"), Value::BigInt(42));
        assert_eq!(get("slug_commit"), Value::Text("f1e2d3c4".into()));
        assert_eq!(get("current"), Value::Bool(true));
        assert_eq!(get("user_email"), Value::Text("ann@example.com".into()));
        assert_eq!(
            get("addon_plan_names"),
            Value::Text("heroku-postgresql:essential-0".into())
        );
        assert!(release_is_final(&release));
    }

    #[test]
    fn signed_urls_are_not_stored_as_they_came() {
        let build = json!({
            "id": "b-2", "status": "succeeded",
            "source_blob": {"url": "https://s3.amazonaws.com/heroku-sources/abc.tgz?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA", "version": "f1"},
            "output_stream_url": "https://build-output.heroku.com/streams/ab/abc/logs/0123456789abcdef.log",
        });
        let row = build_row(&build, &json!({}), &PiiPolicy::Drop, Utc::now()).unwrap();
        let Value::Json(data) = &row.0[HEROKU_BUILDS.column_index("data").unwrap()] else {
            panic!("data is JSON")
        };
        let stored: Json = serde_json::from_str(data.as_str()).unwrap();
        assert_eq!(
            stored["source_blob"]["url"],
            "https://s3.amazonaws.com/heroku-sources/abc.tgz"
        );
        assert!(stored.get("output_stream_url").is_none());
        for secret in ["Signature", "AKIA", "0123456789abcdef"] {
            assert!(!data.as_str().contains(secret), "{secret}");
        }
        assert_eq!(
            without_credentials("https://user:pw@github.com/acme/web/tarball/v1?token=t#x"),
            "https://github.com/acme/web/tarball/v1"
        );
        assert_eq!(without_credentials("not a url"), "");
        let private = json!({"id": "b-3", "buildpacks": [
            {"url": "https://deploy:ghp_s3cr3t@github.com/acme/buildpack.git", "name": null},
            {"url": "heroku/nodejs", "name": "heroku/nodejs"}]});
        let row = build_row(&private, &json!({}), &PiiPolicy::Drop, Utc::now()).unwrap();
        let get = |name: &str| row.0[HEROKU_BUILDS.column_index(name).unwrap()].clone();
        assert_eq!(
            get("buildpacks"),
            Value::Text("https://github.com/acme/buildpack.git,heroku/nodejs".into())
        );
        let Value::Json(data) = get("data") else {
            panic!("data is JSON")
        };
        assert!(!data.as_str().contains("ghp_s3cr3t"));
        let app =
            json!({"id": "a-1", "name": "web", "owner": {"id": "o", "email": "boss@example.com"}});
        let row = app_row(&app, None, &PiiPolicy::Drop, Utc::now()).unwrap();
        assert!(!format!("{:?}", row.0).contains("boss@example.com"));
    }
}
