"""WebAuthn for the approval page: register a security key, and step up for one decision.

A step-up challenge is bound to what is being decided: it is the SHA-256 of the action id, the
digest the page showed and a random nonce. The browser's authenticator signs it; the gateway
recomputes it from the digest the form sends back, so an assertion made for one action (or for
what an action was before it changed) cannot approve another. Each challenge lives two minutes
in the signed-in session and is answered once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from signoff.models import StepUp
from workers.gateway.web.credentials import CredentialStore, TooManyCredentials
from workers.gateway.web.session import CHALLENGE_TTL, Challenge, WebSession

MAX_CREDENTIAL_JSON = 64 * 1024
REGISTER = "register"
STEP_UP = "step-up"


class StepUpFailed(Exception):
    """A WebAuthn ceremony did not hold; the message says why (safe to show the person)."""


class StepUpUnavailable(Exception):
    """Step-up cannot work here: no database for credentials."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def step_up_challenge(action_id: str, digest: str, nonce: bytes) -> bytes:
    """The challenge an assertion must sign to decide `action_id` as shown with `digest`."""
    material = b"\0".join([b"signoff-step-up", action_id.encode(), digest.encode(), nonce])
    return hashlib.sha256(material).digest()


@dataclass(frozen=True)
class RelyingParty:
    """Who the credentials are for: the gateway's host (RP id) and its origin."""

    id: str
    name: str
    origin: str

    @classmethod
    def of(cls, public_url: str, rp_id: str | None, name: str) -> RelyingParty:
        """The relying party of a gateway served at `public_url`."""
        parts = urlsplit(public_url)
        return cls(
            id=rp_id or parts.hostname or "localhost",
            name=name,
            origin=f"{parts.scheme}://{parts.netloc}",
        )


def _credential(text: str | None) -> dict[str, Any]:
    if not text or len(text) > MAX_CREDENTIAL_JSON:
        raise StepUpFailed("no security key answer was sent")
    try:
        value = json.loads(text)
    except ValueError:
        raise StepUpFailed("the security key answer is not JSON") from None
    if not isinstance(value, dict):
        raise StepUpFailed("the security key answer is not a JSON object")
    return value


class WebAuthnCeremonies:
    """Registration and step-up ceremonies against the credential store."""

    def __init__(self, store: CredentialStore | None) -> None:
        self.store = store

    def require_store(self) -> CredentialStore:
        if self.store is None:
            raise StepUpUnavailable(
                "security keys need the gateway's database (SIGNOFF_DATABASE_URL); none is set"
            )
        return self.store

    async def registration_options(
        self, session: WebSession, principal: str, rp: RelyingParty
    ) -> dict[str, Any]:
        """Options for navigator.credentials.create(), and the nonce to send back."""
        existing = await self.require_store().of(principal)
        challenge = secrets.token_bytes(32)
        options = generate_registration_options(
            rp_id=rp.id,
            rp_name=rp.name,
            user_name=principal,
            user_id=hashlib.sha256(principal.encode()).digest(),
            user_display_name=principal,
            challenge=challenge,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=_unb64url(c.credential_id)) for c in existing
            ],
        )
        nonce = _b64url(secrets.token_bytes(16))
        session.add_challenge(
            nonce, Challenge(REGISTER, challenge, time.monotonic() + CHALLENGE_TTL)
        )
        return {"nonce": nonce, "publicKey": json.loads(options_to_json(options))}

    async def register(
        self, session: WebSession, principal: str, rp: RelyingParty, nonce: str, answer: str | None
    ) -> str:
        """Verify a new credential and store it as the person's; returns its id."""
        store = self.require_store()
        issued = session.take_challenge(nonce, REGISTER)
        if issued is None:
            raise StepUpFailed("the registration expired or was already used; start again")
        try:
            verified = verify_registration_response(
                credential=_credential(answer),
                expected_challenge=issued.challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
            )
        except WebAuthnException as err:
            raise StepUpFailed(f"the security key's registration does not verify: {err}") from None
        credential_id = _b64url(verified.credential_id)
        try:
            added = await store.add(
                credential_id, principal, verified.credential_public_key, verified.sign_count
            )
        except TooManyCredentials as err:
            raise StepUpFailed(str(err)) from None
        if not added:
            raise StepUpFailed("this security key is already registered")
        return credential_id

    async def step_up_options(
        self,
        session: WebSession,
        principal: str,
        rp: RelyingParty,
        action_id: str,
        digest: str,
    ) -> dict[str, Any]:
        """Options for navigator.credentials.get(), bound to this action and digest."""
        credentials = await self.require_store().of(principal)
        if not credentials:
            raise StepUpFailed("you have no security key registered: add one at /a/register")
        raw_nonce = secrets.token_bytes(16)
        nonce = _b64url(raw_nonce)
        challenge = step_up_challenge(action_id, digest, raw_nonce)
        options = generate_authentication_options(
            rp_id=rp.id,
            challenge=challenge,
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=_unb64url(c.credential_id)) for c in credentials
            ],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        session.add_challenge(
            nonce,
            Challenge(STEP_UP, challenge, time.monotonic() + CHALLENGE_TTL, action_id, digest),
        )
        return {"nonce": nonce, "publicKey": json.loads(options_to_json(options))}

    async def verify_step_up(
        self,
        session: WebSession,
        principal: str,
        rp: RelyingParty,
        action_id: str,
        digest: str,
        nonce: str,
        answer: str | None,
    ) -> StepUp:
        """Check a fresh assertion for deciding this action as shown; the proof to sign."""
        store = self.require_store()
        issued = session.take_challenge(nonce, STEP_UP)
        if issued is None:
            raise StepUpFailed("the security key check expired or was already used; try again")
        try:
            raw_nonce = _unb64url(nonce)
        except ValueError:
            raise StepUpFailed("malformed step-up nonce") from None
        expected = step_up_challenge(action_id, digest, raw_nonce)
        if issued.action_id != action_id or issued.digest != digest or issued.challenge != expected:
            raise StepUpFailed("the security key was asked about another action or digest")
        credential = _credential(answer)
        credential_id = credential.get("id")
        if not isinstance(credential_id, str):
            raise StepUpFailed("the security key answer names no credential")
        stored = await store.get(credential_id, principal)
        if stored is None:
            raise StepUpFailed("that security key is not registered to you")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=expected,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=stored.public_key,
                credential_current_sign_count=stored.sign_count,
            )
        except WebAuthnException as err:
            raise StepUpFailed(f"the security key's answer does not verify: {err}") from None
        if not await store.used(credential_id, stored.sign_count, verified.new_sign_count):
            raise StepUpFailed("the security key was used twice at once; try again")
        return StepUp(method="webauthn", credential_id=credential_id)
