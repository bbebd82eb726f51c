"""The worker's and gateway's event loop: uvloop where installed, asyncio's when asked."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from pathlib import Path

import pytest

from tests.cli import run_signoff
from workers import event_loop
from workers.event_loop import EventLoopUnavailable
from workers.settings import SettingsError, load_settings


async def loop_module() -> str:
    """The module of the loop this coroutine runs on."""
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    assert event_loop.run(loop_module()).startswith("uvloop")
    assert event_loop.run(loop_module(), "uvloop").startswith("uvloop")


def test_asyncio_keeps_asyncio_s_own_loop() -> None:
    assert event_loop.run(loop_module(), "asyncio").startswith("asyncio")


def test_uvloop_asked_for_where_it_is_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows: the import fails
    assert event_loop.run(loop_module()).startswith("asyncio")  # auto falls back
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine never awaited would warn
        with pytest.raises(EventLoopUnavailable, match="uvloop is not installed here"):
            event_loop.run(loop_module(), "uvloop")
    monkeypatch.setenv("SIGNOFF_EVENT_LOOP", "uvloop")
    with pytest.raises(SettingsError, match="SIGNOFF_EVENT_LOOP: the uvloop event loop"):
        load_settings()


def test_an_unknown_loop_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_EVENT_LOOP", "trio")
    with pytest.raises(SettingsError, match="SIGNOFF_EVENT_LOOP: Input should be 'auto'"):
        load_settings()


def test_the_worker_refuses_an_unknown_loop_before_it_starts(tmp_path: Path) -> None:
    env = {**os.environ, "SIGNOFF_EVENT_LOOP": "tornado"}
    result = run_signoff("worker", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "SIGNOFF_EVENT_LOOP: Input should be 'auto', 'asyncio' or 'uvloop'" in result.stderr
    assert "Traceback" not in result.stderr
