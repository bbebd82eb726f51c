"""The `shell.run` executor: an allow-listed argument vector, never through a shell."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from activities.targets import ShellTarget
from signoff.executor import ExecutionContext, Executor, ExecutorError

MAX_OUTPUT_BYTES = 64 * 1024


class ShellParams(BaseModel):
    """A command as an argument vector; no shell ever interprets it."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    # Keep the head, drain the rest, so a chatty command never blocks on a full pipe.
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(kept)
        if len(chunk) > room:
            truncated = True
        kept.extend(chunk[: max(room, 0)])
    return bytes(kept), truncated


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def shell_run(ctx: ExecutionContext[ShellParams]) -> JsonValue:
    """Run an allow-listed command without a shell; a non-zero exit is a result, not an error.

    The command's environment is PATH, LANG and the target's `env` only: the worker's own
    environment holds the secrets of every target.
    """
    assert isinstance(ctx.target, ShellTarget)
    argv, target = ctx.params.argv, ctx.target
    if not target.allows(argv):
        raise ExecutorError(f"command {argv[0]!r} with these arguments is not allowed")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
    env.update(target.env)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=target.cwd,
            env=env,
            start_new_session=True,  # its own process group, so a timeout kills the children too
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ExecutorError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    outputs = asyncio.gather(
        _read_capped(process.stdout, MAX_OUTPUT_BYTES),
        _read_capped(process.stderr, MAX_OUTPUT_BYTES),
        process.wait(),
    )
    deadline = asyncio.get_running_loop().time() + target.timeout.total_seconds()
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise ExecutorError(
                    f"command timed out after {target.timeout.total_seconds():g}s and was killed"
                )
            done, _ = await asyncio.wait({outputs}, timeout=min(left, 1.0))
            if done:
                break
            ctx.heartbeat({"pid": process.pid})
    except BaseException:
        _kill_group(process)
        outputs.cancel()
        with contextlib.suppress(BaseException):
            await outputs
        with contextlib.suppress(BaseException):
            await process.wait()
        raise
    (stdout, out_cut), (stderr, err_cut), exit_code = outputs.result()
    return {
        "exit_code": exit_code,
        "stdout": stdout.decode("utf-8", errors="replace"),
        "stderr": stderr.decode("utf-8", errors="replace"),
        "truncated": out_cut or err_cut,
    }


SHELL_RUN = Executor.define(
    shell_run,
    "shell.run",
    idempotent=False,
    timeout=timedelta(minutes=10),
    params_model=ShellParams,
    target_kind="shell",
)
