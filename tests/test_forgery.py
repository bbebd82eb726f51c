"""Someone with direct Temporal access (UI, CLI, SDK) but not the gateway's key forges nothing.

Each attack talks to the real dev server the way `temporal workflow signal/update/start` would,
and each must be refused, recorded in state, history and ledger, and change nothing.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.ledger.store import Ledger
from signoff.client import ActionDenied, outcome
from signoff.models import (
    ActionRequest,
    ActionStatus,
    AmendRequest,
    CancelRequest,
    DecisionRequest,
    ExecutionReport,
    RefusalCode,
    Signature,
    Status,
)
from tests.cli import run_signoff
from tests.conftest import Gate
from tests.signing import KEYS, SIGNER
from tests.test_replay import replayer
from workers.gateway.service import load_signer
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.errors import DECISION_REFUSED, MESSAGE_REFUSED
from workflows.signing import (
    KeySet,
    Signer,
    SigningError,
    decision_claims,
    generate_key_pair,
    request_claims,
)

Handle = WorkflowHandle[ActionWorkflow, ActionStatus]


def forged_decision(digest: str, approver: str = "alice@example.com") -> dict[str, Any]:
    """What an SRE types into `temporal workflow update/signal --input`: no signature."""
    return {"approver": approver, "decision": "approve", "digest": digest, "reason": "lgtm"}


async def refused_codes(handle: Handle, count: int) -> list[RefusalCode]:
    """The refusal codes in the action's state, once `count` refusals are there (bounded)."""
    status = await handle.query(ActionWorkflow.status)
    for _ in range(200):
        if len(status.refused) >= count:
            break
        await asyncio.sleep(0.05)
        status = await handle.query(ActionWorkflow.status)
    return [r.code for r in status.refused]


async def ledger_refusals(ledger: Ledger, action_id: str) -> list[tuple[str, str]]:
    """(message kind, code) of every refusal the ledger holds for the action."""
    rows = await ledger.events(action_id)
    return [(str(r.payload["kind"]), str(r.payload["code"])) for r in rows if r.kind == "refused"]


async def assert_unchanged(handle: Handle, ledger: Ledger, status: str) -> None:
    """No decision counted, still in `status`, and nothing ever started executing."""
    current = await handle.query(ActionWorkflow.status)
    assert current.status.value == status
    assert current.decisions == []
    kinds = [r.kind for r in await ledger.events(handle.id)]
    assert "decision" not in kinds
    assert "execution_started" not in kinds


async def refused_update(handle: Handle, request: Any) -> ApplicationError:
    """Send `decide` and return the failure it must end with."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("decide", request, result_type=ActionStatus)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == DECISION_REFUSED
    return cause


@pytest.mark.usefixtures("worker")
async def test_forged_decision_signal_is_refused_and_recorded(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("one-db")
    status = await gate.wait_for(handle, "pending_approval")
    # As `temporal workflow signal --name decision --input '{...}'` sends it.
    await handle.signal("decision", forged_decision(status.digest))
    assert await refused_codes(handle, 1) == [RefusalCode.UNSIGNED]
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [("decision", "unsigned")]
    # The genuine approval still works afterwards: the forgery blocked nothing either.
    await gate.decide(handle, "alice@example.com")
    assert (await handle.result()).status is Status.SUCCEEDED


@pytest.mark.usefixtures("worker")
async def test_forged_decide_update_is_refused_and_recorded(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("one-db")
    status = await gate.wait_for(handle, "pending_approval")
    cause = await refused_update(handle, forged_decision(status.digest))
    assert cause.details[0]["code"] == "unsigned"
    # A real signature of another message pasted on: the content no longer matches it.
    genuine = SIGNER.decision(
        DecisionRequest(approver="dave@example.com", decision="deny", digest=status.digest), "x"
    )
    pasted = DecisionRequest(
        approver="alice@example.com",
        decision="approve",
        digest=status.digest,
        signature=genuine.signature,
    )
    assert (await refused_update(handle, pasted)).details[0]["code"] == "signature_mismatch"
    # The right claims with a signature that is not the key's.
    signed = SIGNER.decision(
        DecisionRequest(approver="alice@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    assert signed.signature is not None
    tampered = signed.model_copy(
        update={"signature": signed.signature.model_copy(update={"sig": "A" * 86 + "=="})}
    )
    assert (await refused_update(handle, tampered)).details[0]["code"] == "bad_signature"
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [
        ("decision", "unsigned"),
        ("decision", "signature_mismatch"),
        ("decision", "bad_signature"),
    ]


@pytest.mark.usefixtures("worker")
async def test_idp_groups_added_to_a_signed_decision_are_refused(
    gate: Gate, ledger: Ledger
) -> None:
    handle = await gate.submit("one-db", {"idp": True})
    status = await gate.wait_for(handle, "pending_approval")
    # The gateway's genuine signature for a person the directory does not list, without
    # groups: the worker finds nobody, and the decision is refused unknown_principal.
    genuine = SIGNER.decision(
        DecisionRequest(approver="zoe@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    assert (await refused_update(handle, genuine)).details[0]["code"] == "unknown_principal"
    # Someone with Temporal access adds the groups to the payload: not what was signed.
    signed = SIGNER.decision(
        DecisionRequest(approver="zoe@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    forged = signed.model_copy(update={"approver_groups": ["dba"]})
    cause = await refused_update(handle, forged)
    assert cause.details[0]["code"] == "signature_mismatch"
    assert "approver_groups" in cause.message
    # Groups signed for one set and swapped for another are refused the same way.
    widened = SIGNER.decision(
        DecisionRequest(
            approver="zoe@example.com",
            decision="approve",
            digest=status.digest,
            approver_groups=["security"],
        ),
        handle.id,
    ).model_copy(update={"approver_groups": ["dba"]})
    assert (await refused_update(handle, widened)).details[0]["code"] == "signature_mismatch"
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [
        ("decision", "unknown_principal"),
        ("decision", "signature_mismatch"),
        ("decision", "signature_mismatch"),
    ]
    # The gateway's own signature over the groups is what lets the person decide.
    vouched = SIGNER.decision(
        DecisionRequest(
            approver="zoe@example.com",
            decision="approve",
            digest=status.digest,
            approver_groups=["dba"],
        ),
        handle.id,
    )
    approved = await handle.execute_update("decide", vouched, result_type=ActionStatus)
    assert [d.approver for d in approved.decisions] == ["zoe@example.com"]
    assert (await handle.result()).status is Status.SUCCEEDED


def idp_amendment(status: ActionStatus, groups: list[str] | None) -> AmendRequest:
    """zoe's amendment (rows=1) as the gateway signs it; `groups`: her vouched IdP groups."""
    successor_id = f"act-{uuid.uuid4().hex}"
    successor = status.request.model_copy(
        update={
            "params": {**status.request.params, "rows": 1},
            "amended_from": status.id,
            "amended_by": "zoe@example.com",
            "signature": None,
        }
    )
    amendment = AmendRequest(
        by="zoe@example.com",
        digest=status.digest,
        reason="fewer rows",
        successor_id=successor_id,
        successor=SIGNER.request(successor, successor_id),
        amender_groups=groups,
    )
    return SIGNER.amend(amendment, status.id)


async def refused_amend(handle: Handle, request: AmendRequest) -> ApplicationError:
    """Send `amend` and return the failure it must end with."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("amend", request, result_type=ActionStatus)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == DECISION_REFUSED
    return cause


@pytest.mark.usefixtures("worker")
async def test_idp_groups_added_to_a_signed_amendment_are_refused(
    gate: Gate, ledger: Ledger
) -> None:
    handle = await gate.submit("one-db", {"idp": "amend"})
    status = await gate.wait_for(handle, "pending_approval")
    # Genuinely signed without groups: the worker finds nobody called zoe.
    genuine = idp_amendment(status, None)
    assert (await refused_amend(handle, genuine)).details[0]["code"] == "unknown_principal"
    # Groups added afterwards, or swapped for others, are not what the gateway signed.
    forged = genuine.model_copy(update={"amender_groups": ["dba"]})
    cause = await refused_amend(handle, forged)
    assert cause.details[0]["code"] == "signature_mismatch"
    assert "amender_groups" in cause.message
    widened = idp_amendment(status, ["security"]).model_copy(update={"amender_groups": ["dba"]})
    assert (await refused_amend(handle, widened)).details[0]["code"] == "signature_mismatch"
    # Vouched groups the rule does not ask for: not eligible.
    outside = idp_amendment(status, ["security"])
    assert (await refused_amend(handle, outside)).details[0]["code"] == "not_eligible"
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [
        ("amend", "unknown_principal"),
        ("amend", "signature_mismatch"),
        ("amend", "signature_mismatch"),
        ("amend", "not_eligible"),
    ]
    # The gateway's own signature over her groups lets the IdP person amend.
    amended = await handle.execute_update(
        "amend", idp_amendment(status, ["dba"]), result_type=ActionStatus
    )
    assert amended.status is Status.SUPERSEDED
    assert amended.superseded_by is not None


@pytest.mark.usefixtures("worker")
async def test_decision_signed_for_another_action_is_refused(gate: Gate, ledger: Ledger) -> None:
    first = await gate.submit("one-db", {"n": 1})
    second = await gate.submit("one-db", {"n": 1})
    status = await gate.wait_for(second, "pending_approval")
    signed_for_first = SIGNER.decision(
        DecisionRequest(approver="alice@example.com", decision="approve", digest=status.digest),
        first.id,
    )
    cause = await refused_update(second, signed_for_first)
    assert cause.details[0]["code"] == "signature_mismatch"
    assert "action_id" in cause.message
    await assert_unchanged(second, ledger, "pending_approval")


@pytest.mark.usefixtures("worker")
async def test_forged_start_naming_another_requester_is_rejected(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    # sandbox-1 is allowed without approval: a forged start would run at once.
    request = ActionRequest(
        action="noop", target="sandbox-1", justification="forged", requester="agent:bot"
    )
    handle = await client.start_workflow(
        ActionWorkflow.run, request, id=f"act-{uuid.uuid4()}", task_queue=settings.task_queue
    )
    outcome = await handle.result()
    assert outcome.status is Status.REJECTED
    assert outcome.error is not None
    assert "unsigned" in outcome.error
    assert outcome.verdict is None  # never evaluated
    assert [r.code for r in outcome.refused] == [RefusalCode.UNSIGNED]
    kinds = [r.kind for r in await ledger.events(handle.id)]
    assert kinds == ["requested", "refused", "outcome"]
    assert await ledger_refusals(ledger, handle.id) == [("request", "unsigned")]


@pytest.mark.usefixtures("worker")
async def test_genuine_request_with_another_requester_or_id_is_rejected(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    genuine_id = f"act-{uuid.uuid4()}"
    genuine = SIGNER.request(
        ActionRequest(
            action="noop", target="sandbox-1", justification="mine", requester="agent:bot"
        ),
        genuine_id,
    )
    # Its signature, with the requester swapped for someone with more rights.
    swapped = genuine.model_copy(update={"requester": "dave@example.com"})
    one = await client.start_workflow(
        ActionWorkflow.run, swapped, id=genuine_id, task_queue=settings.task_queue
    )
    # The whole signed request again, under an id it was not signed for.
    two = await client.start_workflow(
        ActionWorkflow.run, genuine, id=f"act-{uuid.uuid4()}", task_queue=settings.task_queue
    )
    for handle in (one, two):
        outcome = await handle.result()
        assert outcome.status is Status.REJECTED
        assert [r.code for r in outcome.refused] == [RefusalCode.SIGNATURE_MISMATCH]
        assert "execution_started" not in [r.kind for r in await ledger.events(handle.id)]


@pytest.mark.usefixtures("worker")
async def test_replayed_genuine_decision_is_refused(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("two-keys")  # needs two from security
    status = await gate.wait_for(handle, "pending_approval")
    genuine = SIGNER.decision(
        DecisionRequest(approver="bob@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    await handle.execute_update(ActionWorkflow.decide, genuine)
    # The same signed message again, as update and as signal: one approval stays one.
    assert (await refused_update(handle, genuine)).details[0]["code"] == "replayed"
    await handle.signal(ActionWorkflow.decision, genuine)
    assert await refused_codes(handle, 2) == [RefusalCode.REPLAYED, RefusalCode.REPLAYED]
    current = await handle.query(ActionWorkflow.status)
    assert current.status is Status.PENDING_APPROVAL
    assert [d.approver for d in current.decisions] == ["bob@example.com"]
    assert await ledger_refusals(ledger, handle.id) == [
        ("decision", "replayed"),
        ("decision", "replayed"),
    ]


@pytest.mark.usefixtures("worker")
async def test_decision_signed_by_an_unknown_key_is_refused(gate: Gate, ledger: Ledger) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kid = generate_key_pair(Path(tmp) / "k.pem", Path(tmp) / "k.pub.pem")
        rogue = Signer.load(Path(tmp) / "k.pem")
    assert kid not in KEYS.keys
    handle = await gate.submit("one-db")
    status = await gate.wait_for(handle, "pending_approval")
    forged = rogue.decision(
        DecisionRequest(approver="alice@example.com", decision="approve", digest=status.digest),
        handle.id,
    )
    cause = await refused_update(handle, forged)
    assert cause.details[0]["code"] == "unknown_key"
    assert kid in cause.message
    # Claiming the trusted key's id does not help: the signature is not that key's.
    assert forged.signature is not None
    relabelled = forged.model_copy(
        update={"signature": forged.signature.model_copy(update={"kid": SIGNER.kid})}
    )
    assert (await refused_update(handle, relabelled)).details[0]["code"] == "bad_signature"
    await assert_unchanged(handle, ledger, "pending_approval")


@pytest.mark.usefixtures("worker")
async def test_stale_decision_is_refused(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("one-db")
    status = await gate.wait_for(handle, "pending_approval")
    decision = DecisionRequest(
        approver="alice@example.com", decision="approve", digest=status.digest
    )
    old: Signature = SIGNER.sign(
        decision_claims(decision, handle.id), now=datetime.now(UTC) - timedelta(hours=1)
    )
    cause = await refused_update(handle, decision.model_copy(update={"signature": old}))
    assert cause.details[0]["code"] == "stale_signature"
    future = SIGNER.sign(
        decision_claims(decision, handle.id), now=datetime.now(UTC) + timedelta(hours=1)
    )
    cause = await refused_update(handle, decision.model_copy(update={"signature": future}))
    assert cause.details[0]["code"] == "stale_signature"
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [
        ("decision", "stale_signature"),
        ("decision", "stale_signature"),
    ]


@pytest.mark.usefixtures("worker")
async def test_forged_cancel_is_refused_and_recorded(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("one-db")
    await gate.wait_for(handle, "pending_approval")
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(ActionWorkflow.cancel, CancelRequest(by="agent:bot"))
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == MESSAGE_REFUSED
    await assert_unchanged(handle, ledger, "pending_approval")
    assert await ledger_refusals(ledger, handle.id) == [("cancel", "unsigned")]


@pytest.mark.usefixtures("worker")
async def test_forged_caller_report_is_refused_and_recorded(gate: Gate, ledger: Ledger) -> None:
    handle = await gate.submit("sandbox-1", action="report.build", execution="caller")
    await gate.wait_for(handle, "executing")
    forged = ExecutionReport(by="agent:bot", result={"rows": 0})
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(ActionWorkflow.report, forged)
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == MESSAGE_REFUSED
    current = await handle.query(ActionWorkflow.status)
    assert current.status is Status.EXECUTING
    assert current.result is None
    assert await ledger_refusals(ledger, handle.id) == [("report", "unsigned")]
    genuine = SIGNER.report(ExecutionReport(by="agent:bot", result={"rows": 3}), handle.id)
    final = await handle.execute_update(ActionWorkflow.report, genuine)
    assert final.status is Status.SUCCEEDED
    assert final.result == {"rows": 3}


def test_key_set_reads_a_directory_and_names_keys_by_fingerprint(tmp_path: Path) -> None:
    old = generate_key_pair(tmp_path / "old.key", tmp_path / "public" / "old.pem")
    new = generate_key_pair(tmp_path / "new.key", tmp_path / "public" / "new.pem")
    assert set(KeySet.load(tmp_path / "public").keys) == {old, new}
    assert Signer.load(tmp_path / "new.key").kid == new
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600


def test_gateway_without_a_signing_key_says_which_setting_is_missing() -> None:
    with pytest.raises(SigningError, match="SIGNOFF_SIGNING_KEY is not set"):
        load_signer(Settings(signing_key=None))


def test_worker_without_public_keys_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SIGNOFF_VERIFY_KEYS"}
    result = run_signoff("worker", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "SIGNOFF_VERIFY_KEYS is not set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("worker")
async def test_forged_decision_delivered_with_the_start_is_refused_and_replays(
    gate: Gate, client: Client, settings: Settings, ledger: Ledger
) -> None:
    # Signal-with-start: the decision handler runs in the first activation, before run().
    action_id = f"act-{uuid.uuid4()}"
    request = SIGNER.request(
        ActionRequest(action="noop", target="one-db", justification="x", requester="agent:bot"),
        action_id,
    )
    handle = await client.start_workflow(
        ActionWorkflow.run,
        request,
        id=action_id,
        task_queue=settings.task_queue,
        start_signal="decision",
        start_signal_args=[forged_decision(request.digest)],
    )
    assert await refused_codes(handle, 1) == [RefusalCode.UNSIGNED]
    await gate.wait_for(handle, "pending_approval")
    await assert_unchanged(handle, ledger, "pending_approval")
    await gate.decide(handle, "alice@example.com")
    assert (await handle.result()).status is Status.SUCCEEDED
    history = await handle.fetch_history()
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None


def test_the_sdk_reports_a_rejected_request_as_denied_with_the_reason() -> None:
    request = ActionRequest(action="noop", target="x", justification="x", requester="agent:bot")
    status = ActionStatus(
        id="act-1",
        digest=request.digest,
        request=request,
        status=Status.REJECTED,
        created_at=datetime.now(UTC),
        error="request refused (unsigned): no gateway signature",
    )
    with pytest.raises(ActionDenied, match="Rejected before evaluation: request refused"):
        outcome(status)


@pytest.mark.usefixtures("worker")
async def test_a_decision_signed_for_an_earlier_run_of_the_same_id_is_refused(
    gate: Gate, client: Client, settings: Settings, ledger: Ledger
) -> None:
    action_id = f"act-{uuid.uuid4()}"
    request = ActionRequest(
        action="noop", target="one-db", justification="x", requester="agent:bot"
    )
    first = await client.start_workflow(
        ActionWorkflow.run,
        SIGNER.request(request, action_id),
        id=action_id,
        task_queue=settings.task_queue,
    )
    await gate.wait_for(first, "pending_approval")
    # alice's approval of the first run, taken two minutes ago (still within the maximum age).
    earlier = SIGNER.sign(
        decision_claims(
            DecisionRequest(
                approver="alice@example.com", decision="approve", digest=request.digest
            ),
            action_id,
        ),
        now=datetime.now(UTC) - timedelta(minutes=2),
    )
    await first.terminate("a second run under the same id")
    second = await client.start_workflow(
        ActionWorkflow.run,
        SIGNER.request(request, action_id),
        id=action_id,
        task_queue=settings.task_queue,
    )
    await gate.wait_for(second, "pending_approval")
    copied = DecisionRequest(
        approver="alice@example.com", decision="approve", digest=request.digest, signature=earlier
    )
    cause = await refused_update(second, copied)
    assert cause.details[0]["code"] == "stale_signature"
    assert "earlier run" in cause.message
    current = await second.query(ActionWorkflow.status)
    assert current.status is Status.PENDING_APPROVAL
    assert current.decisions == []


def test_a_request_must_be_signed_just_before_its_start() -> None:
    request = ActionRequest(action="noop", target="x", justification="x", requester="agent:bot")
    start = datetime.now(UTC)
    fresh = SIGNER.request(request, "act-1", now=start - timedelta(seconds=30))
    copied = SIGNER.request(request, "act-1", now=start - timedelta(minutes=5))
    assert fresh.signature is not None
    assert copied.signature is not None
    claims = request_claims(request, "act-1")
    assert KEYS.verify(fresh.signature, claims, now=start).code is None
    assert KEYS.verify(copied.signature, claims, now=start).code is RefusalCode.STALE_SIGNATURE
