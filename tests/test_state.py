"""The workflow's state: phases, the public status read from them, and counting decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signoff.models import (
    ActionRequest,
    ApprovalRequirement,
    Decision,
    DecisionKind,
    Principal,
    Status,
    Verdict,
)
from workflows.messages import Evaluation
from workflows.state import ActionState, Phase

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def pending(*approvals: ApprovalRequirement) -> ActionState:
    """A state waiting for `approvals`, with dba and security eligible now."""
    request = ActionRequest(
        action="noop", target="prod-db", justification="test", requester="agent:bot"
    )
    state = ActionState(request=request, created_at=NOW)
    state.evaluation = Evaluation(
        verdict=Verdict(
            effect="require_approval",
            rule_id="r",
            reason="r",
            risk="high",
            approvals=list(approvals),
            expires_after=timedelta(hours=1),
            policy_digest="0" * 64,
        ),
        requester=Principal(id="agent:bot", kind="agent", owner="dave"),
    )
    state.phase = Phase.PENDING
    state.eligible = ["dba", "security"]
    return state


def decision(state: ActionState, approver: str, kind: DecisionKind = "approve") -> Decision:
    return Decision(decision=kind, digest=state.digest, approver=approver, reason="because", at=NOW)


def test_a_new_state_is_evaluating_its_request() -> None:
    state = pending()
    fresh = ActionState(request=state.request, created_at=NOW)
    assert (fresh.phase, fresh.status, fresh.digest) == (
        Phase.EVALUATING,
        Status.EVALUATING,
        state.request.digest,
    )


def test_the_last_approval_the_quorum_needs_approves_and_counts_as_executing() -> None:
    state = pending(ApprovalRequirement(group="dba", min=2))
    state.accept(decision(state, "alice"), ["dba"])
    assert (state.phase, state.status, state.decided_at) == (
        Phase.PENDING,
        Status.PENDING_APPROVAL,
        None,
    )
    assert state.awaits_decisions
    state.accept(decision(state, "bob"), ["dba"])
    assert (state.phase, state.status, state.decided_at) == (
        Phase.APPROVED,
        Status.EXECUTING,
        NOW,
    )
    assert not state.awaits_decisions
    assert state.snapshot("act-1").eligible_groups == []


def test_a_widened_group_stands_in_for_any_requirement() -> None:
    state = pending(ApprovalRequirement(group="dba"))
    state.accept(decision(state, "carol"), ["security"])
    assert state.phase is Phase.APPROVED
    assert [p.approved_by for p in state.progress()] == [["carol"]]


def test_one_person_in_two_groups_counts_once() -> None:
    state = pending(ApprovalRequirement(group="dba"), ApprovalRequirement(group="security"))
    state.accept(decision(state, "alice"), ["dba", "security"])
    assert state.phase is Phase.PENDING


def test_a_denial_finishes_the_action_with_its_reason() -> None:
    state = pending(ApprovalRequirement(group="dba"))
    state.accept(decision(state, "alice", "deny"), ["dba"])
    assert (state.phase, state.status, state.error, state.decided_at) == (
        Phase.FINISHED,
        Status.DENIED,
        "Denied by alice: because",
        NOW,
    )


def test_the_snapshot_is_the_public_status() -> None:
    state = pending(ApprovalRequirement(group="dba"))
    snapshot = state.snapshot("act-1")
    assert (snapshot.id, snapshot.status, snapshot.eligible_groups, snapshot.owner) == (
        "act-1",
        Status.PENDING_APPROVAL,
        ["dba", "security"],
        "dave",
    )
    assert "Waits for: 0 of 1 from dba" in state.details()


@pytest.mark.parametrize("phase", [Phase.EXECUTING, Phase.AWAITING_REPORT])
def test_running_phases_are_executing(phase: Phase) -> None:
    state = pending()
    state.phase = phase
    assert state.status is Status.EXECUTING
    state.finish(Status.SUCCEEDED, None)
    assert (state.phase, state.status) == (Phase.FINISHED, Status.SUCCEEDED)


def test_only_a_terminal_status_finishes() -> None:
    with pytest.raises(AssertionError):
        pending().finish(Status.EXECUTING, None)
