"""What a `signoff worker` process loads: none of the gateway's or an unconfigured channel's SDKs.

Each of these costs a worker megabytes it never uses (bench/RESULTS.md, B3): FastAPI and its
instrumentation, uvicorn, webauthn and the MCP server belong to other commands; slack_sdk,
aiohttp and msal to channels or directories this deployment may not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NOT_IN_A_WORKER = {"fastapi", "uvicorn", "webauthn", "mcp", "slack_sdk", "aiohttp", "msal"}

# What `signoff worker` imports before it runs: the command line, then the worker and the
# channels a console-only deployment is configured for.
PROBE = """
import json, sys
from signoff.cli import build_app
build_app()
import workers.worker
from workers.settings import Settings
from workers.wiring.channels import notifiers_for
from policies.loader import load_policy_and_directory
settings = Settings()
policy, directory = load_policy_and_directory(settings.policy, settings.directory)
notifiers = notifiers_for(settings, directory)
print(json.dumps({
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
    "channels": [n.channel for n in notifiers],
}))
"""


def probe(env: dict[str, str]) -> dict[str, list[str]]:
    """Run the probe in a fresh interpreter with `env` added to a clean SIGNOFF_ environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    path = os.pathsep.join([str(ROOT), str(ROOT / "sdk")])
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_console_only_worker_loads_no_gateway_or_channel_sdk() -> None:
    loaded = probe({})
    assert loaded["channels"] == ["console"]
    assert NOT_IN_A_WORKER.isdisjoint(loaded["modules"]), sorted(
        NOT_IN_A_WORKER & set(loaded["modules"])
    )
    # The probe really loaded the worker and its policy engine.
    assert {"temporalio", "workers", "workflows", "cel"} <= set(loaded["modules"])


def test_a_configured_channel_loads_its_sdk() -> None:
    loaded = probe({"SIGNOFF_SLACK_BOT_TOKEN": "xoxb-not-used"})
    assert loaded["channels"] == ["console", "slack"]
    assert "slack_sdk" in loaded["modules"]
    # Teams' and the gateway's stay out (Slack's package brings its FastAPI router along).
    assert {"msal", "webauthn", "uvicorn", "mcp"}.isdisjoint(loaded["modules"])
