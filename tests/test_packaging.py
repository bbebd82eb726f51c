"""The two distributions: the agent SDK installs alone, beside other `workflows`, and works.

Builds both wheels, installs only the SDK into a fresh venv next to llama-index-workflows
(whose import name, `workflows`, is also the server's), and drives the live dev stack from
there with `signoff.SignoffClient`, as an agent builder's environment would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from activities.audit import Ledger
from signoff.cli import build_app
from tests.conftest import running_worker
from tests.gateway_fixtures import LiveGateway, gateway_process, live_settings, token

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip"]  # the machine's pip config (index, cache) applies
SDK_COMMANDS = {
    "submit",
    "status",
    "pending",
    "approve",
    "deny",
    "amend",
    "cancel",
    "whoami",
    "login",
    "logout",
    "mcp",
    "windows",
    "review",
    "revoke",
    "undo",
}
SERVER_COMMANDS = {"dev", "worker", "gateway", "db", "audit", "policy", "keys", "demo"}
# Server-side distributions an agent's environment must never receive from the SDK.
SERVER_ONLY = {
    "signoff-server",
    "temporalio",
    "asyncpg",
    "pglast",
    "fastapi",
    "slack-sdk",
    "msal",
    "aiohttp",
    "opentelemetry-sdk",
    "prometheus-client",
    "pydantic-settings",
    "common-expression-language",
}
# `mcp` itself needs an ASGI server for its HTTP transport: it, not signoff, brings uvicorn.
VIA_MCP_ONLY = {"uvicorn"}

INSPECT = """
import importlib.metadata as md, json, re, sys
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
requires = {}
for dist in md.distributions():
    names = [norm(re.split(r"[ ;<>=!~\\[(]", r, maxsplit=1)[0]) for r in dist.requires or []
             if "extra ==" not in r]
    requires[norm(dist.metadata["Name"])] = names
json.dump(requires, sys.stdout)
"""

IMPORTS = """
import importlib.metadata as md, json, sys
import signoff, workflows
from signoff.cli import build_app
from typer.main import get_command
from workflows import Workflow, step  # llama-index-workflows' API, not the signoff server's
json.dump({
    "signoff": signoff.__file__,
    "workflows": workflows.__file__,
    "workflows_from": md.packages_distributions().get("workflows"),
    "missing": [name for name in signoff.__all__ if not hasattr(signoff, name)],
    "commands": sorted(get_command(build_app()).commands),
}, sys.stdout)
"""

# The agent: an allowed noop succeeds; one that needs a DBA is denied and `run` says so.
AGENT = """
import asyncio, json, os
import signoff

async def main() -> None:
    gateway = os.environ["SIGNOFF_GATEWAY"]
    async with (
        signoff.SignoffClient(gateway, os.environ["AGENT_TOKEN"]) as agent,
        signoff.SignoffClient(gateway, os.environ["APPROVER_TOKEN"]) as dba,
    ):
        done = await agent.request(
            "noop", "sandbox-sdk", {"from": "sdk venv"}, "packaging test", wait=30
        )
        gated = asyncio.create_task(
            agent.run("noop", "one-sdk", {"rows": 1}, "needs a DBA", timeout=60)
        )
        for _ in range(300):
            inbox = [s for s in await dba.pending() if s.request.target == "one-sdk"]
            if inbox:
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the gated action never reached the DBA's inbox")
        await dba.deny(inbox[0].id, "not from the packaging test")
        try:
            await gated
        except signoff.ActionDenied as denied:
            outcome = {
                "status": denied.status.status.value,
                "by": denied.denied_by,
                "reason": denied.reason,
            }
        else:
            raise SystemExit("a denied action ran")
    print(json.dumps({
        "allowed": done.status.value, "result": done.result, "denied": outcome,
    }))

asyncio.run(main())
"""


@dataclass
class SdkVenv:
    """A fresh venv holding the SDK wheel (and later llama-index-workflows), nothing else."""

    root: Path
    sdk_only: dict[str, list[str]]  # distribution -> what it requires, before llama-index

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment without anything pointing at the repository's code."""
        skip = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        env = {k: v for k, v in os.environ.items() if k not in skip}
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def run(self, *args: str, cwd: Path, **extra_env: str) -> str:
        """Run a command of the venv (outside the repository) and return its stdout."""
        done = subprocess.run(
            args, cwd=cwd, env=self.env(**extra_env), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def pip_install(venv: Path, *requirements: str) -> None:
    """Install into `venv` with this interpreter's pip (the venv has none of its own)."""
    done = subprocess.run(
        [*PIP, "--python", str(venv / "bin" / "python"), "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def installed(venv: SdkVenv, cwd: Path) -> dict[str, list[str]]:
    """Every distribution in the venv and the distributions it requires."""
    found: dict[str, list[str]] = json.loads(venv.run(str(venv.python), "-c", INSPECT, cwd=cwd))
    return found


def required_by(requires: dict[str, list[str]], name: str) -> set[str]:
    """Installed distributions that require `name`."""
    return {dist for dist, needs in requires.items() if name in needs}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both distributions built as wheels: the SDK (sdk/) and the server (the top level)."""
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [*PIP, "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT / "sdk"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    built = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert set(built) == {"signoff", "signoff_server"}, built
    return built


@pytest.fixture(scope="module")
def sdk_venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> SdkVenv:
    """A fresh venv with the SDK wheel alone, measured, then llama-index-workflows beside it."""
    root = tmp_path_factory.mktemp("sdk-venv") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
    )
    pip_install(root, str(wheels["signoff"]))
    venv = SdkVenv(root, {})
    venv.sdk_only = installed(venv, root.parent)
    site = next((root / "lib").glob("python3*/site-packages"))
    size = subprocess.run(["du", "-sk", str(site)], capture_output=True, text=True, check=True)
    kib = int(size.stdout.split()[0])
    # For the closing note: what `pip install signoff` costs an agent's environment.
    print(
        f"\nSDK venv: {len(venv.sdk_only)} distributions (signoff included, no pip), "
        f"site-packages {kib / 1024:.1f} MiB"
    )
    pip_install(root, "llama-index-workflows")
    return venv


@pytest.fixture(scope="module")
async def live(
    sdk_venv: SdkVenv, client: Client, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveGateway]:
    """`signoff gateway` as a child process and a worker here, after the venv is built."""
    settings = live_settings(client)
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    async with running_worker(client, settings, ledger), gateway_process(settings, log) as gw:
        yield gw


def test_the_sdk_wheel_is_signoff_alone(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["signoff"]) as sdk:
        names = sdk.namelist()
        metadata = sdk.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {name.split("/")[0] for name in names} == {"signoff", "signoff-0.2.0.dist-info"}
    assert "signoff/py.typed" in names
    requires = {
        re.split(r"[ <>=!~;\[]", line.removeprefix("Requires-Dist: "), maxsplit=1)[0].lower()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    assert requires == {"httpx", "pydantic", "typer", "rich", "mcp"}
    sdk_project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    assert sdk_project["scripts"] == {"signoff": "signoff.cli:main"}


def test_the_server_wheel_builds_on_the_sdk(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["signoff_server"]) as server:
        names = server.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
        metadata = server.read(f"{info}/METADATA").decode()
        entry_points = server.read(f"{info}/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names} - {info}
    assert tops == {"workflows", "activities", "policies", "workers", "channels"}
    assert re.search(r"^Requires-Dist: signoff\b", metadata, re.MULTILINE)
    assert "[signoff.commands]" in entry_points
    assert "server = workers.cli:register" in entry_points


def test_sdk_alone_pulls_in_no_server_package(sdk_venv: SdkVenv) -> None:
    requires = sdk_venv.sdk_only
    assert "signoff" in requires
    assert set(requires) & SERVER_ONLY == set()
    for name in VIA_MCP_ONLY & set(requires):
        assert required_by(requires, name) == {"mcp"}, name
    # With llama-index-workflows beside it, still nothing of the server.
    assert set(installed(sdk_venv, sdk_venv.root.parent)) & SERVER_ONLY == set()


def test_sdk_beside_llama_index_workflows(sdk_venv: SdkVenv) -> None:
    found: dict[str, Any] = json.loads(
        sdk_venv.run(str(sdk_venv.python), "-c", IMPORTS, cwd=sdk_venv.root.parent)
    )
    site = str(sdk_venv.root)
    assert found["workflows"].startswith(site), found
    assert found["workflows_from"] == ["llama-index-workflows"], found
    assert found["signoff"].startswith(site), found
    assert found["missing"] == []
    assert set(found["commands"]) == SDK_COMMANDS


def test_sdk_cli_help_lists_agent_commands_only(sdk_venv: SdkVenv) -> None:
    shown = sdk_venv.run(
        str(sdk_venv.root / "bin" / "signoff"), "--help", cwd=sdk_venv.root.parent, COLUMNS="120"
    )
    listed = set(re.findall(r"^│ ([a-z]+) ", shown, re.MULTILINE))
    assert listed == SDK_COMMANDS, shown


def test_with_the_server_installed_signoff_lists_every_command() -> None:
    # The dev environment holds both distributions: the server's commands join by entry point.
    shown = CliRunner().invoke(build_app(), ["--help"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    listed = set(re.findall(r"^│ ([a-z]+) ", shown.output, re.MULTILINE))
    assert listed == SDK_COMMANDS | SERVER_COMMANDS, shown.output


async def test_agent_in_the_sdk_venv_runs_against_the_dev_stack(
    sdk_venv: SdkVenv, live: LiveGateway
) -> None:
    script = sdk_venv.root.parent / "agent.py"
    script.write_text(AGENT)
    env = sdk_venv.env(
        SIGNOFF_GATEWAY=live.url, AGENT_TOKEN=token("bot"), APPROVER_TOKEN=token("alice")
    )
    # Async, so the worker in this process keeps running while the agent waits on it.
    process = await asyncio.create_subprocess_exec(
        str(sdk_venv.python),
        str(script),
        cwd=sdk_venv.root.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out.decode(), err.decode(), live.output())
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["allowed"] == "succeeded"
    assert report["result"] == {"echo": {"from": "sdk venv"}}
    assert report["denied"]["status"] == "denied"
    assert report["denied"]["by"] == "alice@example.com"
    assert report["denied"]["reason"] == "not from the packaging test"
