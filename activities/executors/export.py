"""The `data.export` executor: a read-only query's rows as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from activities.executors.sql import sql_check, stream_rows
from policies import sql
from signoff.executor import ExecutionContext, Executor
from signoff.neutralise import csv_formula_safe

# An export's result lands in workflow history, which caps payloads at 2 MB; a character can
# take 4 bytes.
MAX_EXPORT_CHARS = 256 * 1024


class ExportParams(BaseModel):
    """A read-only query whose rows are exported as CSV."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000, examples=["SELECT 1"])
    args: list[JsonValue] = Field(default_factory=list)
    max_rows: int = Field(default=10_000, ge=1, le=100_000)

    @field_validator("query")
    @classmethod
    def _plain_query(cls, value: str) -> str:
        return sql_check(sql.plain_query, value)

    @property
    def sql_text(self) -> str:
        """The SQL this action runs (policies see its parsed facts as `sql`)."""
        return self.query


def _csv_cell(value: JsonValue) -> str:
    """NULL as empty, structures as JSON; text a spreadsheet would run gets a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return csv_formula_safe(value)
    return json.dumps(value)  # numbers, booleans, lists, objects: never a formula


async def data_export(ctx: ExecutionContext[ExportParams]) -> JsonValue:
    """Export a plain query's rows as CSV (up to 256 Ki characters; more needs storage)."""
    columns: list[JsonValue] = []
    out = io.StringIO()
    # RFC 4180 line ends: the writer then quotes any cell holding CR or LF, so no cell
    # can start a new row.
    writer = csv.writer(out, lineterminator="\r\n")
    written = 0

    def take(row: dict[str, JsonValue]) -> bool:
        nonlocal written
        if written == 0:
            columns.extend(row)
            writer.writerow(columns)
        if written == ctx.params.max_rows:
            return False
        line_start = out.tell()
        writer.writerow(_csv_cell(v) for v in row.values())
        if out.tell() > MAX_EXPORT_CHARS:
            out.seek(line_start)
            out.truncate()
            return False
        written += 1
        return True

    truncated = await stream_rows(ctx, ctx.params.query, ctx.params.args, take)
    if not columns:
        writer.writerow([])
    return {
        "format": "csv",
        "columns": columns,
        "row_count": written,
        "truncated": truncated,
        "csv": out.getvalue(),
    }


DATA_EXPORT = Executor.define(
    data_export,
    "data.export",
    idempotent=True,
    timeout=timedelta(minutes=10),
    params_model=ExportParams,
    target_kind="postgres",
)
