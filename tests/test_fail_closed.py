"""The policy fails closed: a condition that cannot be evaluated never makes a request's
outcome more permissive, is recorded in the verdict and the ledger, and is shown by
`signoff policy explain` and warned about by `signoff policy check`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from activities.ledger.store import Ledger
from policies import EXAMPLES_DIR, load_policy
from policies.engine import Policy
from policies.lint import condition_warnings, samples
from signoff.executor import registry
from signoff.models import ActionRequest
from tests.cli import app
from tests.conftest import Gate, running_worker
from workers.settings import Settings
from workflows.messages import AuditKind

HEADER = """\
version: 1
default: {effect: allow}
rules:
"""
APPROVAL = "approvals: [{group: dba}], expires_after: 1h"
runner = CliRunner()


def policy_file(tmp_path: Path, rules: str, header: str = HEADER) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(header + textwrap.dedent(rules), encoding="utf-8")
    return path


def policy_from(tmp_path: Path, rules: str, header: str = HEADER) -> Policy:
    return load_policy(policy_file(tmp_path, rules, header))


def request(params: dict[str, Any], action: str = "noop") -> ActionRequest:
    return ActionRequest(
        action=action, target="box", params=params, justification="j", requester="agent:bot"
    )


# --- evaluation -------------------------------------------------------------------------------

DENY_THEN_ALLOW = """\
- {id: no-tables, when: 'params.tables.size() > 0', effect: deny}
- {id: everything, effect: allow}
"""


def test_an_erroring_deny_rule_never_falls_through_to_a_later_allow(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, DENY_THEN_ALLOW)
    verdict = policy.evaluate(request({}), None)  # `tables` missing: the condition errors
    assert (verdict.rule_id, verdict.effect) == ("no-tables", "deny")
    assert "failed closed" in verdict.reason
    [error] = verdict.condition_errors
    assert (error.rule_id, error.treated_as) == ("no-tables", "match")
    assert "tables" in error.error
    # A wrong type errors too, and is denied the same way.
    assert policy.evaluate(request({"tables": 3}), None).effect == "deny"
    # The condition still decides when it can be evaluated.
    clean = policy.evaluate(request({"tables": []}), None)
    assert (clean.rule_id, clean.condition_errors) == ("everything", [])
    assert policy.evaluate(request({"tables": ["t"]}), None).rule_id == "no-tables"


def test_a_non_bool_condition_on_a_deny_rule_denies(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, "- {id: odd, when: 'params.n', effect: deny}\n")
    verdict = policy.evaluate(request({"n": 0}), None)
    assert verdict.effect == "deny"
    assert "not a bool" in verdict.condition_errors[0].error


def test_an_erroring_approval_rule_requires_approval_over_a_later_allow(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        f"""\
        - {{id: big, when: 'params.rows > 1000', effect: require_approval, {APPROVAL}}}
        - {{id: rest, effect: allow}}
        """,
    )
    verdict = policy.evaluate(request({"rows": "many"}), None)
    assert (verdict.rule_id, verdict.effect) == ("big", "require_approval")
    assert [a.group for a in verdict.approvals] == ["dba"]
    assert verdict.condition_errors[0].treated_as == "match"


def test_an_erroring_approval_rule_yields_to_a_later_deny(tmp_path: Path) -> None:
    # Had the condition been false, the later deny rule would have applied: deny is stricter.
    policy = policy_from(
        tmp_path,
        f"""\
        - {{id: big, when: 'params.rows > 1000', effect: require_approval, {APPROVAL}}}
        - {{id: allowed-when-small, when: 'params.rows < 10', effect: allow}}
        - {{id: never, match: {{target: "box"}}, effect: deny}}
        """,
    )
    verdict = policy.evaluate(request({}), None)
    assert (verdict.rule_id, verdict.effect) == ("never", "deny")
    assert [(e.rule_id, e.treated_as) for e in verdict.condition_errors] == [
        ("big", "match"),
        ("allowed-when-small", "no_match"),
    ]


def test_an_erroring_approval_rule_yields_to_a_deny_default(tmp_path: Path) -> None:
    header = "version: 1\ndefault: {effect: deny}\nrules:\n"
    rules = f"- {{id: big, when: 'params.rows > 1000', effect: require_approval, {APPROVAL}}}\n"
    policy = policy_from(tmp_path, rules, header)
    assert policy.evaluate(request({}), None).rule_id == "default"


def test_an_erroring_allow_rule_does_not_match_and_is_recorded(tmp_path: Path) -> None:
    header = f"version: 1\ndefault: {{effect: require_approval, {APPROVAL}}}\nrules:\n"
    policy = policy_from(
        tmp_path, "- {id: small, when: 'params.rows < 10', effect: allow}\n", header
    )
    verdict = policy.evaluate(request({}), None)
    assert (verdict.rule_id, verdict.effect) == ("default", "require_approval")
    assert "failed closed" not in verdict.reason
    assert [(e.rule_id, e.treated_as) for e in verdict.condition_errors] == [("small", "no_match")]


def test_explain_shows_the_error_and_the_fail_closed_winner(tmp_path: Path) -> None:
    path = policy_file(tmp_path, DENY_THEN_ALLOW)
    args = ["policy", "explain", "noop", "--target", "box", "--policy", str(path)]
    args += ["--directory", str(EXAMPLES_DIR / "directory.yaml")]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "winner: no-tables" in text.output
    assert "KeyError" in text.output
    assert "fails closed" in text.output
    assert "condition error in rule no-tables (treated as match)" in text.output
    as_json = runner.invoke(app, [*args, "--json"])
    data = json.loads(as_json.output)
    assert data["winner"] == "no-tables"
    assert data["verdict"]["condition_errors"][0]["rule_id"] == "no-tables"
    assert data["rules"][0]["when_error"].startswith("KeyError")


# --- policy check -------------------------------------------------------------------------------


def test_samples_cover_missing_optional_keys_and_nulls() -> None:
    schema = {
        "type": "object",
        "properties": {
            "need": {"type": "string"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["need"],
    }
    found = samples(schema)
    assert {"need": "x", "maybe": 1, "tags": ["x"]} in found
    assert {"need": "x"} in found  # only the required keys
    assert {"need": "x", "maybe": None, "tags": ["x"]} in found  # the null branch


def test_check_warns_about_conditions_that_error_on_valid_params(tmp_path: Path) -> None:
    path = policy_file(
        tmp_path,
        """\
        - {id: no-tables, match: {action: noop}, when: 'params.tables.size() > 0', effect: deny}
        - id: guarded
          match: {action: noop}
          when: 'has(params.tables) && params.tables.size() > 0'
          effect: deny
        - {id: argv, match: {action: shell.run}, when: 'params.argv[0] == "ls"', effect: allow}
        - id: fail-message
          match: {action: noop}
          when: 'params.fail.startsWith("x")'
          effect: allow
        - id: owner
          match: {action: noop}
          when: 'principal.owner.endsWith("@example.com")'
          effect: allow
        """,
    )
    policy = load_policy(path)
    found = {(w.rule_id, w.action): w for w in condition_warnings(policy, registry)}
    # `tables` is no key NoopParams guarantees; `fail` may be missing or null; a human
    # requester has no owner.
    assert set(found) == {("no-tables", "noop"), ("fail-message", "noop"), ("owner", "noop")}
    assert found["no-tables", "noop"].fails_closed
    assert not found["fail-message", "noop"].fails_closed

    args = ["policy", "check", str(path), "--directory", str(EXAMPLES_DIR / "directory.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output
    assert "rule 'no-tables': field 'when': errors on valid noop params" in result.output
    assert "fails closed" in result.output
    assert "rule 'guarded'" not in result.output
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1


def test_check_is_quiet_about_conditions_that_cannot_error(tmp_path: Path) -> None:
    path = policy_file(
        tmp_path,
        """\
        - id: stmt
          match: {action: sql.execute}
          when: 'params.statement.size() > 5'
          effect: deny
        - id: rows
          match: {action: noop}
          when: 'has(params.rows) && params.rows == 1'
          effect: deny
        """,
    )
    assert condition_warnings(load_policy(path), registry) == []
    args = ["policy", "check", str(path), "--strict"]
    result = runner.invoke(app, [*args, "--directory", str(EXAMPLES_DIR / "directory.yaml")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


# --- end to end through the real workflow -------------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "status"),
    [("deny", "denied_by_policy"), ("require_approval", "pending_approval")],
)
async def test_a_workflow_fails_closed_and_the_ledger_records_the_error(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    tmp_path: Path,
    effect: str,
    status: str,
) -> None:
    extra = f", {APPROVAL}" if effect == "require_approval" else ""
    path = policy_file(
        tmp_path,
        f"""\
        - {{id: tables-guard, when: 'params.tables.size() > 0', effect: {effect}{extra}}}
        - {{id: everything, effect: allow}}
        """,
    )
    edited = settings.model_copy(update={"policy": path})
    async with running_worker(client, edited, ledger):
        gate = Gate(client, edited)
        handle = await gate.submit("sandbox-1", {"rows": 1})  # no `tables`: the rule errors
        current = await gate.wait_for(handle, status)
        assert current.verdict is not None
        assert current.verdict.rule_id == "tables-guard"
        assert current.verdict.condition_errors[0].rule_id == "tables-guard"
        if status == "denied_by_policy":
            outcome = await handle.result()
            assert outcome.result is None  # never executed
        else:
            await handle.terminate("test over")
    rows = await ledger.events(handle.id)
    verdicts = [r.payload for r in rows if r.kind == AuditKind.VERDICT]
    assert len(verdicts) == 1
    assert verdicts[0]["effect"] == effect
    [error] = verdicts[0]["condition_errors"]
    assert error["rule_id"] == "tables-guard"
    assert error["treated_as"] == "match"
    assert "tables" in error["error"]
    assert not [r for r in rows if r.kind == AuditKind.EXECUTION_STARTED]
