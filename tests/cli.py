"""The whole `signoff` command as an installed user has it: SDK commands plus the server's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from signoff.cli import build_app

app = build_app()


def run_signoff(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed `signoff` command in a process of its own, as an operator does."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "signoff"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
