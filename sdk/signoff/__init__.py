"""signoff: the agent SDK of an action-level human approval gate for AI agents.

Ask for a privileged action, wait for a human's decision, and run it only once approved:

    from signoff import SignoffClient

    async with SignoffClient("http://127.0.0.1:8080", token) as client:
        result = await client.run("data.export", "analytics", {"query": "..."}, "weekly report")

Everything an agent needs is importable from here; the submodules are the long names.
"""

from signoff.catalog import ActionType, ActionTypeRule
from signoff.client import (
    ActionCancelled,
    ActionDenied,
    ActionExpired,
    ActionFailed,
    ActionNotFinished,
    ActionUnsuccessful,
    AuthenticationError,
    Conflict,
    GatewayUnavailable,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SignoffClient,
    SignoffError,
    SignoffSyncClient,
)
from signoff.executor import (
    ConfiguredTarget,
    ExecutionContext,
    ExecutorError,
    ExecutorRegistry,
    registry,
)
from signoff.gated import GatedFunction, gated
from signoff.models import (
    ActionRequest,
    ActionStatus,
    ActionSubmission,
    ApprovalWindow,
    BreakGlassClaim,
    BreakGlassStatus,
    CancelBody,
    Decision,
    DecisionBody,
    Execution,
    Principal,
    RefusalCode,
    RefusedAttempt,
    ReportBody,
    RequirementProgress,
    ReviewBody,
    Risk,
    Status,
    Verdict,
    WindowOffer,
    WindowUse,
)
from signoff.settings import ClientSettings

__all__ = [
    "ActionCancelled",
    "ActionDenied",
    "ActionExpired",
    "ActionFailed",
    "ActionNotFinished",
    "ActionRequest",
    "ActionStatus",
    "ActionSubmission",
    "ActionType",
    "ActionTypeRule",
    "ActionUnsuccessful",
    "ApprovalWindow",
    "AuthenticationError",
    "BreakGlassClaim",
    "BreakGlassStatus",
    "CancelBody",
    "ClientSettings",
    "ConfiguredTarget",
    "Conflict",
    "Decision",
    "DecisionBody",
    "Execution",
    "ExecutionContext",
    "ExecutorError",
    "ExecutorRegistry",
    "GatedFunction",
    "GatewayUnavailable",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "Principal",
    "RefusalCode",
    "RefusedAttempt",
    "ReportBody",
    "RequirementProgress",
    "ReviewBody",
    "Risk",
    "SignoffClient",
    "SignoffError",
    "SignoffSyncClient",
    "Status",
    "Verdict",
    "WindowOffer",
    "WindowUse",
    "gated",
    "registry",
]
