"""What a SQL text is, decided by PostgreSQL's own parser (pglast, i.e. libpg_query).

One module answers every SQL question signoff asks, so the param models (422 at submit), the
executors (at run time) and the policy engine (the `sql` variable of a `when`) never disagree:

- how many statements the text holds (an approval covers exactly one);
- whether it is a plain query (`SELECT`, `VALUES`, `TABLE`, or `WITH` whose parts are all plain
  selects: no data-modifying CTE, no `SELECT INTO`, no `FOR UPDATE`/`FOR SHARE`);
- the facts a policy decides on: statement kinds, tables, functions, WHERE clauses.

Comments, parentheses, CTEs, case and whitespace change none of these facts; a regex over
the text cannot say the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import pglast
from pglast import ast
from pydantic import BaseModel, Field


class SqlError(ValueError):
    """The text is not exactly what the caller may run (or not SQL at all)."""


class SqlFacts(BaseModel):
    """Facts about one SQL text, as policies see them in the `sql` variable."""

    kind: str = Field(default="", description='The statement\'s node, e.g. "DeleteStmt"')
    kinds: list[str] = Field(
        default_factory=list, description="Every statement kind inside, CTEs and subqueries too"
    )
    tables: list[str] = Field(
        default_factory=list, description="Relations named, schema-qualified as written"
    )
    functions: list[str] = Field(
        default_factory=list, description="Functions called (pg_catalog's without the schema)"
    )
    has_where: bool = Field(
        default=False,
        description="The statement has a WHERE, and so has every UPDATE or DELETE inside it",
    )
    statement_count: int = 0
    read_only: bool = Field(default=False, description="One plain query (see plain_query)")


NO_SQL = SqlFacts()


@runtime_checkable
class CarriesSql(Protocol):
    """A params model holding one SQL text (the engine exposes its facts as `sql`)."""

    @property
    def sql_text(self) -> str:
        """The SQL the executor will run."""
        ...


def _parse(text: str) -> tuple[ast.RawStmt, ...]:
    try:
        return tuple(pglast.parse_sql(text))
    except pglast.parser.ParseError as exc:
        raise SqlError(f"is not valid PostgreSQL: {exc}") from None


def _walk(root: Any) -> Iterator[ast.Node]:
    """Every node under root, depth first, without recursion (hostile nesting is deep)."""
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(reversed(node))
        elif isinstance(node, ast.Node):
            yield node
            slots = list(getattr(type(node), "__slots__", ()))
            stack.extend(getattr(node, slot, None) for slot in reversed(slots))


def _dotted(parts: Any) -> str:
    return ".".join(getattr(p, "sval", "") or "" for p in parts or ())


def _non_plain(statements: tuple[ast.RawStmt, ...]) -> str | None:
    """Why the statements are not one plain query, or None when they are."""
    if len(statements) != 1:
        return f"must be exactly one statement, found {len(statements)}"
    top = statements[0].stmt
    if not isinstance(top, ast.SelectStmt):
        return f"must be a plain query (SELECT, VALUES, TABLE or WITH); this is {_kind(top)}"
    for node in _walk(top):
        name = type(node).__name__
        if name.endswith("Stmt") and not isinstance(node, ast.SelectStmt):
            return f"must be a plain query; it contains a data-modifying {name}"
        if isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            return "must be a plain query; SELECT INTO creates a table"
        if isinstance(node, ast.LockingClause):
            return "must be a plain query; FOR UPDATE/SHARE takes row locks"
    return None


def _kind(node: Any) -> str:
    return type(node).__name__


def facts(text: str) -> SqlFacts:
    """Parse `text` and describe it; raises SqlError when it is not valid PostgreSQL."""
    statements = _parse(text)
    kinds: set[str] = set()
    tables: set[str] = set()
    functions: set[str] = set()
    ctes: set[str] = set()
    filtered = True
    for node in _walk(statements):
        name = _kind(node)
        if name.endswith("Stmt") and name != "RawStmt":
            kinds.add(name)
            if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
                filtered = False
            if isinstance(node, ast.DropStmt):
                # DROP names its objects as lists of identifiers, not as relations.
                tables.update(_dotted(o) for o in node.objects or () if isinstance(o, tuple))
        elif isinstance(node, ast.RangeVar):
            parts = (node.catalogname, node.schemaname, node.relname)
            tables.add(".".join(p for p in parts if p))
        elif isinstance(node, ast.FuncCall):
            # pg_catalog is searched first anyway: `pg_catalog.pg_notify` is `pg_notify`.
            functions.add(_dotted(node.funcname).removeprefix("pg_catalog."))
        elif isinstance(node, ast.CommonTableExpr) and node.ctename:
            ctes.add(node.ctename)
    top = statements[0].stmt if statements else None
    has_where = len(statements) == 1 and getattr(top, "whereClause", None) is not None and filtered
    return SqlFacts(
        kind=_kind(top) if len(statements) == 1 else "",
        kinds=sorted(kinds),
        # A CTE's name read as a table is not a table of the database.
        tables=sorted(tables - ctes),
        functions=sorted(functions),
        has_where=has_where,
        statement_count=len(statements),
        read_only=_non_plain(statements) is None,
    )


def one_statement(text: str) -> str:
    """`text` if it holds exactly one statement, else SqlError naming what was found."""
    statements = _parse(text)
    if len(statements) != 1:
        kinds = ", ".join(_kind(s.stmt) for s in statements) or "none"
        raise SqlError(
            f"must be exactly one SQL statement (one approval, one statement); "
            f"found {len(statements)}: {kinds}"
        )
    return text


def plain_query(text: str) -> str:
    """`text` if it is one plain read-only query, else SqlError saying why not."""
    problem = _non_plain(_parse(text))
    if problem is not None:
        raise SqlError(problem)
    return text


def facts_of(params: object) -> SqlFacts:
    """The `sql` facts of a parsed params model; NO_SQL when it holds no (valid) SQL."""
    if not isinstance(params, CarriesSql):
        return NO_SQL
    try:
        return facts(params.sql_text)
    except SqlError:
        return NO_SQL


__all__ = [
    "NO_SQL",
    "CarriesSql",
    "SqlError",
    "SqlFacts",
    "facts",
    "facts_of",
    "one_statement",
    "plain_query",
]
