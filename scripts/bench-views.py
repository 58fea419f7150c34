"""The analyst views at company size, timed (run by scripts/bench-views.sh).

Fills a migrated warehouse with a synthetic company (occurrences, items and people, and
an activity table), then times every view and every worked query of docs/analysts.md, and
`fix_next` as `heimdallr top` reads it. Usage:
  bench-views.py duckdb FILE SCALE    (the DuckDB Python client: the same engine as the file)
  bench-views.py postgres URL SCALE   (psql)
SCALE 1.0 is 10 million occurrences, 100 000 items, 500 000 people and 50 million
activity rows (500 000 users over 150 days, two days in three on average).
"""

import re
import subprocess
import sys
import time

VIEWS = [
    "rollbar_item_daily_impact",
    "rollbar_person_exposure",
    "heimdallr_environment_map",
    "deploys",
    "rollbar_item_suspect_deploy",
    "release_impact",
    "rollbar_item_impact",
    "rollbar_item_versions",
    "release_health",
    "rollbar_item_retention_impact",
    "fix_next",
]


def sizes(scale):
    return {
        "occurrences": int(10_000_000 * scale),
        "items": int(100_000 * scale),
        "people": int(500_000 * scale),
        "days": 150,
    }


def fill_sql(dialect, n):
    """Statements that fill the tables; item popularity is skewed (a few items hit many)."""
    if dialect == "duckdb":
        series = lambda count, name: f"range(1, {count} + 1) {name}_series({name})"
        rand = "random()"
        at = lambda days: f"to_timestamp(1780000000 + CAST({days} * 86400 AS BIGINT))"
        day = lambda d: f"CAST(DATE '2026-05-29' + CAST({d} AS INTEGER) AS DATE)"
    else:
        series = lambda count, name: f"generate_series(1, {count}) AS {name}_series({name})"
        rand = "random()"
        at = lambda days: f"to_timestamp(1780000000 + CAST({days} * 86400 AS BIGINT))"
        day = lambda d: f"(DATE '2026-05-29' + CAST({d} AS INTEGER))"
    return [
        f"""INSERT INTO heimdallr.rollbar_items (id, project_id, counter, environment, level,
            status, title, first_occurrence_at, last_occurrence_at, total_occurrences)
            SELECT i, 1, i, 'production', CASE WHEN i % 10 = 0 THEN 'critical' ELSE 'error' END,
            'active', 'synthetic item ' || CAST(i AS VARCHAR), {at('(i % 100)')},
            {at('(100 + i % 50)')}, 0 FROM {series(n['items'], 'i')}""",
        f"""INSERT INTO heimdallr.rollbar_occurrences (id, item_id, project_id, occurred_at,
            environment, level, person_id, uuid)
            SELECT o, 1 + CAST(FLOOR({n['items']} * POWER({rand}, 3)) AS BIGINT), 1,
            {at(f"{n['days']} * {rand}")}, 'production', 'error',
            'user-' || CAST(CAST(FLOOR({n['people']} * {rand}) AS BIGINT) AS VARCHAR),
            'u-' || CAST(o AS VARCHAR) FROM {series(n['occurrences'], 'o')}""",
        "CREATE SCHEMA app",
        "CREATE TABLE app.user_activity (user_id VARCHAR(64), active_on DATE)",
        # Each user is active on a share of days of their own (42% to 92%, two in three on
        # average). The draw is a hash of user and day, not random(): a planner may push a
        # filter on random() below the cross join, keeping whole users instead of days.
        f"""INSERT INTO app.user_activity
            SELECT 'user-' || CAST(u AS VARCHAR), {day('d')}
            FROM {series(n['people'], 'u')} CROSS JOIN {series(n['days'], 'd')}
            WHERE ((u * 2654435761 + d * 40503 + u * d * 97) % 1000) / 1000.0
                  < 0.42 + 0.5 * ((u * 7919) % 100) / 100.0""",
    ]


def worked_queries():
    doc = open("docs/analysts.md", encoding="utf-8").read()
    section = doc[doc.index("\n## Worked queries\n") :]
    section = section[: section.find("\n## ", 5)] if "\n## " in section[5:] else section
    return [b.strip().rstrip(";") for b in re.findall(r"```sql\n(.*?)```", section, re.S)]


class Duck:
    def __init__(self, path):
        import duckdb

        self.con = duckdb.connect(path)

    def run(self, sql):
        return self.con.sql(sql).fetchall() if sql.lstrip().upper().startswith(("SELECT", "WITH")) else self.con.execute(sql)

    def close(self):
        self.con.close()


class Postgres:
    def __init__(self, url):
        self.url = url

    def run(self, sql):
        out = subprocess.run(
            ["psql", "-qtAX", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.splitlines()

    def close(self):
        pass


def timed(db, label, sql):
    start = time.monotonic()
    rows = db.run(sql)
    seconds = time.monotonic() - start
    count = len(rows) if isinstance(rows, list) else 0
    print(f"  {label:<44} {seconds:8.2f} s  ({count} rows)", flush=True)
    return seconds


def main():
    dialect, where, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    scale = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    n = sizes(scale)
    db = Duck(where) if dialect == "duckdb" else Postgres(where)
    if phase == "fill":
        print(f"==> {dialect}: filling {n}", flush=True)
        for sql in fill_sql(dialect, n):
            timed(db, sql.split("(")[0].split()[2] if sql.startswith("INSERT") else sql[:40], sql)
        if dialect == "postgres":
            db.run("ANALYZE")
        # Not due: the command's migrate leaves the refresh to the timing phase.
        db.run(
            "INSERT INTO heimdallr.heimdallr_retention_estimates (item_id, estimated_at) "
            "VALUES (0, CURRENT_TIMESTAMP)"
        )
        counted = db.run("SELECT COUNT(*) FROM app.user_activity")
        print(f"  activity rows: {counted[0][0] if dialect == 'duckdb' else counted[0]}")
    else:
        print(f"==> {dialect}: every view (all rows) and every worked query", flush=True)
        # What a sync runs every 6 hours (Dialect::refresh_estimates).
        start = time.monotonic()
        db.run("DELETE FROM heimdallr.heimdallr_retention_estimates")
        db.run(
            "INSERT INTO heimdallr.heimdallr_retention_estimates (item_id, hit_people, "
            "users_lost_d7, users_lost_d7_low, users_lost_d7_high, users_lost_d30, estimate_note, "
            "estimated_at) SELECT item_id, hit_people, users_lost_d7, users_lost_d7_low, "
            "users_lost_d7_high, users_lost_d30, estimate_note, CURRENT_TIMESTAMP "
            "FROM heimdallr.rollbar_item_retention_impact"
        )
        print(f"  {'refresh of the retention estimates':<44} {time.monotonic() - start:8.2f} s", flush=True)
        total = {}
        for view in VIEWS:
            total[view] = timed(db, view, f"SELECT COUNT(*) FROM (SELECT * FROM heimdallr.{view}) AS q")
        timed(db, "fix_next as heimdallr top reads it (20)", "SELECT * FROM heimdallr.fix_next ORDER BY rank LIMIT 20")
        for i, sql in enumerate(worked_queries(), 1):
            sql = sql.replace("app.user_activity", "app.user_activity")
            timed(db, f"worked query {i}", sql)
    db.close()


if __name__ == "__main__":
    main()
