"""What every `signoff` command shares: the one way to fail, and `--param KEY=VALUE`."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from signoff import neutralise

errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr (agent text neutralised) and return the exit to raise."""
    errors.print(
        f"[red]error:[/red] {neutralise.rich(message)}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(code)


def parse_param(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` as a pair; VALUE is JSON when it parses, else the plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise fail(f"--param {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw
