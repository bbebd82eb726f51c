"""A new request's checks as one local activity: the gateway's signature, earlier runs, policy.

Shape v9 also writes the admitted request's first ledger rows in the same activity.
"""

from __future__ import annotations

from temporalio import activity

from activities.audit import AuditActivities
from activities.policy import PolicyActivities
from activities.verify import SignatureActivities
from workflows.messages import AdmissionCheck, AdmissionResult, AuditBatch, WriteAhead


class Admission:
    """Admits a new request: signature first, then earlier runs, then the policy's evaluation.

    One local activity instead of three saves the first workflow task two round trips through
    the worker. Each check is the same one the separate activities make, in an order that never
    lets a forged request reach the ledger or the policy. Asked to (`check.record`), it then
    writes the admitted request's rows, as the workflow's own write would: the write-ahead row
    and the execution claim only when the policy allows the action, the claim only once the
    rows are durable. A retry after a crash finds its rows and its claim, as that write does.
    """

    def __init__(
        self, signatures: SignatureActivities, audit: AuditActivities, policy: PolicyActivities
    ) -> None:
        self.signatures = signatures
        self.audit = audit
        self.policy = policy

    @activity.defn(name="admit_request")
    async def admit_request(self, check: AdmissionCheck) -> AdmissionResult:
        """Each check's answer up to the first that refuses, or the evaluation if none does."""
        verified = await self.signatures.verify_signature(check.verify)
        if verified.code is not None:
            return AdmissionResult(verified=verified)
        earlier = await self.audit.check_run(check.run)
        if earlier.executed_by is not None:
            return AdmissionResult(verified=verified, earlier=earlier)
        evaluation = await self.policy.evaluate_policy(check.request)
        claim = None
        if check.record is not None:
            rows = check.record.events(evaluation, check.request.execution)
            if evaluation.verdict.effect == "allow":
                claim = await self.audit.record_and_claim(
                    WriteAhead(events=rows, claim=check.record.claim)
                )
            else:
                await self.audit.record_audit_events(AuditBatch(events=rows))
        return AdmissionResult(
            verified=verified, earlier=earlier, evaluation=evaluation, claim=claim
        )
