#!/usr/bin/env bash
# Parses every statement the Redshift dialect emits (pinned in
# functions/core/tests/golden/redshift.sql by the redshift_golden test) with sqlfluff's
# Redshift dialect, and checks with sqlglot that none holds a correlated subquery (Redshift's
# planner refuses many such patterns, which no parser notices). Fails on any unparsable
# statement or any correlated subquery.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/python.sh
ensure_python_tools

# sqlglot, for scripts/check-redshift-correlated.py: in the same virtualenv, pinned and
# installed as scripts/lib/python.sh does its tools (pip's list read once, not piped into
# `grep -q`, which can end pip with SIGPIPE under pipefail).
SQLGLOT_REQUIREMENT="sqlglot==30.31.0"
installed="$("$PY_TOOLS/pip" freeze 2>/dev/null || true)"
if ! grep -qxF -e "$SQLGLOT_REQUIREMENT" <<<"$installed"; then
  echo "==> installing $SQLGLOT_REQUIREMENT"
  if ! "$PY_TOOLS/pip" install --quiet "$SQLGLOT_REQUIREMENT"; then
    echo "error: pip could not install $SQLGLOT_REQUIREMENT into $PY_TOOLS_VENV (from PyPI:" >&2
    echo "  is the network or a pip index reachable? PIP_INDEX_URL selects another)" >&2
    exit 1
  fi
fi

golden=functions/core/tests/golden
# The parser must be able to say no: PostgreSQL-only SQL is refused.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
cp "$golden/.sqlfluff" "$probe/"
printf 'INSERT INTO "h"."t" ("id") VALUES (1) ON CONFLICT ("id") DO NOTHING;\n' >"$probe/postgres_only.sql"
if (cd "$probe" && "$PY_TOOLS/sqlfluff" parse postgres_only.sql >/dev/null 2>&1); then
  echo "sqlfluff accepted PostgreSQL-only SQL as Redshift: the check would prove nothing" >&2
  exit 1
fi

statements=$(grep -c ';$' "$golden/redshift.sql")
echo "==> sqlfluff (dialect redshift): $statements statements in $golden/redshift.sql"
if ! (cd "$golden" && "$PY_TOOLS/sqlfluff" parse redshift.sql >"$probe/parse.log" 2>&1); then
  grep -E "unparsable|PRS|WARNING" "$probe/parse.log" >&2 || tail -n 30 "$probe/parse.log" >&2
  echo "the Redshift dialect emitted SQL that Redshift's grammar does not accept" >&2
  exit 1
fi
echo "    all parse"

# The checker must be able to say no: a correlated subquery is refused.
printf '%s\n' 'SELECT a.id FROM "h"."t" AS a' \
  'WHERE NOT EXISTS (SELECT 1 FROM "h"."u" AS b WHERE b.id = a.id);' >"$probe/correlated.sql"
rc=0
"$PY_TOOLS/python" scripts/check-redshift-correlated.py "$probe/correlated.sql" >/dev/null 2>&1 || rc=$?
if [ "$rc" -ne 1 ]; then
  echo "the correlated-subquery check exited $rc on a correlated subquery, not 1:" \
    "it would prove nothing" >&2
  exit 1
fi
echo "==> correlated subqueries (sqlglot, dialect redshift) in $golden/redshift.sql"
if ! "$PY_TOOLS/python" scripts/check-redshift-correlated.py "$golden/redshift.sql"; then
  echo "the Redshift dialect emitted a correlated subquery (or SQL sqlglot cannot read):" \
    "Redshift refuses many of these patterns; use a join or an anti-join" >&2
  exit 1
fi
