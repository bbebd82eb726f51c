"""Who is who: on_behalf_of only for whom the requester may act, the owner at decision time,
and the decisions endpoint telling outsiders nothing (and slowing them down)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.ledger.store import Ledger
from policies import PolicyError, load_directory
from policies.directory import on_behalf_problem
from signoff.models import Principal, RefusalCode, Status
from tests.conftest import DATA, Gate, running_worker
from tests.gateway_fixtures import api, build_app, count_workflows
from workers.gateway.ratelimit import RefusalBudget
from workers.settings import Settings
from workflows.action import ActionWorkflow


def body(**overrides: Any) -> dict[str, Any]:
    """A submission that needs one DBA's approval."""
    return {
        "action": "noop",
        "target": "one-db",
        "params": {"rows": 1},
        "justification": "testing who is who",
        **overrides,
    }


# --- the directory's acts_for ---------------------------------------------------------------


def test_acts_for_must_name_known_principals(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        textwrap.dedent(
            """
            principals:
              - {id: alice@example.com, kind: human}
              - {id: agent:x, kind: agent, owner: alice@example.com, acts_for: [ghost@example.com]}
            """
        )
    )
    with pytest.raises(PolicyError) as caught:
        load_directory(path)
    message = str(caught.value)
    assert "principal 'agent:x'" in message
    assert "acts_for.0" in message
    assert "unknown principal 'ghost@example.com'" in message


def test_acts_for_never_names_an_agent(tmp_path: Path) -> None:
    # Acting for agent:y would let agent:y's owner approve: the self-approval rule knows only
    # the requester's owner. So the directory refuses it, naming the field.
    path = tmp_path / "directory.yaml"
    path.write_text(
        textwrap.dedent(
            """
            principals:
              - {id: alice@example.com, kind: human}
              - {id: bob@example.com, kind: human}
              - {id: agent:y, kind: agent, owner: bob@example.com}
              - {id: agent:x, kind: agent, owner: alice@example.com, acts_for: [agent:y]}
            """
        )
    )
    with pytest.raises(PolicyError) as caught:
        load_directory(path)
    message = str(caught.value)
    assert "acts_for.0" in message
    assert "'agent:y' is an agent; acts_for names only humans" in message


def test_whom_a_principal_may_act_for() -> None:
    agent = Principal(id="agent:x", kind="agent", owner="dave@example.com")
    assert on_behalf_problem(agent, None) is None
    assert on_behalf_problem(agent, "agent:x") is None  # itself
    assert on_behalf_problem(agent, "dave@example.com") is None  # its owner, by default
    problem = on_behalf_problem(agent, "alice@example.com")
    assert problem is not None
    assert "'alice@example.com' is not a principal agent:x may act for" in problem
    assert "allowed: dave@example.com" in problem
    assert "acts_for" in problem
    declared = agent.model_copy(update={"acts_for": ["alice@example.com"]})
    assert on_behalf_problem(declared, "alice@example.com") is None
    human = Principal(id="bob@example.com", kind="human")
    refused = on_behalf_problem(human, "alice@example.com")
    assert refused is not None
    assert "nobody else" in refused
    # Unknown and undeclared read the same: the answer is no directory oracle.
    unknown = on_behalf_problem(human, "nobody@example.com")
    assert unknown == refused.replace("alice@example.com", "nobody@example.com")


# --- on_behalf_of at the gateway and in the workflow ----------------------------------------


@pytest.fixture
def app(client: Client, settings: Settings) -> FastAPI:
    """The gateway app on the test's task queue."""
    return build_app(client, settings)


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("who", "on_behalf_of"),
    [
        ("bot", "bob@example.com"),  # another human, not declared for agent:bot
        ("bot", "erin@example.com"),
        ("bot", "mallory@example.com"),  # nobody at all
        ("alice", "carol@example.com"),  # humans need it declared too
    ],
)
async def test_on_behalf_of_someone_undeclared_is_422_and_starts_nothing(
    app: FastAPI, client: Client, settings: Settings, who: str, on_behalf_of: str
) -> None:
    async with api(app, who) as http:
        response = await http.post("/v1/actions", json=body(on_behalf_of=on_behalf_of))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_on_behalf_of"
    assert f"on_behalf_of {on_behalf_of!r} is not a principal" in error["message"]
    assert "acts_for" in error["message"]
    assert await count_workflows(client, settings.task_queue, expected_at_least=0) == 0


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("who", "on_behalf_of"),
    [
        ("bot", "dave@example.com"),  # the agent's owner
        ("bot", "alice@example.com"),  # declared under acts_for
        ("bot", "agent:bot"),  # itself
        ("bot", None),
    ],
)
async def test_on_behalf_of_the_owner_or_a_declared_principal_is_accepted(
    app: FastAPI, who: str, on_behalf_of: str | None
) -> None:
    async with api(app, who) as http:
        response = await http.post("/v1/actions", json=body(on_behalf_of=on_behalf_of))
    assert response.status_code == 202, response.text
    assert response.json()["request"]["on_behalf_of"] == on_behalf_of


@pytest.mark.usefixtures("worker")
async def test_a_workflow_started_past_the_gateway_is_denied_by_policy(gate: Gate) -> None:
    # Straight to Temporal, as someone with a client could: the worker checks again.
    handle = await gate.submit("one-db", on_behalf_of="bob@example.com")
    outcome = await handle.result()
    assert outcome.status is Status.DENIED_BY_POLICY
    assert outcome.verdict is not None
    assert outcome.verdict.rule_id == "on-behalf-of"
    assert outcome.error is not None
    assert "'bob@example.com' is not a principal agent:bot may act for" in outcome.error
    assert outcome.result is None


# --- the owner at decision time --------------------------------------------------------------


def directory_with_owner(tmp_path: Path, owner: str) -> Path:
    """The test directory with agent:bot handed to `owner`."""
    document = yaml.safe_load((DATA / "directory.yaml").read_text())
    for principal in document["principals"]:
        if principal["id"] == "agent:bot":
            principal["owner"] = owner
    path = tmp_path / f"directory-{owner}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def refused_code(gate: Gate, handle: Any, approver: str) -> tuple[RefusalCode, str]:
    """Decide as `approver`, which must be refused; the code and message."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await gate.decide(handle, approver)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    status = await handle.query(ActionWorkflow.status)
    return status.refused[-1].code, cause.message


async def test_the_owner_is_the_one_in_the_directory_at_decision_time(
    client: Client, settings: Settings, ledger: Ledger, gate: Gate, tmp_path: Path
) -> None:
    # Requested while dave owns agent:bot; alice (dba) could approve then.
    async with running_worker(client, settings, ledger):
        handle = await gate.submit("one-db")
        await gate.wait_for(handle, "pending_approval")
    # The agent is handed to alice; the workers restart with the new directory.
    moved = settings.model_copy(
        update={"directory": directory_with_owner(tmp_path, "alice@example.com")}
    )
    async with running_worker(client, moved, ledger):
        code, message = await refused_code(gate, handle, "alice@example.com")
        assert code is RefusalCode.SELF_APPROVAL
        assert "alice@example.com is the requesting agent's owner" in message
        # The owner at request time is still a party to it.
        code, _ = await refused_code(gate, handle, "dave@example.com")
        assert code is RefusalCode.SELF_APPROVAL
        status = await handle.query(ActionWorkflow.status)
        assert status.status is Status.PENDING_APPROVAL
        assert status.decisions == []
        await handle.terminate("test done")


# --- the decisions endpoint ------------------------------------------------------------------


async def decide(app: FastAPI, who: str, action_id: str, **decision: Any) -> Any:
    """POST a decision as `who`; the response."""
    async with api(app, who) as http:
        return await http.post(f"/v1/actions/{action_id}/decisions", json=decision)


async def pending(app: FastAPI) -> dict[str, Any]:
    """A DBA action, once it waits for approval."""
    async with api(app, "bot") as http:
        response = await http.post("/v1/actions", json=body(), params={"wait": 0})
        action: dict[str, Any] = response.json()
        for _ in range(100):
            got = (await http.get(f"/v1/actions/{action['id']}")).json()
            if got["status"] == "pending_approval":
                return action
    raise AssertionError(f"never pending: {got}")


@pytest.mark.usefixtures("worker")
async def test_decisions_by_someone_who_may_not_see_the_action_answer_like_get(
    app: FastAPI,
) -> None:
    action = await pending(app)
    action_id, digest = action["id"], action["digest"]
    missing_id = "act-" + "0" * 32
    # bob and oscar (security, on-call) have no part in a DBA action.
    for who in ("bob", "oscar"):
        async with api(app, who) as http:
            shown = await http.get(f"/v1/actions/{action_id}")
        attempts = [
            {"decision": "approve", "digest": digest},
            {"decision": "approve", "digest": "a" * 64},  # would tell the real digest's prefix
            {"decision": "deny", "digest": digest},  # would say a reason is missing
            {"decision": "deny", "digest": digest, "reason": "no"},
        ]
        for attempt in attempts:
            hidden = await decide(app, who, action_id, **attempt)
            missing = await decide(app, who, missing_id, **attempt)
            assert hidden.status_code == missing.status_code == shown.status_code == 404
            assert hidden.json() == json.loads(missing.text.replace(missing_id, action_id))
            assert hidden.json() == shown.json()
            for secret in (digest[:12], "pending", "not_eligible"):
                assert secret not in hidden.text
    # The attempts are still on record for those who may see the action.
    async with api(app, "erin") as http:
        status = (await http.get(f"/v1/actions/{action_id}")).json()
    assert status["status"] == "pending_approval"
    assert status["decisions"] == []
    assert {r["approver"] for r in status["refused"]} == {"bob@example.com", "oscar@example.com"}
    # Deciders still get their precise answers.
    response = await decide(app, "alice", action_id, decision="approve", digest="a" * 64)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "digest_mismatch")

    # Once closed: still nothing for outsiders, 409 for those who may see it.
    response = await decide(app, "alice", action_id, decision="approve", digest=digest)
    assert response.status_code == 200, response.text
    async with api(app, "erin") as http:
        await http.get(f"/v1/actions/{action_id}", params={"wait": 10})
    late = await decide(app, "bob", action_id, decision="approve", digest=digest)
    assert late.status_code == 404
    again = await decide(app, "alice", action_id, decision="approve", digest=digest)
    assert again.status_code == 409


@pytest.mark.usefixtures("worker")
async def test_refused_decisions_are_rate_limited_per_principal(
    client: Client, settings: Settings
) -> None:
    app = build_app(
        client,
        settings.model_copy(
            update={"refused_decisions_burst": 3, "refused_decisions_per_minute": 1.0}
        ),
    )
    action = await pending(app)
    action_id, digest = action["id"], action["digest"]
    guesses = ["act-" + f"{i:032x}" for i in range(3)]
    for guess in guesses:  # probing ids that do not exist spends the budget
        assert (
            await decide(app, "bob", guess, decision="approve", digest=digest)
        ).status_code == 404
    limited = await decide(app, "bob", action_id, decision="approve", digest=digest)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "too_many_refusals"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Not even recorded: the limit answers before the workflow is asked.
    async with api(app, "erin") as http:
        status = (await http.get(f"/v1/actions/{action_id}")).json()
    assert status["refused"] == []
    # Per principal: others are not held up, and an accepted decision is never refused by it.
    ok = await decide(app, "alice", action_id, decision="approve", digest=digest)
    assert ok.status_code == 200, ok.text


def test_the_refusal_budget_refills_and_stays_bounded() -> None:
    now = [0.0]
    budget = RefusalBudget(2, 6.0, max_keys=3, clock=lambda: now[0])
    assert budget.retry_after("a") == 0
    budget.spend("a")
    budget.spend("a")
    assert budget.retry_after("a") == 10  # 6 a minute: one every 10 s
    now[0] += 4.0
    assert budget.retry_after("a") == 6
    now[0] += 6.0
    assert budget.retry_after("a") == 0
    for key in ("b", "c", "d", "e"):
        budget.spend(key)
    assert len(budget) == 3  # the least recently used went first
