"""Properties, with hypothesis: the digest, policy evaluation, and decisions against a model.

The first two are pure and run many examples. The third drives real workflows on the session's
dev server and a real worker: each example is one action and a sequence of decisions from a
small pool of people (and non-people) in tests/data/directory.yaml, in any order and with any
duplication; the outcome of every decision and of the action must match a reference model
written here from the rules, not from the workflow's code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import unicodedata
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, reject
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import JsonValue, ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.ledger.store import Ledger
from policies import EXAMPLES_DIR
from policies.loader import load_directory, load_policy
from signoff.models import (
    ACTION_PATTERN,
    NAME_PATTERN,
    ActionRequest,
    ActionStatus,
    ActionSubmission,
    CancelRequest,
    DecisionRequest,
    RefusalCode,
    RefusedAttempt,
    Status,
    Verdict,
    action_digest,
)
from tests.conftest import DATA, Gate, running_worker
from tests.signing import SIGNER
from workers.gateway.service import closed_under
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.errors import DECISION_REFUSED

T = TypeVar("T")

# --- the digest -----------------------------------------------------------------------------

# Text that has distinct NFC and NFD spellings: precomposed letters, Hangul, combining marks.
NORMALISABLE = st.sampled_from(["é", "Å", "ñ", "ö", "ﬁ", "한", "Ω", "e\u0301", "ḱ", "ǖ", "a"])
TEXT = st.lists(
    st.one_of(NORMALISABLE, st.characters(exclude_categories=("Cs",))), max_size=12
).map("".join)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
PARAMS = st.dictionaries(TEXT, JSON, max_size=6)


def respell(value: Any, form: str, rng: Any) -> Any:
    """The same value with every string in normal form `form` and every dict's keys shuffled."""
    if isinstance(value, str):
        return unicodedata.normalize(form, value)  # type: ignore[arg-type]
    if isinstance(value, list):
        return [respell(v, form, rng) for v in value]
    if isinstance(value, dict):
        items = [(respell(k, form, rng), respell(v, form, rng)) for k, v in value.items()]
        rng.shuffle(items)
        return dict(items)
    return value


@hsettings(max_examples=300, deadline=None)
@given(action=TEXT, target=TEXT, params=PARAMS, rng=st.randoms(use_true_random=False))
def test_digest_is_stable_under_key_order_and_unicode_normalisation(
    action: str, target: str, params: dict[str, Any], rng: Any
) -> None:
    try:
        expected = action_digest(action, target, params)
    except ValueError:
        reject()  # two spellings of one key: refused, see the test below
    for form in ("NFC", "NFD"):
        spelled = respell(params, form, rng)
        again = action_digest(
            unicodedata.normalize(form, action),
            unicodedata.normalize(form, target),
            spelled,
        )
        assert again == expected, (form, params, spelled)


def test_digest_tells_different_text_apart() -> None:
    # Normalisation is canonical (NFC), never compatibility (NFKC): "ﬁ" is not "fi", and case
    # and whitespace still count. Different visible text must never share a digest.
    base = action_digest("noop", "t", {"s": "fi"})
    for other in ({"s": "ﬁ"}, {"s": "Fi"}, {"s": "fi "}, {"s": ["fi"]}, {"S": "fi"}):
        assert action_digest("noop", "t", other) != base
    # And the composed and decomposed spellings of one letter are the same action.
    assert action_digest("noop", "t", {"é": "é"}) == action_digest(
        "noop", "t", {"e\u0301": "e\u0301"}
    )


@hsettings(max_examples=50, deadline=None)
@given(params=PARAMS, value=JSON)
def test_two_spellings_of_one_key_are_refused_not_merged(
    params: dict[str, Any], value: Any
) -> None:
    # {"é": 1, "e\u0301": 2} would hash like {"é": 2}: approving one would approve the other.
    params = {**params, "é": value, "e\u0301": value}
    assume("\\u0000" not in json.dumps(params))  # NUL is refused first, for its own reason
    with pytest.raises(ValidationError, match="NFC"):
        ActionSubmission(action="noop", target="t", params=params, justification="j")


# --- policy evaluation never raises ---------------------------------------------------------

EXAMPLE_POLICY = load_policy(EXAMPLES_DIR / "policy.yaml")
EXAMPLE_DIRECTORY = load_directory(EXAMPLES_DIR / "directory.yaml")
TEST_POLICY = load_policy(DATA / "policy.yaml")
HUGE = st.integers(min_value=-(10**40), max_value=10**40)
PARAM_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | HUGE | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)
# Keys the example policy's `when` expressions read, so the CEL paths really run.
KEYS = st.sampled_from(["statement", "method", "rows", "path", "sql", "url", "argv"]) | TEXT
KNOWN_ACTIONS = st.sampled_from(
    ["sql.execute", "sql.query", "http.request", "noop", "shell.run", "data.export"]
)
KNOWN_TARGETS = st.sampled_from(["prod-db", "prod-eu", "sandbox-1", "staging", "one-x", "cel-1"])
STATEMENTS = st.sampled_from(
    ["DROP TABLE t", " delete from t", "DELETE FROM t WHERE id=1", "alter table x", "select 1"]
)


@st.composite
def requests(draw: st.DrawFn) -> ActionRequest:
    """Any request the gateway could accept, biased toward what the policies look at."""
    params: dict[str, JsonValue] = draw(st.dictionaries(KEYS, PARAM_VALUES, max_size=6))
    if draw(st.booleans()):
        params["statement"] = draw(STATEMENTS | PARAM_VALUES)
    if draw(st.booleans()):
        params["method"] = draw(st.sampled_from(["GET", "POST", "get"]) | PARAM_VALUES)
    if draw(st.booleans()):
        params["rows"] = draw(HUGE | PARAM_VALUES)
    principals = [p.id for p in EXAMPLE_DIRECTORY.principals()]
    fields = {
        "action": draw(KNOWN_ACTIONS | st.from_regex(ACTION_PATTERN, fullmatch=True)),
        "target": draw(KNOWN_TARGETS | st.from_regex(NAME_PATTERN, fullmatch=True)),
        "params": params,
        "justification": draw(TEXT.filter(str.strip)),
        "risk": draw(st.sampled_from([None, "low", "medium", "high", "critical"])),
        "on_behalf_of": draw(st.none() | st.sampled_from(principals)),
        "requester": draw(st.sampled_from([*principals, "nobody@example.com"])),
    }
    try:
        # What the gateway admits: in the patterns and sizes, no NUL, a computable digest.
        return ActionRequest.model_validate(fields)
    except ValidationError:
        reject()


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_policy_evaluation_never_raises_and_always_decides(request: ActionRequest) -> None:
    principal = asyncio.run(EXAMPLE_DIRECTORY.principal(request.requester))
    for policy in (EXAMPLE_POLICY, TEST_POLICY):
        verdict = policy.evaluate(request, principal)
        assert isinstance(verdict, Verdict)
        assert verdict.policy_digest == policy.digest
        if verdict.effect == "require_approval":
            assert verdict.approvals, "an approval verdict names who approves"
            assert verdict.expires_after is not None, "and when it expires"
        explained = policy.explain(request, principal)
        assert explained.verdict == verdict


# --- decisions against a reference model ----------------------------------------------------

REQUESTER = "agent:bot"  # owned by dave@example.com
# Who requires what (from tests/data/policy.yaml): target -> [(group, min)].
RULES: dict[str, list[tuple[str, int]]] = {
    "one-prop": [("dba", 1)],
    "two-prop": [("security", 2)],
    "pair-prop": [("dba", 1), ("security", 1)],
}
# The pool: humans in groups, the requester's owner, an auditor, an agent, a stranger.
GROUPS: dict[str, list[str]] = {
    "alice@example.com": ["dba"],
    "bob@example.com": ["security"],
    "carol@example.com": ["security", "oncall"],
    "dave@example.com": ["security", "dba"],
    "erin@example.com": ["auditors"],
    "oscar@example.com": ["oncall"],
}
AGENTS = {"agent:bot"}
OWNERS = {"agent:bot": "dave@example.com"}
POOL = [*GROUPS, *AGENTS, "mallory@example.com"]


@dataclass(frozen=True)
class Attempt:
    """One decision someone tries."""

    approver: str
    decision: str
    reason: str
    right_digest: bool


ATTEMPTS = st.builds(
    Attempt,
    # Weighted toward those who may decide, so quorums are reached as often as refusals.
    approver=st.sampled_from(
        [*["alice@example.com", "bob@example.com", "carol@example.com"] * 3, *POOL]
    ),
    decision=st.sampled_from(["approve", "approve", "deny"]),
    reason=st.sampled_from(["", "  ", "no", "risky"]),
    right_digest=st.sampled_from([True, True, True, False]),
)


def quorum(requirements: list[tuple[str, int]], approvers: list[str]) -> bool:
    """Whether each requirement can have `min` distinct approvers, each person counting once."""
    for choice in itertools.product(*([None, *range(len(requirements))] for _ in approvers)):
        counts = [0] * len(requirements)
        for person, slot in zip(approvers, choice, strict=True):
            if slot is None:
                continue
            if requirements[slot][0] not in GROUPS[person]:
                break
            counts[slot] += 1
        else:
            if all(c >= m for c, (_, m) in zip(counts, requirements, strict=True)):
                return True
    return False


def model(target: str, attempts: list[Attempt]) -> tuple[list[str | None], Status]:
    """The reference: each attempt's refusal code (None when accepted) and the final status."""
    requirements = RULES[target]
    eligible = {g for g, _ in requirements}
    parties = {REQUESTER, OWNERS[REQUESTER]}
    status = Status.PENDING_APPROVAL
    decided: list[str] = []
    approvals: list[str] = []
    results: list[str | None] = []
    for a in attempts:
        code: RefusalCode | None = None
        if status is not Status.PENDING_APPROVAL:
            code = RefusalCode.NOT_PENDING
        elif not a.right_digest:
            code = RefusalCode.DIGEST_MISMATCH
        elif a.approver in decided:
            code = RefusalCode.DUPLICATE
        elif a.decision == "deny" and not a.reason.strip():
            code = RefusalCode.MISSING_REASON
        elif a.approver not in GROUPS and a.approver not in AGENTS:
            code = RefusalCode.UNKNOWN_PRINCIPAL
        elif a.approver in AGENTS:
            code = RefusalCode.AGENT_APPROVER
        elif a.approver in parties:
            code = RefusalCode.SELF_APPROVAL
        elif not eligible & set(GROUPS[a.approver]):
            code = RefusalCode.NOT_ELIGIBLE
        results.append(code.value if code else None)
        if code is not None:
            continue
        decided.append(a.approver)
        if a.decision == "deny":
            status = Status.DENIED
        else:
            approvals.append(a.approver)
            if quorum(requirements, approvals):
                status = Status.SUCCEEDED
    return results, status


def test_the_model_itself() -> None:
    ok = Attempt("bob@example.com", "approve", "", True)
    assert model("two-prop", [ok, ok]) == ([None, "duplicate"], Status.PENDING_APPROVAL)
    carol = Attempt("carol@example.com", "approve", "", True)
    assert model("two-prop", [ok, carol, ok])[1] is Status.SUCCEEDED
    dave = Attempt("dave@example.com", "approve", "", True)
    assert model("pair-prop", [dave]) == (["self_approval"], Status.PENDING_APPROVAL)
    alice = Attempt("alice@example.com", "approve", "", True)
    assert model("pair-prop", [alice, ok]) == ([None, None], Status.SUCCEEDED)
    assert not quorum([("dba", 1), ("security", 1)], ["alice@example.com"])


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the test's event loop from hypothesis's thread (bounded)."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)


async def attempt_on(
    gate: Gate, target: str, attempts: list[Attempt]
) -> tuple[list[str | None], ActionStatus]:
    """Start the action and send every attempt in order; return what happened to each."""
    handle = await gate.submit(target, requester=REQUESTER)
    pending = await gate.wait_for(handle, "pending_approval")
    codes: list[str | None] = []
    for a in attempts:
        request = DecisionRequest(
            approver=a.approver,
            decision=a.decision,
            digest=pending.digest if a.right_digest else "0" * 64,
            reason=a.reason,
        )
        try:
            await handle.execute_update(ActionWorkflow.decide, SIGNER.decision(request, handle.id))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == DECISION_REFUSED:
                codes.append(RefusedAttempt.model_validate(cause.details[0]).code.value)
            else:  # the workflow finished while the update waited
                codes.append(RefusalCode.NOT_PENDING.value)
        except RPCError as err:
            if not closed_under(err):
                raise
            codes.append(RefusalCode.NOT_PENDING.value)
        else:
            codes.append(None)
    status = await handle.query(ActionWorkflow.status)
    if status.status is Status.PENDING_APPROVAL:
        # Tidy up: the requester cancels what nobody finished deciding.
        await handle.execute_update(
            ActionWorkflow.cancel, SIGNER.cancel(CancelRequest(by=REQUESTER), handle.id)
        )
        return codes, status
    return codes, await asyncio.wait_for(handle.result(), timeout=60)


@pytest.mark.timeout(240)
async def test_decisions_in_any_order_and_duplication_match_the_model(
    client: Client, settings: Settings, ledger: Ledger
) -> None:
    loop = asyncio.get_running_loop()
    gate = Gate(client, settings)
    seen: list[Status] = []

    @settings_for_workflows
    @given(
        target=st.sampled_from(sorted(RULES)), attempts=st.lists(ATTEMPTS, min_size=1, max_size=7)
    )
    def check(target: str, attempts: list[Attempt]) -> None:
        expected_codes, expected_status = model(target, attempts)
        codes, status = on_loop(loop, attempt_on(gate, target, attempts))
        assert codes == expected_codes, (target, attempts)
        assert status.status is expected_status, (target, attempts, status.error)
        accepted = [a.approver for a, c in zip(attempts, codes, strict=True) if c is None]
        assert [d.approver for d in status.decisions] == accepted
        # Every refusal is on the record (one landing after the workflow closed cannot be).
        late = RefusalCode.NOT_PENDING.value
        refused = [c for c in codes if c is not None and c != late]
        assert [r.code.value for r in status.refused if r.code.value != late] == refused
        seen.append(status.status)

    async with running_worker(client, settings, ledger):
        await asyncio.to_thread(check)
    assert len(seen) >= 20
    # The examples reached every outcome, not just one.
    assert {Status.SUCCEEDED, Status.DENIED, Status.PENDING_APPROVAL} <= set(seen)


settings_for_workflows = hsettings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
