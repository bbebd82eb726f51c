"""`/a/{id}`: the approval page, one per action, and `/a/register` for security keys.

A link carries no power: GET only shows (after sign-in through the configured identity
provider), never decides. A decision is a POST carrying the session's CSRF token and the digest
the page showed, and goes through the same `decide` update as the API (channel `web`), so every
rule of the workflow holds. On a rule with `step_up: webauthn` the page adds a fresh security-key
assertion bound to that digest, which the gateway verifies and signs into the decision.
Approve with changes (`POST /a/{id}/amend`) goes through the same service path as the API's
amend, so the same validation and the same refusals apply; the page does not offer it on a
step-up rule.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from policies.directory import Authenticated, Directory
from policies.oidc import TokenRejected
from policies.unavailable import IdentityProviderUnavailable
from signoff.links import approval_page_url
from signoff.models import ActionStatus, AmendBody, DecisionRequest, StepUp
from workers.gateway.dependencies import ACTION_ID, get_service, refusal_budget
from workers.gateway.errors import error_response, status_for
from workers.gateway.ratelimit import RefusalBudget
from workers.gateway.routes.actions import idp_groups
from workers.gateway.service import ActionService
from workers.gateway.web import render
from workers.gateway.web.credentials import CredentialStore
from workers.gateway.web.session import LOGIN_TTL, SessionStore, WebSession
from workers.gateway.web.signin import OidcSignIn, SignInFailed, SignInNotConfigured
from workers.gateway.web.stepup import (
    RelyingParty,
    StepUpFailed,
    StepUpUnavailable,
    WebAuthnCeremonies,
)
from workers.settings import Settings
from workflows.errors import ActionError, ActionNotFound, DecisionRefusedError, WorkerUnavailable
from workflows.rules import already_decided, approver_refusal, can_view, not_pending

log = logging.getLogger("signoff.gateway.page")
router = APIRouter(prefix="/a", include_in_schema=False)

_DIGEST = re.compile(r"[0-9a-f]{64}")
# Where a sign-in may return to: the page of an action, or the security keys page.
_NEXT = re.compile(r"/a/(?:register|act-[A-Za-z0-9-]{1,80})")
MAX_FORM_BYTES = 128 * 1024
CHANNEL = "web"


@dataclass
class WebPage:
    """What the page keeps between requests: sessions, the sign-in client, WebAuthn."""

    sessions: SessionStore
    signin: OidcSignIn
    ceremonies: WebAuthnCeremonies


def web_page(settings: Settings, credentials: CredentialStore | None) -> WebPage:
    """The page's state for one gateway."""
    secure = (settings.public_url or "").startswith("https://")
    return WebPage(
        sessions=SessionStore(
            settings.web_sessions_max, settings.web_session_ttl.total_seconds(), secure=secure
        ),
        signin=OidcSignIn(settings),
        ceremonies=WebAuthnCeremonies(credentials),
    )


def _web(request: Request) -> WebPage:
    web: WebPage = request.app.state.web
    return web


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _base(request: Request) -> str:
    """The gateway's public base URL: the setting, else what this request was sent to."""
    return (_settings(request).public_url or str(request.base_url)).rstrip("/")


def _rp(request: Request) -> RelyingParty:
    settings = _settings(request)
    return RelyingParty.of(_base(request), settings.webauthn_rp_id, settings.webauthn_rp_name)


def _html(body: str, nonce: str, status: int = 200) -> HTMLResponse:
    """An HTML answer with headers that allow nothing but this page's own nonce'd parts."""
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                "base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _message(title: str, text: str, status: int, link: tuple[str, str] | None = None) -> Response:
    nonce = secrets.token_urlsafe(16)
    return _html(render.message_page(title, text, nonce=nonce, link=link), nonce, status)


def _sign_in(next_path: str) -> RedirectResponse:
    """Send a signed-out browser to sign in, then back to `next_path`."""
    return RedirectResponse(f"/a/login?next={quote(next_path, safe='')}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (the first value of each); bounded in size and count."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items() if v}


def _signed_in(request: Request) -> tuple[WebSession, Authenticated] | None:
    session = _web(request).sessions.current(request)
    if session is None or session.identity is None:
        return None
    # For the access log, which records who, as for API calls.
    request.state.principal = session.identity.principal.id
    return session, session.identity


def _json_error(status: int, code: str, message: str) -> JSONResponse:
    return error_response(status, code, message)


# --- sign-in ------------------------------------------------------------------------------


@router.get("/login")
async def login(request: Request, next: str = "/a/register") -> Response:
    """Send the browser to the identity provider (authorization code flow with PKCE)."""
    if not _NEXT.fullmatch(next):
        next = "/a/register"  # never an open redirect
    web = _web(request)
    session = web.sessions.current(request) or web.sessions.new()
    try:
        url, pending = await web.signin.start(f"{_base(request)}/a/callback", next)
    except SignInNotConfigured as err:
        return _message("Sign-in is not configured", str(err), 503)
    except IdentityProviderUnavailable:
        return _message("Sign-in unavailable", "The identity provider cannot be reached.", 503)
    session.login = pending
    response = RedirectResponse(url, status_code=303)
    web.sessions.set_cookie(response, session)
    return response


@router.get("/callback")
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """The identity provider's answer: check state, redeem the code, start the session."""
    web = _web(request)
    session = web.sessions.current(request)
    pending = session.login if session is not None else None
    again = ("/a/login", "Sign in again")
    if session is None or pending is None or time.monotonic() - pending.started > LOGIN_TTL:
        return _message("Sign-in expired", "Start the sign-in again.", 400, again)
    session.login = None  # one answer per sign-in
    if error is not None:
        return _message("Sign-in refused", f"The identity provider said: {error[:200]}", 401, again)
    if not state or not secrets.compare_digest(state.encode(), pending.state.encode()):
        return _message("Sign-in refused", "The sign-in answer does not match.", 400, again)
    if not code or len(code) > 2000:
        return _message("Sign-in refused", "The identity provider sent no code.", 400, again)
    directory: Directory = request.app.state.directory
    try:
        token = await web.signin.finish(code, f"{_base(request)}/a/callback", pending)
        identity = await directory.authenticate(token)
    except SignInFailed as err:
        return _message("Sign-in refused", str(err), 401, again)
    except TokenRejected as err:
        return _message("Sign-in refused", f"The token was refused: {err}", 403, again)
    except IdentityProviderUnavailable:
        return _message("Sign-in unavailable", "The identity provider cannot be reached.", 503)
    if identity is None:
        return _message(
            "Sign-in refused",
            "The identity provider's access token is not one this gateway trusts (check the "
            "directory's oidc issuers and SIGNOFF_WEB_OIDC_RESOURCE).",
            403,
            again,
        )
    if identity.principal.kind != "human":
        return _message("Sign-in refused", "Agents never use the approval page.", 403)
    fresh = web.sessions.rotate(session, identity)
    log.info("approval page sign-in by %s", identity.principal.id)
    response = RedirectResponse(pending.next_path, status_code=303)
    web.sessions.set_cookie(response, fresh)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out: forget the session (CSRF-checked, so no other site can sign you out)."""
    web = _web(request)
    session = web.sessions.current(request)
    form = await _form(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        return _message("Refused", "The form is not from this page (CSRF check).", 403)
    web.sessions.drop(session)
    response = _message("Signed out", "You are signed out.", 200)
    web.sessions.clear_cookie(response)
    return response


# --- security keys ------------------------------------------------------------------------


@router.get("/register")
async def register_page(request: Request) -> Response:
    """The signed-in person's security keys, and a button to register one."""
    found = _signed_in(request)
    if found is None:
        return _sign_in("/a/register")
    session, identity = found
    try:
        credentials = await _web(request).ceremonies.require_store().of(identity.principal.id)
    except StepUpUnavailable as err:
        return _message("Security keys unavailable", str(err), 503)
    nonce = secrets.token_urlsafe(16)
    body = render.register_body(credentials, session.csrf)
    html = render.page(
        "Security keys", body, nonce=nonce, principal=identity.principal.id, csrf=session.csrf
    )
    return _html(html, nonce)


async def _checked_json(request: Request) -> tuple[WebSession, Authenticated, dict[str, str]]:
    """Signed in and the CSRF token matches; else a JSON error (raised as `_Refused`)."""
    found = _signed_in(request)
    if found is None:
        raise _Refused(_json_error(401, "unauthorized", "sign in first"))
    session, identity = found
    form = await _form(request)
    if not session.csrf_ok(form.get("csrf")):
        raise _Refused(_json_error(403, "csrf", "the form is not from this page (CSRF check)"))
    return session, identity, form


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


@router.post("/register/options")
async def register_options(request: Request) -> Response:
    """Options for registering a security key (navigator.credentials.create)."""
    try:
        session, identity, _ = await _checked_json(request)
        options = await _web(request).ceremonies.registration_options(
            session, identity.principal.id, _rp(request)
        )
    except _Refused as refused:
        return refused.response
    except StepUpUnavailable as err:
        return _json_error(503, "unavailable", str(err))
    return JSONResponse(options, headers={"Cache-Control": "no-store"})


@router.post("/register")
async def register(request: Request) -> Response:
    """Verify and store a new security key for the signed-in person."""
    try:
        session, identity, form = await _checked_json(request)
        credential_id = await _web(request).ceremonies.register(
            session,
            identity.principal.id,
            _rp(request),
            form.get("nonce", ""),
            form.get("credential"),
        )
    except _Refused as refused:
        return refused.response
    except StepUpUnavailable as err:
        return _json_error(503, "unavailable", str(err))
    except StepUpFailed as err:
        return _json_error(422, "webauthn", str(err))
    log.info("security key %s registered by %s", credential_id[:16], identity.principal.id)
    return JSONResponse({"credential_id": credential_id})


@router.post("/register/remove")
async def remove_key(request: Request) -> Response:
    """Forget one of the signed-in person's security keys (a lost or retired one)."""
    found = _signed_in(request)
    if found is None:
        return _sign_in("/a/register")
    session, identity = found
    form = await _form(request)
    if not session.csrf_ok(form.get("csrf")):
        return _message("Refused", "The form is not from this page (CSRF check).", 403)
    try:
        store = _web(request).ceremonies.require_store()
        removed = await store.remove(form.get("credential_id", ""), identity.principal.id)
    except StepUpUnavailable as err:
        return _message("Security keys unavailable", str(err), 503)
    if not removed:
        return _message("No such key", "You have no security key with that id.", 404)
    log.info("security key removed by %s", identity.principal.id)
    return RedirectResponse("/a/register", status_code=303)


# --- the action ----------------------------------------------------------------------------


def _why_not(status: ActionStatus, identity: Authenticated) -> str | None:
    """Why this person cannot decide the action now (None: they can)."""
    principal = identity.principal
    refusal = (
        not_pending(status)
        or already_decided(status, principal.id)
        or approver_refusal(status, principal.id, principal)
    )
    return None if refusal is None else f"You cannot decide this action: {refusal.message}."


async def _render_action(
    request: Request,
    session: WebSession,
    identity: Authenticated,
    status: ActionStatus,
    *,
    notice: str | None = None,
    code: int = 200,
    amend_text: str | None = None,
    amend_reason: str = "",
) -> Response:
    has_keys = True
    if status.verdict is not None and status.verdict.step_up and not status.terminal:
        try:
            has_keys = bool(
                await _web(request).ceremonies.require_store().of(identity.principal.id)
            )
        except StepUpUnavailable:
            has_keys = False
    nonce = secrets.token_urlsafe(16)
    body = render.action_body(
        status,
        principal=identity.principal,
        csrf=session.csrf,
        may_decide=_why_not(status, identity),
        notice=notice,
        has_keys=has_keys,
        amend_text=amend_text,
        amend_reason=amend_reason,
    )
    title = f"{status.request.action} on {status.request.target}"
    html = render.page(title, body, nonce=nonce, principal=identity.principal.id, csrf=session.csrf)
    return _html(html, nonce, code)


async def _visible(service: ActionService, action_id: str, identity: Authenticated) -> ActionStatus:
    """The action, if this person may see it; else ActionNotFound (as for a made-up id)."""
    status = await service.status(action_id)
    if not can_view(identity.principal, status):
        raise ActionNotFound(f"no action {action_id}")
    return status


def _not_found(action_id: str) -> Response:
    return _message("No such action", f"There is no action {action_id[:100]} you may see.", 404)


@router.get("/{id}")
async def show(request: Request, id: str) -> Response:
    """The action's page: sign in first; shows, never decides."""
    if not ACTION_ID.fullmatch(id):
        return _not_found(id)
    found = _signed_in(request)
    if found is None:
        return _sign_in(f"/a/{id}")
    session, identity = found
    try:
        status = await _visible(await get_service(request), id, identity)
    except ActionNotFound:
        return _not_found(id)
    except ActionError as err:
        return _message("Action unavailable", err.message, status_for(err))
    return await _render_action(request, session, identity, status)


@router.post("/{id}/step-up")
async def step_up_options(request: Request, id: str) -> Response:
    """Options for a security-key assertion bound to this action and the digest shown."""
    if not ACTION_ID.fullmatch(id):
        return _json_error(404, "not_found", f"no action {id[:100]}")
    try:
        session, identity, form = await _checked_json(request)
        status = await _visible(await get_service(request), id, identity)
        digest = form.get("digest", "")
        if digest != status.digest:
            return _json_error(
                422, "digest_mismatch", "the action changed since the page was shown; reload it"
            )
        options = await _web(request).ceremonies.step_up_options(
            session, identity.principal.id, _rp(request), id, digest
        )
    except _Refused as refused:
        return refused.response
    except ActionError as err:
        return _json_error(status_for(err), err.code, err.message)
    except StepUpUnavailable as err:
        return _json_error(503, "unavailable", str(err))
    except StepUpFailed as err:
        return _json_error(422, "webauthn", str(err))
    return JSONResponse(options, headers={"Cache-Control": "no-store"})


@dataclass
class _Posted:
    """A decide or amend form that passed the checks every such post needs."""

    session: WebSession
    identity: Authenticated
    form: dict[str, str]
    service: ActionService
    budget: RefusalBudget
    status: ActionStatus


async def _checked_post(request: Request, id: str, nothing: str) -> _Posted | Response:
    """Check a form post on an action: its id, sign-in, CSRF, refusal budget, and visibility.

    `nothing` says what did not happen when it is refused ("Nothing was decided.").
    """
    if not ACTION_ID.fullmatch(id):
        return _not_found(id)
    found = _signed_in(request)
    if found is None:
        return _message("Sign in first", nothing, 401, ("/a/" + id, "Sign in"))
    session, identity = found
    form = await _form(request)
    if not session.csrf_ok(form.get("csrf")):
        return _message("Refused", "The form is not from this page (CSRF check).", 403)
    service = await get_service(request)
    principal = identity.principal
    budget = await refusal_budget(request)
    wait = budget.retry_after(principal.id)
    if wait:
        return _message("Too many refused decisions", f"Try again in {wait} seconds.", 429)
    try:
        status = await _visible(service, id, identity)
    except ActionNotFound:
        budget.spend(principal.id)
        return _not_found(id)
    except ActionError as err:
        return _message("Action unavailable", err.message, status_for(err))
    return _Posted(session, identity, form, service, budget, status)


@router.post("/{id}/decide")
async def decide(request: Request, id: str) -> Response:
    """Approve or deny as signed in, bound to the digest shown (and a step-up when required)."""
    checked = await _checked_post(request, id, "Nothing was decided.")
    if isinstance(checked, Response):
        return checked
    session, identity, form, status = (
        checked.session,
        checked.identity,
        checked.form,
        checked.status,
    )
    service, budget, principal = checked.service, checked.budget, identity.principal
    decision = form.get("decision")
    digest = form.get("digest", "")
    reason = form.get("reason", "").strip()
    if decision not in ("approve", "deny") or not _DIGEST.fullmatch(digest):
        return await _render_action(
            request, session, identity, status, notice="Choose Approve or Deny.", code=422
        )
    if decision == "deny" and not reason:
        return await _render_action(
            request, session, identity, status, notice="A denial needs a reason.", code=422
        )
    step_up: StepUp | None = None
    if form.get("assertion"):
        try:
            step_up = await _web(request).ceremonies.verify_step_up(
                session,
                principal.id,
                _rp(request),
                id,
                digest,
                form.get("nonce", ""),
                form.get("assertion"),
            )
        except (StepUpFailed, StepUpUnavailable) as err:
            budget.spend(principal.id)
            return await _render_action(
                request, session, identity, status, notice=f"Not decided: {err}", code=403
            )
    fields: dict[str, Any] = {
        "decision": decision,
        "digest": digest,
        "reason": reason,
        "approver": principal.id,
        "channel": CHANNEL,
        "approver_groups": await idp_groups(identity, request.app.state.directory),
        "step_up": step_up,
    }
    try:
        decision_request = DecisionRequest(**fields)
    except ValidationError as err:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return await _render_action(
            request, session, identity, status, notice=f"Not decided: {problem}", code=422
        )
    try:
        await service.decide(id, decision_request)
    except WorkerUnavailable as err:
        return _message("Worker unavailable", err.message, 503)
    except ActionError as err:
        budget.spend(principal.id)
        current = await _visible(service, id, identity)
        notice = f"Not decided: {err.message}"
        if isinstance(err, DecisionRefusedError):
            notice = f"Not decided ({err.attempt.code.value}): {err.message}"
        return await _render_action(
            request, session, identity, current, notice=notice, code=status_for(err)
        )
    log.info("web %s by %s on %s accepted", decision, principal.id, id)
    return RedirectResponse(approval_page_url("", id), status_code=303)


def _amend_params(text: str) -> dict[str, Any] | str:
    """The params typed on the page as a JSON object; else what is wrong with them."""
    try:
        params = json.loads(text)
    except (ValueError, RecursionError) as err:
        return f"the params are not valid JSON ({str(err)[:200]})"
    if not isinstance(params, dict):
        return 'the params must be a JSON object, like {"rows": 1}'
    return params


@router.post("/{id}/amend")
async def amend(request: Request, id: str) -> Response:
    """Approve with changes as signed in: the same service path, checks and refusals as the API."""
    checked = await _checked_post(request, id, "Nothing was changed.")
    if isinstance(checked, Response):
        return checked
    session, identity, form, status = (
        checked.session,
        checked.identity,
        checked.form,
        checked.status,
    )
    service, budget, principal = checked.service, checked.budget, identity.principal
    text = form.get("params", "")
    reason = form.get("reason", "").strip()
    current = status

    async def again(notice: str, code: int) -> Response:
        """The page again, with what was typed kept and why nothing changed."""
        return await _render_action(
            request,
            session,
            identity,
            current,
            notice=f"Not changed: {notice}",
            code=code,
            amend_text=text,
            amend_reason=reason,
        )

    if status.verdict is not None and status.verdict.step_up is not None:
        return await again("this rule needs a security key; approve or deny it instead", 403)
    if not reason:
        return await again("say what you changed and why (the agent is told)", 422)
    params = _amend_params(text)
    if isinstance(params, str):
        return await again(params, 422)
    try:
        body = AmendBody(params=params, digest=form.get("digest", ""), reason=reason)
    except ValidationError as err:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return await again(problem, 422)
    try:
        amended = await service.amend(
            id,
            principal.id,
            body,
            channel=CHANNEL,
            amender_groups=await idp_groups(identity, request.app.state.directory),
        )
    except WorkerUnavailable as err:
        return _message("Worker unavailable", err.message, 503)
    except ActionError as err:
        if isinstance(err, DecisionRefusedError):
            budget.spend(principal.id)
        current = await _visible(service, id, identity)
        notice = err.message
        if isinstance(err, DecisionRefusedError):
            notice = f"({err.attempt.code.value}) {err.message}"
        return await again(notice, status_for(err))
    log.info("web amend by %s on %s accepted: %s", principal.id, id, amended.superseded_by)
    return RedirectResponse(approval_page_url("", amended.superseded_by or id), status_code=303)
