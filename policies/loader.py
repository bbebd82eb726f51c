"""Read policy and directory YAML files, turning every mistake into one precise message.

A message names the file, the rule (or principal, or group) and the field, e.g.
`policy.yaml: rule 'prod-migrations': field 'escalation.0.after': invalid duration '30x' ...`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from policies.directory import DirectoryFile, StaticDirectory
from policies.engine import Policy
from policies.groups import GroupSource, SourcedDirectory
from policies.model import FieldError, Match, Outcome, PolicyFile, Rule, Window
from policies.okta import OktaGroups
from signoff.models import ApprovalRequirement, BreakGlassPolicy, EscalationStage

_POLICY_MODELS: tuple[type[BaseModel], ...] = (
    PolicyFile,
    Rule,
    Outcome,
    Match,
    ApprovalRequirement,
    EscalationStage,
    BreakGlassPolicy,
    Window,
)


class PolicyError(ValueError):
    """A policy or directory file is invalid; the message says where and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys, which plain YAML silently overwrites."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one YAML file that must hold a mapping; errors give file:line:column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError([f"{where}: YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{path}: YAML syntax error: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyError([f"{path}: expected a mapping at the top level"])
    return data


def _field_names(models: Iterable[type[BaseModel]]) -> list[str]:
    return sorted({name for model in models for name in model.model_fields})


def _subject(data: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[str | None, int]:
    """Name the rule, principal or group a location is inside, and how much of loc that took."""
    if len(loc) >= 2 and loc[0] in ("rules", "principals") and isinstance(loc[1], int):
        kind = "rule" if loc[0] == "rules" else "principal"
        items = data.get(loc[0])
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str) and ident:
            return f"{kind} {ident!r}", 2
        return f"{kind} #{loc[1] + 1}", 2
    if loc and loc[0] == "default":
        return "default", 1
    if len(loc) >= 2 and loc[0] == "groups":
        return f"group {loc[1]!r}", 2
    return None, 0


def _message(error: Any, vocabulary: list[str]) -> tuple[tuple[int | str, ...], str]:
    loc = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        path = ".".join(str(p) for p in loc) + "." + cause.field if loc else cause.field
        return tuple(int(p) if p.isdigit() else p for p in path.split(".")), cause.message
    if error["type"] == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, vocabulary, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return loc, f"unknown key {key!r}{hint}"
    if error["type"] == "missing":
        return loc, "required but missing"
    if isinstance(cause, Exception):
        return loc, str(cause)
    return loc, str(error["msg"])


def format_errors(
    source: Path | str,
    data: dict[str, Any],
    exc: ValidationError,
    models: Iterable[type[BaseModel]] = _POLICY_MODELS,
) -> PolicyError:
    """Turn a pydantic ValidationError on `data` (read from `source`) into a PolicyError."""
    vocabulary = _field_names(models)
    problems = []
    for error in exc.errors():
        loc, text = _message(error, vocabulary)
        subject, used = _subject(data, loc)
        # An unknown key is the last element of loc; naming it as the field reads naturally.
        rest = ".".join(str(p) for p in loc[used:])
        parts = [str(source)]
        if subject:
            parts.append(subject)
        if rest:
            parts.append(f"field {rest!r}")
        problems.append(": ".join([*parts, text]))
    return PolicyError(problems)


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise PolicyError([f"{path}: no *.yaml or *.yml policy files in this directory"])
        return files
    if not path.exists():
        raise PolicyError([f"{path}: no such file or directory"])
    return [path]


def load_policy(path: Path) -> Policy:
    """Load a policy file, or a directory of them (rules joined in file-name order).

    A policy directory holds only policy files: each needs `version: 1`, exactly one holds
    the `default`, and rule ids must be unique across all of them.
    """
    path = Path(path)
    rules: list[Rule] = []
    sources: dict[str, str] = {}
    default: Outcome | None = None
    for file in _policy_files(path):
        data = read_yaml(file)
        try:
            parsed = PolicyFile.model_validate(data)
        except ValidationError as exc:
            raise format_errors(file, data, exc) from None
        if parsed.default is not None:
            if default is not None:
                raise PolicyError(
                    [f"{file}: field 'default': already defined in {sources['default']}"]
                )
            default = parsed.default
            sources["default"] = str(file)
        for rule in parsed.rules:
            if rule.id in sources:
                raise PolicyError(
                    [
                        f"{file}: rule {rule.id!r}: field 'id': duplicate rule id "
                        f"(first defined in {sources[rule.id]})"
                    ]
                )
            sources[rule.id] = str(file)
            rules.append(rule)
    if default is None:
        where = f"{path}: no file defines" if path.is_dir() else f"{path}: field 'default':"
        raise PolicyError([f"{where} a default (what applies when no rule matches)"])
    return Policy(rules=rules, default=default, sources=sources)


def group_sources(parsed: DirectoryFile, source: str) -> list[GroupSource]:
    """The identity providers the file hands group membership to (`entra:`, `okta:`)."""
    sources: list[GroupSource] = []
    if parsed.entra is not None:
        # msal and requests load only where a directory asks Entra.
        from policies.entra import EntraGroups

        sources.append(EntraGroups(parsed.entra, source))
    if parsed.okta is not None:
        sources.append(OktaGroups(parsed.okta, source))
    return sources


def load_directory(path: Path) -> StaticDirectory:
    """Load a directory (people, agents, groups) YAML file, with its IdP group sources if any.

    With only `entra:` it is an EntraDirectory; with `okta:` (and maybe `entra:` for other
    groups) a SourcedDirectory asking each source about the groups mapped to it.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyError([f"{path}: no such file"])
    data = read_yaml(path)
    try:
        parsed = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        raise format_errors(path, data, exc, DirectoryFile.models()) from None
    if parsed.okta is not None:
        return SourcedDirectory(parsed, str(path), sources=group_sources(parsed, str(path)))
    if parsed.entra is not None:
        from policies.entra import EntraDirectory

        return EntraDirectory(parsed, source=str(path))
    return StaticDirectory(parsed, source=str(path))


def check_groups(policy: Policy, groups: Collection[str], directory_source: str) -> None:
    """Raise PolicyError unless every group the policy names is one of `groups`."""
    problems = []
    for rule_id, field, group in policy.group_references():
        if group not in groups:
            subject = "default" if rule_id == "default" else f"rule {rule_id!r}"
            problems.append(
                f"{policy.sources.get(rule_id, '?')}: {subject}: field {field!r}: "
                f"unknown group {group!r} (not in {directory_source})"
            )
    if problems:
        raise PolicyError(problems)


def load_policy_and_directory(
    policy_path: Path, directory_path: Path
) -> tuple[Policy, StaticDirectory]:
    """Load both files and check that every group the policy names is in the directory."""
    policy = load_policy(policy_path)
    directory = load_directory(directory_path)
    check_groups(policy, directory.groups(), directory.source)
    return policy, directory
