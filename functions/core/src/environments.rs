//! Which Rollbar project and environment runs on which Heroku app and comes from which
//! CircleCI project: the `HEIMDALLR_ENVIRONMENTS` setting, stored whole in the
//! `heimdallr_environments` table that the analyst views join on (a deploy belongs to an
//! environment; an item is blamed on a deploy of its own environment only).
//!
//! ```json
//! [{"name": "production",
//!   "rollbar": {"project_id": 901, "environment": "production"},
//!   "heroku": {"app": "acme-web"},
//!   "circleci": {"project": "gh/acme/web", "branch": "main", "deploys": false}}]
//! ```

use crate::schema::ENVIRONMENTS;
use crate::warehouse::{Batch, Row, Value, Warehouse, WarehouseError};
use chrono::Utc;
use serde::Deserialize;
use std::collections::BTreeSet;

/// One environment: a Rollbar project's environment and where its code is deployed from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// What analysts call it (`production`, `api-staging`).
    pub name: String,
    pub rollbar: RollbarEnvironment,
    #[serde(default)]
    pub heroku: Option<HerokuApp>,
    #[serde(default)]
    pub circleci: Option<CircleciProject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbarEnvironment {
    pub project_id: i64,
    /// The `environment` the app reports to Rollbar.
    pub environment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HerokuApp {
    /// The app's name, as in `HEROKU_APPS`.
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircleciProject {
    /// The project slug, as in `CIRCLECI_PROJECTS`.
    pub project: String,
    /// The branch that deploys here (any branch when absent).
    #[serde(default)]
    pub branch: Option<String>,
    /// Whether a successful pipeline is the deploy (no Heroku release or Rollbar deploy
    /// record says so): its pipelines then count as deploys of this environment.
    #[serde(default)]
    pub deploys: bool,
}

/// The whole setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environments(pub Vec<Environment>);

/// Checks `HEIMDALLR_ACTIVITY_TABLE`: `schema.table`, plain identifiers (it is written into
/// the views' SQL).
pub fn parse_activity_table(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    match parts.as_slice() {
        [schema, table] => {
            for part in [schema, table] {
                crate::warehouse::dialect::check_identifier(part)
                    .map_err(|e| format!("{text:?}: {e}"))?;
                // Quoted in the views' SQL: an upper-case name would not find a table
                // created without quotes.
                if part.chars().any(|c| c.is_ascii_uppercase()) {
                    return Err(format!("{text:?}: write it in lower case"));
                }
            }
            Ok(format!("{schema}.{table}"))
        }
        _ => Err(format!(
            "{text:?} is not schema.table (e.g. app.user_activity, with columns user_id and active_on)"
        )),
    }
}

/// [`store_analyst_settings`] at the start of a sync (the command's and a Lambda's cold
/// start), which it never stops: a failure, such as a wrong activity table, is logged at
/// error level and the sync goes on.
pub async fn apply_analyst_settings(
    warehouse: &dyn Warehouse,
    environments: Option<&Environments>,
    activity_table: Option<&str>,
) {
    if let Err(e) = store_analyst_settings(warehouse, environments, activity_table).await {
        tracing::error!(error = %e, "the environments or the activity views could not be stored; syncing goes on");
    }
}

/// What the analyst views read besides the synced tables: the environments and the
/// company's activity table. Stored at the start of a sync.
pub async fn store_analyst_settings(
    warehouse: &dyn Warehouse,
    environments: Option<&Environments>,
    activity_table: Option<&str>,
) -> Result<(), WarehouseError> {
    if environments.is_none() && activity_table.is_none() {
        return Ok(());
    }
    let mut batch = Batch::default();
    if let Some(environments) = environments {
        batch.replace.push(&ENVIRONMENTS);
        for row in environments.rows() {
            batch.push(&ENVIRONMENTS, row);
        }
    }
    batch.activity_views = activity_table.map(String::from);
    warehouse.commit(batch).await
}

/// How old the retention estimates `fix_next` ranks by may get before a sync refreshes
/// them: D7 and D30 returns move by the day, and the view reads the whole activity table.
pub const RETENTION_REFRESH_EVERY: chrono::Duration = chrono::Duration::hours(6);

/// Whether estimates last refreshed at `last` are due at `now`.
pub fn estimates_due(
    last: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    last.is_none_or(|at| now - at >= RETENTION_REFRESH_EVERY)
}

/// After a sync's pass: copies `rollbar_item_retention_impact` into
/// `heimdallr_retention_estimates` when the activity table is set and the copy is due
/// ([`RETENTION_REFRESH_EVERY`]); `cancel_after` bounds it where the backend can cancel
/// (Redshift). Returns whether it refreshed.
pub async fn refresh_estimates_if_due(
    warehouse: &dyn Warehouse,
    activity_table: Option<&str>,
    cancel_after: Option<std::time::Instant>,
) -> Result<bool, WarehouseError> {
    if activity_table.is_none() {
        return Ok(false);
    }
    let last = warehouse.retention_estimated_at().await?;
    if !estimates_due(last, chrono::Utc::now()) {
        return Ok(false);
    }
    refresh_estimates_now(warehouse, cancel_after).await?;
    Ok(true)
}

/// Copies `rollbar_item_retention_impact` into `heimdallr_retention_estimates` now (what
/// `heimdallr migrate --activity-table` does, due or not).
pub async fn refresh_estimates_now(
    warehouse: &dyn Warehouse,
    cancel_after: Option<std::time::Instant>,
) -> Result<(), WarehouseError> {
    let started = std::time::Instant::now();
    let batch = Batch {
        refresh_estimates: true,
        cancel_after,
        ..Batch::default()
    };
    warehouse.commit(batch).await?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "retention estimates refreshed (fix_next ranks by them)"
    );
    Ok(())
}

/// [`refresh_estimates_if_due`], which never fails a sync: a failure is logged at error
/// level and the next pass tries again.
pub async fn refresh_estimates(
    warehouse: &dyn Warehouse,
    activity_table: Option<&str>,
    cancel_after: Option<std::time::Instant>,
) {
    if let Err(e) = refresh_estimates_if_due(warehouse, activity_table, cancel_after).await {
        tracing::error!(error = %e, "the retention estimates could not be refreshed; fix_next keeps the last ones");
    }
}

/// Parses and checks `HEIMDALLR_ENVIRONMENTS` (a JSON list; the error says what is wrong
/// and where).
pub fn parse(text: &str) -> Result<Environments, String> {
    let list: Vec<Environment> = serde_json::from_str(text).map_err(|e| {
        format!(
            "not a JSON list of environments ({e}); example: \
             [{{\"name\": \"production\", \"rollbar\": {{\"project_id\": 901, \"environment\": \"production\"}}, \
             \"heroku\": {{\"app\": \"acme-web\"}}}}]"
        )
    })?;
    let mut names = BTreeSet::new();
    let mut rollbar = BTreeSet::new();
    let mut apps = BTreeSet::new();
    for environment in &list {
        if environment.name.trim().is_empty() {
            return Err("an environment has an empty name".into());
        }
        if !names.insert(environment.name.clone()) {
            return Err(format!("environment {:?} is named twice", environment.name));
        }
        let key = (
            environment.rollbar.project_id,
            environment.rollbar.environment.clone(),
        );
        if !rollbar.insert(key) {
            return Err(format!(
                "Rollbar project {} environment {:?} is in two environments",
                environment.rollbar.project_id, environment.rollbar.environment
            ));
        }
        if let Some(heroku) = &environment.heroku {
            if !apps.insert(heroku.app.clone()) {
                return Err(format!(
                    "Heroku app {:?} is in two environments",
                    heroku.app
                ));
            }
        }
        if environment
            .circleci
            .as_ref()
            .is_some_and(|c| c.project.trim().is_empty())
            || environment
                .heroku
                .as_ref()
                .is_some_and(|h| h.app.trim().is_empty())
        {
            return Err(format!(
                "environment {:?} names an empty app or project",
                environment.name
            ));
        }
    }
    Ok(Environments(list))
}

impl Environments {
    /// The table's rows.
    pub fn rows(&self) -> Vec<Row> {
        let now = Utc::now();
        self.0
            .iter()
            .map(|e| {
                let circleci = e.circleci.as_ref();
                Row(vec![
                    Value::BigInt(e.rollbar.project_id),
                    Value::Text(e.rollbar.environment.clone()),
                    Value::Text(e.name.clone()),
                    Value::text(e.heroku.as_ref().map(|h| h.app.clone())),
                    Value::text(circleci.map(|c| c.project.clone())),
                    Value::text(circleci.and_then(|c| c.branch.clone())),
                    Value::Bool(circleci.is_some_and(|c| c.deploys)),
                    Value::Timestamp(now),
                ])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_due_when_never_made_or_older_than_the_refresh_interval() {
        let now = chrono::Utc::now();
        assert!(estimates_due(None, now));
        assert!(!estimates_due(Some(now - chrono::Duration::hours(5)), now));
        assert!(estimates_due(Some(now - RETENTION_REFRESH_EVERY), now));
    }

    #[test]
    fn the_documented_example_parses_and_mistakes_are_named() {
        let parsed = parse(
            r#"[{"name": "production", "rollbar": {"project_id": 901, "environment": "production"},
                 "heroku": {"app": "acme-web"},
                 "circleci": {"project": "gh/acme/web", "branch": "main", "deploys": false}},
                {"name": "staging", "rollbar": {"project_id": 901, "environment": "staging"}}]"#,
        )
        .unwrap();
        assert_eq!(parsed.0.len(), 2);
        assert_eq!(parsed.rows()[0].0.len(), ENVIRONMENTS.columns.len());
        assert_eq!(parsed.0[1].heroku, None);
        for (text, problem) in [
            ("{}", "not a JSON list"),
            (
                r#"[{"name": "p", "rollbar": {"project_id": 1, "environment": "p"}, "herku": {}}]"#,
                "unknown field `herku`",
            ),
            (
                r#"[{"name": "", "rollbar": {"project_id": 1, "environment": "p"}}]"#,
                "empty name",
            ),
            (
                r#"[{"name": "a", "rollbar": {"project_id": 1, "environment": "p"}},
                    {"name": "b", "rollbar": {"project_id": 1, "environment": "p"}}]"#,
                "in two environments",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }
}
