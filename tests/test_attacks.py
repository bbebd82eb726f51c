"""A hostile review, black-box where it can be: an agent with only its token, and an SRE with
only Temporal access, try to get an action run that no independent human approved."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.ledger.store import Ledger
from signoff.models import CancelRequest
from tests.conftest import Gate, running_worker
from tests.gateway_fixtures import api, build_app
from tests.signing import SIGNER
from workers.settings import Settings
from workflows.action import ActionWorkflow

# Deny deletes, allow everything else: a rule an agent would love to dodge by spelling.
DENY_DELETE = """\
version: 1
default: {effect: allow}
rules:
  - {id: no-deletes, match: {action: http.request}, when: 'params.method == "DELETE"',
     effect: deny}
  - {id: sleep-gate, match: {action: noop}, when: 'params.sleep_seconds > 0',
     effect: require_approval, approvals: [{group: sre}], expires_after: 1h}
"""


@pytest.mark.parametrize("method", ["delete", "Delete", "dElEtE"])
async def test_a_lowercase_method_does_not_dodge_a_deny_on_the_normalised_one(
    client: Client, settings: Settings, ledger: Ledger, tmp_path: Path, method: str
) -> None:
    """The executor upper-cases the method; the policy must judge what the executor runs."""
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(DENY_DELETE), encoding="utf-8")
    edited = settings.model_copy(update={"policy": path})
    async with running_worker(client, edited, ledger):
        gate = Gate(client, edited)
        handle = await gate.submit(
            "billing-api", {"method": method, "path": "/invoices/1"}, action="http.request"
        )
        outcome = await handle.result()
    assert outcome.status.value == "denied_by_policy"
    assert outcome.verdict is not None
    assert outcome.verdict.rule_id == "no-deletes"
    assert outcome.result is None


async def test_a_param_given_as_a_string_is_judged_as_the_number_the_executor_runs(
    client: Client, settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    """`"5"` sleeps five seconds in the executor; to CEL it must be 5, not a string that errors."""
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(DENY_DELETE), encoding="utf-8")
    edited = settings.model_copy(update={"policy": path})
    async with running_worker(client, edited, ledger):
        gate = Gate(client, edited)
        handle = await gate.submit("box", {"sleep_seconds": "5"})
        current = await gate.wait_for(handle, "pending_approval")
        assert current.verdict is not None
        assert current.verdict.rule_id == "sleep-gate"
        assert current.verdict.condition_errors == []
        await handle.terminate("test over")


# --- NUL: Postgres cannot store it, so a message carrying one must never reach the workflow ---


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("who", "path", "body", "field"),
    [
        ("dave", "decisions", {"decision": "deny", "reason": "no\u0000"}, "body.reason"),
        ("bot", "cancel", {"reason": "oops\u0000"}, "body.reason"),
        ("bot", "report", {"result": {"rows": "a\u0000"}}, "body.result"),
        ("bot", "report", {"error": "boom\u0000"}, "body.error"),
    ],
)
async def test_a_nul_in_a_decision_cancel_or_report_is_a_422_and_the_action_stays_live(
    client: Client,
    settings: Settings,
    gate: Gate,
    who: str,
    path: str,
    body: dict[str, object],
    field: str,
) -> None:
    """A NUL used to wedge the handler on the ledger (retried forever; the API call hung)."""
    handle = await gate.submit("one-db")
    current = await gate.wait_for(handle, "pending_approval")
    if path == "decisions":
        body = {**body, "digest": current.digest}
    app = build_app(client, settings)
    async with api(app, who) as http:
        response = await asyncio.wait_for(
            http.post(f"/v1/actions/{handle.id}/{path}", json=body), timeout=30
        )
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert field in message
    assert "NUL" in message
    # Nothing changed, and the requester can still cancel it.
    cancelled = await asyncio.wait_for(
        handle.execute_update(
            ActionWorkflow.cancel, SIGNER.cancel(CancelRequest(by="agent:bot"), handle.id)
        ),
        timeout=30,
    )
    assert cancelled.status.value == "cancelled"
    assert cancelled.decisions == []


@pytest.mark.usefixtures("worker")
async def test_a_forged_decision_signal_with_a_nul_does_not_wedge_the_action(
    gate: Gate, ledger: Ledger
) -> None:
    """Someone with Temporal access signals a decision whose approver holds a NUL."""
    handle = await gate.submit("one-db")
    current = await gate.wait_for(handle, "pending_approval")
    forged = {
        "decision": "approve",
        "digest": current.digest,
        "reason": "",
        "approver": f"dave@example.com\u0000{uuid.uuid4().hex}",
        "channel": "api",
    }
    await handle.signal("decision", forged)
    cancelled = await asyncio.wait_for(
        handle.execute_update(
            ActionWorkflow.cancel, SIGNER.cancel(CancelRequest(by="agent:bot"), handle.id)
        ),
        timeout=30,
    )
    assert cancelled.status.value == "cancelled"
    outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert outcome.status.value == "cancelled"
    assert outcome.decisions == []
    assert outcome.result is None
