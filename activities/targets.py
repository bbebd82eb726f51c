"""Targets: the named systems actions run against, and where their credentials come from.

Credentials never travel through a workflow. The targets file names an environment variable
or a file for each secret, and the worker reads it only at the moment an executor runs.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from policies import EXAMPLES_DIR
from signoff.models import NAME_PATTERN, Duration

DEFAULT_TARGETS_PATH = EXAMPLES_DIR / "targets.yaml"

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TargetError(Exception):
    """A target is unknown, misconfigured, or its secret cannot be read."""


def read_secret(target: str, env: str | None = None, file: Path | None = None) -> str:
    """Read one secret from an environment variable or a file; errors name the source only."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise TargetError(f"target {target!r}: environment variable {env} is not set")
        return value
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TargetError(
                f"target {target!r}: cannot read secret file {file}: {exc.strerror}"
            ) from None
        if not value:
            raise TargetError(f"target {target!r}: secret file {file} is empty")
        return value
    raise TargetError(f"target {target!r}: no secret source configured")


def _readable(target: str, env: str | None = None, file: Path | None = None) -> list[str]:
    try:
        return [read_secret(target, env, file)]
    except TargetError:
        return []


class _TargetBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def secret_values(self, name: str) -> list[str]:
        """Every secret this target would resolve to, so messages can be scrubbed of them."""
        return []


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid environment variable name")
    return value


class PostgresTarget(_TargetBase):
    """A PostgreSQL database; the DSN comes from `dsn_env` or `dsn_file`.

    Queries and exports connect with that DSN; `sql.execute` connects with `write_dsn_env` /
    `write_dsn_file` when set (a reader and a writer role), else with the same DSN. Every
    connection's role is checked: a superuser or a member of a role that reaches the server's
    OS, files or other sessions is refused unless `allow_privileged_role: true`.
    """

    kind: Literal["postgres"]
    dsn_env: str | None = None
    dsn_file: Path | None = None
    write_dsn_env: str | None = None
    write_dsn_file: Path | None = None
    connect_timeout: Duration = timedelta(seconds=10)
    statement_timeout: Duration = timedelta(minutes=1)
    idle_in_transaction_timeout: Duration = timedelta(seconds=30)
    allow_privileged_role: bool = Field(
        default=False,
        description="Accept a superuser or pg_execute_server_program/... member (unsafe)",
    )
    allow_privileged_grants: bool = Field(
        default=False,
        description="postgres.grant_role may grant superuser-like or pg_* roles (unsafe)",
    )

    @field_validator("dsn_env", "write_dsn_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return value if value is None else _check_env_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> PostgresTarget:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env or dsn_file")
        if self.write_dsn_env is not None and self.write_dsn_file is not None:
            raise ValueError("set at most one of write_dsn_env or write_dsn_file")
        return self

    def dsn(self, name: str, *, write: bool = False) -> str:
        """The connection string, read now from the environment or the file."""
        if write and (self.write_dsn_env is not None or self.write_dsn_file is not None):
            return read_secret(name, self.write_dsn_env, self.write_dsn_file)
        return read_secret(name, self.dsn_env, self.dsn_file)

    def secret_values(self, name: str) -> list[str]:
        """The DSNs and the passwords inside them."""
        found = _readable(name, self.dsn_env, self.dsn_file)
        if self.write_dsn_env is not None or self.write_dsn_file is not None:
            found += _readable(name, self.write_dsn_env, self.write_dsn_file)
        values: list[str] = []
        for dsn in found:
            try:
                password = urlsplit(dsn).password
            except ValueError:
                password = None
            values += [dsn, password] if password else [dsn]
        return values


class HttpTarget(_TargetBase):
    """An HTTP API; requests go to paths under `base_url` with the stored headers."""

    kind: Literal["http"]
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict, description="non-secret headers")
    headers_env: dict[str, str] = Field(default_factory=dict, description="header -> env var")
    headers_file: dict[str, Path] = Field(default_factory=dict, description="header -> file")
    allowed_methods: list[str] = Field(default_factory=lambda: list(HTTP_METHODS))
    timeout: Duration = timedelta(seconds=30)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("base_url must not carry a query, fragment or credentials")
        return value.rstrip("/")

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {header: _check_env_name(env) for header, env in value.items()}

    @field_validator("allowed_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        methods = [m.upper() for m in value]
        unknown = [m for m in methods if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP methods {unknown}; use {list(HTTP_METHODS)}")
        return methods

    def resolved_headers(self, name: str) -> dict[str, str]:
        """All headers, secrets read now."""
        headers = dict(self.headers)
        for header, env in self.headers_env.items():
            headers[header] = read_secret(name, env=env)
        for header, file in self.headers_file.items():
            headers[header] = read_secret(name, file=file)
        return headers

    def secret_values(self, name: str) -> list[str]:
        """The values of the secret headers."""
        return [
            *(v for env in self.headers_env.values() for v in _readable(name, env=env)),
            *(v for file in self.headers_file.values() for v in _readable(name, file=file)),
        ]


class ShellTarget(_TargetBase):
    """A machine where allow-listed commands run without a shell."""

    kind: Literal["shell"]
    allowed: list[Annotated[list[str], Field(min_length=1)]] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict, description="extra, non-secret variables")

    def allows(self, argv: list[str]) -> bool:
        """Whether argv starts with one of the allowed prefixes."""
        return any(argv[: len(prefix)] == prefix for prefix in self.allowed)


class GenericTarget(_TargetBase):
    """A target for user-registered executors: free-form config plus named secrets."""

    kind: Literal["generic"]
    config: dict[str, JsonValue] = Field(default_factory=dict)
    secrets_env: dict[str, str] = Field(default_factory=dict, description="name -> env var")
    secrets_file: dict[str, Path] = Field(default_factory=dict, description="name -> file")

    @field_validator("secrets_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {key: _check_env_name(env) for key, env in value.items()}

    def secret(self, name: str, key: str) -> str:
        """One named secret, read now."""
        if key in self.secrets_env:
            return read_secret(name, env=self.secrets_env[key])
        if key in self.secrets_file:
            return read_secret(name, file=self.secrets_file[key])
        raise TargetError(f"target {name!r}: no secret named {key!r} is configured")

    def secret_values(self, name: str) -> list[str]:
        """The values of every configured secret that can be read."""
        return [
            *(v for env in self.secrets_env.values() for v in _readable(name, env=env)),
            *(v for file in self.secrets_file.values() for v in _readable(name, file=file)),
        ]


Target: TypeAlias = Annotated[
    PostgresTarget | HttpTarget | ShellTarget | GenericTarget, Field(discriminator="kind")
]
TargetKind = Literal["postgres", "http", "shell", "generic"]


class Targets(BaseModel):
    """The parsed targets file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Target] = Field(default_factory=dict)

    def get(self, name: str) -> Target | None:
        """The target called `name`, if the file defines it."""
        return self.targets.get(name)

    def names(self) -> list[str]:
        """The names of all targets, sorted."""
        return sorted(self.targets)


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    if len(loc) >= 2 and loc[0] == "targets":
        name, rest = loc[1], loc[2:]
        # The discriminated union puts the kind tag into the location; readers never wrote it.
        if rest and rest[0] in ("postgres", "http", "shell", "generic"):
            rest = rest[1:]
        where = f"target {name!r}"
        if rest:
            where += f": field {'.'.join(rest)}"
    else:
        where = f"field {'.'.join(loc)}" if loc else "top level"
    # Only the message, never error["input"]: a misplaced secret must not reach a log.
    return f"{where}: {error['msg']}"


def load_targets(path: Path | str | None = None) -> Targets:
    """Load and validate a targets file; a missing default file means no targets."""
    file = Path(path) if path is not None else DEFAULT_TARGETS_PATH
    if not file.exists():
        if file.resolve() == DEFAULT_TARGETS_PATH.resolve():
            return Targets()
        raise TargetError(f"{file}: targets file not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # Problem and line only: the YAML error's snippet could quote a misplaced secret.
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise TargetError(f"{file}: not valid YAML{line}: {problem}") from None
    if data is None:
        return Targets()
    try:
        return Targets.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise TargetError(f"{file}: {problems}") from None
