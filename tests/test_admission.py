"""A new request's admission: signature, then earlier runs, then the policy, in one activity.

Each step runs only when the one before let the request through, so a forged start never
reaches the ledger or the policy, and a second run of an executed action never reaches the
policy. Shape v9: an admitted request's first rows are written there too, and only then.
Real parts: the suite's signing key, a real Postgres ledger, the test policy.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.admission import Admission
from activities.audit import LEDGER_CONFLICT, AuditActivities
from activities.ledger.store import Ledger, create_pool
from activities.policy import PolicyActivities
from activities.verify import SignatureActivities
from policies.loader import load_directory, load_policy
from signoff.executor import registry
from signoff.models import ActionRequest, RefusalCode
from tests.conftest import DATA
from tests.pg import create_database
from tests.signing import KEYS, SIGNER
from workflows.messages import (
    AdmissionCheck,
    AdmissionRecord,
    AuditEvent,
    AuditKind,
    ExecutionClaim,
    RunCheck,
    VerifyInput,
)
from workflows.signing import Signer, generate_key_pair, request_claims


def admission(ledger: Ledger, policy_file: Path = DATA / "policy.yaml") -> Admission:
    """The worker's admission over `ledger`, the suite's keys and the test policy."""
    policy = PolicyActivities(
        load_policy(policy_file),
        load_directory(DATA / "directory.yaml"),
        registry,
        channels=["console"],
    )
    return Admission(SignatureActivities(KEYS), AuditActivities(ledger), policy)


def check(
    signer: Signer,
    *,
    run_id: str = "run-1",
    action_id: str | None = None,
    target: str = "sandbox-1",
    record: bool = False,
) -> AdmissionCheck:
    """A start of `noop` signed by `signer`, as the workflow asks for its admission.

    `record`: as a shape-v9 run asks, with the request's row for the admission to write.
    """
    action_id = action_id or f"act-{uuid.uuid4()}"
    request = signer.request(
        ActionRequest(
            action="noop",
            target=target,
            params={},
            justification="testing",
            requester="agent:bot",
        ),
        action_id,
    )
    assert request.signature is not None
    rows = AdmissionRecord(
        requested=AuditEvent(
            action_id=action_id,
            run_id=run_id,
            seq=0,
            kind=AuditKind.REQUESTED,
            digest=request.digest,
            actor=request.requester,
            at=datetime.now(UTC),
            payload=request.model_dump(mode="json"),
        ),
        claim=ExecutionClaim(action_id=action_id, run_id=run_id, digest=request.digest),
    )
    return AdmissionCheck(
        verify=VerifyInput(
            signature=request.signature,
            expected=request_claims(request, action_id),
            now=datetime.now(UTC),
        ),
        run=RunCheck(action_id=action_id, run_id=run_id),
        request=request,
        record=rows if record else None,
    )


@pytest.fixture
async def own_ledger(postgres_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh database, so its claims belong to this test alone."""
    ledger = await Ledger.connect(await create_database(postgres_url), migrate=True)
    yield ledger
    await ledger.close()


@pytest.fixture
async def unreachable_ledger() -> AsyncIterator[Ledger]:
    """A ledger whose Postgres nobody listens for: any query on it fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = Ledger(await create_pool(f"postgresql://nobody@127.0.0.1:{port}/none"))
    yield ledger
    await ledger.close()


async def test_a_signed_fresh_request_gets_the_policys_evaluation(own_ledger: Ledger) -> None:
    result = await ActivityEnvironment().run(admission(own_ledger).admit_request, check(SIGNER))
    assert result.verified.code is None
    assert result.verified.id
    assert result.earlier is not None
    assert result.earlier.executed_by is None
    assert result.evaluation is not None
    assert result.evaluation.verdict.effect == "allow"


async def test_a_forged_start_is_refused_before_the_ledger_or_policy_is_asked(
    unreachable_ledger: Ledger, tmp_path: Path
) -> None:
    # Signed with a key the workers do not trust. Had the ledger been asked, the unreachable
    # database would have failed the activity instead of answering.
    generate_key_pair(tmp_path / "forger.pem", tmp_path / "public" / "forger.pem")
    forger = Signer.load(tmp_path / "forger.pem")
    gate = admission(unreachable_ledger)
    result = await ActivityEnvironment().run(gate.admit_request, check(forger))
    assert result.verified.code is RefusalCode.UNKNOWN_KEY
    assert result.earlier is None
    assert result.evaluation is None


async def test_a_second_run_of_an_executed_action_never_reaches_the_policy(
    own_ledger: Ledger,
) -> None:
    action_id = f"act-{uuid.uuid4()}"
    first = await own_ledger.claim_execution(action_id, "run-1", "d" * 64)
    assert first.granted
    gate = admission(own_ledger)
    again = await ActivityEnvironment().run(
        gate.admit_request, check(SIGNER, run_id="run-2", action_id=action_id)
    )
    assert again.verified.code is None
    assert again.earlier is not None
    assert again.earlier.executed_by == "run-1"
    assert again.evaluation is None
    # The run that holds the claim is not "another run": it is admitted.
    same = await ActivityEnvironment().run(
        gate.admit_request, check(SIGNER, run_id="run-1", action_id=action_id)
    )
    assert same.earlier is not None
    assert same.earlier.executed_by is None
    assert same.evaluation is not None


async def test_an_allowed_request_writes_its_rows_then_claims_and_a_retry_adds_nothing(
    own_ledger: Ledger,
) -> None:
    gate = admission(own_ledger)
    asked = check(SIGNER, record=True)
    result = await ActivityEnvironment().run(gate.admit_request, asked)
    assert result.evaluation is not None
    assert result.evaluation.verdict.effect == "allow"
    rows = await own_ledger.events(asked.run.action_id)
    assert [(r.seq, r.kind, r.run_id) for r in rows] == [
        (0, "requested", "run-1"),
        (1, "verdict", "run-1"),
        (2, "execution_started", "run-1"),
    ]
    assert rows[2].payload["runs_in"] == "worker"
    assert result.claim is not None
    assert result.claim.granted
    # A workflow task retried after a crash runs the admission again: same rows, same claim.
    again = await ActivityEnvironment().run(gate.admit_request, asked)
    assert again.claim is not None
    assert again.claim.granted
    assert len(await own_ledger.events(asked.run.action_id)) == 3
    # Another run of the same action id finds this run's claim and is refused before policy.
    other = check(SIGNER, run_id="run-2", action_id=asked.run.action_id, record=True)
    refused = await ActivityEnvironment().run(gate.admit_request, other)
    assert refused.earlier is not None
    assert refused.earlier.executed_by == "run-1"
    assert refused.evaluation is None
    assert len(await own_ledger.events(asked.run.action_id)) == 3


async def test_a_request_awaiting_approval_writes_request_and_verdict_but_claims_nothing(
    own_ledger: Ledger,
) -> None:
    asked = check(SIGNER, target="one-db", record=True)
    result = await ActivityEnvironment().run(admission(own_ledger).admit_request, asked)
    assert result.evaluation is not None
    assert result.evaluation.verdict.effect == "require_approval"
    assert result.claim is None
    rows = await own_ledger.events(asked.run.action_id)
    assert [r.kind for r in rows] == ["requested", "verdict"]
    assert rows[1].payload["effect"] == "require_approval"
    assert await own_ledger.executed_by(asked.run.action_id, other_than="nobody") is None


async def test_a_forged_start_asking_for_its_rows_still_never_reaches_the_ledger(
    unreachable_ledger: Ledger, tmp_path: Path
) -> None:
    generate_key_pair(tmp_path / "forger.pem", tmp_path / "public" / "forger.pem")
    forger = Signer.load(tmp_path / "forger.pem")
    result = await ActivityEnvironment().run(
        admission(unreachable_ledger).admit_request, check(forger, record=True)
    )
    assert result.verified.code is RefusalCode.UNKNOWN_KEY
    assert result.evaluation is None
    assert result.claim is None


async def test_a_policy_changed_before_a_retry_fails_closed_and_keeps_the_first_rows(
    own_ledger: Ledger, tmp_path: Path
) -> None:
    # The first attempt was allowed and wrote its rows; its worker died before the result
    # reached Temporal, and the retry runs under a policy that now denies the action. The
    # ledger refuses to rewrite the verdict, for good: the run fails, and nothing executes.
    asked = check(SIGNER, record=True)
    first = await ActivityEnvironment().run(admission(own_ledger).admit_request, asked)
    assert first.evaluation is not None
    assert first.evaluation.verdict.effect == "allow"
    stricter = tmp_path / "policy.yaml"
    stricter.write_text(
        (DATA / "policy.yaml")
        .read_text()
        .replace(
            'match: {action: [noop, report.build], target: "sandbox*"}\n    effect: allow',
            'match: {action: [noop, report.build], target: "sandbox*"}\n    effect: deny',
        )
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(admission(own_ledger, stricter).admit_request, asked)
    assert refused.value.type == LEDGER_CONFLICT
    assert refused.value.non_retryable
    rows = await own_ledger.events(asked.run.action_id)
    assert [r.kind for r in rows] == ["requested", "verdict", "execution_started"]
    assert rows[1].payload["effect"] == "allow"
