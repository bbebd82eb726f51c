"""Who is party, who may decide now, who may view, and why a decision is refused: no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from signoff.models import (
    ActionRequest,
    ActionStatus,
    ApprovalRequirement,
    Decision,
    DecisionRefused,
    DecisionRequest,
    EscalationStage,
    Principal,
    RefusalCode,
    Status,
    Verdict,
)
from workflows import rules

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
REQUESTER = "agent:bot"
OWNER = "dave@example.com"
BOSS = "erin@example.com"


def action(**changes: Any) -> ActionStatus:
    """A pending action needing one of dba, widened to security after 30 minutes."""
    request = ActionRequest(
        action="sql.execute",
        target="prod-db",
        params={"sql": "delete from sessions"},
        justification="clean up",
        requester=REQUESTER,
        on_behalf_of=changes.pop("on_behalf_of", BOSS),
    )
    fields: dict[str, Any] = {
        "id": "act-test",
        "digest": request.digest,
        "request": request,
        "status": Status.PENDING_APPROVAL,
        "verdict": Verdict(
            effect="require_approval",
            rule_id="prod-writes",
            reason="writes to prod",
            risk="high",
            approvals=[ApprovalRequirement(group="dba", min=1)],
            escalation=[EscalationStage(after=timedelta(minutes=30), add_groups=["security"])],
            expires_after=timedelta(hours=1),
            policy_digest="0" * 64,
        ),
        "eligible_groups": ["dba"],
        "created_at": NOW,
        "owner": OWNER,
    }
    return ActionStatus(**(fields | changes))


def human(id: str, *groups: str) -> Principal:
    return Principal(id=id, kind="human", groups=list(groups))


def decision(status: ActionStatus, approver: str, **changes: Any) -> DecisionRequest:
    return DecisionRequest(
        **({"decision": "approve", "digest": status.digest, "approver": approver} | changes)
    )


def decided(status: ActionStatus, approver: str) -> Decision:
    return Decision(**decision(status, approver).model_dump(), at=NOW)


def refusal(code: RefusalCode, message: str) -> DecisionRefused:
    return DecisionRefused(code=code, message=message)


# --- parties ----------------------------------------------------------------------------------


def test_parties_are_the_requester_whom_it_is_for_and_the_agents_owner() -> None:
    assert rules.parties(action()) == {
        REQUESTER: "the requester",
        BOSS: "the principal it is on behalf of",
        OWNER: "the requesting agent's owner",
    }
    assert rules.parties(action(on_behalf_of=None, owner=None)) == {REQUESTER: "the requester"}


def test_the_owner_at_decision_time_is_a_party_too() -> None:
    found = rules.parties(action(), owner_now="frank@example.com")
    assert found["frank@example.com"] == "the requesting agent's owner"
    # The same owner then and now is named once, as at request time.
    assert rules.parties(action(), owner_now=OWNER) == rules.parties(action())


def test_party_to() -> None:
    status = action()
    assert all(rules.party_to(p, status) for p in (REQUESTER, BOSS, OWNER))
    assert not rules.party_to("alice@example.com", status)


# --- refusals that need no identity ---------------------------------------------------------


@pytest.mark.parametrize(
    "state", [Status.EVALUATING, Status.EXECUTING, Status.DENIED, Status.CANCELLED]
)
def test_only_a_pending_action_is_decided(state: Status) -> None:
    status = action(status=state)
    assert rules.decision_refusal(status, decision(status, "alice")) == refusal(
        RefusalCode.NOT_PENDING, f"the action is {state.value}, not pending approval"
    )


def test_a_decision_on_a_different_digest_is_refused() -> None:
    status = action()
    other = "f" * 64
    assert rules.decision_refusal(status, decision(status, "alice", digest=other)) == refusal(
        RefusalCode.DIGEST_MISMATCH,
        f"digest {other[:12]}… does not match the action ({status.digest[:12]}…); "
        "you were shown a different action",
    )


def test_each_person_decides_once() -> None:
    status = action(decisions=[decided(action(), "alice")])
    assert rules.decision_refusal(status, decision(status, "alice")) == refusal(
        RefusalCode.DUPLICATE, "alice has already decided this action"
    )
    assert rules.decision_refusal(status, decision(status, "bob")) is None


def test_a_denial_needs_a_reason() -> None:
    status = action()
    assert rules.decision_refusal(
        status, decision(status, "alice", decision="deny", reason="  ")
    ) == refusal(RefusalCode.MISSING_REASON, "a denial needs a reason, so the agent learns why")
    reasoned = decision(status, "alice", decision="deny", reason="no")
    assert rules.decision_refusal(status, reasoned) is None


def test_state_is_checked_before_the_digest() -> None:
    status = action(status=Status.EXPIRED)
    found = rules.decision_refusal(status, decision(status, "alice", digest="f" * 64))
    assert found is not None
    assert found.code is RefusalCode.NOT_PENDING


# --- who may decide -------------------------------------------------------------------------


def test_an_unknown_principal_never_decides() -> None:
    assert rules.approver_refusal(action(), "ghost", None) == refusal(
        RefusalCode.UNKNOWN_PRINCIPAL, "ghost is not in the directory"
    )


def test_agents_never_decide_whatever_their_groups() -> None:
    agent = Principal(id="agent:other", kind="agent", groups=["dba"])
    assert rules.approver_refusal(action(), agent.id, agent) == refusal(
        RefusalCode.AGENT_APPROVER, "agent:other is an agent; agents never decide actions"
    )
    assert not rules.can_decide_now(agent, action())


@pytest.mark.parametrize(
    ("who", "how"),
    [
        (REQUESTER, "the requester"),
        (BOSS, "the principal it is on behalf of"),
        (OWNER, "the requesting agent's owner"),
    ],
)
def test_nobody_decides_their_own_action(who: str, how: str) -> None:
    person = human(who, "dba")
    assert rules.approver_refusal(action(), who, person) == refusal(
        RefusalCode.SELF_APPROVAL, f"{who} is {how}; nobody decides their own action"
    )
    assert not rules.can_decide_now(person, action())


# --- a decision re-checked after its decider was looked up ---------------------------------


def test_who_refuses_a_late_decision_outranks_that_it_is_late() -> None:
    # It arrived while pending; another decision ended that during the lookup.
    approved = action(status=Status.EXECUTING)
    agent = Principal(id="agent:other", kind="agent", groups=["dba"])
    late = rules.decision_refusal(approved, decision(approved, agent.id))
    assert late is not None
    assert late.code is RefusalCode.NOT_PENDING
    who = rules.identity_refusal(approved, agent.id, agent)
    assert rules.after_lookup(late, who) == refusal(
        RefusalCode.AGENT_APPROVER, "agent:other is an agent; agents never decide actions"
    )
    for refused_as, principal in [
        (RefusalCode.SELF_APPROVAL, human(REQUESTER, "dba")),
        (RefusalCode.UNKNOWN_PRINCIPAL, None),
    ]:
        who = rules.identity_refusal(approved, REQUESTER, principal)
        assert rules.after_lookup(late, who).code is refused_as  # type: ignore[union-attr]


def test_a_late_decision_by_someone_who_could_decide_is_late() -> None:
    approved = action(status=Status.EXECUTING)
    # Eligibility depends on the stage, so it does not outrank the action's state.
    for person in [human("frank@example.com", "dba"), human("frank@example.com", "nobody")]:
        late = rules.decision_refusal(approved, decision(approved, person.id))
        assert rules.identity_refusal(approved, person.id, person) is None
        assert rules.after_lookup(late, None) is late


def test_only_lateness_gives_way_to_who() -> None:
    pending = action()
    agent = Principal(id="agent:other", kind="agent", groups=["dba"])
    who = rules.identity_refusal(pending, agent.id, agent)
    wrong = rules.decision_refusal(pending, decision(pending, agent.id, digest="f" * 64))
    assert wrong is not None
    assert wrong.code is RefusalCode.DIGEST_MISMATCH
    assert rules.after_lookup(wrong, who) is wrong
    assert rules.after_lookup(None, who) is None  # the re-check's own answer, unchanged


def test_identity_is_the_part_of_who_may_decide_that_no_stage_changes() -> None:
    frank = human("frank@example.com", "security")
    assert rules.identity_refusal(action(), frank.id, frank) is None
    assert rules.approver_refusal(action(), frank.id, frank) == refusal(
        RefusalCode.NOT_ELIGIBLE,
        "frank@example.com is not in a group that may decide at this stage (dba)",
    )
    amended = action(request=action().request.model_copy(update={"amended_by": frank.id}))
    assert rules.identity_refusal(amended, frank.id, frank).code is RefusalCode.AMENDER  # type: ignore[union-attr]


def test_the_agents_owner_now_may_not_decide_either() -> None:
    frank = human("frank@example.com", "dba")
    assert rules.approver_refusal(action(), frank.id, frank) is None
    found = rules.approver_refusal(action(), frank.id, frank, owner_now=frank.id)
    assert found == refusal(
        RefusalCode.SELF_APPROVAL,
        "frank@example.com is the requesting agent's owner; nobody decides their own action",
    )


def test_only_groups_eligible_at_this_stage_decide() -> None:
    carol = human("carol", "security")
    assert rules.approver_refusal(action(), carol.id, carol) == refusal(
        RefusalCode.NOT_ELIGIBLE, "carol is not in a group that may decide at this stage (dba)"
    )
    assert not rules.can_decide_now(carol, action())
    escalated = action(eligible_groups=["dba", "security"], escalation_level=1)
    assert rules.approver_refusal(escalated, carol.id, carol) is None
    assert rules.can_decide_now(carol, escalated)


def test_can_decide_now() -> None:
    alice = human("alice", "dba")
    assert rules.can_decide_now(alice, action())
    status = action()
    assert not rules.can_decide_now(alice, action(decisions=[decided(status, "alice")]))
    assert not rules.can_decide_now(alice, action(status=Status.EXECUTING, eligible_groups=[]))


# --- who may view ---------------------------------------------------------------------------


def test_parties_may_view() -> None:
    status = action()
    for who in (REQUESTER, BOSS, OWNER):
        assert rules.can_view(Principal(id=who, kind="agent"), status)


def test_auditors_may_view_and_strangers_may_not() -> None:
    status = action()
    assert rules.can_view(human("ann", rules.AUDITORS), status)
    assert rules.can_view(Principal(id="agent:audit", kind="agent", groups=["auditors"]), status)
    assert not rules.can_view(human("zed", "marketing"), status)


def test_deciders_of_any_stage_may_view_before_their_stage() -> None:
    status = action()
    assert rules.decider_groups(status) == {"dba", "security"}
    assert rules.can_view(human("carol", "security"), status)
    assert rules.can_view(human("alice", "dba"), status)
    # Being in a deciding group makes a human a viewer, never an agent.
    assert not rules.can_view(Principal(id="agent:x", kind="agent", groups=["dba"]), status)


def test_whoever_decided_may_view_after_leaving_the_group() -> None:
    status = action()
    finished = action(status=Status.SUCCEEDED, decisions=[decided(status, "alice")])
    assert rules.can_view(human("alice"), finished)


def test_without_a_verdict_nobody_is_a_decider() -> None:
    status = action(verdict=None, status=Status.EVALUATING, eligible_groups=[])
    assert rules.decider_groups(status) == set()
    assert not rules.can_view(human("alice", "dba"), status)
