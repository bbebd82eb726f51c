"""Policy and identity activities: the workflow's only way to read policy and directory.

Running these as activities puts their answers in history, so a policy edit never changes
how a running action replays.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity

from activities.windows import LiveWindows
from policies.directory import Directory, on_behalf_problem
from policies.engine import Policy, scope_allows
from signoff.executor import ExecutorError, ExecutorRegistry, revert_action
from signoff.models import ActionRequest, ExecutorSpec, Principal, Verdict
from workflows.grants import DURATION_RULE, direct_revert_problem, duration_problem
from workflows.messages import (
    Evaluation,
    PrincipalLookup,
    PrincipalLookupResult,
    WindowUseRequest,
)

log = logging.getLogger("signoff.policy")

# How long finding this requester's live windows may take before the normal rules apply.
WINDOW_LOOKUP_BUDGET = timedelta(seconds=8)


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
        page_base: str | None = None,
        heartbeat_timeout: timedelta = timedelta(seconds=30),
        caller_timeout: timedelta = timedelta(hours=1),
        windows: LiveWindows | None = None,
    ) -> None:
        self.policy = policy
        self.directory = directory
        self.executors = executors
        self.channels = channels
        self.ui_base_url = ui_base_url
        self.page_base = page_base
        self.heartbeat_timeout = heartbeat_timeout
        self.caller_timeout = caller_timeout
        # Live approval windows (None: this worker lets no window allow anything).
        self.windows = windows

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
        elif verdict.effect == "require_approval" and verdict.window is not None:
            verdict = await self._window_verdict(request, requester, params, verdict)
        return Evaluation(
            verdict=verdict,
            requester=requester,
            executor=spec,
            channels=self.channels,
            ui_base_url=self.ui_base_url,
            page_base=self.page_base,
        )

    @activity.defn(name="resolve_principal")
    async def resolve_principal(self, lookup: PrincipalLookup) -> PrincipalLookupResult:
        """Who a principal is now: kind and groups as the directory says at decision time."""
        return PrincipalLookupResult(principal=await self.directory.principal(lookup.id))

    async def _window_verdict(
        self,
        request: ActionRequest,
        requester: Principal,
        params: BaseModel | None,
        verdict: Verdict,
    ) -> Verdict:
        """Allowed by a live window of this requester whose scope holds; else `verdict`.

        Only where the rule the request lands on still offers a window, evaluated cleanly,
        and both that rule's scope and the window's recorded scope (what the approver saw)
        hold: a window never allows more than its approval or the policy now would.
        """
        offer = verdict.window
        if self.windows is None or offer is None or verdict.condition_errors:
            return verdict
        if not scope_allows(offer.scope, request, requester, params):
            return verdict
        try:
            # Bounded: an unanswering window must not hold the evaluation (retried forever).
            async with asyncio.timeout(WINDOW_LOOKUP_BUDGET.total_seconds()):
                eligible = [
                    window
                    for window in await self.windows.candidates(request.requester)
                    if window.rule_id == verdict.rule_id
                    and window.on_behalf_of == request.on_behalf_of
                    and scope_allows(window.scope, request, requester, params)
                    and await self.windows.vouched(window)
                ]
        except TimeoutError:
            log.warning("approval windows did not answer in time; the normal rules apply")
            return verdict
        for window in eligible:
            used = await self.windows.use(
                window.id,
                WindowUseRequest(
                    action_id=activity.info().workflow_id or "",
                    requester=request.requester,
                    on_behalf_of=request.on_behalf_of,
                    rule_id=verdict.rule_id,
                    action=request.action,
                    target=request.target,
                    digest=request.digest,
                ),
            )
            if used is None:
                continue
            return Verdict(
                effect="allow",
                rule_id=verdict.rule_id,
                reason=(
                    f"Allowed by approval window {used.id} (approved by "
                    f"{', '.join(used.approvers)} until {used.expires_at:%Y-%m-%d %H:%M} UTC, "
                    f"scope: {used.scope})"
                ),
                risk=verdict.risk,
                policy_digest=verdict.policy_digest,
                window=offer,
                window_id=used.id,
            )
        return verdict

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
