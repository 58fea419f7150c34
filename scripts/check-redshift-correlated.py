#!/usr/bin/env python3
"""Finds correlated subqueries in a file of Redshift SQL.

Redshift's planner refuses many correlated subquery patterns (Database Developer Guide,
"Correlated subqueries": correlation from a subquery that holds a window function,
correlation that skips a level, correlated subqueries under OR, in ON clauses, in UNIONs,
...) with "This type of correlated subquery pattern is not supported yet", and only when
the view is created or queried on a real cluster: no parser notices. Heimdallr's SQL keeps
clear of all of them by holding no correlated subquery at all, and this check holds it to
that.

    check-redshift-correlated.py FILE.sql

Every statement of FILE is parsed with sqlglot's Redshift dialect. In every subquery
(EXISTS, IN, scalar, derived table, CTE, set operation branch) a column qualified by a
table or alias that is not a source of that subquery itself refers to an enclosing query:
a correlation. Each offending statement is printed with its correlated columns, and the
check exits 1; it exits 0 when there is none. A statement sqlglot cannot parse fails the
check (exit 2), named by its line and head: a statement left unread is not a statement
checked. Unqualified columns are taken as the subquery's own (resolving them would need
every table's columns), so the SQL checked must qualify outer references, as Heimdallr's
does everywhere.
"""

import logging
import re
import sys

try:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError
    from sqlglot.optimizer.scope import ScopeType, traverse_scope
    from sqlglot.tokens import TokenType
except ImportError:
    sys.exit("check-redshift-correlated.py needs sqlglot (pip install sqlglot)")

DIALECT = "redshift"
# A query inside a statement that sqlglot kept as an opaque command.
QUERY = re.compile(r"\bSELECT\b", re.IGNORECASE)
# The head of a CREATE that sqlglot could not parse.
CREATED = re.compile(
    r"^(CREATE(?: OR REPLACE)?(?: TEMP| TEMPORARY)?(?: MATERIALIZED)? (?:VIEW|TABLE)"
    r"(?: IF NOT EXISTS)? \S+)",
    re.IGNORECASE,
)


def tokenize(sql):
    return sqlglot.Dialect.get_or_raise(DIALECT).tokenize(sql)


def statements(sql):
    """The file's statements as (line, text): split where sqlglot's own Redshift tokenizer
    sees a semicolon (as sqlglot.parse does), so semicolons in strings, quoted names and
    comments do not split."""
    tokens = tokenize(sql)
    chunk = []
    for token in tokens + [None]:
        if token is None or token.token_type == TokenType.SEMICOLON:
            if chunk:
                # From its first token (comments are not tokens) to its last.
                yield chunk[0].line, sql[chunk[0].start : chunk[-1].end + 1]
            chunk = []
        else:
            chunk.append(token)


def head(statement, text):
    """What names a statement in a report: `CREATE OR REPLACE VIEW "s"."v"` and the like."""
    if isinstance(statement, exp.Create):
        target = statement.this
        if isinstance(target, exp.Schema):
            target = target.this
        replace = " OR REPLACE" if statement.args.get("replace") else ""
        return f"CREATE{replace} {statement.kind} {target.sql(DIALECT)}"
    words = " ".join(text.split())
    created = CREATED.match(words)
    if created:
        return created.group(1)
    return words if len(words) <= 80 else words[:77] + "..."


def source_names(scope):
    """The names a scope's own FROM and JOIN sources go by (aliases, or table names)."""
    return {name for name, _ in scope.references} | set(scope.semi_or_anti_join_tables)


def qualifiers(column):
    """The names a qualified column may refer to a source by: its table part, and for a
    path into a SUPER value (`alias.column.field`) the leading parts too."""
    parts = (column.text("table"), column.text("db"), column.text("catalog"))
    return [part for part in parts if part]


def kind(scope):
    """What kind of subquery a scope is, for the report."""
    if scope.scope_type == ScopeType.CTE:
        return "CTE"
    if scope.scope_type == ScopeType.DERIVED_TABLE:
        return "derived table"
    if scope.scope_type == ScopeType.SET_OPERATION:
        # A branch of a UNION (INTERSECT, EXCEPT): say what the set operation is in.
        operation = scope.parent
        while operation.scope_type == ScopeType.SET_OPERATION:
            operation = operation.parent
        return f"{kind(operation)}, one branch of its {operation.expression.key.upper()}"
    if scope.scope_type == ScopeType.UDTF:
        return "table function"
    node = scope.expression
    while isinstance(node.parent, exp.Subquery):
        node = node.parent
    parent = node.parent
    if isinstance(parent, exp.Exists):
        return "NOT EXISTS" if isinstance(parent.parent, exp.Not) else "EXISTS"
    if isinstance(parent, exp.In):
        return "NOT IN" if isinstance(parent.parent, exp.Not) else "IN"
    if isinstance(parent, (exp.Any, exp.All)):
        return type(parent).__name__.upper()
    return "scalar subquery"


def shorten(sql, width=100):
    words = " ".join(sql.split())
    return words if len(words) <= width else words[: width - 3] + "..."


def correlations(statement):
    """(subquery scope, column, qualifier, levels out to the query that defines the
    qualifier or None when none does) for every qualified column of a subquery that is
    not the subquery's own."""
    found = []
    for scope in traverse_scope(statement):
        if scope.is_root or scope.parent is None:
            continue
        own = source_names(scope)
        for column in scope.columns:
            # Only the columns written in this scope: a column of a nested subquery is
            # reported there (scope.columns also lists the nested ones that escape).
            if id(column) not in scope.column_index:
                continue
            names = qualifiers(column)
            if not names or any(name in own for name in names):
                continue
            levels, outer, qualifier = 1, scope.parent, names[0]
            while outer is not None:
                defined = [name for name in names if name in source_names(outer)]
                if defined:
                    qualifier = defined[0]
                    break
                # A set operation has no sources of its own: it is not a level.
                if not isinstance(outer.expression, exp.SetOperation):
                    levels += 1
                outer = outer.parent
            found.append((scope, column, qualifier, levels if outer is not None else None))
    return found


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} FILE.sql")
    path = argv[1]
    # sqlglot logs (and parses as an opaque Command) what it does not know, e.g. LOCK;
    # that is handled below.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    with open(path, encoding="utf-8") as f:
        sql = f.read()
    try:
        parts = list(statements(sql))
    except TokenError as error:
        print(f"{path}: sqlglot cannot tokenize the file: {error}", file=sys.stderr)
        return 2

    unreadable, offending, checked, opaque = [], 0, 0, []
    for line, text in parts:
        try:
            parsed = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
        except ParseError as error:
            unreadable.append((line, head(None, text), str(error).splitlines()[0]))
            continue
        for statement in parsed:
            checked += 1
            if isinstance(statement, exp.Command):
                # sqlglot did not understand it and kept it as text. Harmless only where no
                # query can hide inside it (sqlglot's tokenizer swallows the rest of, say,
                # EXPLAIN as one string: look at the text).
                if QUERY.search(text):
                    why = "sqlglot kept it as an opaque command"
                    unreadable.append((line, head(None, text), why))
                else:
                    opaque.append((line, head(None, text)))
                continue
            try:
                found = correlations(statement)
            except Exception as error:  # sqlglot's scope analysis gave up on it
                unreadable.append((line, head(statement, text), f"scope analysis failed: {error}"))
                continue
            if not found:
                continue
            offending += 1
            print(f"{path}:{line}: {head(statement, text)}: correlated subquery")
            by_scope = {}
            for scope, column, qualifier, levels in found:
                by_scope.setdefault(id(scope), (scope, []))[1].append((column, qualifier, levels))
            for scope, columns in by_scope.values():
                print(f"    in {kind(scope)} {shorten(scope.expression.sql(DIALECT))}")
                seen = set()
                for column, qualifier, levels in columns:
                    if column.sql(DIALECT) in seen:
                        continue
                    seen.add(column.sql(DIALECT))
                    if levels is None:
                        where = "which no enclosing query defines"
                    elif levels == 1:
                        where = "a source of the enclosing query"
                    else:
                        where = f"a source of the query {levels} levels out (skips a level)"
                    print(f"        {column.sql(DIALECT)}: {qualifier} is {where}")

    sys.stdout.flush()
    for line, name in opaque:
        print(f"note: {path}:{line}: {name}: not parsed by sqlglot (holds no query)")
    for line, name, why in unreadable:
        print(f"{path}:{line}: {name}: cannot be checked: {why}", file=sys.stderr)
    sys.stderr.flush()
    print(f"==> {checked} statements in {path}: {offending} with a correlated subquery"
          + (f", {len(unreadable)} that sqlglot cannot read" if unreadable else ""))
    if unreadable:
        return 2
    return 1 if offending else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
