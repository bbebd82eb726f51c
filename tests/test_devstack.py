"""`signoff dev` as a user runs it: a subprocess on free ports in a temporary data dir.

The stack takes a few seconds to come up, so one test drives a whole session: start, submit and
approve over HTTP, run `signoff demo`, stop with SIGTERM, check nothing is left running, start
again on the same data dir and find the pending action still pending.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from policies.directory import DEV_TOKENS
from workers.dev.binaries import temporal_cli
from workflows import search_attributes as sa
from workflows.search_attributes import CACHE_BYPASS

SIGNOFF = Path(sys.executable).parent / "signoff"
READY_TIMEOUT = 180.0
STOP_BOUND = 60.0
MARK = "SIGNOFF_DEVSTACK_TEST_MARK"


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def marked_processes(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the mark: everything dev started."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The state follows the parenthesised command name; zombies are dead already.
        state = stat.rsplit(")", 1)[1].split()[0]
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a pid is a live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Stack:
    """A running `signoff dev` subprocess and how to reach it."""

    def __init__(self, data_dir: Path, cwd: Path, ports: list[int], mark: str) -> None:
        self.data_dir = data_dir
        self.mark = mark
        self.temporal_port, self.ui_port, self.gateway_port = ports
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.output = data_dir.parent / f"dev-{uuid.uuid4().hex[:6]}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
        env[MARK] = mark
        self.env = env
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    str(SIGNOFF),
                    "dev",
                    "--data-dir",
                    str(data_dir),
                    "--temporal-port",
                    str(self.temporal_port),
                    "--ui-port",
                    str(self.ui_port),
                    "--gateway-port",
                    str(self.gateway_port),
                ],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group, as in a terminal; the test signals the supervisor alone.
                start_new_session=True,
            )
        self.pids: dict[str, object] = {}

    def text(self) -> str:
        """Everything `signoff dev` printed so far."""
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Wait for the ready banner; fail with the output if it does not come."""
        deadline = time.monotonic() + READY_TIMEOUT
        # The banner's last line: the banner is written at once, this checks it is whole.
        while "Ctrl-C stops everything." not in self.text():
            if self.process.poll() is not None:
                pytest.fail(f"signoff dev exited with {self.process.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"signoff dev not ready in {READY_TIMEOUT}s:\n{self.text()}")
            time.sleep(0.5)
        self.pids = json.loads((self.data_dir / "pids.json").read_text())

    def child_pids(self) -> list[int]:
        """The pids of the children and the embedded Postgres, from pids.json."""
        children = self.pids["children"]
        assert isinstance(children, dict)
        pids = [int(p) for p in children.values()]
        if self.pids.get("postgres"):
            pids.append(int(str(self.pids["postgres"])))
        return pids

    def terminate(self) -> float:
        """SIGTERM the supervisor; return how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=STOP_BOUND)
        return time.monotonic() - started

    def kill_everything(self) -> None:
        """Last resort after a failure: no test leaves processes behind."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in marked_processes(self.mark):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def running_stack(data_dir: Path, cwd: Path, ports: list[int]) -> Iterator[Stack]:
    """`signoff dev`, ready; stopped (forcefully, if the test failed) afterwards."""
    stack = Stack(data_dir, cwd, ports, uuid.uuid4().hex)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.kill_everything()


def earlier_release_database(db: Path, port: int, log: Path) -> None:
    """Temporal's database as a release before `SignoffExpires` (round 12) left it."""
    flags = sa.dev_server_flags()
    at = flags.index(f"{sa.EXPIRES.name}=Datetime")
    del flags[at - 1 : at + 1]
    cli = str(temporal_cli())
    address = ["--ip", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        server = subprocess.Popen(
            [cli, "server", "start-dev", "--db-filename", str(db), "--headless", *address, *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        health = [cli, "operator", "cluster", "health", "--address", f"127.0.0.1:{port}"]
        for _ in range(300):
            if subprocess.run(health, capture_output=True, timeout=30).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"the earlier release's Temporal never answered; see {log}")
    finally:
        server.terminate()
        server.wait(timeout=60)


def auth(principal: str) -> dict[str, str]:
    """The Authorization header of an example dev token."""
    return {"Authorization": f"Bearer {DEV_TOKENS[principal]}"}


def submit(http: httpx.Client, target: str, **params: object) -> dict[str, object]:
    """agent:etl-bot submits a noop; the answer once it left `evaluating`."""
    response = http.post(
        "/v1/actions",
        headers=auth("agent:etl-bot"),
        json={
            "action": "noop",
            "target": target,
            "params": params,
            "justification": "devstack test",
        },
    )
    assert response.status_code == 202, response.text
    status = response.json()
    for _ in range(100):
        if status["status"] != "evaluating":
            return status
        time.sleep(0.1)
        status = http.get(f"/v1/actions/{status['id']}", headers=auth("agent:etl-bot")).json()
    raise AssertionError(f"still evaluating: {status}")


def approve(http: httpx.Client, status: dict[str, object], approver: str) -> dict[str, object]:
    """Approve an action and wait for its final status."""
    response = http.post(
        f"/v1/actions/{status['id']}/decisions",
        headers=auth(approver),
        json={"decision": "approve", "digest": status["digest"], "reason": "test"},
    )
    assert response.status_code == 200, response.text
    final = http.get(f"/v1/actions/{status['id']}?wait=30", headers=auth(approver))
    assert final.status_code == 200, final.text
    result: dict[str, object] = final.json()
    return result


def assert_all_gone(stack: Stack) -> None:
    """Nothing `signoff dev` started is still running."""
    deadline = time.monotonic() + 5
    leftovers: list[int] = []
    while time.monotonic() < deadline:
        leftovers = [p for p in stack.child_pids() if alive(p)]
        leftovers += marked_processes(stack.mark)
        if not leftovers:
            return
        time.sleep(0.2)
    raise AssertionError(f"left running: {leftovers}")


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A taken port is named with its flag, exit code 2, no traceback, nothing started."""
    taken, ui, gateway = free_ports(3)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        result = subprocess.run(
            [
                str(SIGNOFF),
                "dev",
                "--data-dir",
                str(tmp_path / "data"),
                "--temporal-port",
                str(taken),
                "--ui-port",
                str(ui),
                "--gateway-port",
                str(gateway),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"port {taken} is in use; choose another with --temporal-port" in output
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "temporal.db").exists()
    assert not (tmp_path / "data" / "pg").exists()


@pytest.mark.slow
def test_dev_stack_round_trip(tmp_path: Path) -> None:
    """Start, submit and approve over HTTP, demo, SIGTERM, no orphans; restart keeps pending.

    The data dir is an earlier release's: its Temporal database lacks a search attribute this
    release sets, which the stack registers before its worker starts.
    """
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ports = free_ports(3)
    earlier_release_database(data_dir / "temporal.db", ports[0], tmp_path / "earlier.log")
    with running_stack(data_dir, tmp_path, ports) as stack:
        assert stack.gateway in stack.text()
        assert f"new to this data dir: {sa.EXPIRES.name}" in stack.text()
        assert "dev-etl-bot" in stack.text()  # the example directory's tokens are shown
        # The key pair: private key owner-only and given to the gateway alone.
        keys = data_dir / "keys"
        assert (keys / "gateway-signing.pem").stat().st_mode & 0o777 == 0o600
        children = stack.pids["children"]
        assert isinstance(children, dict)
        worker_env = Path(f"/proc/{children['worker']}/environ").read_bytes().split(b"\0")
        gateway_env = Path(f"/proc/{children['gateway']}/environ").read_bytes().split(b"\0")
        assert f"SIGNOFF_VERIFY_KEYS={(keys / 'public').resolve()}".encode() in worker_env
        assert not any(v.startswith(b"SIGNOFF_SIGNING_KEY=") for v in worker_env)
        assert any(v.startswith(b"SIGNOFF_SIGNING_KEY=") for v in gateway_env)
        # Temporal reads search attributes through its cache, as a cluster does (issue 16):
        # the actions below publish theirs at once, so registering first was enough.
        temporal_argv = Path(f"/proc/{children['temporal']}/cmdline").read_bytes().split(b"\0")
        assert f"{CACHE_BYPASS}=false".encode() in temporal_argv
        # The worker and gateway run on uvloop, and the gateway parses HTTP with httptools
        # (issue 16): each has the library's compiled module mapped.
        for name, libraries in (("worker", ["uvloop"]), ("gateway", ["uvloop", "httptools"])):
            maps = Path(f"/proc/{children[name]}/maps").read_text()
            assert [lib for lib in libraries if f"/{lib}/" not in maps] == [], name
        # A request smuggled past the parser (a length and chunked at once) is a 400 from it,
        # never a request, and the gateway goes on serving.
        gateway = httpx.URL(stack.gateway)
        with socket.create_connection((gateway.host, gateway.port or 80), timeout=30) as raw:
            raw.sendall(
                b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n"
            )
            assert raw.recv(64).startswith(b"HTTP/1.1 400 ")
        assert httpx.get(f"{stack.gateway}/readyz", timeout=30).status_code == 200
        ui = httpx.get(f"http://127.0.0.1:{stack.ui_port}/", timeout=30)
        assert ui.status_code == 200  # the Temporal Web UI is on

        # A second stack on the same data dir is refused before it starts anything.
        second = subprocess.run(
            [str(SIGNOFF), "dev", "--data-dir", str(data_dir), "--temporal-port", "1"],
            cwd=tmp_path,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another `signoff dev`" in second.stderr
        with httpx.Client(base_url=stack.gateway, timeout=60) as http:
            waiting = submit(http, "staging", step="approve me")
            assert waiting["status"] == "pending_approval", waiting
            done = approve(http, waiting, "dave@example.com")
            assert done["status"] == "succeeded", done
            assert done["result"] == {"echo": {"step": "approve me"}}

            kept = submit(http, "staging", step="survive a restart")
            assert kept["status"] == "pending_approval", kept

            # Black box, as an SRE with the dev server's CLI: a forged approval is refused.
            forged = json.dumps(
                {"approver": "dave@example.com", "decision": "approve", "digest": kept["digest"]}
            )
            signal_cli = subprocess.run(
                [
                    str(temporal_cli()),
                    "workflow",
                    "signal",
                    "--address",
                    f"127.0.0.1:{stack.temporal_port}",
                    "--workflow-id",
                    kept["id"],
                    "--name",
                    "decision",
                    "--input",
                    forged,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert signal_cli.returncode == 0, signal_cli.stderr
            for _ in range(100):
                seen = http.get(f"/v1/actions/{kept['id']}", headers=auth("dave@example.com"))
                if seen.json()["refused"]:
                    break
                time.sleep(0.1)
            assert seen.json()["status"] == "pending_approval"
            assert [r["code"] for r in seen.json()["refused"]] == ["unsigned"]
            assert seen.json()["decisions"] == []

        demo = subprocess.run(
            [str(SIGNOFF), "demo", "--gateway", stack.gateway],
            cwd=tmp_path,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        for line in ("succeeded", "pending_approval", "403", "denied_by_policy", "reverted"):
            assert line in demo.stdout, demo.stdout
        # The approved export really ran against the sample analytics database.
        assert "region,customers" in demo.stdout
        assert "emea,3" in demo.stdout
        # The just-in-time grant was active, then revoked by the agent (analytics_writers).
        assert "ended: revoked by agent:etl-bot" in demo.stdout

        # The console channel's approval requests reach the terminal.
        assert "[worker]" in stack.text()
        took = stack.terminate()
        assert took < STOP_BOUND
        assert stack.process.returncode == 0, stack.text()
        assert_all_gone(stack)
        assert not (data_dir / "pids.json").exists()

    with running_stack(data_dir, tmp_path, ports) as again:
        with httpx.Client(base_url=again.gateway, timeout=60) as http:
            still = http.get(f"/v1/actions/{kept['id']}", headers=auth("dave@example.com"))
            assert still.status_code == 200, still.text
            assert still.json()["status"] == "pending_approval"
            done = approve(http, still.json(), "dave@example.com")
            assert done["status"] == "succeeded", done
        again.terminate()
        assert again.process.returncode == 0, again.text()
        assert_all_gone(again)
