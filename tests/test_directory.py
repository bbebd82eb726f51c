"""Identity directory: lookups, tokens and the checks on the directory file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from policies import (
    DEV_TOKENS,
    EXAMPLES_DIR,
    PolicyError,
    StaticDirectory,
    hash_token,
    load_directory,
)

EXAMPLE_DIRECTORY = EXAMPLES_DIR / "directory.yaml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "directory.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def load_error(tmp_path: Path, body: str) -> str:
    path = write(tmp_path, body)
    with pytest.raises(PolicyError) as caught:
        load_directory(path)
    return str(caught.value)


@pytest.fixture(scope="module")
def example() -> StaticDirectory:
    return load_directory(EXAMPLE_DIRECTORY)


async def test_dev_tokens_resolve_to_their_principals(example: StaticDirectory) -> None:
    for principal_id, token in DEV_TOKENS.items():
        found = await example.by_token(token)
        assert found is not None
        assert found.id == principal_id


async def test_wrong_token_resolves_to_nobody(example: StaticDirectory) -> None:
    assert await example.by_token("dev-mallory") is None
    assert await example.by_token("") is None
    # The stored hash itself is not a token.
    assert await example.by_token(hash_token("dev-alice")) is None


async def test_lookups(example: StaticDirectory) -> None:
    alice = await example.principal("alice@example.com")
    assert alice is not None
    assert alice.kind == "human"
    assert set(alice.groups) == {"dba", "data-owners"}
    assert not hasattr(alice, "tokens")
    assert await example.principal("nobody@example.com") is None
    assert await example.by_email("ALICE@example.com") == alice
    assert await example.by_slack_user(str(alice.slack_user_id)) == alice
    assert await example.by_aad_object_id(str(alice.teams_aad_object_id)) == alice
    bot = await example.principal("agent:etl-bot")
    assert bot is not None
    assert (bot.kind, bot.owner) == ("agent", "bob@example.com")


async def test_members_and_groups(example: StaticDirectory) -> None:
    security = await example.members("security")
    assert sorted(p.id for p in security) == ["bob@example.com", "carol@example.com"]
    assert await example.members("nonexistent") == []
    dba = example.group("dba")
    assert dba is not None
    assert dba.slack_channel
    assert dba.teams_conversation
    assert example.group("nonexistent") is None
    assert set(example.groups()) >= {"dba", "data-owners", "security", "sre", "oncall"}


async def test_returned_principals_are_copies(example: StaticDirectory) -> None:
    alice = await example.principal("alice@example.com")
    assert alice is not None
    alice.groups.append("security")
    again = await example.principal("alice@example.com")
    assert again is not None
    assert "security" not in again.groups


def test_agent_needs_a_human_owner(tmp_path: Path) -> None:
    message = load_error(tmp_path, "principals: [{id: 'agent:x', kind: agent}]\n")
    assert "directory.yaml: principal 'agent:x': field 'owner': required" in message
    message = load_error(
        tmp_path,
        "principals: [{id: 'agent:x', kind: agent, owner: nobody@example.com}]\n",
    )
    assert "principal 'agent:x': field 'owner': unknown principal" in message
    message = load_error(
        tmp_path,
        """\
        principals:
          - {id: 'agent:a', kind: agent, owner: 'agent:b'}
          - {id: 'agent:b', kind: agent, owner: h}
          - {id: h, kind: human}
        """,
    )
    assert "principal 'agent:a': field 'owner': 'agent:b' is not a human principal" in message


def test_duplicate_token(tmp_path: Path) -> None:
    digest = hash_token("shared")
    message = load_error(
        tmp_path,
        f"""\
        principals:
          - {{id: a, kind: human, tokens: [{{sha256: {digest}}}]}}
          - {{id: b, kind: human, tokens: [{{sha256: {digest}}}]}}
        """,
    )
    assert "directory.yaml: principal 'b': field 'tokens.0.sha256': already used by 'a'" in (
        message
    )


def test_bad_token_hash(tmp_path: Path) -> None:
    message = load_error(tmp_path, "principals: [{id: a, kind: human, tokens: [{sha256: abc}]}]\n")
    assert "principal 'a': field 'tokens.0.sha256'" in message


def test_unknown_group(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        principals: [{id: a, kind: human, groups: [dba, dbas]}]
        groups: {dba: {}}
        """,
    )
    assert "directory.yaml: principal 'a': field 'groups.1': unknown group 'dbas'" in message


def test_duplicate_ids_and_slack_users(tmp_path: Path) -> None:
    message = load_error(tmp_path, "principals: [{id: a, kind: human}, {id: a, kind: human}]\n")
    assert "field 'id': duplicate principal id" in message
    message = load_error(
        tmp_path,
        """\
        principals:
          - {id: a, kind: human, slack_user_id: U1}
          - {id: b, kind: human, slack_user_id: U1}
        """,
    )
    assert "principal 'b': field 'slack_user_id': already used by 'a'" in message


def test_typo_key_and_empty_group(tmp_path: Path) -> None:
    message = load_error(tmp_path, "principals: [{id: a, kind: human, grups: [x]}]\n")
    assert "principal 'a': field 'grups': unknown key 'grups'; did you mean 'groups'?" in message
    directory = load_directory(write(tmp_path, "groups:\n  auditors:\n"))
    assert directory.group("auditors") is not None
