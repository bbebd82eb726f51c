"""Signed messages: the gateway vouches for what it authenticated, workers verify it.

The gateway holds one Ed25519 private key and signs every request, decision, cancel and caller
report it sends into Temporal. The signature covers canonical-JSON claims (who, which action,
which digest, when, a unique id) and names its key by id, so keys rotate by adding a public key
to the workers before the gateway signs with it. Workers hold public keys only: someone with
Temporal access but not the gateway's key cannot make a message the workflow accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import JsonValue

from signoff.models import (
    ActionRequest,
    AmendRequest,
    CancelRequest,
    DecisionRequest,
    ExecutionReport,
    RefusalCode,
    ReviewRequest,
    RevokeRequest,
    Signature,
    UndoRequest,
    WindowRevokeRequest,
    canonical_json,
)
from workflows.messages import VerifyResult

# Gateway and Temporal server clocks differ a little; more than this is not a clock problem.
CLOCK_SKEW = timedelta(minutes=1)
DEFAULT_MAX_AGE = timedelta(minutes=10)
# The gateway signs a request just before it starts the workflow; only the start call's own
# retries lie between the two, and a copied request replays into a new run only this long.
REQUEST_MAX_AGE = timedelta(minutes=2)


class SigningError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key; the message says which."""


def key_id(public: Ed25519PublicKey) -> str:
    """A key's id: a fingerprint of the public key, so every copy of a key names it the same."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def _sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


# --- what each message vouches for ------------------------------------------------------------


def request_claims(request: ActionRequest, action_id: str) -> dict[str, JsonValue]:
    """A request's claims: who asks, for whom, which action, under which id and key."""
    # The amendment links, break-glass and `reverts` only when set, so every request signed
    # before they existed hashes as it did.
    unset = {
        name
        for name in ("amended_from", "amended_by", "break_glass", "reverts")
        if getattr(request, name) is None
    }
    body = request.model_dump(mode="json", exclude={"signature", *unset})
    claims: dict[str, JsonValue] = {
        "kind": "request",
        "action_id": action_id,
        "requester": request.requester,
        "on_behalf_of": request.on_behalf_of,
        "digest": request.digest,
        "idempotency_key": request.idempotency_key,
    }
    if request.break_glass is not None:
        # Named on its own (before the body's hash), so a forged break-glass reads as one.
        claims["break_glass_reason_sha256"] = _sha256(request.break_glass.reason)
    # Everything else the workflow acts on (justification, execution mode, claimed risk).
    claims["request_sha256"] = _sha256(body)
    return claims


def decision_claims(decision: DecisionRequest, action_id: str) -> dict[str, JsonValue]:
    """A decision's claims: which action and digest, who decided what, why, and through what."""
    claims: dict[str, JsonValue] = {
        "kind": "decision",
        "action_id": action_id,
        "digest": decision.digest,
        "approver": decision.approver,
        "decision": decision.decision,
        "reason_sha256": _sha256(decision.reason),
        "channel": decision.channel,
    }
    if decision.approver_groups is not None:
        # Only when present, so every decision signed before this field existed still verifies.
        claims["approver_groups"] = list(decision.approver_groups)
    if decision.step_up is not None:
        # The gateway verified a security-key assertion for this digest: only its key says so.
        claims["step_up"] = decision.step_up.model_dump(mode="json")
    if decision.window is not None:
        # Only the gateway grants a window: someone with Temporal access cannot add one.
        claims["window_seconds"] = int(decision.window.total_seconds())
    return claims


def window_revoke_claims(revoke: WindowRevokeRequest, window_id: str) -> dict[str, JsonValue]:
    """A window revoke's claims: which window, by whom, through what, why."""
    return {
        "kind": "window_revoke",
        "window_id": window_id,
        "by": revoke.by,
        "channel": revoke.channel,
        "reason_sha256": _sha256(revoke.reason),
    }


def cancel_claims(cancel: CancelRequest, action_id: str) -> dict[str, JsonValue]:
    """A cancel's claims: which action, by whom, why."""
    return {
        "kind": "cancel",
        "action_id": action_id,
        "by": cancel.by,
        "reason_sha256": _sha256(cancel.reason),
    }


def amend_claims(amend: AmendRequest, action_id: str) -> dict[str, JsonValue]:
    """An amendment's claims: which action and digest, by whom, why, and the exact successor."""
    successor = amend.successor.model_dump(mode="json")
    claims: dict[str, JsonValue] = {
        "kind": "amend",
        "action_id": action_id,
        "digest": amend.digest,
        "by": amend.by,
        "reason_sha256": _sha256(amend.reason),
        "channel": amend.channel,
        "successor_id": amend.successor_id,
        # The successor carries its own signature too; this binds the two to each other.
        "successor_sha256": _sha256(successor),
    }
    if amend.amender_groups is not None:
        # Only when present, so every amendment signed before this field existed still verifies.
        claims["amender_groups"] = list(amend.amender_groups)
    return claims


def revoke_claims(revoke: RevokeRequest, action_id: str) -> dict[str, JsonValue]:
    """A revoke's claims: which action, by whom, why."""
    return {
        "kind": "revoke",
        "action_id": action_id,
        "by": revoke.by,
        "reason_sha256": _sha256(revoke.reason),
    }


def undo_claims(undo: UndoRequest, action_id: str) -> dict[str, JsonValue]:
    """An undo's claims: which action, by whom, why, and exactly which revert it starts."""
    return {
        "kind": "undo",
        "action_id": action_id,
        "by": undo.by,
        "reason_sha256": _sha256(undo.reason),
        "revert_id": undo.revert_id,
        "revert_sha256": _sha256(undo.revert.model_dump(mode="json")),
    }


def report_claims(report: ExecutionReport, action_id: str) -> dict[str, JsonValue]:
    """A caller report's claims: which action, by whom, and exactly what it reports."""
    return {
        "kind": "report",
        "action_id": action_id,
        "by": report.by,
        "report_sha256": _sha256({"result": report.result, "error": report.error}),
    }


def review_claims(review: ReviewRequest, action_id: str) -> dict[str, JsonValue]:
    """A break-glass review's claims: which action and digest, who reviewed, what they found."""
    return {
        "kind": "review",
        "action_id": action_id,
        "digest": review.digest,
        "reviewer": review.reviewer,
        "outcome": review.outcome,
        "reason_sha256": _sha256(review.reason),
        "channel": review.channel,
    }


# --- signing (the gateway) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """The gateway's private key and its id."""

    private: Ed25519PrivateKey

    @property
    def kid(self) -> str:
        """The id of this key, as workers know its public half."""
        return key_id(self.private.public_key())

    @classmethod
    def load(cls, path: Path) -> Signer:
        """Read a PEM (PKCS#8) Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as err:
            raise SigningError(f"cannot read the signing key {path}: {err.strerror}") from None
        except (ValueError, TypeError):
            raise SigningError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def sign(self, claims: Mapping[str, JsonValue], *, now: datetime | None = None) -> Signature:
        """Sign claims, adding a unique id and the signing time."""
        body = {
            **claims,
            "id": uuid.uuid4().hex,
            "at": (now or datetime.now(UTC)).isoformat(),
        }
        payload = canonical_json(body)
        sig = self.private.sign(payload.encode("utf-8"))
        return Signature(
            kid=self.kid, payload=payload, sig=base64.urlsafe_b64encode(sig).decode("ascii")
        )

    def request(
        self, request: ActionRequest, action_id: str, *, now: datetime | None = None
    ) -> ActionRequest:
        """The request, signed for the action id it starts."""
        signed = self.sign(request_claims(request, action_id), now=now)
        return request.model_copy(update={"signature": signed})

    def decision(
        self, decision: DecisionRequest, action_id: str, *, now: datetime | None = None
    ) -> DecisionRequest:
        """The decision, signed for one action."""
        signed = self.sign(decision_claims(decision, action_id), now=now)
        return decision.model_copy(update={"signature": signed})

    def cancel(self, cancel: CancelRequest, action_id: str) -> CancelRequest:
        """The cancel, signed for one action."""
        return cancel.model_copy(update={"signature": self.sign(cancel_claims(cancel, action_id))})

    def amend(self, amend: AmendRequest, action_id: str) -> AmendRequest:
        """The amendment, signed for the action it supersedes."""
        return amend.model_copy(update={"signature": self.sign(amend_claims(amend, action_id))})

    def window_revoke(self, revoke: WindowRevokeRequest, window_id: str) -> WindowRevokeRequest:
        """The window revoke, signed for one window."""
        signed = self.sign(window_revoke_claims(revoke, window_id))
        return revoke.model_copy(update={"signature": signed})

    def revoke(
        self, revoke: RevokeRequest, action_id: str, *, now: datetime | None = None
    ) -> RevokeRequest:
        """The revoke, signed for one action."""
        signed = self.sign(revoke_claims(revoke, action_id), now=now)
        return revoke.model_copy(update={"signature": signed})

    def undo(
        self, undo: UndoRequest, action_id: str, *, now: datetime | None = None
    ) -> UndoRequest:
        """The undo (with its revert request, signed for the revert's id), signed for one action."""
        signed_revert = self.request(undo.revert, undo.revert_id, now=now)
        signed = undo.model_copy(update={"revert": signed_revert})
        return signed.model_copy(
            update={"signature": self.sign(undo_claims(signed, action_id), now=now)}
        )

    def report(self, report: ExecutionReport, action_id: str) -> ExecutionReport:
        """The caller report, signed for one action."""
        return report.model_copy(update={"signature": self.sign(report_claims(report, action_id))})

    def review(
        self, review: ReviewRequest, action_id: str, *, now: datetime | None = None
    ) -> ReviewRequest:
        """The break-glass review, signed for one action."""
        signed = self.sign(review_claims(review, action_id), now=now)
        return review.model_copy(update={"signature": signed})


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (private key readable by the owner only); returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.touch(mode=0o600, exist_ok=True)
    private_path.chmod(0o600)
    private_path.write_bytes(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(key.public_key())


# --- verifying (the workers) ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The public keys a worker accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def load(cls, path: Path) -> KeySet:
        """Public keys from a PEM file (one or more keys) or a directory of `*.pem` files."""
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        keys: dict[str, Ed25519PublicKey] = {}
        for file in files:
            try:
                text = file.read_bytes()
            except OSError as err:
                raise SigningError(f"cannot read public keys {file}: {err.strerror}") from None
            blocks = [b for b in text.split(b"-----END PUBLIC KEY-----") if b.strip()]
            for block in blocks:
                try:
                    key = serialization.load_pem_public_key(block + b"-----END PUBLIC KEY-----\n")
                except ValueError:
                    raise SigningError(
                        f"{file} holds something that is not a PEM public key"
                    ) from None
                if not isinstance(key, Ed25519PublicKey):
                    raise SigningError(f"{file} holds a public key that is not Ed25519")
                keys[key_id(key)] = key
        if not keys:
            raise SigningError(f"no public keys in {path}")
        return cls(keys)

    def verify(
        self,
        signature: Signature,
        expected: Mapping[str, JsonValue],
        *,
        now: datetime,
        max_age: timedelta = DEFAULT_MAX_AGE,
        not_before: datetime | None = None,
    ) -> VerifyResult:
        """Check key, signature, claims and age; the first failure decides the code."""
        public = self.keys.get(signature.kid)
        if public is None:
            return _refuse(
                RefusalCode.UNKNOWN_KEY,
                f"signed with key {signature.kid!r}, which this worker does not trust",
            )
        try:
            raw = base64.urlsafe_b64decode(signature.sig.encode("ascii"))
            public.verify(raw, signature.payload.encode("utf-8"))
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
            return _refuse(
                RefusalCode.BAD_SIGNATURE,
                f"the signature does not match its content (key {signature.kid})",
            )
        # The key signed these bytes; whatever they say is the gateway's word.
        claims = json.loads(signature.payload)
        if not isinstance(claims, dict) or not isinstance(claims.get("id"), str):
            return _refuse(RefusalCode.BAD_SIGNATURE, "the signed claims carry no unique id")
        for name, value in expected.items():
            if claims.get(name) != value:
                return _refuse(
                    RefusalCode.SIGNATURE_MISMATCH,
                    f"signed for {name} {_show(claims.get(name))}, but this message has "
                    f"{_show(value)}",
                )
        try:
            at = datetime.fromisoformat(str(claims.get("at")))
        except ValueError:
            return _refuse(RefusalCode.BAD_SIGNATURE, "the signed claims carry no valid time")
        if at.tzinfo is None:
            return _refuse(RefusalCode.BAD_SIGNATURE, "the signed time has no time zone")
        if claims.get("kind") == "request":
            max_age = min(max_age, REQUEST_MAX_AGE)
        if at < now - max_age:
            return _refuse(
                RefusalCode.STALE_SIGNATURE,
                f"signed at {at:%Y-%m-%d %H:%M:%S} UTC, more than {_minutes(max_age)} before "
                f"it arrived ({now:%Y-%m-%d %H:%M:%S} UTC)",
            )
        if not_before is not None and at < not_before - CLOCK_SKEW:
            return _refuse(
                RefusalCode.STALE_SIGNATURE,
                f"signed at {at:%Y-%m-%d %H:%M:%S} UTC, before this run of the action started "
                f"({not_before:%Y-%m-%d %H:%M:%S} UTC): it was meant for an earlier run",
            )
        if at > now + CLOCK_SKEW:
            return _refuse(
                RefusalCode.STALE_SIGNATURE,
                f"signed at {at:%Y-%m-%d %H:%M:%S} UTC, in the future of its arrival "
                f"({now:%Y-%m-%d %H:%M:%S} UTC)",
            )
        return VerifyResult(id=claims["id"])


def _refuse(code: RefusalCode, message: str) -> VerifyResult:
    return VerifyResult(code=code, message=message)


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _minutes(value: timedelta) -> str:
    minutes = value.total_seconds() / 60
    return f"{minutes:g} minutes"
