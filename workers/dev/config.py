"""What `signoff dev` runs (ports, files, timeouts), its errors, and the checks before a start."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from activities.targets import load_targets
from policies import EXAMPLES_DIR
from policies.loader import PolicyError, load_policy_and_directory

HOST = "127.0.0.1"
# Where the flags of each port are named in messages.
PORT_FLAGS = {
    "temporal_port": "--temporal-port",
    "ui_port": "--ui-port",
    "gateway_port": "--gateway-port",
}
# A child gets this long after SIGTERM before SIGKILL: the worker lets running activities
# finish for up to 30 s (its graceful shutdown timeout) before it exits.
STOP_TIMEOUT = 40.0


class DevStackError(Exception):
    """Something the user must fix before the stack can run; the message says what."""


class PortInUse(DevStackError):
    """A port the stack needs is taken."""

    def __init__(self, port: int, flag: str) -> None:
        super().__init__(f"port {port} is in use; choose another with {flag}")
        self.port = port
        self.flag = flag


class StartupFailed(DevStackError):
    """A child did not come up in time, or exited while starting."""


class ChildExited(DevStackError):
    """A child exited on its own while the stack was running."""


@dataclass(frozen=True)
class DevConfig:
    """What `signoff dev` runs: data dir, ports, configuration files and timeouts."""

    data_dir: Path = Path(".signoff")
    temporal_port: int = 7233
    ui_port: int = 8233
    gateway_port: int = 8080
    policy: Path = EXAMPLES_DIR / "policy.yaml"
    directory: Path = EXAMPLES_DIR / "directory.yaml"
    targets: Path = EXAMPLES_DIR / "targets.yaml"
    # An external ledger database; None starts the embedded Postgres in DATA_DIR/pg.
    database_url: str | None = None
    ready_timeout: float = 120.0
    stop_timeout: float = STOP_TIMEOUT

    @property
    def temporal_address(self) -> str:
        """Host:port of the Temporal frontend."""
        return f"{HOST}:{self.temporal_port}"

    @property
    def ui_url(self) -> str:
        """The Temporal Web UI."""
        return f"http://{HOST}:{self.ui_port}"

    @property
    def gateway_url(self) -> str:
        """The signoff gateway."""
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def logs_dir(self) -> Path:
        """Where each child's output goes, one file per child."""
        return self.data_dir / "logs"

    @property
    def signing_key(self) -> Path:
        """The gateway's private signing key (owner-only); only the gateway is given it."""
        return self.data_dir / "keys" / "gateway-signing.pem"

    @property
    def public_keys(self) -> Path:
        """The public keys workers verify with (one file per key, for rotation)."""
        return self.data_dir / "keys" / "public"

    @property
    def pids_file(self) -> Path:
        """The supervisor's and children's pids while the stack runs."""
        return self.data_dir / "pids.json"

    @property
    def uses_example_directory(self) -> bool:
        """Whether the directory is the example one, whose dev tokens may be shown."""
        return self.directory.resolve() == (EXAMPLES_DIR / "directory.yaml").resolve()


def check_ports(config: DevConfig) -> None:
    """Raise PortInUse for the first port that is taken (or used twice)."""
    seen: dict[int, str] = {}
    for attr, flag in PORT_FLAGS.items():
        port = getattr(config, attr)
        if port in seen:
            raise DevStackError(
                f"port {port} is given to both {seen[port]} and {flag}; choose another"
            )
        seen[port] = flag
        if not port_free(port):
            raise PortInUse(port, flag)


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port only in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_config(config: DevConfig) -> None:
    """Load policy, directory and targets once, so a mistake is reported before any start."""
    try:
        load_policy_and_directory(config.policy, config.directory)
        load_targets(config.targets)
    except PolicyError as err:
        raise DevStackError(str(err)) from None
    except OSError as err:
        raise DevStackError(f"cannot read configuration: {err}") from None
