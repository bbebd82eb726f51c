"""A new request's admission: signature, then earlier runs, then the policy, in one activity.

Each step runs only when the one before let the request through, so a forged start never
reaches the ledger or the policy, and a second run of an executed action never reaches the
policy. Real parts: the suite's signing key, a real Postgres ledger, the test policy.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.admission import Admission
from activities.audit import AuditActivities
from activities.ledger.store import Ledger, create_pool
from activities.policy import PolicyActivities
from activities.verify import SignatureActivities
from policies.loader import load_directory, load_policy
from signoff.executor import registry
from signoff.models import ActionRequest, RefusalCode
from tests.conftest import DATA
from tests.pg import create_database
from tests.signing import KEYS, SIGNER
from workflows.messages import AdmissionCheck, RunCheck, VerifyInput
from workflows.signing import Signer, generate_key_pair, request_claims


def admission(ledger: Ledger) -> Admission:
    """The worker's admission over `ledger`, the suite's keys and the test policy."""
    policy = PolicyActivities(
        load_policy(DATA / "policy.yaml"),
        load_directory(DATA / "directory.yaml"),
        registry,
        channels=["console"],
    )
    return Admission(SignatureActivities(KEYS), AuditActivities(ledger), policy)


def check(signer: Signer, *, run_id: str = "run-1", action_id: str | None = None) -> AdmissionCheck:
    """A start of `noop` signed by `signer`, as the workflow asks for its admission."""
    action_id = action_id or f"act-{uuid.uuid4()}"
    request = signer.request(
        ActionRequest(
            action="noop",
            target="sandbox-1",
            params={},
            justification="testing",
            requester="agent:bot",
        ),
        action_id,
    )
    assert request.signature is not None
    return AdmissionCheck(
        verify=VerifyInput(
            signature=request.signature,
            expected=request_claims(request, action_id),
            now=datetime.now(UTC),
        ),
        run=RunCheck(action_id=action_id, run_id=run_id),
        request=request,
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
