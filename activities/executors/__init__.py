"""The built-in executors: noop, sql.query, sql.execute, data.export, http.request, shell.run,
postgres.grant_role.

The executor interface and the registry are the SDK's (`signoff.executor`). Importing this
package registers nothing: a process adds the built-ins to its registry with
`register_builtins` when it prepares that registry.
"""

from __future__ import annotations

from activities.executors.export import DATA_EXPORT
from activities.executors.grants import POSTGRES_GRANT_ROLE
from activities.executors.http import HTTP_REQUEST
from activities.executors.noop import NOOP
from activities.executors.shell import SHELL_RUN
from activities.executors.sql import SQL_EXECUTE, SQL_QUERY
from signoff.executor import Executor, ExecutorRegistry

BUILTINS: tuple[Executor, ...] = (
    NOOP,
    SQL_QUERY,
    SQL_EXECUTE,
    DATA_EXPORT,
    HTTP_REQUEST,
    SHELL_RUN,
    POSTGRES_GRANT_ROLE,
)


def register_builtins(registry: ExecutorRegistry) -> None:
    """Add the built-in executors to `registry`.

    Preparing the same registry again keeps the built-ins already there (the CLI's commands
    run several times in one test process); another executor under a built-in's action name
    is still refused with ValueError, as any second registration is.
    """
    for executor in BUILTINS:
        if registry.get(executor.action) is not executor:
            registry.register(executor)


__all__ = ["BUILTINS", "register_builtins"]
