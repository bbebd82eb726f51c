"""The shape holds: layers point down (import-linter), and no import hides inside a function."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ("workflows", "activities", "policies", "workers", "channels")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the repository's import contracts over the packages in `tree`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": f"{tree}:{tree / 'sdk'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and pyproject, copied so a test can break them."""
    tree = tmp_path_factory.mktemp("shape")
    for name in SERVER:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "sdk", tree / "sdk", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_import_contracts_hold() -> None:
    """Every contract in pyproject is kept by the tree as it is."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward", "broken"),
    [
        # A channel reaching up into the gateway's settings: an adapter importing a process.
        ("channels/notifier.py", "import workers.settings", "channels is not allowed to import"),
        # The SDK reaching into the server: agents would need Temporal installed.
        ("sdk/signoff/models.py", "import workflows.messages", "The agent SDK imports nothing"),
        # The policy engine reaching up into an activity.
        ("policies/engine.py", "import activities.policy", "policies is not allowed to import"),
        # The same from inside a function: the contracts see imports wherever they are.
        (
            "policies/engine.py",
            "def _later() -> None: import activities.policy",
            "policies is not allowed to import",
        ),
    ],
)
def test_an_upward_import_breaks_the_build(
    copy: Path, module: str, upward: str, broken: str
) -> None:
    """Adding one import that points up makes `lint-imports` (so `make lint`) fail, naming it."""
    path = copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{upward}  # noqa\n")
        result = _lint_imports(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert broken in result.stdout
    assert upward.split()[-1] in result.stdout


# The modules that import inside a function, each to keep a process from loading what it never
# runs (bench/RESULTS.md, B3: a worker was 50 MB larger): the `signoff` command loads every
# command's module, and each command loads its own process; a worker loads a channel's SDK, or
# Entra's, only when configured for it; uvloop is loaded only when chosen (and may be missing,
# as on Windows). The import contracts see these imports all the same.
LAZY = {
    "sdk/signoff/cli/mcp.py",
    "workers/cli/gateway.py",
    "workers/cli/worker.py",
    "workers/event_loop.py",
    "workers/wiring/channels.py",
    "policies/loader.py",
}


def _imports_inside_functions(root: Path) -> list[str]:
    """Every `import` statement in a function body outside LAZY, as path:line."""
    found = []
    for name in (*SERVER, "sdk/signoff"):
        for path in sorted((root / name).rglob("*.py")):
            if str(path.relative_to(root)) in LAZY:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    for inner in ast.walk(node):
                        if isinstance(inner, ast.Import | ast.ImportFrom):
                            found.append(f"{path.relative_to(root)}:{inner.lineno}")
    return sorted(set(found))


def test_no_import_hides_inside_a_function() -> None:
    """Imports sit at module top, where a reader sees them, but in the few LAZY modules."""
    assert _imports_inside_functions(ROOT) == []
    assert all((ROOT / module).is_file() for module in LAZY)
