//! The analyst views: from bug to user to deploy. Created by the migrations on every
//! backend; the SQL differs only where the dialects do (day buckets, adding hours).

use super::dialect::qualified;
use super::Dialect;
use crate::schema::View;

/// The hours after a release that count as "after it" when the app has no next release
/// sooner.
pub const RELEASE_WINDOW_HOURS: u32 = 24;

impl Dialect {
    /// The UTC day of a timestamptz.
    fn utc_day(self, expr: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("CAST({expr} AT TIME ZONE 'UTC' AS DATE)")
            }
            // Without the ICU extension DuckDB has no time zones: go through epoch micros.
            Dialect::DuckDb => format!("CAST(make_timestamp(epoch_us({expr})) AS DATE)"),
        }
    }

    fn plus_hours(self, expr: &str, hours: u32) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("{expr} + INTERVAL '{hours} hours'")
            }
            Dialect::DuckDb => {
                format!(
                    "to_timestamp(epoch_us({expr}) / 1000000.0 + {})",
                    hours * 3600
                )
            }
        }
    }

    /// `CREATE OR REPLACE VIEW` for one analyst view as migration `version` defines it (a
    /// view may only use the columns that exist at that migration).
    pub fn create_view(self, schema: &str, view: View, version: i64) -> String {
        let t = |name: &str| qualified(schema, name);
        // A release's git sha: its slug's commit (promotions, rollbacks and config changes
        // have no build in the app) from migration 6, else the build that made it.
        let release_sha = if version >= 6 {
            "COALESCE(r.slug_commit, b.source_version)"
        } else {
            "b.source_version"
        };
        let body = match view {
            View::ItemDailyImpact => format!(
                "SELECT o.item_id, o.project_id, o.environment, {day} AS day, \
                 COUNT(*) AS occurrences, COUNT(DISTINCT o.person_id) AS affected_people \
                 FROM {occurrences} AS o \
                 GROUP BY o.item_id, o.project_id, o.environment, {day}",
                day = self.utc_day("o.occurred_at"),
                occurrences = t("rollbar_occurrences"),
            ),
            View::PersonExposure => format!(
                "SELECT o.person_id, o.item_id, o.project_id, MIN(o.occurred_at) AS first_seen_at, \
                 MAX(o.occurred_at) AS last_seen_at, COUNT(*) AS occurrences \
                 FROM {occurrences} AS o WHERE o.person_id IS NOT NULL \
                 GROUP BY o.person_id, o.item_id, o.project_id",
                occurrences = t("rollbar_occurrences"),
            ),
            View::Deploys => format!(
                "SELECT 'heroku' AS source, r.app_name AS target, r.id AS deploy_id, r.version AS number, \
                 r.created_at AS deployed_at, {release_sha} AS git_sha, r.status, \
                 r.status = 'succeeded' AS succeeded \
                 FROM {releases} AS r LEFT JOIN {builds} AS b ON b.release_id = r.id \
                 UNION ALL \
                 SELECT 'circleci' AS source, p.project_slug AS target, p.id AS deploy_id, p.number, \
                 p.created_at AS deployed_at, p.revision AS git_sha, \
                 CASE WHEN w.failed > 0 THEN 'failed' WHEN w.total > 0 AND w.passed = w.total THEN 'success' \
                 WHEN w.total > 0 THEN 'running' ELSE p.state END AS status, \
                 COALESCE(w.failed = 0 AND w.total > 0 AND w.passed = w.total, FALSE) AS succeeded \
                 FROM {pipelines} AS p LEFT JOIN (SELECT pipeline_id, COUNT(*) AS total, \
                 SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS passed, \
                 SUM(CASE WHEN status IN ('failed', 'error', 'canceled', 'unauthorized') THEN 1 ELSE 0 END) AS failed \
                 FROM {workflows} GROUP BY pipeline_id) AS w ON w.pipeline_id = p.id",
                releases = t("heroku_releases"),
                builds = t("heroku_builds"),
                pipelines = t("circleci_pipelines"),
                workflows = t("circleci_workflows"),
            ),
            View::SuspectDeploy => format!(
                "WITH appeared AS (SELECT i.id AS item_id, i.project_id, i.environment, \
                 COALESCE(i.last_activated_at, i.first_occurrence_at) AS appeared_at, o.code_version \
                 FROM {items} AS i LEFT JOIN {occurrences} AS o \
                 ON o.id = COALESCE(i.activating_occurrence_id, i.first_occurrence_id)), \
                 by_version AS (SELECT a.item_id, d.source, d.target, d.deploy_id, d.deployed_at, d.git_sha, \
                 ROW_NUMBER() OVER (PARTITION BY a.item_id ORDER BY CASE WHEN d.source = 'heroku' THEN 0 ELSE 1 END, d.deployed_at DESC) AS pick \
                 FROM appeared AS a JOIN {deploys} AS d ON d.succeeded AND LENGTH(a.code_version) >= 7 \
                 AND LOWER(LEFT(d.git_sha, LENGTH(a.code_version))) = LOWER(a.code_version)), \
                 by_time AS (SELECT a.item_id, d.source, d.target, d.deploy_id, d.deployed_at, d.git_sha, \
                 ROW_NUMBER() OVER (PARTITION BY a.item_id ORDER BY d.deployed_at DESC, CASE WHEN d.source = 'heroku' THEN 0 ELSE 1 END) AS pick \
                 FROM appeared AS a JOIN {deploys} AS d ON d.succeeded AND d.deployed_at <= a.appeared_at) \
                 SELECT a.item_id, a.project_id, a.environment, a.appeared_at, a.code_version, \
                 CASE WHEN v.item_id IS NOT NULL THEN 'code_version' WHEN t.item_id IS NOT NULL THEN 'time' END AS matched_by, \
                 COALESCE(v.source, t.source) AS deploy_source, COALESCE(v.target, t.target) AS deploy_target, \
                 COALESCE(v.deploy_id, t.deploy_id) AS deploy_id, COALESCE(v.deployed_at, t.deployed_at) AS deployed_at, \
                 COALESCE(v.git_sha, t.git_sha) AS git_sha \
                 FROM appeared AS a LEFT JOIN by_version AS v ON v.item_id = a.item_id AND v.pick = 1 \
                 LEFT JOIN by_time AS t ON t.item_id = a.item_id AND t.pick = 1",
                items = t("rollbar_items"),
                occurrences = t("rollbar_occurrences"),
                deploys = t(View::Deploys.name()),
            ),
            View::ReleaseImpact => format!(
                "WITH releases AS (SELECT r.id AS release_id, r.app_id, r.app_name, r.version, \
                 r.created_at AS released_at, {release_sha} AS git_sha, \
                 LEAD(r.created_at) OVER (PARTITION BY r.app_id ORDER BY r.version) AS next_release_at \
                 FROM {releases} AS r LEFT JOIN {builds} AS b ON b.release_id = r.id WHERE r.status = 'succeeded'), \
                 windows AS (SELECT release_id, app_id, app_name, version, released_at, git_sha, \
                 LEAST(COALESCE(next_release_at, {window}), {window}) AS window_end FROM releases), \
                 new_items AS (SELECT w.release_id, COUNT(*) AS items FROM windows AS w JOIN {items} AS i \
                 ON i.first_occurrence_at >= w.released_at AND i.first_occurrence_at < w.window_end GROUP BY w.release_id), \
                 reactivated AS (SELECT w.release_id, COUNT(*) AS items FROM windows AS w JOIN {items} AS i \
                 ON i.last_activated_at >= w.released_at AND i.last_activated_at < w.window_end \
                 AND i.last_activated_at > i.first_occurrence_at GROUP BY w.release_id), \
                 people AS (SELECT w.release_id, COUNT(DISTINCT o.person_id) AS people FROM windows AS w JOIN {occurrences} AS o \
                 ON o.occurred_at >= w.released_at AND o.occurred_at < w.window_end GROUP BY w.release_id) \
                 SELECT w.release_id, w.app_id, w.app_name, w.version, w.released_at, w.window_end, w.git_sha, \
                 COALESCE(n.items, 0) AS new_items, COALESCE(a.items, 0) AS reactivated_items, \
                 COALESCE(p.people, 0) AS affected_people \
                 FROM windows AS w LEFT JOIN new_items AS n ON n.release_id = w.release_id \
                 LEFT JOIN reactivated AS a ON a.release_id = w.release_id \
                 LEFT JOIN people AS p ON p.release_id = w.release_id",
                releases = t("heroku_releases"),
                builds = t("heroku_builds"),
                items = t("rollbar_items"),
                occurrences = t("rollbar_occurrences"),
                window = self.plus_hours("released_at", RELEASE_WINDOW_HOURS),
            ),
        };
        format!(
            "CREATE OR REPLACE VIEW {} AS {body}",
            qualified(schema, view.name())
        )
    }
}
