"""A real OpenID Provider for the tests: tests/oidc/provider.mjs (the `oidc-provider` package).

Tokens come from it the real way: client credentials over HTTP for workloads, and the OAuth
2.0 device authorization grant for people, its HTML pages (code entry, login, consent) driven
with httpx as a browser would.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

HARNESS = Path(__file__).parent / "oidc"
AUDIENCE = "https://signoff.test"
AGENTS_AUDIENCE = "https://agents.signoff.test"
CLI_CLIENT = "signoff-cli"
HUMAN_SCOPE = "openid email groups offline_access signoff"
_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)
_INPUT = re.compile(r"<input\b([^>]*)/?>", re.I)
_ATTR = re.compile(r'([\w-]+)="([^"]*)"')


class OpenIdProvider:
    """One running oidc-provider process and what tests ask of it."""

    def __init__(self, process: subprocess.Popen[str], port: int, issuer: str) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.issuer = issuer

    def client_credentials(self, client_id: str, *, resource: str | None = AUDIENCE) -> str:
        """An access token for a workload (a confidential client), as an IdP issues it."""
        data = {"grant_type": "client_credentials", "scope": "signoff"}
        if resource is not None:
            data["resource"] = resource
        response = httpx.post(
            f"{self.url}/token", data=data, auth=(client_id, f"{client_id}-secret"), timeout=10
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def start_device_flow(self, resource: str = AUDIENCE) -> dict[str, Any]:
        """Begin the device authorization grant as the CLI does (RFC 8628, step one)."""
        response = httpx.post(
            f"{self.url}/device/auth",
            data={"client_id": CLI_CLIENT, "scope": HUMAN_SCOPE, "resource": resource},
            timeout=10,
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def approve_device(self, user_code: str, account: str) -> None:
        """Be the person at the browser: enter the code, sign in as `account`, consent."""
        with httpx.Client(base_url=self.url, follow_redirects=True, timeout=10) as browser:
            page = browser.get("/device")
            for _ in range(10):
                text = page.text
                if "Sign-in Success" in text:
                    return
                forms = _FORM.findall(text)
                assert forms, f"no form on {page.url}: {text[:300]}"
                attrs, inner = forms[0]
                form = dict(_ATTR.findall(attrs))
                fields = {}
                for raw in _INPUT.findall(inner):
                    field = dict(_ATTR.findall(raw))
                    if "name" in field:
                        fields[field["name"]] = html.unescape(field.get("value", ""))
                if "user_code" in fields and not fields["user_code"]:
                    fields["user_code"] = user_code
                if "login" in fields:
                    fields["login"] = account
                    fields["password"] = "any"
                action = html.unescape(form.get("action", str(page.url)))
                page = browser.post(action, data=fields)
            raise AssertionError(f"the device flow did not finish: {page.text[:300]}")

    def poll_device(self, device_code: str) -> dict[str, Any]:
        """The token response for a device code (RFC 8628, the client's poll)."""
        response = httpx.post(
            f"{self.url}/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": device_code,
                "client_id": CLI_CLIENT,
            },
            timeout=10,
        )
        data: dict[str, Any] = response.json()
        return data

    def human_token(self, account: str, *, resource: str = AUDIENCE) -> str:
        """A person's access token through the whole device flow."""
        started = self.start_device_flow(resource)
        self.approve_device(started["user_code"], account)
        tokens = self.poll_device(started["device_code"])
        assert "access_token" in tokens, tokens
        return str(tokens["access_token"])

    def rotate(self) -> list[str]:
        """A new signing key; the JWKS then lists the new and the previous key."""
        response = httpx.post(f"{self.url}/__test/rotate", timeout=30)
        response.raise_for_status()
        return list(response.json()["kids"])

    def jwks(self) -> dict[str, Any]:
        """The provider's public keys."""
        data: dict[str, Any] = httpx.get(f"{self.url}/jwks", timeout=10).json()
        return data

    def stats(self) -> dict[str, int]:
        """How often discovery and the JWKS were fetched since the last reset."""
        data: dict[str, int] = httpx.get(f"{self.url}/__test/stats", timeout=10).json()
        return data

    def reset_stats(self) -> None:
        """Zero the fetch counters."""
        httpx.post(f"{self.url}/__test/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_provider(*, issuer: str | None = None, web_redirect: str | None = None) -> OpenIdProvider:
    """Start tests/oidc/provider.mjs on a free port and wait until discovery answers.

    `web_redirect`: also register the approval page's client (`signoff-web`) with this
    redirect URI.
    """
    node = shutil.which("node")
    if node is None or not (HARNESS / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "the OpenID Provider harness is not installed: run "
            "`npm ci --prefix tests/oidc --no-audit --no-fund` (make test does)"
        )
    script = [str(HARNESS / "provider.mjs"), "--port", "0"]
    if issuer is not None:
        script += ["--issuer", issuer]
    if web_redirect is not None:
        script += ["--web-redirect", web_redirect]
    # Rarely (twice in dozens of suite runs, once on an idle machine) node has not printed its port
    # 30 s after starting, where it takes half a second. A second start is allowed, once; what
    # the first one was doing is reported either way.
    failed: list[str] = []
    for _ in range(2):
        started = _start(node, script)
        if not isinstance(started, str):
            break
        failed.append(started)
    else:
        raise AssertionError("the OpenID Provider did not start, twice: " + " || ".join(failed))
    process, line = started
    if failed:
        warnings.warn(f"the OpenID Provider needed a second start: {failed[0]}", stacklevel=2)
    port = int(line.split()[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            discovery = httpx.get(f"{url}/.well-known/openid-configuration", timeout=2)
            if discovery.status_code == 200:
                provider = OpenIdProvider(process, port, str(discovery.json()["issuer"]))
                provider.reset_stats()
                return provider
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the OpenID Provider's discovery never answered")
        time.sleep(0.1)


# On SIGUSR2 node writes a diagnostic report (its JavaScript and native stacks).
REPORT_FLAGS = ["--report-on-signal", "--report-signal=SIGUSR2", "--report-compact"]
START_TIMEOUT = 30.0


def _start(node: str, script: list[str]) -> tuple[subprocess.Popen[str], str] | str:
    """One start of the provider: the process and its `listening` line, or why it failed."""
    with tempfile.TemporaryDirectory() as reports, tempfile.TemporaryFile("w+") as stderr:
        # Node's own words go to a file, not a pipe nobody drains, so a failed start says why.
        process = subprocess.Popen(
            [node, *REPORT_FLAGS, f"--report-directory={reports}", *script],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=HARNESS,
        )
        assert process.stdout is not None
        # Bounded: a node that never starts must fail this test, not hang the suite.
        began = time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        line = process.stdout.readline() if ready else ""
        if line.startswith("listening "):
            return process, line
        waited = time.monotonic() - began
        stacks = _report(process, Path(reports))
        process.kill()
        code = process.wait()
        stderr.seek(0)
        said = stderr.read()[-2000:]
        return (
            f"stdout {line!r} after {waited:.1f} s, exit code {code}, stderr {said!r}, "
            f"where it was: {stacks}"
        )


def _report(process: subprocess.Popen[str], reports: Path) -> str:
    """The stacks in node's diagnostic report, asked for with SIGUSR2 (if it is still up)."""
    if process.poll() is not None:
        return "it had exited"
    process.send_signal(signal.SIGUSR2)
    for _ in range(50):
        written = sorted(reports.glob("*.json"))
        if written:
            with contextlib.suppress(ValueError, OSError):
                report = json.loads(written[0].read_text())
                js = report.get("javascriptStack", {}).get("stack", [])
                native = [f.get("symbol", "")[:120] for f in report.get("nativeStack", [])[:12]]
                # An empty JavaScript stack with active handles: it was waiting on I/O.
                handles = [h.get("type") for h in report.get("libuv", []) if h.get("is_active")]
                where = {"javascript": js, "native": native, "active handles": handles}
                return json.dumps(where)[:4000]
        time.sleep(0.1)
    return "no report within 5 s (node's main thread did not get to it)"


@pytest.fixture(scope="module")
def idp() -> Iterator[OpenIdProvider]:
    """The trusted OpenID Provider, one per test module."""
    provider = start_provider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def other_idp() -> Iterator[OpenIdProvider]:
    """Another, untrusted OpenID Provider with its own issuer and keys."""
    provider = start_provider()
    yield provider
    provider.stop()
