"""What we answer Slack: an HTTP status and maybe a body, or a refusal that tells nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse


@dataclass
class Reply:
    """What to answer Slack: an HTTP status and, for modals, a response body."""

    status: int
    body: dict[str, Any] | None = None

    def response(self) -> Response:
        """This reply as a FastAPI response."""
        if self.body is None:
            return Response(status_code=self.status)
        return JSONResponse(self.body, status_code=self.status)


OK = Reply(200)
ERRORS = {
    400: ("bad_request", "the interaction was not accepted"),
    401: ("unauthorized", "the request is not a verified Slack interaction"),
    403: ("forbidden", "this Slack user may not decide signoff actions"),
    503: ("slack_unavailable", "Slack could not be reached; try again"),
}


def rejection(status: int) -> Reply:
    """The gateway's error shape; the details are in the log, not told to the sender."""
    code, message = ERRORS.get(status, ("error", "the interaction was not accepted"))
    return Reply(status, {"error": {"code": code, "message": message}})


class Rejected(Exception):
    """Bad input: answered with `status`, logged with `reason`, and never decided."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
