//! The views over the company's activity table (`user_id`, the Rollbar person id as text;
//! `active_on`, a date; one row per user and active day): release health, and each item's
//! retention impact estimated against a matched comparison (docs/analysts.md says what is
//! compared with what, and what it cannot see).

use super::dialect::{qualified, quote};
use super::Dialect;
use crate::schema::{View, RETENTION_ESTIMATES};

pub const RELEASE_HEALTH_VIEW: &str = "release_health";
pub const RETENTION_IMPACT_VIEW: &str = "rollbar_item_retention_impact";

/// Occurrence levels that count as hurting a user (release health, retention impact).
pub(super) const HURTING_LEVELS: &str = "('error', 'critical')";

/// Fewest people an item must have hit (active that day) for an estimate: below it the
/// interval is wider than any difference worth ranking on.
pub const MIN_HIT_PEOPLE: u32 = 30;

/// Fewest comparison people a hit person's cell (same day, same prior activity) needs for
/// that person to count as matched.
pub const MIN_CELL_COMPARISONS: u32 = 5;

/// The prior-activity bands people are matched on: the number of active days in the 7
/// days before (exactly, 0 to 7), and in the 28 days before at least each of these.
const PRIOR_7_THRESHOLDS: [u32; 7] = [1, 2, 3, 4, 5, 6, 7];
const PRIOR_28_THRESHOLDS: [u32; 10] = [2, 4, 6, 8, 11, 14, 17, 20, 23, 26];

/// And the share of days since their first active day they were active, in this many
/// equal bands: the longest view of how active a person is, which the 28 days alone
/// blur (on the synthetic companies of tests/retention_truth.rs it halves the bias of
/// bugs in features heavy users use).
const RATE_BANDS: u32 = 10;

/// z for a two-sided 95% normal interval.
const Z_95: f64 = 1.96;

impl Dialect {
    /// Drops and creates the views over `activity` (`schema.table`):
    /// - `release_health`: per Heroku release of an environment and per day it was current,
    ///   active users, users hit by an error or critical occurrence of that environment
    ///   while it was current, and the crash-free share (1 - affected / active);
    /// - `rollbar_item_retention_impact`: per item, the D7 and D30 return of the people it
    ///   hit (from the day it first hit them) against people not (yet) hit by it, active the
    ///   same day with the same prior activity, and the users that difference loses;
    /// - `fix_next`, re-created to rank by those users lost, as last copied into
    ///   `heimdallr_retention_estimates` (see [`Dialect::analyst_statements`]).
    pub fn activity_views(self, schema: &str, activity: &str) -> Vec<String> {
        let t = |name: &str| qualified(schema, name);
        let activity = activity.split('.').map(quote).collect::<Vec<_>>().join(".");
        // On Redshift, late binding: the company may rebuild its table without asking.
        let binding = if self == Dialect::Redshift {
            " WITH NO SCHEMA BINDING"
        } else {
            ""
        };
        vec![
            format!("DROP VIEW IF EXISTS {}", t(View::FixNext.name())),
            format!("DROP VIEW IF EXISTS {}", t(RELEASE_HEALTH_VIEW)),
            format!("DROP VIEW IF EXISTS {}", t(RETENTION_IMPACT_VIEW)),
            format!(
                "CREATE VIEW {} AS {}{binding}",
                t(RELEASE_HEALTH_VIEW),
                self.release_health(schema, &activity)
            ),
            format!(
                "CREATE VIEW {} AS {}{binding}",
                t(RETENTION_IMPACT_VIEW),
                self.retention_impact(schema, &activity)
            ),
            format!(
                "CREATE VIEW {} AS {}{binding}",
                t(View::FixNext.name()),
                self.fix_next(schema, Some(&t(RETENTION_ESTIMATES.name)))
            ),
        ]
    }

    /// What a batch runs first, in its transaction: the views over the activity table it
    /// (re)defines, then the refresh of the retention estimates it asks for.
    pub fn analyst_statements(self, schema: &str, batch: &super::Batch) -> Vec<String> {
        let mut statements = batch
            .activity_views
            .as_deref()
            .map(|activity| self.activity_views(schema, activity))
            .unwrap_or_default();
        if batch.refresh_estimates {
            statements.extend(self.refresh_estimates(schema));
        }
        statements
    }

    /// `heimdallr_retention_estimates` replaced by the retention view's answer now.
    fn refresh_estimates(self, schema: &str) -> Vec<String> {
        let table = qualified(schema, RETENTION_ESTIMATES.name);
        let columns = RETENTION_ESTIMATES
            .columns
            .iter()
            .map(|c| quote(c.name))
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!("DELETE FROM {table}"),
            format!(
                "INSERT INTO {table} ({columns}) SELECT item_id, hit_people, users_lost_d7, \
                 users_lost_d7_low, users_lost_d7_high, users_lost_d30, estimate_note, {now} \
                 FROM {view}",
                now = self.now(),
                view = qualified(schema, RETENTION_IMPACT_VIEW),
            ),
        ]
    }

    /// When the retention estimates were last refreshed, as Unix seconds (one row; NULL
    /// when never).
    pub fn select_estimated_at(self, schema: &str) -> String {
        let epoch = match self {
            Dialect::Postgres | Dialect::Redshift => "EXTRACT(EPOCH FROM MAX(estimated_at))",
            // Without the ICU extension DuckDB has no time zones: through epoch micros.
            Dialect::DuckDb => "epoch_us(MAX(estimated_at)) // 1000000",
        };
        format!(
            "SELECT CAST({epoch} AS BIGINT) FROM {}",
            qualified(schema, RETENTION_ESTIMATES.name)
        )
    }

    fn release_health(self, schema: &str, activity: &str) -> String {
        let t = |name: &str| qualified(schema, name);
        let day = |expr: &str| self.utc_day(expr);
        format!(
            "WITH releases AS (SELECT r.id AS release_id, r.app_name, r.version, r.created_at AS released_at, \
             COALESCE(LEAD(r.created_at) OVER (PARTITION BY r.app_id ORDER BY r.version), {now}) AS current_until, \
             e.name AS environment, e.rollbar_project_id, e.rollbar_environment \
             FROM {releases} AS r JOIN {map} AS e ON e.heroku_app = r.app_name \
             WHERE r.status = 'succeeded'), \
             daily AS (SELECT active_on AS day, COUNT(DISTINCT user_id) AS active_users \
             FROM {activity} GROUP BY active_on), \
             active AS (SELECT w.release_id, a.day, a.active_users \
             FROM releases AS w JOIN daily AS a ON a.day >= {released_day} AND a.day <= {until_day}), \
             hurt AS (SELECT w.release_id, {occurred_day} AS day, COUNT(DISTINCT o.person_id) AS affected_users \
             FROM releases AS w JOIN {occurrences} AS o ON o.project_id = w.rollbar_project_id \
             AND o.environment = w.rollbar_environment AND o.occurred_at >= w.released_at \
             AND o.occurred_at < w.current_until AND o.level IN {HURTING_LEVELS} \
             JOIN {activity} AS a ON a.user_id = o.person_id AND a.active_on = {occurred_day} \
             GROUP BY w.release_id, {occurred_day}) \
             SELECT w.release_id, w.app_name, w.version, w.environment, w.released_at, w.current_until, \
             d.day, d.active_users, COALESCE(h.affected_users, 0) AS affected_users, \
             1.0 - CAST(COALESCE(h.affected_users, 0) AS DOUBLE PRECISION) / d.active_users AS crash_free_users \
             FROM releases AS w JOIN active AS d ON d.release_id = w.release_id \
             LEFT JOIN hurt AS h ON h.release_id = w.release_id AND h.day = d.day",
            now = self.now(),
            releases = t("heroku_releases"),
            map = t(View::EnvironmentMap.name()),
            occurrences = t("rollbar_occurrences"),
            released_day = day("w.released_at"),
            until_day = day("w.current_until"),
            occurred_day = day("o.occurred_at"),
        )
    }

    /// Per item: each person it hit, on the UTC day it first hit them (when the activity
    /// table shows them active that day), is compared with the people active that same day
    /// in the same prior-activity cell (active days in the 7 and the 28 days before, and
    /// the share of days active since their first) whom
    /// the item had not hit by then. The cell's return rate 7 (30) days on is what the hit
    /// person was expected to do; summed over the hit people, expected minus observed
    /// returns is the retention the item cost, with a normal-approximation interval (the
    /// hit people's binomial variance plus the cell rates' own). Window functions and
    /// equality joins only: no correlated subqueries (Redshift), no RANGE frames.
    fn retention_impact(self, schema: &str, activity: &str) -> String {
        let t = |name: &str| qualified(schema, name);
        let mut offsets: Vec<u32> = PRIOR_7_THRESHOLDS
            .iter()
            .chain(&PRIOR_28_THRESHOLDS)
            .copied()
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let lags = offsets
            .iter()
            .map(|k| {
                // The k-th earlier row, as a one-row frame rather than LAG(x, k): DuckDB
                // 1.2 stores LAG(x, k) in a view as lag(x, k, k), which DuckDB 1.1 cannot
                // read and 2.0 reads as a default of k.
                format!(
                    "MIN(active_on) OVER (PARTITION BY user_id ORDER BY active_on \
                     ROWS BETWEEN {k} PRECEDING AND {k} PRECEDING) AS lag{k}"
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // The k-th earlier active day lies within the window iff the person was active on at
        // least k of its days (one row per person and day).
        let band = |thresholds: &[u32], days: u32| {
            thresholds
                .iter()
                .map(|k| format!("CASE WHEN l.lag{k} >= l.active_on - {days} THEN 1 ELSE 0 END"))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        // Per cell of hit people, p is the comparison's return rate; the variance of
        // (observed - expected) adds the hit people's binomial variance to n^2 times the
        // variance of the comparison's rate (smoothed away from 0 and 1).
        let per_cell = |n: u32| {
            format!(
                "CASE WHEN m.day + {n} <= l.last_day AND m.comparison_people >= {MIN_CELL_COMPARISONS} THEN 1 ELSE 0 END AS use{n}, \
                 CAST(m.comparison_back{n} AS DOUBLE PRECISION) / NULLIF(m.comparison_people, 0) AS rate{n}, \
                 (CAST(m.comparison_back{n} AS DOUBLE PRECISION) + 1) / (m.comparison_people + 2) AS smooth{n}"
            )
        };
        let sums = |n: u32| {
            format!(
                "SUM(CASE WHEN c.use{n} = 1 THEN c.hit_people END) AS matched{n}, \
                 SUM(CASE WHEN c.use{n} = 1 THEN c.hit_back{n} END) AS observed{n}, \
                 SUM(CASE WHEN c.use{n} = 1 THEN c.hit_people * c.rate{n} END) AS expected{n}, \
                 SUM(CASE WHEN c.use{n} = 1 THEN c.hit_people * c.smooth{n} * (1 - c.smooth{n}) \
                 * (1 + CAST(c.hit_people AS DOUBLE PRECISION) / c.comparison_people) END) AS variance{n}"
            )
        };
        // NULL with a reason rather than a number no one should trust.
        let note = |n: u32| {
            format!(
                "CASE WHEN s.hit_people < {MIN_HIT_PEOPLE} THEN 'fewer than {MIN_HIT_PEOPLE} people hit' \
                 WHEN COALESCE(m.matched{n}, 0) < {MIN_HIT_PEOPLE} THEN \
                 'fewer than {MIN_HIT_PEOPLE} hit people with {n} days observed and a matched comparison' END"
            )
        };
        let estimates = |n: u32| {
            // As many matched people as hit people are needed: never a number scaled up
            // from a handful.
            let ok = format!(
                "s.hit_people >= {MIN_HIT_PEOPLE} AND COALESCE(m.matched{n}, 0) >= {MIN_HIT_PEOPLE}"
            );
            let diff = format!("(m.expected{n} - m.observed{n})");
            let half = format!("{Z_95} * SQRT(m.variance{n})");
            let per_person = |x: &str| format!("CASE WHEN {ok} THEN ({x}) / m.matched{n} END");
            let users =
                |x: &str| format!("CASE WHEN {ok} THEN s.hit_people * ({x}) / m.matched{n} END");
            format!(
                "{expected} AS d{n}_retention_expected, {lost} AS d{n}_retention_lost, \
                 {low} AS d{n}_retention_lost_low, {high} AS d{n}_retention_lost_high, \
                 {users_lost} AS users_lost_d{n}, {users_low} AS users_lost_d{n}_low, \
                 {users_high} AS users_lost_d{n}_high, \
                 CAST(COALESCE(m.matched{n}, 0) AS BIGINT) AS matched_people_d{n}",
                expected = per_person(&format!("m.expected{n}")),
                lost = per_person(&diff),
                low = per_person(&format!("{diff} - {half}")),
                high = per_person(&format!("{diff} + {half}")),
                users_lost = users(&diff),
                users_low = users(&format!("{diff} - {half}")),
                users_high = users(&format!("{diff} + {half}")),
            )
        };
        format!(
            "WITH presence AS (SELECT DISTINCT user_id, active_on FROM {activity}), \
             observed AS (SELECT MAX(active_on) AS last_day FROM presence), \
             lagged AS (SELECT user_id, active_on, {lags}, \
             ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY active_on) - 1 AS prior_days, \
             MIN(active_on) OVER (PARTITION BY user_id) AS first_day FROM presence), \
             user_days AS (SELECT l.user_id, l.active_on, {band7} AS band7, {band28} AS band28, \
             COALESCE(CAST(FLOOR(CAST(l.prior_days AS DOUBLE PRECISION) * {rate_bands} \
             / NULLIF({tenure}, 0)) AS INTEGER), -1) AS band_rate, \
             CASE WHEN p7.user_id IS NULL THEN 0 ELSE 1 END AS back7, \
             CASE WHEN p30.user_id IS NULL THEN 0 ELSE 1 END AS back30 FROM lagged AS l \
             LEFT JOIN presence AS p7 ON p7.user_id = l.user_id AND p7.active_on = l.active_on + 7 \
             LEFT JOIN presence AS p30 ON p30.user_id = l.user_id AND p30.active_on = l.active_on + 30), \
             cells AS (SELECT active_on AS day, band7, band28, band_rate, COUNT(*) AS people, SUM(back7) AS back7, \
             SUM(back30) AS back30 FROM user_days GROUP BY active_on, band7, band28, band_rate), \
             daily AS (SELECT day, SUM(people) AS people, SUM(back7) AS back7, SUM(back30) AS back30 \
             FROM cells GROUP BY day), \
             first_hits AS (SELECT o.item_id, o.person_id AS user_id, MIN({occurred_day}) AS hit_day \
             FROM {occurrences} AS o WHERE o.person_id IS NOT NULL AND o.level IN {HURTING_LEVELS} \
             GROUP BY o.item_id, o.person_id), \
             hits AS (SELECT f.item_id, f.user_id, f.hit_day, u.band7, u.band28, u.band_rate, u.back7, u.back30 \
             FROM first_hits AS f JOIN user_days AS u ON u.user_id = f.user_id AND u.active_on = f.hit_day), \
             hit_cells AS (SELECT item_id, hit_day AS day, band7, band28, band_rate, COUNT(*) AS hit_people, \
             SUM(back7) AS hit_back7, SUM(back30) AS hit_back30 FROM hits \
             GROUP BY item_id, hit_day, band7, band28, band_rate), \
             item_days AS (SELECT DISTINCT item_id, hit_day AS day FROM hits), \
             earlier_cells AS (SELECT d.item_id, d.day, u.band7, u.band28, u.band_rate, COUNT(*) AS people, \
             SUM(u.back7) AS back7, SUM(u.back30) AS back30 FROM item_days AS d \
             JOIN first_hits AS f ON f.item_id = d.item_id AND f.hit_day < d.day \
             JOIN user_days AS u ON u.user_id = f.user_id AND u.active_on = d.day \
             GROUP BY d.item_id, d.day, u.band7, u.band28, u.band_rate), \
             matched AS (SELECT h.item_id, h.day, h.hit_people, h.hit_back7, h.hit_back30, \
             c.people - h.hit_people - COALESCE(e.people, 0) AS comparison_people, \
             c.back7 - h.hit_back7 - COALESCE(e.back7, 0) AS comparison_back7, \
             c.back30 - h.hit_back30 - COALESCE(e.back30, 0) AS comparison_back30 \
             FROM hit_cells AS h JOIN cells AS c ON c.day = h.day AND c.band7 = h.band7 AND c.band28 = h.band28 \
             AND c.band_rate = h.band_rate \
             LEFT JOIN earlier_cells AS e ON e.item_id = h.item_id AND e.day = h.day \
             AND e.band7 = h.band7 AND e.band28 = h.band28 AND e.band_rate = h.band_rate), \
             cell_rates AS (SELECT m.item_id, m.hit_people, m.hit_back7, m.hit_back30, m.comparison_people, \
             {cell7}, {cell30} FROM matched AS m CROSS JOIN observed AS l), \
             matched_sums AS (SELECT c.item_id, {sums7}, {sums30} FROM cell_rates AS c GROUP BY c.item_id), \
             hit_days AS (SELECT item_id, day, SUM(hit_people) AS people, SUM(hit_back7) AS back7, \
             SUM(hit_back30) AS back30 FROM hit_cells GROUP BY item_id, day), \
             sides AS (SELECT h.item_id, SUM(h.people) AS hit_people, SUM(y.people - h.people) AS other_people, \
             SUM(CASE WHEN h.day + 7 <= l.last_day THEN h.people ELSE 0 END) AS hit_seen7, \
             SUM(CASE WHEN h.day + 7 <= l.last_day THEN h.back7 ELSE 0 END) AS hit_back7, \
             SUM(CASE WHEN h.day + 30 <= l.last_day THEN h.people ELSE 0 END) AS hit_seen30, \
             SUM(CASE WHEN h.day + 30 <= l.last_day THEN h.back30 ELSE 0 END) AS hit_back30, \
             SUM(CASE WHEN h.day + 7 <= l.last_day THEN y.people - h.people ELSE 0 END) AS other_seen7, \
             SUM(CASE WHEN h.day + 7 <= l.last_day THEN y.back7 - h.back7 ELSE 0 END) AS other_back7, \
             SUM(CASE WHEN h.day + 30 <= l.last_day THEN y.people - h.people ELSE 0 END) AS other_seen30, \
             SUM(CASE WHEN h.day + 30 <= l.last_day THEN y.back30 - h.back30 ELSE 0 END) AS other_back30 \
             FROM hit_days AS h JOIN daily AS y ON y.day = h.day CROSS JOIN observed AS l GROUP BY h.item_id) \
             SELECT i.id AS item_id, i.project_id, i.environment, i.level, i.title, \
             CAST(s.hit_people AS BIGINT) AS hit_people, CAST(s.other_people AS BIGINT) AS other_people, \
             CAST(s.hit_back7 AS DOUBLE PRECISION) / NULLIF(s.hit_seen7, 0) AS d7_retention_hit, \
             CAST(s.other_back7 AS DOUBLE PRECISION) / NULLIF(s.other_seen7, 0) AS d7_retention_others, \
             CAST(s.hit_back30 AS DOUBLE PRECISION) / NULLIF(s.hit_seen30, 0) AS d30_retention_hit, \
             CAST(s.other_back30 AS DOUBLE PRECISION) / NULLIF(s.other_seen30, 0) AS d30_retention_others, \
             {estimates7}, {estimates30}, {note7} AS estimate_note, {note30} AS d30_estimate_note \
             FROM sides AS s JOIN {items} AS i ON i.id = s.item_id \
             LEFT JOIN matched_sums AS m ON m.item_id = s.item_id",
            band7 = band(&PRIOR_7_THRESHOLDS, 7),
            band28 = band(&PRIOR_28_THRESHOLDS, 28),
            rate_bands = RATE_BANDS,
            tenure = self.days_between("l.active_on", "l.first_day"),
            occurrences = t("rollbar_occurrences"),
            items = t("rollbar_items"),
            occurred_day = self.utc_day("o.occurred_at"),
            cell7 = per_cell(7),
            cell30 = per_cell(30),
            sums7 = sums(7),
            sums30 = sums(30),
            estimates7 = estimates(7),
            estimates30 = estimates(30),
            note7 = note(7),
            note30 = note(30),
        )
    }
}
