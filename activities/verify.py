"""Checking the gateway's signatures, as a local activity that holds only public keys."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

from signoff.models import RefusalCode
from workflows.messages import VerifyInput, VerifyResult
from workflows.signing import DEFAULT_MAX_AGE, KeySet


class SignatureActivities:
    """Verifies signatures with the worker's public keys; it can check, never sign."""

    def __init__(self, keys: KeySet | None, max_age: timedelta = DEFAULT_MAX_AGE) -> None:
        self.keys = keys
        self.max_age = max_age

    @activity.defn(name="verify_signature")
    async def verify_signature(self, check: VerifyInput) -> VerifyResult:
        """Whether the signature is the gateway's, for this message, recent enough."""
        if self.keys is None:
            return VerifyResult(
                code=RefusalCode.UNKNOWN_KEY,
                message="this worker has no public keys (SIGNOFF_VERIFY_KEYS), so it trusts none",
            )
        return self.keys.verify(
            check.signature,
            check.expected,
            now=check.now,
            max_age=self.max_age,
            not_before=check.not_before,
        )
