"""Policy and identity activities: the workflow's only way to read policy and directory.

Running these as activities puts their answers in history, so a policy edit never changes
how a running action replays.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

from policies.directory import Directory, on_behalf_problem
from policies.engine import Policy
from signoff.executor import ExecutorError, ExecutorRegistry, revert_action
from signoff.models import ActionRequest, ExecutorSpec, Verdict
from workflows.grants import DURATION_RULE, direct_revert_problem, duration_problem
from workflows.messages import Evaluation, PrincipalLookup, PrincipalLookupResult


class PolicyActivities:
    """Evaluates requests against the loaded policy and resolves principals."""

    def __init__(
        self,
        policy: Policy,
        directory: Directory,
        executors: ExecutorRegistry,
        *,
        channels: list[str],
        ui_base_url: str | None = None,
        heartbeat_timeout: timedelta = timedelta(seconds=30),
        caller_timeout: timedelta = timedelta(hours=1),
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.executors = executors
        self.channels = channels
        self.ui_base_url = ui_base_url
        self.heartbeat_timeout = heartbeat_timeout
        self.caller_timeout = caller_timeout

    @activity.defn(name="evaluate_policy")
    async def evaluate_policy(self, request: ActionRequest) -> Evaluation:
        """Decide allow, deny or require_approval for one request, with everything it implies."""
        requester = await self.directory.principal(request.requester)
        if request.execution == "caller":
            # The caller runs it; the worker only needs to know how long to wait for the report.
            spec: ExecutorSpec | None = ExecutorSpec(
                action=request.action, idempotent=False, timeout=self.caller_timeout
            )
        elif request.reverts is not None:
            spec = self.executors.revert_spec(
                request.reverts.request.action, heartbeat_timeout=self.heartbeat_timeout
            )
        else:
            spec = self.executors.spec(request.action, heartbeat_timeout=self.heartbeat_timeout)
        # An undo is evaluated as `<action>.revert` with the reverted action's params.
        base = request.reverts.request.action if request.reverts else request.action
        try:
            # The rules see the params the executor would run with, normalised.
            params = self.executors.parsed_params(base, request.params)
            invalid = None
        except ExecutorError as exc:
            params, invalid = None, str(exc)
        if request.reverts is not None and invalid is None:
            invalid = _revert_mismatch(request)
        if invalid is None:
            invalid = direct_revert_problem(request, self.executors)
        verdict = self.policy.evaluate(request, requester, params)
        duration = duration_problem(request, verdict, spec)
        problem = None if requester is None else on_behalf_problem(requester, request.on_behalf_of)
        if requester is None:
            verdict = self._refuse(verdict, "unknown-requester", f"{request.requester} is unknown")
        elif problem is not None:
            # Checked here too: a workflow started without the gateway gets no further.
            verdict = self._refuse(verdict, "on-behalf-of", problem)
        elif invalid is not None:
            # Checked at submit too (422); nobody is asked to approve what cannot run.
            verdict = self._refuse(verdict, "invalid-params", invalid)
        elif duration is not None:
            # Checked at submit too (422): a grant never lasts longer than its rule allows.
            verdict = self._refuse(verdict, DURATION_RULE, duration)
        elif spec is None:
            known = ", ".join(self.executors.actions())
            verdict = self._refuse(
                verdict,
                "unknown-action",
                f"unknown action type {request.action!r}; this worker runs: {known}",
            )
        return Evaluation(
            verdict=verdict,
            requester=requester,
            executor=spec,
            channels=self.channels,
            ui_base_url=self.ui_base_url,
        )

    @activity.defn(name="resolve_principal")
    async def resolve_principal(self, lookup: PrincipalLookup) -> PrincipalLookupResult:
        """Who a principal is now: kind and groups as the directory says at decision time."""
        return PrincipalLookupResult(principal=await self.directory.principal(lookup.id))

    @staticmethod
    def _refuse(verdict: Verdict, rule_id: str, reason: str) -> Verdict:
        return Verdict(
            effect="deny",
            rule_id=rule_id,
            reason=reason,
            risk=verdict.risk,
            policy_digest=verdict.policy_digest,
            condition_errors=verdict.condition_errors,
        )


def _revert_mismatch(request: ActionRequest) -> str | None:
    """An undo must revert exactly the action it names: same type, target and params."""
    reverts = request.reverts
    assert reverts is not None
    original = reverts.request
    if (
        request.action != revert_action(original.action)
        or request.target != original.target
        or request.params != original.params
    ):
        return (
            f"an undo of {reverts.action_id} must be {revert_action(original.action)} on "
            f"{original.target} with the original params"
        )
    return None
