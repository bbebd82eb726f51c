"""`@gated` in caller mode, as a tool in an LLM loop: the body runs here after approval.

For a trusted harness around an untrusted model: the model proposes the call, a human
approves exactly those arguments, and only then does the body run, with the approved
arguments read back from signoff (not the ones passed in). The result, or the exception,
is reported back so the audit trail is complete. A denial comes back as text the model
can read and act on, instead of an exception.

Against `signoff dev` (no executor module needed: nothing runs in the worker):

    SIGNOFF_TOKEN=dev-etl-bot python examples/gated_caller.py

Approve as dave (`SIGNOFF_TOKEN=dev-dave signoff approve <id>`), or deny with a reason.
"""

from __future__ import annotations

import subprocess

from signoff.gated import gated


@gated(
    "service.restart",
    target="staging",
    where="caller",
    justification=lambda service, reason: f"restart {service}: {reason}",
    return_denial_as_text=True,
)
def restart_service(service: str, reason: str) -> str:
    """Restart a service on staging (here: echo what would run)."""
    # Runs only after approval, in this process, with the approved arguments.
    done = subprocess.run(
        ["echo", "systemctl", "restart", service], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def main() -> None:
    """What a tool-calling loop would do with the model's proposed call."""
    proposed = {"service": "billing-worker", "reason": "stuck consumer, lag 40k messages"}
    print("asking to restart billing-worker; approve it as an SRE (signoff pending)")
    print("tool result for the model:", restart_service(**proposed))


if __name__ == "__main__":
    main()
