"""How `signoff worker` and `signoff gateway` log: a line per record, with no caller lookup."""

from __future__ import annotations

import logging

from signoff.cli.common import fail

FORMAT = "%(asctime)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Log records at `level` and above to stderr; an unknown level is refused by name."""
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        known = ", ".join(name for name in levels if name != "NOTSET")
        raise fail(f"unknown log level {level!r}; choose one of {known}", 2)
    # FORMAT names no file, line or function, so looking up each record's caller is wasted:
    # it walked the executor's stack for ~2% of the worker's CPU per allowed action (issue
    # 16). The Logging HOWTO's "Optimization" section documents this switch.
    logging._srcfile = None
    logging.basicConfig(level=level.upper(), format=FORMAT)
