#!/usr/bin/env bash
# Parses every statement the Redshift dialect emits (pinned in
# functions/core/tests/golden/redshift.sql by the redshift_golden test) with sqlfluff's
# Redshift dialect. Fails on any unparsable statement.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/python.sh
ensure_python_tools

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
