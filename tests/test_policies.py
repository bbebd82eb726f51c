"""Policy engine: matching, CEL conditions, risk, the example policy, digests and load errors."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policies import (
    EXAMPLES_DIR,
    PolicyError,
    load_directory,
    load_policy,
    load_policy_and_directory,
)
from policies.engine import Policy
from signoff.executor import registry
from signoff.models import ActionRequest, Principal, Verdict
from tests.cli import app

EXAMPLE_POLICY = EXAMPLES_DIR / "policy.yaml"
EXAMPLE_DIRECTORY = EXAMPLES_DIR / "directory.yaml"

HEADER = """\
version: 1
default: {effect: require_approval, approvals: [{group: sre}], expires_after: 1h}
"""


def write(tmp_path: Path, body: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def policy_from(tmp_path: Path, rules: str) -> Policy:
    return load_policy(write(tmp_path, HEADER + "rules:\n" + textwrap.dedent(rules)))


def request(action: str = "noop", target: str = "box", **fields: Any) -> ActionRequest:
    fields.setdefault("justification", "testing")
    fields.setdefault("requester", "agent:etl-bot")
    return ActionRequest(action=action, target=target, **fields)


def load_error(tmp_path: Path, body: str) -> str:
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return str(caught.value)


# --- matching -------------------------------------------------------------------------------


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - {id: first, match: {action: "sql.*"}, effect: deny}
        - {id: second, match: {action: sql.query}, effect: allow}
        """,
    )
    verdict = policy.evaluate(request("sql.query"), None)
    assert (verdict.rule_id, verdict.effect) == ("first", "deny")


def test_default_when_nothing_matches(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, "- {id: only, match: {action: sql.query}, effect: allow}\n")
    verdict = policy.evaluate(request("http.request"), None)
    assert verdict.rule_id == "default"
    assert verdict.effect == "require_approval"
    assert [a.group for a in verdict.approvals] == ["sre"]
    assert verdict.expires_after == timedelta(hours=1)
    assert verdict.policy_digest == policy.digest


def test_globs_on_action_and_target_and_lists(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - id: listed
          match: {action: [http.request, "sql.q*"], target: ["staging-*", dev]}
          effect: allow
        - {id: no-match-all, effect: deny}
        """,
    )
    assert policy.evaluate(request("sql.query", "staging-db"), None).rule_id == "listed"
    assert policy.evaluate(request("http.request", "dev"), None).rule_id == "listed"
    assert policy.evaluate(request("http.request", "prod"), None).rule_id == "no-match-all"
    # fnmatchcase: case matters.
    assert policy.evaluate(request("sql.query", "Staging-db"), None).rule_id == "no-match-all"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"n": 10}, "big"),  # true
        ({"n": 1}, "default"),  # false
        ({}, "default"),  # missing key: no match, never an exception
        ({"n": "ten"}, "default"),  # type error: no match
    ],
)
def test_when_true_false_and_errors(tmp_path: Path, params: dict[str, Any], expected: str) -> None:
    policy = policy_from(tmp_path, "- {id: big, when: 'params.n > 5', effect: allow}\n")
    assert policy.evaluate(request(params=params), None).rule_id == expected


def test_when_non_bool_result_is_no_match(tmp_path: Path) -> None:
    policy = policy_from(tmp_path, "- {id: odd, when: 'params.n', effect: allow}\n")
    assert policy.evaluate(request(params={"n": 1}), None).rule_id == "default"
    assert policy.explain(request(params={"n": 1}), None).rules[0].when_result == 1


def test_when_sees_principal(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - id: humans
          when: 'principal.kind == "human" && "dba" in principal.groups'
          effect: allow
        """,
    )
    alice = Principal(id="alice@example.com", kind="human", groups=["dba"])
    bot = Principal(id="agent:etl-bot", kind="agent", owner="bob@example.com")
    assert policy.evaluate(request(requester=alice.id), alice).rule_id == "humans"
    assert policy.evaluate(request(), bot).rule_id == "default"
    # No directory entry: principal is null, so the condition errors and does not match.
    assert policy.evaluate(request(), None).rule_id == "default"


def test_when_may_use_macros_and_request_fields(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - id: tagged
          when: 'params.tags.exists(t, t == "ok") && risk == null && on_behalf_of == null'
          effect: allow
        """,
    )
    assert policy.evaluate(request(params={"tags": ["x", "ok"]}), None).rule_id == "tagged"


def test_risk_is_max_of_rule_and_claim(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - {id: high, match: {action: sql.execute}, effect: allow, risk: high}
        - {id: unrated, effect: allow}
        """,
    )
    assert policy.evaluate(request("sql.execute", risk="low"), None).risk == "high"
    assert policy.evaluate(request("sql.execute", risk="critical"), None).risk == "critical"
    assert policy.evaluate(request(), None).risk == "medium"
    assert policy.evaluate(request(risk="high"), None).risk == "high"


def test_reason_defaults(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - {id: a, match: {action: a.x}, effect: deny, reason: "Because", description: D}
        - {id: b, match: {action: b.x}, effect: deny, description: "Described"}
        - {id: c, match: {action: c.x}, effect: deny}
        """,
    )
    assert policy.evaluate(request("a.x"), None).reason == "Because"
    assert policy.evaluate(request("b.x"), None).reason == "Described"
    assert "'c'" in policy.evaluate(request("c.x"), None).reason


def test_explain_traces_every_rule(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - {id: other, match: {action: sql.query}, effect: allow}
        - {id: broken, when: 'params.missing == 1', effect: deny}
        - {id: hit, match: {target: "box*"}, effect: allow}
        - {id: later, effect: deny}
        """,
    )
    result = policy.explain(request(), None)
    # A deny rule whose condition errors fails closed: it wins, and the error is on record.
    assert result.winner == "broken"
    assert result.verdict.rule_id == "broken"
    assert result.verdict.effect == "deny"
    by_id = {t.rule_id: t for t in result.rules}
    assert not by_id["other"].action_matched
    assert by_id["broken"].when_error is not None
    assert "missing" in by_id["broken"].when_error
    assert by_id["broken"].matched
    assert by_id["hit"].matched  # shown, though it does not win
    assert by_id["later"].matched
    assert [(e.rule_id, e.treated_as) for e in result.verdict.condition_errors] == [
        ("broken", "match")
    ]


def test_action_types(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        """\
        - {id: a, match: {action: [sql.query, "http.*"]}, effect: allow}
        - {id: b, match: {action: sql.query}, effect: deny}
        - {id: c, effect: deny}
        """,
    )
    assert policy.action_types() == ["sql.query", "http.*"]


# --- the example policy ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Policy:
    policy, _ = load_policy_and_directory(EXAMPLE_POLICY, EXAMPLE_DIRECTORY)
    return policy


def test_example_reads_are_allowed(example: Policy) -> None:
    assert example.evaluate(request("sql.query", "prod-db"), None).effect == "allow"
    get = example.evaluate(request("http.request", "api", params={"method": "GET"}), None)
    assert (get.rule_id, get.effect) == ("http-get", "allow")
    post = example.evaluate(request("http.request", "api", params={"method": "POST"}), None)
    assert post.rule_id == "default"
    assert example.evaluate(request("noop", "sandbox-1"), None).effect == "allow"
    noop = example.evaluate(request("noop", "prod"), None)
    assert (noop.rule_id, noop.effect, noop.approvals[0].group) == (
        "noop",
        "require_approval",
        "sre",
    )


def test_example_export_needs_a_data_owner(example: Policy) -> None:
    verdict = example.evaluate(request("data.export", "warehouse"), None)
    assert verdict.effect == "require_approval"
    assert [(a.group, a.min) for a in verdict.approvals] == [("data-owners", 1)]
    assert verdict.escalation[0].notify == ["oncall"]
    assert verdict.expires_after is not None


def test_example_grant_needs_two_from_security(example: Policy) -> None:
    verdict = example.evaluate(request("iam.grant", "aws"), None)
    assert [(a.group, a.min) for a in verdict.approvals] == [("security", 2)]


def as_worker(policy: Policy, req: ActionRequest) -> Verdict:
    """Evaluate as the worker does: on the params the executor's model parsed."""
    return policy.evaluate(req, None, registry.parsed_params(req.action, req.params))


def test_example_prod_migration_escalates_and_expires(example: Policy) -> None:
    statement = {"statement": "  alter table users add column x int"}
    verdict = as_worker(example, request("sql.execute", "prod-db", params=statement))
    assert verdict.rule_id == "prod-migrations"
    assert verdict.risk == "high"
    assert [a.group for a in verdict.approvals] == ["dba"]
    assert verdict.escalation[0].after == timedelta(minutes=30)
    assert verdict.escalation[0].add_groups == ["oncall"]
    assert verdict.expires_after == timedelta(hours=4)
    # Not production: the default applies.
    staging = as_worker(example, request("sql.execute", "staging-db", params=statement))
    assert staging.rule_id == "default"


@pytest.mark.parametrize(
    "statement",
    ["DROP TABLE users", "truncate orders", "delete from users", "  Delete\nFROM t"],
)
def test_example_destructive_sql_is_denied(example: Policy, statement: str) -> None:
    verdict = as_worker(example, request("sql.execute", "prod-db", params={"statement": statement}))
    assert (verdict.rule_id, verdict.effect, verdict.risk) == (
        "destructive-sql",
        "deny",
        "critical",
    )
    assert "ask a DBA" in verdict.reason


def test_example_delete_with_where_is_not_denied(example: Policy) -> None:
    params = {"statement": "DELETE FROM t WHERE id = 1"}
    assert as_worker(example, request("sql.execute", "prod-db", params=params)).effect == (
        "require_approval"
    )


# --- digest ---------------------------------------------------------------------------------


def test_digest_ignores_formatting_and_comments(tmp_path: Path) -> None:
    compact = write(
        tmp_path,
        HEADER + "rules: [{id: r, match: {action: sql.query}, effect: allow}]\n",
        "a.yaml",
    )
    spaced = write(
        tmp_path,
        """\
        # a comment
        version: 1
        rules:
          - id: r          # same rule
            effect: allow
            match:
              action: [sql.query]
        default:
          effect: require_approval
          expires_after: 60m
          approvals:
            - group: sre
              min: 1
        """,
        "b.yaml",
    )
    changed = write(
        tmp_path,
        HEADER + "rules: [{id: r, match: {action: sql.query}, effect: deny}]\n",
        "c.yaml",
    )
    assert load_policy(compact).digest == load_policy(spaced).digest
    assert load_policy(compact).digest != load_policy(changed).digest
    assert len(load_policy(compact).digest) == 64


# --- load errors ----------------------------------------------------------------------------


def test_error_typo_key(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER
        + textwrap.dedent(
            """\
        rules:
          - {id: grant, effect: require_approval, approval: [{group: sre}], expires_after: 1h}
        """
        ),
    )
    assert "policy.yaml" in message
    assert "rule 'grant'" in message
    assert "field 'approval'" in message
    assert "did you mean 'approvals'" in message


def test_error_bad_duration(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER
        + textwrap.dedent(
            """\
        rules:
          - id: prod-migrations
            effect: require_approval
            approvals: [{group: dba}]
            escalation: [{after: 30x, notify: [oncall]}]
            expires_after: 4h
        """
        ),
    )
    assert "policy.yaml: rule 'prod-migrations': field 'escalation.0.after'" in message
    assert "invalid duration '30x'" in message


def test_error_bad_cel_syntax(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, HEADER + "rules:\n  - {id: r, when: 'params.x ==', effect: allow}\n"
    )
    assert "policy.yaml: rule 'r': field 'when'" in message
    assert "1:12" in message  # the position of the problem


def test_error_unknown_cel_variable(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, HEADER + "rules:\n  - {id: r, when: 'parms.x == 1', effect: allow}\n"
    )
    assert "policy.yaml: rule 'r': field 'when'" in message
    assert "'parms'" in message


def test_error_duplicate_rule_ids(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER + "rules:\n  - {id: r, effect: allow}\n  - {id: r, effect: deny}\n",
    )
    assert "policy.yaml: rule 'r': field 'id'" in message
    assert "duplicate" in message


def test_error_unknown_group_with_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + textwrap.dedent(
            """\
        rules:
          - id: r
            effect: require_approval
            approvals: [{group: dba}]
            escalation: [{after: 5m, notify: [nobody]}]
            expires_after: 1h
        """
        ),
    )
    with pytest.raises(PolicyError) as caught:
        load_policy_and_directory(path, EXAMPLE_DIRECTORY)
    message = str(caught.value)
    assert "policy.yaml: rule 'r': field 'escalation.0.notify.0': unknown group 'nobody'" in (
        message
    )


def test_error_non_increasing_escalation(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER
        + textwrap.dedent(
            """\
        rules:
          - id: r
            effect: require_approval
            approvals: [{group: dba}]
            escalation: [{after: 30m, notify: [oncall]}, {after: 30m, notify: [sre]}]
            expires_after: 4h
        """
        ),
    )
    assert "policy.yaml: rule 'r': field 'escalation.1.after'" in message


def test_error_expiry_not_after_escalation(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER
        + textwrap.dedent(
            """\
        rules:
          - id: r
            effect: require_approval
            approvals: [{group: dba}]
            escalation: [{after: 2h, notify: [oncall]}]
            expires_after: 1h
        """
        ),
    )
    assert "policy.yaml: rule 'r': field 'expires_after'" in message


def test_error_missing_expires_after(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        HEADER + "rules:\n  - {id: r, effect: require_approval, approvals: [{group: dba}]}\n",
    )
    assert "policy.yaml: rule 'r': field 'expires_after'" in message
    assert "required" in message


def test_error_approvals_on_allow(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, HEADER + "rules:\n  - {id: r, effect: allow, approvals: [{group: dba}]}\n"
    )
    assert "policy.yaml: rule 'r': field 'approvals'" in message


def test_error_rule_without_id_is_named_by_position(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEADER + "rules:\n  - {id: a, effect: allow}\n  - {effect: x}\n")
    assert "policy.yaml: rule #2: field 'id'" in message
    assert "policy.yaml: rule #2: field 'effect'" in message


def test_error_default_and_version(tmp_path: Path) -> None:
    message = load_error(tmp_path, "version: 2\ndefault: {effect: allow}\n")
    assert "policy.yaml: field 'version'" in message
    message = load_error(tmp_path, "version: 1\nrules: []\n")
    assert "policy.yaml: field 'default'" in message


def test_error_yaml_syntax_gives_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEADER + "rules:\n  - {id: r, effect: allow\n")
    assert message.startswith(str(tmp_path / "policy.yaml") + ":")
    assert "YAML syntax error" in message
    line = message.split(":")[1]
    assert line.isdigit()


def test_error_duplicate_yaml_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, HEADER + "rules:\n  - {id: r, effect: allow, effect: deny}\n")
    assert "duplicate key 'effect'" in message


def test_policy_directory_concatenates_files(tmp_path: Path) -> None:
    folder = tmp_path / "policy.d"
    folder.mkdir()
    write(folder, "version: 1\nrules: [{id: b, match: {action: x.y}, effect: deny}]\n", "20.yaml")
    write(folder, HEADER + "rules: [{id: a, match: {action: x.y}, effect: allow}]\n", "10.yml")
    policy = load_policy(folder)
    assert [r.id for r in policy.rules] == ["a", "b"]
    assert policy.evaluate(request("x.y"), None).rule_id == "a"
    write(folder, "version: 1\nrules: [{id: a, effect: deny}]\n", "30.yaml")
    with pytest.raises(PolicyError, match=r"30\.yaml: rule 'a': field 'id': duplicate"):
        load_policy(folder)


# --- CLI ------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_check_ok() -> None:
    result = runner.invoke(
        app, ["policy", "check", str(EXAMPLE_POLICY), "--directory", str(EXAMPLE_DIRECTORY)]
    )
    assert result.exit_code == 0, result.output
    assert "11 rules" in result.output
    assert load_policy(EXAMPLE_POLICY).digest in result.output


def test_cli_check_typo(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "rules:\n  - {id: grant, effect: allow, approval: [{group: sre}]}\n",
    )
    result = runner.invoke(
        app, ["policy", "check", str(path), "--directory", str(EXAMPLE_DIRECTORY)]
    )
    assert result.exit_code == 1
    assert "rule 'grant'" in result.output
    assert "field 'approval'" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_explain_names_the_winner() -> None:
    result = runner.invoke(
        app,
        [
            "policy",
            "explain",
            "sql.execute",
            "--target",
            "prod-db",
            "--param",
            "statement=DROP TABLE users",
            "--policy",
            str(EXAMPLE_POLICY),
            "--directory",
            str(EXAMPLE_DIRECTORY),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "winner: destructive-sql" in result.output
    assert "deny" in result.output


def test_cli_explain_json() -> None:
    result = runner.invoke(
        app,
        [
            "policy",
            "explain",
            "http.request",
            "--target",
            "api",
            "--param",
            "method=get",
            "--param",
            "path=/status",
            "--requester",
            "alice@example.com",
            "--risk",
            "high",
            "--policy",
            str(EXAMPLE_POLICY),
            "--directory",
            str(EXAMPLE_DIRECTORY),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # The rule compares with "GET": it sees the params as the executor normalised them.
    assert data["winner"] == "http-get"
    assert data["verdict"]["effect"] == "allow"
    assert data["verdict"]["risk"] == "high"


def test_example_directory_loads() -> None:
    directory = load_directory(EXAMPLE_DIRECTORY)
    assert set(directory.groups()) == {
        "dba",
        "data-owners",
        "security",
        "sre",
        "oncall",
        "auditors",
    }


def test_step_up_only_on_approval_rules_and_only_webauthn(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, HEADER + "rules:\n  - {id: r, effect: allow, step_up: webauthn}\n"
    )
    assert "policy.yaml: rule 'r': field 'step_up'" in message
    assert "not allowed when effect is 'allow'" in message
    message = load_error(
        tmp_path,
        HEADER + "rules:\n  - {id: r, effect: require_approval, approvals: [{group: dba}], "
        "expires_after: 1h, step_up: sms}\n",
    )
    assert "step_up" in message
    assert "webauthn" in message
