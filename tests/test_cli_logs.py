"""How `signoff worker` and `signoff gateway` set up logging (workers/cli/logs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import run_signoff

# A process of its own: configure() changes the logging module for the whole process.
LOG_ONE_RECORD = """
import logging
from workers.cli.logs import configure

class Keep(logging.Handler):
    def emit(self, record):
        print(record.funcName, record.lineno, record.pathname)

configure("info")
logging.getLogger().addHandler(Keep())
logging.getLogger("signoff.test").info("executing noop on sandbox")
"""


def test_records_keep_the_format_without_looking_up_their_caller() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOG_ONE_RECORD], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # The format's line, as operators and `signoff dev` read it.
    assert result.stderr.rstrip().endswith(" signoff.test executing noop on sandbox")
    # No frame was walked to find the caller: logging's placeholders, not this script's line.
    assert result.stdout.split() == ["(unknown", "function)", "0", "(unknown", "file)"]


@pytest.mark.parametrize("command", ["worker", "gateway"])
def test_an_unknown_log_level_is_refused_by_name(command: str, tmp_path: Path) -> None:
    result = run_signoff(command, "--log-level", "loud", env=dict(os.environ), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "unknown log level 'loud'; choose one of CRITICAL" in result.stderr
    assert "DEBUG" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_known_level_in_any_case_is_taken(tmp_path: Path) -> None:
    # It gets past logging to the settings, which refuse the missing policy file.
    env = {**os.environ, "SIGNOFF_POLICY": str(tmp_path / "missing.yaml")}
    result = run_signoff("worker", "--log-level", "warning", env=env, cwd=tmp_path)
    assert "unknown log level" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert "missing.yaml" in result.stderr
