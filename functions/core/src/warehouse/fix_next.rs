//! `fix_next`: one row per open error or critical item, ranked, with what a team needs to
//! decide which bug to fix first. Without the activity table it ranks by people hit; the
//! activity views re-create it to rank by the users each item cost
//! (`rollbar_item_retention_impact`).

use super::dialect::qualified;
use super::retention::HURTING_LEVELS;
use super::Dialect;
use crate::schema::View;

/// What `estimate_note` says when no activity table is set.
pub const NO_ACTIVITY_NOTE: &str = "no activity table set (HEIMDALLR_ACTIVITY_TABLE)";

/// What `estimate_note` says when the last estimate has no row for the item: no person
/// it hit is in the activity table, or it was first hit after that estimate.
pub const NOT_IN_ACTIVITY_NOTE: &str =
    "not estimated: no person it hit is in the activity table, or it is newer than the estimate";

/// Rollbar's link to an occurrence by its UUID, which opens the item it belongs to
/// ("Occurrence UUID" in Rollbar's docs: https://rollbar.com/item/uuid/?uuid=...).
const ROLLBAR_UUID_URL: &str = "https://rollbar.com/item/uuid/?uuid=";

/// The columns of `fix_next`, in order (the same on every backend, with or without the
/// activity table).
pub const FIX_NEXT_COLUMNS: &[&str] = &[
    "rank",
    "item_id",
    "project_id",
    "environment",
    "title",
    "level",
    "status",
    "people_7d",
    "people_30d",
    "people_all",
    "trend",
    "users_lost_d7",
    "users_lost_d7_low",
    "users_lost_d7_high",
    "users_lost_d30",
    "estimate_note",
    "estimated_at",
    "suspect_source",
    "suspect_target",
    "suspect_sha",
    "suspect_deployed_at",
    "suspect_actor",
    "suspect_commit_range",
    "first_seen_at",
    "last_seen_at",
    "reactivated",
    "reactivated_at",
    "reactivation_sha",
    "reactivation_actor",
    "rollbar_url",
];

impl Dialect {
    /// The body of `fix_next`; `retention` is the table of retention estimates to rank by,
    /// if any.
    ///
    /// Order (documented in docs/analysts.md): estimated users lost at D7, highest first,
    /// where no estimate and an estimate of none or fewer count as zero (a new bug is not
    /// ranked below a bug that cost nobody); then people hit in the last 30 days, people
    /// hit all time, last seen (latest first), and the item id.
    pub(super) fn fix_next(self, schema: &str, retention: Option<&str>) -> String {
        let t = |name: &str| qualified(schema, name);
        let ago = |days: i32| self.plus_minutes(self.now(), -days * 24 * 60);
        let (estimates, join) = match retention {
            // An item the last estimate did not see: hit after it, or by nobody the
            // activity table knows.
            Some(estimates) => (
                format!(
                    "r.users_lost_d7, r.users_lost_d7_low, r.users_lost_d7_high, r.users_lost_d30, \
                     CASE WHEN r.item_id IS NULL THEN '{NOT_IN_ACTIVITY_NOTE}' ELSE r.estimate_note END AS estimate_note, \
                     e.estimated_at"
                ),
                format!(
                    "LEFT JOIN {estimates} AS r ON r.item_id = i.id \
                     CROSS JOIN (SELECT MAX(estimated_at) AS estimated_at FROM {estimates}) AS e"
                ),
            ),
            None => (
                format!(
                    "CAST(NULL AS DOUBLE PRECISION) AS users_lost_d7, CAST(NULL AS DOUBLE PRECISION) AS users_lost_d7_low, \
                     CAST(NULL AS DOUBLE PRECISION) AS users_lost_d7_high, CAST(NULL AS DOUBLE PRECISION) AS users_lost_d30, \
                     '{NO_ACTIVITY_NOTE}' AS estimate_note, CAST(NULL AS TIMESTAMPTZ) AS estimated_at"
                ),
                String::new(),
            ),
        };
        let columns = FIX_NEXT_COLUMNS[1..]
            .iter()
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "WITH clock AS (SELECT {week_ago} AS week_ago, {two_weeks_ago} AS two_weeks_ago, \
             {month_ago} AS month_ago), \
             people AS (SELECT o.item_id, \
             COUNT(DISTINCT CASE WHEN o.occurred_at >= c.week_ago THEN o.person_id END) AS people_7d, \
             COUNT(DISTINCT CASE WHEN o.occurred_at >= c.two_weeks_ago AND o.occurred_at < c.week_ago \
             THEN o.person_id END) AS people_week_before, \
             COUNT(DISTINCT CASE WHEN o.occurred_at >= c.month_ago THEN o.person_id END) AS people_30d, \
             COUNT(DISTINCT o.person_id) AS people_all \
             FROM {occurrences} AS o CROSS JOIN clock AS c GROUP BY o.item_id), \
             listed AS (SELECT i.id AS item_id, i.project_id, i.environment, i.title, i.level, i.status, \
             CAST(COALESCE(p.people_7d, 0) AS BIGINT) AS people_7d, \
             CAST(COALESCE(p.people_30d, 0) AS BIGINT) AS people_30d, \
             CAST(COALESCE(p.people_all, 0) AS BIGINT) AS people_all, \
             CASE WHEN i.first_occurrence_at >= c.week_ago THEN 'new' \
             WHEN COALESCE(p.people_7d, 0) = 0 AND COALESCE(p.people_week_before, 0) = 0 THEN 'quiet' \
             WHEN COALESCE(p.people_7d, 0) * 2 > COALESCE(p.people_week_before, 0) * 3 THEN 'escalating' \
             WHEN COALESCE(p.people_7d, 0) * 3 < COALESCE(p.people_week_before, 0) * 2 THEN 'fading' \
             ELSE 'steady' END AS trend, \
             {estimates}, \
             s.deploy_source AS suspect_source, s.deploy_target AS suspect_target, s.git_sha AS suspect_sha, \
             s.deployed_at AS suspect_deployed_at, s.deploy_actor AS suspect_actor, \
             s.commit_range AS suspect_commit_range, \
             i.first_occurrence_at AS first_seen_at, i.last_occurrence_at AS last_seen_at, \
             COALESCE(i.last_activated_at > i.first_occurrence_at, FALSE) AS reactivated, \
             s.reactivated_at, s.reactivation_git_sha AS reactivation_sha, \
             s.reactivation_deploy_actor AS reactivation_actor, \
             CASE WHEN u.uuid IS NOT NULL THEN '{ROLLBAR_UUID_URL}' || u.uuid END AS rollbar_url \
             FROM {items} AS i CROSS JOIN clock AS c \
             LEFT JOIN people AS p ON p.item_id = i.id \
             LEFT JOIN {suspect} AS s ON s.item_id = i.id \
             LEFT JOIN {occurrences} AS u ON u.id = COALESCE(i.last_occurrence_id, i.first_occurrence_id) \
             {join} \
             WHERE i.level IN {HURTING_LEVELS} AND COALESCE(i.status, 'active') = 'active') \
             SELECT CAST(ROW_NUMBER() OVER (ORDER BY GREATEST(COALESCE(l.users_lost_d7, 0), 0) DESC, l.people_30d DESC, \
             l.people_all DESC, l.last_seen_at DESC NULLS LAST, l.item_id) AS BIGINT) AS rank, {columns} \
             FROM listed AS l ORDER BY rank",
            week_ago = ago(7),
            two_weeks_ago = ago(14),
            month_ago = ago(30),
            occurrences = t("rollbar_occurrences"),
            items = t("rollbar_items"),
            suspect = t(View::SuspectDeploy.name()),
        )
    }
}
