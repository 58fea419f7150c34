//! The analyst views: from bug to user to deploy. Created by the migrations on every
//! backend; the SQL differs only where the dialects do (day buckets, adding hours).

use super::dialect::qualified;
use super::Dialect;
use crate::schema::View;

/// Which Rollbar environment names each Heroku pipeline stage stands for (lower case).
/// Review and test apps are short-lived and have no environment of their own.
pub const STAGE_ENVIRONMENTS: &[(&str, &str)] = &[
    ("production", "production"),
    ("production", "prod"),
    ("staging", "staging"),
    ("staging", "stage"),
    ("development", "development"),
    ("development", "dev"),
];

/// The hours after a release that count as "after it" when the app has no next release
/// sooner.
pub const RELEASE_WINDOW_HOURS: u32 = 24;

/// A Rollbar deploy record of the sha a Heroku release of its environment made current,
/// this close in time, reports that release: it is folded into it (one row per deploy).
pub const RECORD_MATCH_MINUTES: i32 = 30;

impl Dialect {
    /// The UTC day of a timestamptz.
    pub(super) fn utc_day(self, expr: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("CAST({expr} AT TIME ZONE 'UTC' AS DATE)")
            }
            // Without the ICU extension DuckDB has no time zones: go through epoch micros.
            Dialect::DuckDb => format!("CAST(make_timestamp(epoch_us({expr})) AS DATE)"),
        }
    }

    /// Whole days from the date `earlier` to the date `later`.
    pub(super) fn days_between(self, later: &str, earlier: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::DuckDb => format!("({later} - {earlier})"),
            Dialect::Redshift => format!("DATEDIFF(day, {earlier}, {later})"),
        }
    }

    /// The current time: Redshift runs CURRENT_TIMESTAMP and NOW() on its leader node only,
    /// which a query over tables refuses.
    pub(super) fn now(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::DuckDb => "CURRENT_TIMESTAMP",
            Dialect::Redshift => "CAST(GETDATE() AS TIMESTAMPTZ)",
        }
    }

    /// Whether two git shas name the same commit: one is a prefix of the other, of at
    /// least 7 characters (Rollbar's code_version and deploy revision may be short).
    pub(super) fn same_sha(self, a: &str, b: &str) -> String {
        format!(
            "(LENGTH({a}) >= 7 AND LENGTH({b}) >= 7 AND (LOWER(LEFT({b}, LENGTH({a}))) = LOWER({a}) \
             OR LOWER(LEFT({a}, LENGTH({b}))) = LOWER({b})))"
        )
    }

    /// `expr` moved by `minutes` (negative: earlier).
    pub(super) fn plus_minutes(self, expr: &str, minutes: i32) -> String {
        match self {
            Dialect::Postgres | Dialect::Redshift => {
                format!("{expr} + INTERVAL '{minutes} minutes'")
            }
            Dialect::DuckDb => format!(
                "to_timestamp(epoch_us({expr}) / 1000000.0 + {})",
                minutes * 60
            ),
        }
    }

    pub(super) fn plus_hours(self, expr: &str, hours: u32) -> String {
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
        let body = if version >= 9 {
            self.environment_view(schema, view)
        } else {
            self.first_views(schema, view, version)
        };
        format!(
            "CREATE OR REPLACE VIEW {} AS {body}",
            qualified(schema, view.name())
        )
    }

    /// The views of migrations 5 and 6 (a fresh install replays them before migration 9
    /// redefines them).
    fn first_views(self, schema: &str, view: View, version: i64) -> String {
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
            View::ItemImpact | View::ItemVersions | View::EnvironmentMap | View::FixNext => {
                unreachable!("{} is first defined by migration 9", view.name())
            }
        };
        body
    }
}

impl Dialect {
    /// The views as migration 9 defines them: deploys belong to an environment (the
    /// `heimdallr_environments` setting, or a Rollbar deploy record's own environment), an
    /// item is blamed on a deploy of its own environment, and every ordering ends in a
    /// unique tie-break so that every backend gives the same answer.
    fn environment_view(self, schema: &str, view: View) -> String {
        let t = |name: &str| qualified(schema, name);
        let environments = t(crate::schema::ENVIRONMENTS.name);
        let items = t("rollbar_items");
        let occurrences = t("rollbar_occurrences");
        match view {
            View::ItemDailyImpact => format!(
                "SELECT o.item_id, o.project_id, o.environment, {day} AS day, \
                 COUNT(*) AS occurrences, COUNT(DISTINCT o.person_id) AS affected_people, i.level \
                 FROM {occurrences} AS o LEFT JOIN {items} AS i ON i.id = o.item_id \
                 GROUP BY o.item_id, o.project_id, o.environment, {day}, i.level",
                day = self.utc_day("o.occurred_at"),
            ),
            View::PersonExposure => format!(
                "SELECT o.person_id, o.item_id, o.project_id, MIN(o.occurred_at) AS first_seen_at, \
                 MAX(o.occurred_at) AS last_seen_at, COUNT(*) AS occurrences, o.environment, i.level \
                 FROM {occurrences} AS o LEFT JOIN {items} AS i ON i.id = o.item_id \
                 WHERE o.person_id IS NOT NULL \
                 GROUP BY o.person_id, o.item_id, o.project_id, o.environment, i.level",
            ),
            // A Rollbar deploy record of a Heroku release of its environment (same sha, within
            // RECORD_MATCH_MINUTES) is that release, listed already: an anti-join leaves it
            // out. Not NOT EXISTS: Redshift refuses many correlated subqueries, and the views
            // hold none (scripts/check-redshift-correlated.py). A release the ON matches has a
            // non-null h.rollbar_project_id (it equals d.project_id).
            View::Deploys => format!(
                "SELECT u.source, u.target, u.deploy_id, u.number, u.deployed_at, u.git_sha, u.status, u.succeeded, \
                 u.environment, u.rollbar_project_id, u.rollbar_environment, \
                 COALESCE(u.git_sha <> LAG(u.git_sha) OVER (PARTITION BY u.source, u.target, u.rollbar_project_id \
                 ORDER BY u.deployed_at, u.deploy_id), TRUE) AS brought_code, u.actor FROM ( \
                 SELECT 'heroku' AS source, r.app_name AS target, r.id AS deploy_id, \
                 CAST(r.version AS BIGINT) AS number, r.created_at AS deployed_at, \
                 COALESCE(r.slug_commit, b.source_version) AS git_sha, r.status, \
                 r.status = 'succeeded' AS succeeded, e.name AS environment, \
                 e.rollbar_project_id, e.rollbar_environment, r.user_email AS actor \
                 FROM {releases} AS r LEFT JOIN {builds} AS b ON b.release_id = r.id \
                 LEFT JOIN {map} AS e ON e.heroku_app = r.app_name \
                 UNION ALL \
                 SELECT 'rollbar' AS source, d.environment AS target, CAST(d.id AS VARCHAR(64)) AS deploy_id, \
                 CAST(NULL AS BIGINT) AS number, d.started_at AS deployed_at, \
                 d.revision AS git_sha, COALESCE(d.status, 'succeeded') AS status, \
                 COALESCE(d.status, 'succeeded') = 'succeeded' AS succeeded, \
                 COALESCE(e.name, d.environment) AS environment, d.project_id AS rollbar_project_id, \
                 d.environment AS rollbar_environment, d.local_username AS actor \
                 FROM {rollbar_deploys} AS d LEFT JOIN {environments} AS e \
                 ON e.rollbar_project_id = d.project_id AND e.rollbar_environment = d.environment \
                 LEFT JOIN (SELECT he.rollbar_project_id, he.rollbar_environment, \
                 COALESCE(hr.slug_commit, hb.source_version) AS git_sha, hr.created_at AS released_at \
                 FROM {releases} AS hr LEFT JOIN {builds} AS hb ON hb.release_id = hr.id \
                 JOIN {map} AS he ON he.heroku_app = hr.app_name) AS h \
                 ON h.rollbar_project_id = d.project_id AND h.rollbar_environment = d.environment \
                 AND {same_record_sha} \
                 AND h.released_at BETWEEN {record_from} AND {record_to} \
                 WHERE h.rollbar_project_id IS NULL \
                 UNION ALL \
                 SELECT 'circleci' AS source, p.project_slug AS target, p.id AS deploy_id, p.number, \
                 COALESCE(w.finished_at, p.created_at) AS deployed_at, p.revision AS git_sha, \
                 CASE WHEN w.failed > 0 THEN 'failed' WHEN w.total > 0 AND w.passed = w.total THEN 'success' \
                 WHEN w.total > 0 THEN 'running' ELSE p.state END AS status, \
                 COALESCE(w.failed = 0 AND w.total > 0 AND w.passed = w.total, FALSE) AS succeeded, \
                 e.name AS environment, e.rollbar_project_id, e.rollbar_environment, p.trigger_actor AS actor \
                 FROM {pipelines} AS p JOIN {environments} AS e ON e.circleci_deploys \
                 AND e.circleci_project_slug = p.project_slug \
                 AND (e.circleci_branch IS NULL OR e.circleci_branch = p.branch) \
                 LEFT JOIN (SELECT pipeline_id, COUNT(*) AS total, \
                 SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS passed, \
                 SUM(CASE WHEN status IN ('failed', 'error', 'canceled', 'unauthorized') THEN 1 ELSE 0 END) AS failed, \
                 MAX(stopped_at) AS finished_at \
                 FROM (SELECT pipeline_id, status, stopped_at, ROW_NUMBER() OVER (PARTITION BY pipeline_id, name \
                 ORDER BY created_at DESC, id DESC) AS attempt FROM {workflows}) AS latest \
                 WHERE attempt = 1 GROUP BY pipeline_id) AS w ON w.pipeline_id = p.id) AS u",
                releases = t("heroku_releases"),
                builds = t("heroku_builds"),
                rollbar_deploys = t("rollbar_deploys"),
                map = t(View::EnvironmentMap.name()),
                same_record_sha = self.same_sha("h.git_sha", "d.revision"),
                record_from = self.plus_minutes("d.started_at", -RECORD_MATCH_MINUTES),
                record_to = self.plus_minutes("d.started_at", RECORD_MATCH_MINUTES),
                pipelines = t("circleci_pipelines"),
                workflows = t("circleci_workflows"),
            ),
            // Two appearances per item: its first occurrence, and for a reactivated item the
            // occurrence that reactivated it (Rollbar blames a regression on the deploy
            // before the reactivation). Each is blamed on a deploy of its own environment:
            // by the appearance's code version, else the last one before it.
            View::SuspectDeploy => format!(
                "WITH appeared AS (SELECT i.id AS item_id, i.project_id, i.environment, 'first' AS kind, \
                 i.first_occurrence_at AS seen_at, o.code_version \
                 FROM {items} AS i LEFT JOIN {occurrences} AS o ON o.id = i.first_occurrence_id \
                 UNION ALL SELECT i.id, i.project_id, i.environment, 'reactivation', i.last_activated_at, o.code_version \
                 FROM {items} AS i LEFT JOIN {occurrences} AS o ON o.id = i.activating_occurrence_id \
                 WHERE i.last_activated_at > i.first_occurrence_at), \
                 candidates AS (SELECT a.item_id, a.kind, d.source, d.target, d.deploy_id, d.deployed_at, d.git_sha, \
                 d.actor, \
                 CASE WHEN d.brought_code AND {same_version} THEN 'code_version' ELSE 'time' END AS matched_by \
                 FROM appeared AS a JOIN {deploys} AS d ON d.succeeded \
                 AND d.rollbar_project_id = a.project_id AND d.rollbar_environment = a.environment \
                 AND d.deployed_at <= a.seen_at), \
                 ranked AS (SELECT c.item_id, c.kind, c.source, c.target, c.deploy_id, c.deployed_at, c.git_sha, \
                 c.matched_by, c.actor, \
                 ROW_NUMBER() OVER (PARTITION BY c.item_id, c.kind ORDER BY \
                 CASE WHEN c.matched_by = 'code_version' THEN 0 ELSE 1 END, c.deployed_at DESC, \
                 CASE c.source WHEN 'heroku' THEN 0 WHEN 'rollbar' THEN 1 ELSE 2 END, c.deploy_id) AS pick \
                 FROM candidates AS c), \
                 picked AS (SELECT r.item_id, r.kind, r.source, r.target, r.deploy_id, r.deployed_at, r.git_sha, \
                 r.matched_by, r.actor, a.project_id, a.environment FROM ranked AS r \
                 JOIN appeared AS a ON a.item_id = r.item_id AND a.kind = r.kind WHERE r.pick = 1), \
                 earlier AS (SELECT p.item_id, p.kind, d.git_sha, ROW_NUMBER() OVER (PARTITION BY p.item_id, p.kind \
                 ORDER BY d.deployed_at DESC, d.deploy_id DESC) AS pick \
                 FROM picked AS p JOIN {deploys} AS d ON d.succeeded \
                 AND d.rollbar_project_id = p.project_id AND d.rollbar_environment = p.environment \
                 AND d.deployed_at < p.deployed_at AND d.git_sha IS NOT NULL AND NOT {same_previous}), \
                 blamed AS (SELECT p.item_id, p.kind, p.source, p.target, p.deploy_id, p.deployed_at, p.git_sha, \
                 p.matched_by, p.actor, \
                 CASE WHEN e.git_sha IS NOT NULL AND p.git_sha IS NOT NULL THEN e.git_sha || '..' || p.git_sha END AS commit_range \
                 FROM picked AS p LEFT JOIN earlier AS e ON e.item_id = p.item_id AND e.kind = p.kind AND e.pick = 1), \
                 back AS (SELECT a.item_id, a.seen_at, r.matched_by, r.source, r.deploy_id, r.deployed_at, \
                 r.git_sha, r.actor, r.commit_range FROM appeared AS a LEFT JOIN blamed AS r \
                 ON r.item_id = a.item_id AND r.kind = a.kind WHERE a.kind = 'reactivation') \
                 SELECT a.item_id, a.project_id, a.environment, a.seen_at AS first_seen_at, a.code_version, r.matched_by, \
                 r.source AS deploy_source, r.target AS deploy_target, r.deploy_id, r.deployed_at, r.git_sha, \
                 r.actor AS deploy_actor, r.commit_range, b.seen_at AS reactivated_at, \
                 b.matched_by AS reactivation_matched_by, b.source AS reactivation_deploy_source, \
                 b.deploy_id AS reactivation_deploy_id, b.deployed_at AS reactivation_deployed_at, \
                 b.git_sha AS reactivation_git_sha, b.actor AS reactivation_deploy_actor, \
                 b.commit_range AS reactivation_commit_range \
                 FROM appeared AS a LEFT JOIN blamed AS r ON r.item_id = a.item_id AND r.kind = a.kind \
                 LEFT JOIN back AS b ON b.item_id = a.item_id WHERE a.kind = 'first'",
                deploys = t(View::Deploys.name()),
                same_version = self.same_sha("d.git_sha", "a.code_version"),
                same_previous = self.same_sha("d.git_sha", "p.git_sha"),
            ),
            View::ReleaseImpact => format!(
                "WITH releases AS (SELECT r.id AS release_id, r.app_id, r.app_name, r.version, \
                 r.created_at AS released_at, COALESCE(r.slug_commit, b.source_version) AS git_sha, \
                 LEAD(r.created_at) OVER (PARTITION BY r.app_id ORDER BY r.version) AS next_release_at, \
                 e.name AS environment, e.rollbar_project_id, e.rollbar_environment \
                 FROM {releases} AS r LEFT JOIN {builds} AS b ON b.release_id = r.id \
                 LEFT JOIN {map} AS e ON e.heroku_app = r.app_name \
                 WHERE r.status = 'succeeded'), \
                 windows AS (SELECT release_id, app_id, app_name, version, released_at, git_sha, \
                 LEAST(COALESCE(next_release_at, {window}), {window}) AS window_end, \
                 environment, rollbar_project_id, rollbar_environment FROM releases), \
                 new_items AS (SELECT w.release_id, COUNT(*) AS items FROM windows AS w JOIN {items} AS i \
                 ON i.project_id = w.rollbar_project_id AND i.environment = w.rollbar_environment \
                 AND i.first_occurrence_at >= w.released_at AND i.first_occurrence_at < w.window_end \
                 GROUP BY w.release_id), \
                 reactivated AS (SELECT w.release_id, COUNT(*) AS items FROM windows AS w JOIN {items} AS i \
                 ON i.project_id = w.rollbar_project_id AND i.environment = w.rollbar_environment \
                 AND i.last_activated_at >= w.released_at AND i.last_activated_at < w.window_end \
                 AND i.last_activated_at > i.first_occurrence_at GROUP BY w.release_id), \
                 people AS (SELECT w.release_id, COUNT(DISTINCT o.person_id) AS people FROM windows AS w \
                 JOIN {occurrences} AS o ON o.project_id = w.rollbar_project_id \
                 AND o.environment = w.rollbar_environment \
                 AND o.occurred_at >= w.released_at AND o.occurred_at < w.window_end GROUP BY w.release_id) \
                 SELECT w.release_id, w.app_id, w.app_name, w.version, w.released_at, w.window_end, w.git_sha, \
                 CASE WHEN w.rollbar_environment IS NOT NULL THEN COALESCE(n.items, 0) END AS new_items, \
                 CASE WHEN w.rollbar_environment IS NOT NULL THEN COALESCE(a.items, 0) END AS reactivated_items, \
                 CASE WHEN w.rollbar_environment IS NOT NULL THEN COALESCE(p.people, 0) END AS affected_people, \
                 w.environment, w.rollbar_project_id, w.rollbar_environment \
                 FROM windows AS w LEFT JOIN new_items AS n ON n.release_id = w.release_id \
                 LEFT JOIN reactivated AS a ON a.release_id = w.release_id \
                 LEFT JOIN people AS p ON p.release_id = w.release_id",
                releases = t("heroku_releases"),
                builds = t("heroku_builds"),
                map = t(View::EnvironmentMap.name()),
                window = self.plus_hours("released_at", RELEASE_WINDOW_HOURS),
            ),
            View::EnvironmentMap => {
                // Shas an app released against code versions an environment reported,
                // apps and environments the setting names left out. Left out by anti-joins
                // against their distinct names, not NOT EXISTS: Redshift refuses many
                // correlated subqueries, and the views hold none. A name the ON matches is
                // not null (it equals the app's, or the environment's).
                let scores = |taken: &str| {
                    format!(
                        "SELECT s.app_name, v.project_id, v.environment, COUNT(DISTINCT v.code_version) AS shared \
                         FROM shas AS s JOIN versions AS v \
                         ON LEFT(s.sha, LENGTH(v.code_version)) = v.code_version \
                         LEFT JOIN (SELECT DISTINCT heroku_app FROM {taken}) AS ka ON ka.heroku_app = s.app_name \
                         LEFT JOIN (SELECT DISTINCT rollbar_project_id, rollbar_environment FROM {taken}) AS ke \
                         ON ke.rollbar_project_id = v.project_id AND ke.rollbar_environment = v.environment \
                         WHERE ka.heroku_app IS NULL AND ke.rollbar_project_id IS NULL \
                         GROUP BY s.app_name, v.project_id, v.environment"
                    )
                };
                // A pair counts when each is the other's strict best match: promotions
                // put the same shas on several apps, and a mutual best is not a guess.
                let mutual = |from: &str| {
                    format!(
                        "SELECT app_name, project_id, environment, shared FROM \
                         (SELECT app_name, project_id, environment, shared, \
                         RANK() OVER (PARTITION BY app_name ORDER BY shared DESC) AS app_rank, \
                         COUNT(*) OVER (PARTITION BY app_name, shared) AS app_ties, \
                         RANK() OVER (PARTITION BY project_id, environment ORDER BY shared DESC) AS env_rank, \
                         COUNT(*) OVER (PARTITION BY project_id, environment, shared) AS env_ties \
                         FROM {from}) AS ranked \
                         WHERE app_rank = 1 AND env_rank = 1 AND app_ties = 1 AND env_ties = 1"
                    )
                };
                // An app's Heroku pipeline stage names its environment: the Rollbar
                // environment of that name (or a usual short form), in the project whose
                // code versions its releases share most (strictly: never a guess between
                // equals). Several apps of a stage (web and worker) may share one.
                let stage_names = STAGE_ENVIRONMENTS
                    .iter()
                    .map(|(stage, environment)| {
                        format!("SELECT '{stage}' AS stage, '{environment}' AS environment")
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                format!(
                    "WITH shas AS (SELECT DISTINCT r.app_name, LOWER(COALESCE(r.slug_commit, b.source_version)) AS sha \
                     FROM {releases} AS r LEFT JOIN {builds} AS b ON b.release_id = r.id \
                     WHERE COALESCE(r.slug_commit, b.source_version) IS NOT NULL), \
                     versions AS (SELECT DISTINCT project_id, environment, LOWER(code_version) AS code_version \
                     FROM {occurrences} WHERE LENGTH(code_version) >= 7), \
                     taken AS (SELECT heroku_app, rollbar_project_id, rollbar_environment FROM {environments} \
                     WHERE heroku_app IS NOT NULL), \
                     stage_names AS ({stage_names}), \
                     staged AS (SELECT s.app_name, v.project_id, v.environment, a.pipeline_stage, \
                     COUNT(DISTINCT v.code_version) AS shared \
                     FROM {apps} AS a JOIN stage_names AS n ON n.stage = a.pipeline_stage \
                     JOIN shas AS s ON s.app_name = a.name \
                     JOIN versions AS v ON LOWER(v.environment) = n.environment \
                     AND LEFT(s.sha, LENGTH(v.code_version)) = v.code_version \
                     LEFT JOIN (SELECT DISTINCT heroku_app FROM taken) AS ka ON ka.heroku_app = a.name \
                     WHERE ka.heroku_app IS NULL \
                     GROUP BY s.app_name, v.project_id, v.environment, a.pipeline_stage), \
                     round0 AS (SELECT app_name, project_id, environment, pipeline_stage, shared FROM \
                     (SELECT app_name, project_id, environment, pipeline_stage, shared, \
                     RANK() OVER (PARTITION BY app_name ORDER BY shared DESC) AS app_rank, \
                     COUNT(*) OVER (PARTITION BY app_name, shared) AS app_ties FROM staged) AS ranked \
                     WHERE app_rank = 1 AND app_ties = 1), \
                     taken1 AS (SELECT heroku_app, rollbar_project_id, rollbar_environment FROM taken \
                     UNION ALL SELECT app_name, project_id, environment FROM round0), \
                     scores1 AS ({scores1}), \
                     round1 AS ({round1}), \
                     taken2 AS (SELECT heroku_app, rollbar_project_id, rollbar_environment FROM taken1 \
                     UNION ALL SELECT app_name, project_id, environment FROM round1), \
                     scores2 AS ({scores2}), \
                     round2 AS ({round2}) \
                     SELECT e.name, e.rollbar_project_id, e.rollbar_environment, e.heroku_app, \
                     'setting' AS origin, CAST(NULL AS BIGINT) AS shared_versions \
                     FROM {environments} AS e WHERE e.heroku_app IS NOT NULL \
                     UNION ALL SELECT environment, project_id, environment, app_name, \
                     'pipeline stage ' || pipeline_stage, shared FROM round0 \
                     UNION ALL SELECT environment, project_id, environment, app_name, 'inferred', shared FROM round1 \
                     UNION ALL SELECT environment, project_id, environment, app_name, 'inferred', shared FROM round2",
                    releases = t("heroku_releases"),
                    builds = t("heroku_builds"),
                    apps = t("heroku_apps"),
                    scores1 = scores("taken1"),
                    round1 = mutual("scores1"),
                    scores2 = scores("taken2"),
                    round2 = mutual("scores2"),
                )
            }
            View::ItemImpact => format!(
                "SELECT i.id AS item_id, i.project_id, i.environment, i.level, i.status, i.title, \
                 i.first_occurrence_at AS first_seen_at, i.last_occurrence_at AS last_seen_at, \
                 COUNT(o.id) AS occurrences, COUNT(DISTINCT o.person_id) AS affected_people \
                 FROM {items} AS i LEFT JOIN {occurrences} AS o ON o.item_id = i.id \
                 GROUP BY i.id, i.project_id, i.environment, i.level, i.status, i.title, \
                 i.first_occurrence_at, i.last_occurrence_at",
            ),
            View::FixNext => self.fix_next(schema, None),
            View::ItemVersions => format!(
                "WITH per_version AS (SELECT o.item_id, o.project_id, o.environment, o.code_version, \
                 MIN(o.occurred_at) AS first_seen_at, MAX(o.occurred_at) AS last_seen_at, \
                 COUNT(*) AS occurrences, COUNT(DISTINCT o.person_id) AS affected_people \
                 FROM {occurrences} AS o WHERE o.code_version IS NOT NULL \
                 GROUP BY o.item_id, o.project_id, o.environment, o.code_version) \
                 SELECT v.item_id, v.project_id, v.environment, v.code_version, v.first_seen_at, \
                 v.last_seen_at, v.occurrences, v.affected_people, \
                 CAST(RANK() OVER (PARTITION BY v.item_id ORDER BY v.first_seen_at) - 1 AS BIGINT) AS earlier_versions, \
                 COALESCE(v.first_seen_at <= i.first_occurrence_at, FALSE) AS new_in_version \
                 FROM per_version AS v LEFT JOIN {items} AS i ON i.id = v.item_id",
            ),
        }
    }
}
