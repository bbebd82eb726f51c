"""Evidence export: one record per action, built from ledger rows, as JSON, CSV or HTML."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import date, datetime, timedelta
from html import escape
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, JsonValue

from activities.ledger.chain import LedgerRow
from activities.ledger.store import Ledger
from signoff import neutralise
from signoff.models import Decision, RefusalCode, RefusedAttempt
from workflows.messages import WINDOW_ID_PREFIX, AuditKind

ExportFormat = Literal["json", "csv", "html"]
M = TypeVar("M", bound=BaseModel)


class Escalation(BaseModel):
    """One escalation stage reached."""

    level: int
    notify: list[str] = []
    eligible_groups: list[str] = []
    at: datetime


class BreakGlassRecord(BaseModel):
    """A break-glass action: who forced it, why, and how its after-the-fact review went."""

    by: str | None = None
    reason: str | None = None
    at: datetime
    review_due_at: datetime | None = None
    review_escalations: int = 0
    overdue_at: datetime | None = None
    reviewed_by: str | None = None
    review_outcome: str | None = None
    review_reason: str | None = None
    reviewed_at: datetime | None = None

    def findings(self) -> list[str]:
        """What an auditor must look at: unreviewed, reviewed late, or disputed."""
        due = self.review_due_at.isoformat() if self.review_due_at else "?"
        found = []
        if self.reviewed_at is None:
            state = f"OVERDUE since {due}" if self.overdue_at else f"due {due}"
            found.append(f"break-glass by {self.by} not reviewed ({state})")
        elif self.overdue_at is not None:
            found.append(
                f"break-glass by {self.by} reviewed late by {self.reviewed_by} "
                f"(due {due}, reviewed {self.reviewed_at.isoformat()})"
            )
        if self.review_outcome == "disputed":
            found.append(
                f"break-glass by {self.by} disputed by {self.reviewed_by}: {self.review_reason}"
            )
        return found


class WindowRecord(BaseModel):
    """Everything the ledger says about one approval window (scoped approval), for an auditor."""

    window_id: str
    action_id: str | None = None
    rule_id: str | None = None
    scope: str | None = None
    holder: str | None = None
    approvers: list[str] = []
    created_at: datetime | None = None
    expires_at: datetime | None = None
    uses: list[str] = []
    status: str = "active"
    ended_at: datetime | None = None
    revoked_by: str | None = None
    reason: str | None = None
    refused: list[RefusedAttempt] = []


def build_window(rows: list[LedgerRow]) -> WindowRecord:
    """Fold a window's ledger rows (its own stream) into its record."""
    record = WindowRecord(window_id=rows[0].action_id)
    for row in rows:
        p = row.payload
        if row.kind == AuditKind.WINDOW_CREATED:
            record.created_at = row.at
            record.action_id = _str(p.get("action_id"))
            record.rule_id = _str(p.get("rule_id"))
            record.scope = _str(p.get("scope"))
            record.holder = _str(p.get("holder"))
            approvers = p.get("approvers")
            record.approvers = [str(a) for a in approvers] if isinstance(approvers, list) else []
            expires = p.get("expires_at")
            record.expires_at = (
                datetime.fromisoformat(expires) if isinstance(expires, str) else None
            )
        elif row.kind == AuditKind.WINDOW_USED:
            record.uses.append(f"{p.get('action_id')} ({p.get('action')} on {p.get('target')})")
        elif row.kind == AuditKind.WINDOW_EXPIRED:
            record.status, record.ended_at = "expired", row.at
        elif row.kind == AuditKind.WINDOW_REVOKED:
            record.status, record.ended_at = "revoked", row.at
            record.revoked_by = row.actor
            record.reason = _str(p.get("reason")) or None
        elif row.kind == AuditKind.REFUSED:
            record.refused.append(_contract(RefusedAttempt, p))
    return record


class GrantRecord(BaseModel):
    """A reversible action's time in force (issue 15): its window and who ended it, how."""

    start: datetime
    end: datetime | None = None
    ended_at: datetime | None = None
    # "timer" when its duration ran out; else who revoked it or asked for the undo.
    ended_by: str | None = None
    how: str | None = None
    undo_action: str | None = None
    revert_failures: int = 0
    reverted_at: datetime | None = None


class ActionRecord(BaseModel):
    """Everything the ledger says about one action, for an auditor."""

    action_id: str
    requested_at: datetime | None = None
    requester: str | None = None
    on_behalf_of: str | None = None
    action: str | None = None
    target: str | None = None
    digest: str
    params: dict[str, JsonValue] = {}
    justification: str | None = None
    effect: str | None = None
    risk: str | None = None
    policy_rule: str | None = None
    policy_digest: str | None = None
    decisions: list[Decision] = []
    refused: list[RefusedAttempt] = []
    escalations: list[Escalation] = []
    notified: list[str] = []
    execution_started_at: datetime | None = None
    result: JsonValue = None
    error: str | None = None
    status: str | None = None
    decided_at: datetime | None = None
    completed_at: datetime | None = None
    # Approval windows: the one that allowed this action, the one its approval opened, and
    # for a window's own ledger stream, the window itself (not an action).
    allowed_by_window: str | None = None
    window: WindowRecord | None = None
    break_glass: BreakGlassRecord | None = None
    grant: GrantRecord | None = None

    @property
    def findings(self) -> list[str]:
        """What an auditor must look at in this action (break-glass reviews, for now)."""
        return self.break_glass.findings() if self.break_glass else []

    @property
    def time_to_decision(self) -> timedelta | None:
        """From request to the decision that settled it; None when no human decided."""
        if self.decided_at is None or self.requested_at is None:
            return None
        return self.decided_at - self.requested_at

    @property
    def approvers(self) -> list[str]:
        """Who approved."""
        return [d.approver for d in self.decisions if d.decision == "approve"]

    @property
    def privileged(self) -> bool:
        """Whether policy required a human approval."""
        return self.effect == "require_approval"

    @property
    def independently_approved(self) -> bool:
        """Approved, and by nobody who requested it or on whose behalf it was requested."""
        interested = {self.requester, self.on_behalf_of} - {None}
        return bool(self.approvers) and not interested.intersection(self.approvers)


def _contract(model: type[M], payload: dict[str, Any]) -> M:
    # Contract models forbid unknown fields; the ledger may carry extras (e.g. approver groups).
    return model.model_validate({k: v for k, v in payload.items() if k in model.model_fields})


def build_record(rows: list[LedgerRow]) -> ActionRecord:
    """Fold an action's ledger rows, in event order, into its record."""
    record = ActionRecord(action_id=rows[0].action_id, digest=rows[0].digest)
    if rows[0].action_id.startswith(WINDOW_ID_PREFIX):
        record.window = build_window(rows)
        return record
    for row in rows:
        p = row.payload
        if row.kind == AuditKind.REQUESTED:
            record.requested_at = row.at
            record.requester = _str(p.get("requester"))
            record.on_behalf_of = _str(p.get("on_behalf_of"))
            record.action = _str(p.get("action"))
            record.target = _str(p.get("target"))
            params = p.get("params")
            record.params = params if isinstance(params, dict) else {}
            record.justification = _str(p.get("justification"))
        elif row.kind == AuditKind.VERDICT:
            record.effect = _str(p.get("effect"))
            record.risk = _str(p.get("risk"))
            record.policy_rule = _str(p.get("rule_id"))
            record.policy_digest = _str(p.get("policy_digest"))
            record.allowed_by_window = _str(p.get("window_id"))
        elif row.kind == AuditKind.DECISION:
            decision = _contract(Decision, p)
            record.decisions.append(decision)
            if decision.decision == "deny" and record.decided_at is None:
                record.decided_at = decision.at
        elif row.kind == AuditKind.REFUSED:
            record.refused.append(_contract(RefusedAttempt, p))
        elif row.kind == AuditKind.ESCALATED:
            record.escalations.append(_contract(Escalation, {**p, "at": row.at}))
        elif row.kind == AuditKind.NOTIFIED:
            refs = p.get("refs")
            for ref in refs if isinstance(refs, list) else []:
                if isinstance(ref, dict):
                    record.notified.append(f"{ref.get('channel')}:{ref.get('destination')}")
        elif row.kind == AuditKind.EXECUTION_STARTED:
            record.execution_started_at = row.at
            approvals = [d for d in record.decisions if d.decision == "approve"]
            if record.decided_at is None and approvals:
                record.decided_at = approvals[-1].at
        elif row.kind == AuditKind.EXECUTION_RESULT:
            record.result = p.get("result")
            record.error = _str(p.get("error")) or record.error
        elif row.kind == AuditKind.CANCELLED:
            record.error = _str(p.get("reason")) or record.error
        elif row.kind in _GRANT_KINDS:
            _fold_grant(record, row)
        elif row.kind == AuditKind.OUTCOME:
            record.status = _str(p.get("status"))
            record.error = _str(p.get("error")) or record.error
            record.completed_at = row.at
        else:
            _fold_break_glass(record, row)
    return record


def _fold_break_glass(record: ActionRecord, row: LedgerRow) -> None:
    """Fold a break-glass row (the break, its review's escalations, overdue, review)."""
    p = row.payload
    if row.kind == AuditKind.BREAK_GLASS:
        due = _str(p.get("review_due_at"))
        record.break_glass = BreakGlassRecord(
            by=row.actor,
            reason=_str(p.get("reason")),
            at=row.at,
            review_due_at=datetime.fromisoformat(due) if due else None,
        )
        return
    glass = record.break_glass
    if glass is None:
        return
    if row.kind == AuditKind.REVIEW_ESCALATED:
        glass.review_escalations += 1
    elif row.kind == AuditKind.REVIEW_OVERDUE:
        glass.overdue_at = row.at
    elif row.kind == AuditKind.REVIEWED:
        glass.reviewed_by = row.actor
        glass.review_outcome = _str(p.get("outcome"))
        glass.review_reason = _str(p.get("reason"))
        glass.reviewed_at = row.at


_GRANT_KINDS = frozenset(
    {
        AuditKind.ACTIVE,
        AuditKind.REVOKED,
        AuditKind.UNDO_REQUESTED,
        AuditKind.REVERT_FAILED,
        AuditKind.REVERTED,
    }
)


def _fold_grant(record: ActionRecord, row: LedgerRow) -> None:
    """The grant's window, who ended it and how, from its ledger rows."""
    p = row.payload
    if row.kind == AuditKind.ACTIVE:
        window = p.get("window")
        window = window if isinstance(window, dict) else {}
        record.grant = GrantRecord.model_validate(
            {"start": window.get("start") or row.at, "end": window.get("end")}
        )
        return
    grant = record.grant
    if grant is None:
        return
    if row.kind == AuditKind.REVOKED:
        grant.ended_by, grant.how = row.actor, "revoked"
    elif row.kind == AuditKind.UNDO_REQUESTED:
        grant.undo_action = _str(p.get("undo_action"))
    elif row.kind == AuditKind.REVERT_FAILED:
        failures = p.get("failures")
        grant.revert_failures = failures if isinstance(failures, int) else grant.revert_failures
    elif row.kind == AuditKind.REVERTED:
        window = p.get("window")
        window = window if isinstance(window, dict) else {}
        ended_at = window.get("ended_at")
        grant.ended_at = datetime.fromisoformat(ended_at) if isinstance(ended_at, str) else row.at
        grant.ended_by = _str(window.get("ended_by")) or grant.ended_by
        grant.how = _str(window.get("how")) or grant.how
        grant.reverted_at = row.at


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


async def records(
    ledger: Ledger,
    since: datetime | None,
    until: datetime | None,
    *,
    advance: Callable[[int], None] | None = None,
) -> AsyncIterator[ActionRecord]:
    """One record per action requested in [since, until), streamed from the ledger."""
    current: list[LedgerRow] = []
    async for row in ledger.action_rows(since, until):
        if current and current[0].action_id != row.action_id:
            yield build_record(current)
            if advance is not None:
                advance(1)
            current = []
        current.append(row)
    if current:
        yield build_record(current)
        if advance is not None:
            advance(1)


# --- summary ---------------------------------------------------------------------------------


class Summary(BaseModel):
    """The controls an auditor checks, over all exported actions."""

    actions: int
    privileged: int
    executed_privileged: int
    independently_approved: int
    refused_attempts: int
    refused_self_approval: int
    median_time_to_decision: timedelta | None
    statuses: dict[str, int]
    since: datetime | None = None
    until: datetime | None = None
    break_glass: int = 0
    break_glass_unreviewed: int = 0
    break_glass_reviewed_late: int = 0
    findings: list[str] = []

    @property
    def independent_share(self) -> float | None:
        """Share of executed privileged actions approved by someone other than the requester."""
        if not self.executed_privileged:
            return None
        return self.independently_approved / self.executed_privileged

    def sentence(self) -> str:
        """The summary of controls, in one line."""
        share = self.independent_share
        share_text = "n/a" if share is None else f"{share:.0%}"
        median = _human(self.median_time_to_decision)
        return (
            f"{_count(self.privileged, 'privileged action')}; {share_text} approved by someone "
            f"other than the requester; "
            f"{_count(self.refused_self_approval, 'refused self-approval attempt')}; "
            f"median time to decision {median}"
        )


def summarise(
    items: Iterable[ActionRecord], since: datetime | None = None, until: datetime | None = None
) -> Summary:
    """Count the controls over the records."""
    items = list(items)
    privileged = [r for r in items if r.privileged]
    executed = [r for r in privileged if r.execution_started_at is not None]
    refused = [a for r in items for a in r.refused]
    waits = [t for r in items if (t := r.time_to_decision) is not None]
    return Summary(
        actions=len(items),
        privileged=len(privileged),
        executed_privileged=len(executed),
        independently_approved=sum(r.independently_approved for r in executed),
        refused_attempts=len(refused),
        refused_self_approval=sum(a.code == RefusalCode.SELF_APPROVAL for a in refused),
        median_time_to_decision=(
            timedelta(seconds=statistics.median(w.total_seconds() for w in waits))
            if waits
            else None
        ),
        statuses=dict(Counter(r.status or "in progress" for r in items)),
        since=since,
        until=until,
        **_break_glass_summary(items),
    )


def _break_glass_summary(items: list[ActionRecord]) -> dict[str, Any]:
    """Break-glass counts and every action's findings, `action_id: finding`."""
    glass = [r.break_glass for r in items if r.break_glass is not None]
    return {
        "break_glass": len(glass),
        "break_glass_unreviewed": sum(g.reviewed_at is None for g in glass),
        "break_glass_reviewed_late": sum(
            g.reviewed_at is not None and g.overdue_at is not None for g in glass
        ),
        "findings": [f"{r.action_id}: {f}" for r in items for f in r.findings],
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _human(value: timedelta | None) -> str:
    if value is None:
        return "n/a"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


# --- formats ---------------------------------------------------------------------------------


def to_json(
    items: list[ActionRecord], summary: Summary, windows: list[WindowRecord] | None = None
) -> str:
    """The export as one JSON document: summary and records (and approval windows)."""
    body: dict[str, Any] = {
        "summary": {
            **summary.model_dump(mode="json"),
            "median_time_to_decision_seconds": _seconds(summary.median_time_to_decision),
            "independent_share": summary.independent_share,
        },
        "actions": [
            {
                **r.model_dump(mode="json", exclude={"window"}),
                "time_to_decision_seconds": _seconds(r.time_to_decision),
                "findings": r.findings,
            }
            for r in items
        ],
    }
    if windows:
        body["windows"] = [w.model_dump(mode="json") for w in windows]
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


CSV_COLUMNS = (
    "action_id",
    "requested_at",
    "requester",
    "on_behalf_of",
    "action",
    "target",
    "digest",
    "params",
    "justification",
    "effect",
    "risk",
    "policy_rule",
    "policy_digest",
    "decisions",
    "refused",
    "escalations",
    "execution_started_at",
    "result",
    "error",
    "status",
    "decided_at",
    "time_to_decision_seconds",
    "completed_at",
    "break_glass",
    "findings",
    "grant",
)


def _csv_row(record: ActionRecord) -> dict[str, Any]:
    """One action as CSV cells; agent text made visible and unable to run as a formula."""
    row = _csv_values(record)
    for key, value in row.items():
        if key in ("params", "result"):  # already visible JSON: only formulas to stop
            row[key] = neutralise.csv_formula_safe(value)
        elif isinstance(value, str):
            row[key] = neutralise.csv_cell(value)
    return row


def _csv_values(record: ActionRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    return {
        **{k: data.get(k) for k in CSV_COLUMNS},
        "params": neutralise.visible_json(data["params"], sort_keys=True),
        "result": neutralise.visible_json(data["result"]),
        "decisions": "; ".join(
            f"{d.approver} {d.decision} at {d.at.isoformat()} via {d.channel}: {d.reason}"
            for d in record.decisions
        ),
        "refused": "; ".join(
            f"{a.approver} {a.decision or a.kind} refused ({a.code.value}) at {a.at.isoformat()}"
            for a in record.refused
        ),
        "escalations": "; ".join(
            f"level {e.level} at {e.at.isoformat()}: {', '.join(e.notify)}"
            for e in record.escalations
        ),
        "time_to_decision_seconds": _seconds(record.time_to_decision),
        "break_glass": (
            f"by {record.break_glass.by}: {record.break_glass.reason}" if record.break_glass else ""
        ),
        "findings": "; ".join(record.findings),
        "grant": grant_text(record.grant),
    }


def grant_text(grant: GrantRecord | None) -> str:
    """A grant's window and how it ended, in one line: '... to ...; revoked by bob'."""
    if grant is None:
        return ""
    until = f" until {grant.end.isoformat()}" if grant.end else ""
    text = f"in force from {grant.start.isoformat()}{until}"
    if grant.how == "expired":
        text += f"; expired (timer) at {grant.ended_at.isoformat() if grant.ended_at else '?'}"
    elif grant.how is not None:
        text += f"; {grant.how} by {grant.ended_by or 'unknown'}"
    if grant.undo_action:
        text += f"; undo {grant.undo_action}"
    if grant.revert_failures:
        text += f"; {grant.revert_failures} failed revert attempts"
    return text


def to_csv(items: list[ActionRecord]) -> str:
    """The export as CSV, one row per action; lists are joined with '; '."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for record in items:
        writer.writerow(_csv_row(record))
    return out.getvalue()


# --- html ------------------------------------------------------------------------------------

HISTOGRAM_BINS: tuple[tuple[str, timedelta], ...] = (
    ("< 1m", timedelta(minutes=1)),
    ("1-5m", timedelta(minutes=5)),
    ("5-15m", timedelta(minutes=15)),
    ("15-60m", timedelta(hours=1)),
    ("1-4h", timedelta(hours=4)),
    ("4-24h", timedelta(days=1)),
    ("> 1d", timedelta.max),
)


def decision_histogram(items: Iterable[ActionRecord]) -> list[tuple[str, int]]:
    """Counts of time-to-decision per bin."""
    counts = dict.fromkeys((label for label, _ in HISTOGRAM_BINS), 0)
    for record in items:
        wait = record.time_to_decision
        if wait is None:
            continue
        label = next(label for label, upper in HISTOGRAM_BINS if wait < upper)
        counts[label] += 1
    return list(counts.items())


def daily_volume(items: Iterable[ActionRecord]) -> list[tuple[str, int]]:
    """Actions requested per day, with empty days filled in."""
    days = Counter(r.requested_at.date() for r in items if r.requested_at is not None)
    if not days:
        return []
    first, last = min(days), max(days)
    span = (last - first).days + 1
    return [
        (str(day), days.get(day, 0))
        for day in (first + timedelta(days=n) for n in range(span))
        if isinstance(day, date)
    ]


def bar_chart(title: str, bars: list[tuple[str, int]], *, width: int = 640) -> str:
    """An inline SVG bar chart with labelled bars."""
    height, top, bottom, left = 220, 28, 48, 36
    plot_h = height - top - bottom
    peak = max((v for _, v in bars), default=0) or 1
    step = (width - left - 8) / max(len(bars), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="title">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#999"/>',
    ]
    for i, (label, value) in enumerate(bars):
        bar_h = plot_h * value / peak
        x = left + i * step + step * 0.1
        y = top + plot_h - bar_h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" height="{bar_h:.1f}" '
            f'fill="#3b6ea5"><title>{escape(label)}: {value}</title></rect>'
        )
        parts.append(
            f'<text x="{x + step * 0.4:.1f}" y="{y - 4:.1f}" text-anchor="middle">{value}</text>'
        )
        if len(bars) <= 16 or i % max(len(bars) // 12, 1) == 0:
            parts.append(
                f'<text x="{x + step * 0.4:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
.summary { font-size: 1.1em; padding: .8em 1em; background: #f2f6fa;
  border-left: 4px solid #3b6ea5; }
dl.controls { display: grid; grid-template-columns: max-content auto; gap: .2em 1.5em; }
dl.controls dt { font-weight: 600; }
table { border-collapse: collapse; font-size: .85em; width: 100%; }
th, td { border: 1px solid #ccc; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #eee; } td.digest { font-family: monospace; font-size: .8em; }
svg text { font-size: 11px; fill: #333; } svg text.title { font-size: 13px; font-weight: 600; }
ul { margin: 0; padding-left: 1.1em; }
"""


def to_html(
    items: list[ActionRecord],
    summary: Summary,
    *,
    generated_at: datetime,
    windows: list[WindowRecord] | None = None,
) -> str:
    """A self-contained evidence report: summary of controls, charts and the action table."""
    e = escape
    window = (
        f"{e(summary.since.isoformat()) if summary.since else 'the beginning'} to "
        f"{e(summary.until.isoformat()) if summary.until else 'now'}"
    )
    share = summary.independent_share
    controls = [
        ("Actions in period", str(summary.actions)),
        ("Privileged actions (approval required)", str(summary.privileged)),
        ("Privileged actions executed", str(summary.executed_privileged)),
        (
            "Approved by someone other than the requester",
            f"{summary.independently_approved} of {summary.executed_privileged}"
            + ("" if share is None else f" ({share:.0%})"),
        ),
        ("Refused approval attempts", str(summary.refused_attempts)),
        ("Refused self-approval attempts", str(summary.refused_self_approval)),
        ("Median time to decision", _human(summary.median_time_to_decision)),
        ("Outcomes", ", ".join(f"{k}: {v}" for k, v in sorted(summary.statuses.items()))),
        ("Break-glass actions", str(summary.break_glass)),
        ("Break-glass actions not reviewed", str(summary.break_glass_unreviewed)),
        ("Break-glass actions reviewed late", str(summary.break_glass_reviewed_late)),
    ]
    findings = "".join(f"<li>{neutralise.html(f)}</li>" for f in summary.findings)
    rows = "\n".join(_html_row(r) for r in items)
    controls_html = "".join(
        f'<dt>{e(name)}</dt><dd data-control="{e(name)}">{e(value)}</dd>'
        for name, value in controls
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>signoff evidence report</title>
<style>{STYLE}</style>
</head>
<body>
<h1>signoff evidence report</h1>
<p>Actions requested from {window}. Generated {e(generated_at.isoformat())} from the
hash-chained audit ledger.</p>
<p class="summary" id="summary">{e(summary.sentence())}.</p>
<h2>Controls</h2>
<dl class="controls">{controls_html}</dl>
<h2>Findings</h2>
<ul id="findings">{findings or "<li>none</li>"}</ul>
<h2>Time to decision</h2>
{bar_chart("Time to decision", decision_histogram(items))}
<h2>Daily volume</h2>
{bar_chart("Actions requested per day", daily_volume(items))}
<h2>Grants</h2>
{_grants_table(items)}
<h2>Actions</h2>
<table id="actions">
<thead><tr><th>Requested</th><th>Action</th><th>Requester</th><th>Policy</th>
<th>Decisions</th><th>Refused attempts</th><th>Escalations</th><th>Status</th>
<th>Time to decision</th><th>Result</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{_windows_html(windows or [])}
</body>
</html>
"""


def _windows_html(windows: list[WindowRecord]) -> str:
    """The approval windows section: scope, holder, approvers, expiry, uses and how it ended."""
    if not windows:
        return ""
    e = neutralise.html
    rows = []
    for w in windows:
        uses = "".join(f"<li>{e(u)}</li>" for u in w.uses)
        ended = e(w.status)
        if w.revoked_by:
            ended += f" by {e(w.revoked_by)}" + (f": {e(w.reason)}" if w.reason else "")
        if w.ended_at:
            ended += f" at {e(w.ended_at.isoformat())}"
        refused = "".join(
            f"<li>{e(a.approver)}: {e(a.code.value)} ({e(a.message)})</li>" for a in w.refused
        )
        rows.append(
            f'<tr data-window-id="{e(w.window_id)}"><td>{e(w.window_id)}<br>'
            f"opened by {e(w.action_id or '')}</td><td>{e(w.holder or '')}</td>"
            f"<td><code>{e(w.scope or '')}</code><br>rule {e(w.rule_id or '')}</td>"
            f"<td>{e(', '.join(w.approvers))}</td>"
            f"<td>{e(w.created_at.isoformat() if w.created_at else '')} to "
            f"{e(w.expires_at.isoformat() if w.expires_at else '')}</td>"
            f"<td><ul>{uses}</ul></td><td>{ended}<ul>{refused}</ul></td></tr>"
        )
    return (
        '<h2>Approval windows</h2>\n<table id="windows">\n<thead><tr><th>Window</th>'
        "<th>Holder</th><th>Scope</th><th>Approved by</th><th>Window</th><th>Uses</th>"
        "<th>Ended</th></tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    )


def _grants_table(items: list[ActionRecord]) -> str:
    """Every grant with its window and who ended it (the timer, a revoke, an undo)."""
    e = neutralise.html
    grants = [r for r in items if r.grant is not None]
    if not grants:
        return "<p>No reversible actions in this period.</p>"

    def when(value: datetime | None) -> str:
        return e(value.isoformat()) if value else ""

    rows = []
    for r in grants:
        g = r.grant
        assert g is not None
        ended = "in force" if g.how is None else f"{g.how} by {g.ended_by or 'unknown'}"
        if g.how == "expired":
            ended = "expired (timer)"
        rows.append(
            f'<tr data-action-id="{e(r.action_id)}">'
            f"<td>{e(r.action or '')} on {e(r.target or '')}</td>"
            f"<td>{e(r.requester or '')}</td>"
            f"<td>{e(', '.join(r.approvers))}</td>"
            f"<td>{when(g.start)}</td><td>{when(g.end)}</td><td>{when(g.ended_at)}</td>"
            f"<td>{e(ended)}</td><td>{e(g.undo_action or '')}</td>"
            f"<td>{g.revert_failures}</td>"
            "</tr>"
        )
    return (
        '<table id="grants"><thead><tr><th>Grant</th><th>Requester</th><th>Approvers</th>'
        "<th>From</th><th>Until</th><th>Ended</th><th>Ended how, by whom</th><th>Undo</th>"
        "<th>Failed revert attempts</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _html_row(r: ActionRecord) -> str:
    e = neutralise.html  # every cell may hold agent text: visible, then entity-escaped
    requester = e(r.requester or "")
    if r.on_behalf_of:
        requester += f"<br>on behalf of {e(r.on_behalf_of)}"
    decisions = "".join(
        f"<li>{e(d.approver)} <b>{e(d.decision)}</b> {e(d.at.isoformat())} via {e(d.channel)}"
        + (f": {e(d.reason)}" if d.reason else "")
        + "</li>"
        for d in r.decisions
    )
    refused = "".join(
        f"<li>{e(a.approver)} {e(a.decision or a.kind)}: {e(a.code.value)} ({e(a.message)})</li>"
        for a in r.refused
    )
    escalations = "".join(
        f"<li>level {e(str(x.level))}: {e(', '.join(x.notify))}</li>" for x in r.escalations
    )
    result = neutralise.visible(r.error) if r.error else neutralise.visible_json(r.result)
    params = neutralise.visible_json(r.params, sort_keys=True)
    glass = "<br><b>BREAK-GLASS</b>" if r.break_glass else ""
    return (
        f'<tr data-action-id="{e(r.action_id)}">'
        f"<td>{e(r.requested_at.isoformat() if r.requested_at else '')}</td>"
        f"<td>{e(r.action or '')} on {e(r.target or '')}<br><code>{escape(params)}</code>"
        f'<br><span class="digest">{e(r.digest)}</span></td>'
        f"<td>{requester}</td>"
        f"<td>{e(r.policy_rule or '')} ({e(r.effect or '')}, {e(r.risk or '')})"
        f'<br><span class="digest">{e(r.policy_digest or "")}</span>'
        + (f"<br>allowed by window {e(r.allowed_by_window)}" if r.allowed_by_window else "")
        + "</td>"
        f"<td><ul>{decisions}</ul></td><td><ul>{refused}</ul></td><td><ul>{escalations}</ul></td>"
        f"<td>{e(r.status or 'in progress')}{glass}</td>"
        f"<td>{e(_human(r.time_to_decision))}</td>"
        f"<td>{escape(result)}</td>"
        "</tr>"
    )


def render(
    items: list[ActionRecord],
    fmt: ExportFormat,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    generated_at: datetime,
) -> str:
    """Render records in the chosen format; approval windows are listed apart from actions."""
    windows = [r.window for r in items if r.window is not None]
    items = [r for r in items if r.window is None]
    if fmt == "csv":
        return to_csv(items)
    summary = summarise(items, since, until)
    if fmt == "json":
        return to_json(items, summary, windows)
    return to_html(items, summary, generated_at=generated_at, windows=windows)
