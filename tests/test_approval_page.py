"""The approval page's HTTP behaviour (`/a/{id}`), driven with httpx against the real app.

Sign-in goes through the real OpenID Provider (tests/oidc/provider.mjs) with the authorization
code flow and PKCE; decisions go through a real worker on the Temporal dev server. Each test is
an attack on the page or one of its promises: a link has no power, GET never decides, every
POST needs the session's CSRF token, agents' text cannot become markup, and a step-up rule
refuses a decision without a security key.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.ledger.store import Ledger
from channels.console import ConsoleNotifier
from channels.slack.blocks import request_blocks
from channels.teams.cards import approval_card
from signoff.links import approval_page_url
from signoff.models import (
    ActionRequest,
    ActionStatus,
    ActionSubmission,
    DecisionRequest,
    RefusalCode,
    Status,
    StepUp,
)
from tests.conftest import running_worker
from tests.gateway_fixtures import build_app
from tests.oidc_fixtures import OpenIdProvider, start_provider
from tests.page_fixtures import form_fields, page_settings, sign_in
from tests.signing import SIGNER
from workers.gateway.service import ActionService
from workers.gateway.web.credentials import CredentialStore
from workers.settings import Settings
from workflows.action import ActionWorkflow
from workflows.messages import NotifyInput

GATEWAY = "http://gateway.test"


@pytest.fixture(scope="module")
def idp() -> Iterator[OpenIdProvider]:
    """The OpenID Provider, with the approval page's client redirecting to the test gateway."""
    provider = start_provider(web_redirect=f"{GATEWAY}/a/callback")
    yield provider
    provider.stop()


@dataclass
class Page:
    """The gateway app (API and page), its service, and a browser-like client with cookies."""

    service: ActionService
    browser: httpx.AsyncClient
    idp: OpenIdProvider
    settings: Settings

    async def submit(
        self, target: str, justification: str = "rotate keys", **params: object
    ) -> ActionStatus:
        """agent:bot asks for `noop` on `target`; its status once it waits for approval."""
        bot = await self.service.directory.principal("agent:bot")
        assert bot is not None
        status = await self.service.submit(
            bot,
            ActionSubmission(
                action="noop", target=target, params=params, justification=justification
            ),
        )
        for _ in range(100):
            status = await self.service.status(status.id)
            if status.status is not Status.EVALUATING:
                return status
            await asyncio.sleep(0.1)
        raise AssertionError(f"{status.id} never left evaluating")

    async def signed_in(self, action_id: str, account: str) -> httpx.Response:
        """The action's page after signing in as `account`."""
        return await sign_in(self.browser, self.idp, f"/a/{action_id}", account)


@pytest.fixture
async def page(
    client: Client, settings: Settings, ledger: Ledger, idp: OpenIdProvider, tmp_path: Path
) -> AsyncIterator[Page]:
    """A worker and the gateway app with the page configured against `idp`."""
    configured = page_settings(settings, idp, GATEWAY, tmp_path)
    app = build_app(client, configured, ledger)
    async with (
        running_worker(client, configured, ledger),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=GATEWAY, timeout=60
        ) as browser,
    ):
        yield Page(app.state.service, browser, idp, configured)


async def test_a_link_without_a_session_only_leads_to_sign_in(page: Page) -> None:
    action = await page.submit("one-link")
    answer = await page.browser.get(f"/a/{action.id}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/a/login?next=%2Fa%2F{action.id}"
    # The sign-in start goes to the provider with PKCE (S256) and a state.
    start = await page.browser.get(answer.headers["location"])
    assert start.status_code == 303
    to_idp = start.headers["location"]
    assert to_idp.startswith(page.idp.url + "/auth?")
    for part in (
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "client_id=signoff-web",
    ):
        assert part in to_idp
    # Whatever a mail scanner does with the link, nothing is decided.
    assert (await page.service.status(action.id)).decisions == []
    # A POST without a session decides nothing either.
    post = await page.browser.post(
        f"/a/{action.id}/decide", data={"decision": "approve", "digest": action.digest}
    )
    assert post.status_code == 401
    status = await page.service.status(action.id)
    assert (status.decisions, status.refused) == ([], [])


async def test_sign_in_then_approve_on_the_page(page: Page) -> None:
    action = await page.submit("one-page", justification="nightly cleanup", rows=5)
    shown = await page.signed_in(action.id, "alice@example.com")
    assert shown.status_code == 200, shown.text
    text = shown.text
    for expected in (
        "noop on one-page",
        "nightly cleanup",
        "&quot;rows&quot;: 5",
        action.digest,
        "one-dba",
        "0 of 1 from dba",
        "alice@example.com",
    ):
        assert expected in text, expected
    cookie = shown.request.headers["cookie"]
    assert "signoff_session=" in cookie
    csp = shown.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    fields = form_fields(text)
    assert fields["digest"] == action.digest
    decided = await page.browser.post(
        f"/a/{action.id}/decide", data={**fields, "decision": "approve"}
    )
    assert decided.status_code == 303, decided.text
    assert decided.headers["location"] == approval_page_url("", action.id)
    status = await page.service.status(action.id)
    [decision] = status.decisions
    assert (decision.approver, decision.decision, decision.channel) == (
        "alice@example.com",
        "approve",
        "web",
    )
    # A link to a finished action shows its outcome, and no form.
    for _ in range(100):
        status = await page.service.status(action.id)
        if status.terminal:
            break
        await asyncio.sleep(0.1)
    after = await page.browser.get(f"/a/{action.id}")
    assert after.status_code == 200
    assert "succeeded (approved by alice@example.com)" in after.text
    assert 'id="decide"' not in after.text


async def test_session_cookie_is_httponly_lax_and_rotated_at_sign_in(page: Page) -> None:
    action = await page.submit("one-cookie")
    start = await page.browser.get(f"/a/login?next=/a/{action.id}")
    before = start.headers["set-cookie"]
    assert "HttpOnly" in before
    assert "SameSite=lax" in before
    assert "Path=/" in before
    old = page.browser.cookies["signoff_session"]
    await sign_in(page.browser, page.idp, f"/a/{action.id}", "alice@example.com")
    assert page.browser.cookies["signoff_session"] != old  # no session fixation


async def test_get_never_decides(page: Page) -> None:
    action = await page.submit("one-get")
    await page.signed_in(action.id, "alice@example.com")
    for path in (
        f"/a/{action.id}",
        f"/a/{action.id}?decision=approve&digest={action.digest}",
        f"/a/{action.id}/decide?decision=approve&digest={action.digest}",
    ):
        answer = await page.browser.get(path)
        assert answer.status_code in (200, 405), path
    status = await page.service.status(action.id)
    assert (status.status, status.decisions, status.refused) == (Status.PENDING_APPROVAL, [], [])


async def test_a_post_without_the_csrf_token_is_refused(page: Page) -> None:
    action = await page.submit("one-csrf")
    await page.signed_in(action.id, "alice@example.com")
    for data in (
        {"decision": "approve", "digest": action.digest},
        {"decision": "approve", "digest": action.digest, "csrf": "forged"},
    ):
        answer = await page.browser.post(f"/a/{action.id}/decide", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    for path in ("/a/register/options", f"/a/{action.id}/step-up", "/a/logout"):
        assert (await page.browser.post(path, data={"csrf": "forged"})).status_code == 403
    status = await page.service.status(action.id)
    assert (status.decisions, status.refused) == ([], [])


async def test_unknown_or_hidden_actions_are_404(page: Page) -> None:
    action = await page.submit("one-hidden")
    await page.signed_in(action.id, "nobody@example.com")  # not in any group
    for path in ("/a/act-doesnotexist", f"/a/{action.id}", "/a/%3Cscript%3E"):
        answer = await page.browser.get(path)
        assert answer.status_code == 404, path
        assert "<script>" not in answer.text.split("<script nonce")[0]
        assert action.digest not in answer.text


async def test_agent_written_html_is_shown_as_text(page: Page) -> None:
    attack = '<script>alert(1)</script><a href="https://evil.test">approve</a>\u202egnp.exe'
    action = await page.submit(
        "one-html", justification=attack, note='<img src=x onerror="alert(2)">'
    )
    shown = await page.signed_in(action.id, "alice@example.com")
    body = shown.text.split("<script nonce")[0]  # the page's own script comes last
    assert "<script>" not in body
    assert "<img" not in body
    assert '<a href="https://evil' not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "\\u202e" in body
    assert "\u202e" not in body
    assert "&lt;img src=x onerror=\\&quot;alert(2)\\&quot;&gt;" in body  # JSON's \"


async def test_a_denial_needs_a_reason_and_a_stale_digest_is_refused(page: Page) -> None:
    action = await page.submit("one-deny")
    fields = form_fields((await page.signed_in(action.id, "alice@example.com")).text)
    empty = await page.browser.post(
        f"/a/{action.id}/decide", data={**fields, "decision": "deny", "reason": " "}
    )
    assert empty.status_code == 422
    assert "A denial needs a reason" in empty.text
    other = await page.browser.post(
        f"/a/{action.id}/decide", data={**fields, "digest": "0" * 64, "decision": "approve"}
    )
    assert other.status_code == 422
    assert "digest_mismatch" in other.text
    for bad in ("x" * 2001, "nul\x00byte"):
        refused = await page.browser.post(
            f"/a/{action.id}/decide", data={**fields, "decision": "deny", "reason": bad}
        )
        assert refused.status_code == 422
        assert "Not decided: reason" in refused.text
    denied = await page.browser.post(
        f"/a/{action.id}/decide", data={**fields, "decision": "deny", "reason": "not tonight"}
    )
    assert denied.status_code == 303
    status = await page.service.status(action.id)
    assert [(d.decision, d.reason) for d in status.decisions] == [("deny", "not tonight")]
    assert [r.code for r in status.refused] == [RefusalCode.DIGEST_MISMATCH]


async def test_a_step_up_rule_refuses_a_page_decision_without_a_security_key(page: Page) -> None:
    action = await page.submit("vault-keys")
    assert action.verdict is not None
    assert action.verdict.step_up == "webauthn"
    shown = await page.signed_in(action.id, "bob@example.com")
    assert "needs a security key" in shown.text
    assert 'data-step-up="/a/' in shown.text
    assert "no security key registered" in shown.text
    fields = form_fields(shown.text)
    answer = await page.browser.post(
        f"/a/{action.id}/decide", data={**fields, "decision": "approve"}
    )
    assert answer.status_code == 403
    assert "step_up_required" in answer.text
    # A made-up assertion is checked by the gateway before anything reaches the workflow.
    forged = await page.browser.post(
        f"/a/{action.id}/decide",
        data={**fields, "decision": "approve", "nonce": "x", "assertion": '{"id": "AAAA"}'},
    )
    assert forged.status_code == 403
    assert "expired or was already used" in forged.text
    # No credentials yet: the page cannot even start a step-up.
    options = await page.browser.post(
        f"/a/{action.id}/step-up", data={"csrf": fields["csrf"], "digest": action.digest}
    )
    assert options.status_code == 422
    assert "register" in options.json()["error"]["message"]
    status = await page.service.status(action.id)
    assert status.decisions == []
    [refused] = status.refused
    assert (refused.approver, refused.code, refused.channel) == (
        "bob@example.com",
        RefusalCode.STEP_UP_REQUIRED,
        "web",
    )


async def test_the_api_cannot_claim_a_step_up(page: Page) -> None:
    action = await page.submit("vault-api")
    answer = await page.browser.post(
        f"/v1/actions/{action.id}/decisions",
        headers={"Authorization": "Bearer t-bob"},
        json={
            "decision": "approve",
            "digest": action.digest,
            "step_up": {"method": "webauthn", "credential_id": "made-up"},
        },
    )
    assert answer.status_code == 422  # clients cannot send the field
    plain = await page.browser.post(
        f"/v1/actions/{action.id}/decisions",
        headers={"Authorization": "Bearer t-bob"},
        json={"decision": "approve", "digest": action.digest},
    )
    assert plain.status_code == 403
    assert plain.json()["error"]["code"] == "step_up_required"
    status = await page.service.status(action.id)
    assert status.decisions == []


async def test_sign_in_refuses_forged_answers_agents_and_open_redirects(page: Page) -> None:
    # An answer nobody asked for (no pending sign-in in this browser's session).
    stray = await page.browser.get("/a/callback?code=abc&state=xyz")
    assert stray.status_code == 400
    # A pending sign-in, answered with another state: login CSRF refused.
    await page.browser.get("/a/login?next=/a/register")
    forged = await page.browser.get("/a/callback?code=abc&state=forged")
    assert forged.status_code == 400
    assert "does not match" in forged.text
    # The provider vouches for a person whose email is an agent's id: never signed in.
    agent = await sign_in(page.browser, page.idp, "/a/register", "mallory")
    assert agent.status_code == 403
    assert "cannot name an agent" in agent.text
    # `next` may only lead to a page of the gateway.
    landed = await sign_in(
        page.browser, page.idp, "/a/login?next=https://evil.test/a/x", "bob@example.com"
    )
    assert landed.status_code == 200
    assert str(landed.url) == f"{GATEWAY}/a/register"


async def test_a_person_known_only_to_the_identity_provider_approves(page: Page) -> None:
    action = await page.submit("one-idp")
    shown = await page.signed_in(action.id, "zoe@example.com")
    assert shown.status_code == 200
    decided = await page.browser.post(
        f"/a/{action.id}/decide", data={**form_fields(shown.text), "decision": "approve"}
    )
    assert decided.status_code == 303
    [decision] = (await page.service.status(action.id)).decisions
    assert (decision.approver, decision.channel) == ("zoe@example.com", "web")
    assert decision.approver_groups is not None
    assert "dba" in decision.approver_groups  # from her verified token, signed by the gateway


async def test_over_https_the_cookie_is_secure_and_host_only(
    client: Client, settings: Settings, idp: OpenIdProvider, tmp_path: Path
) -> None:
    configured = page_settings(settings, idp, "https://signoff.test", tmp_path)
    app = build_app(client, configured)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://signoff.test"
    ) as browser:
        start = await browser.get("/a/login?next=/a/register")
    assert start.status_code == 303
    cookie = start.headers["set-cookie"]
    assert cookie.startswith("__Host-signoff_session=")
    for flag in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    assert "redirect_uri=https%3A%2F%2Fsignoff.test%2Fa%2Fcallback" in start.headers["location"]


async def test_only_the_gateway_can_vouch_for_a_step_up(page: Page) -> None:
    """Someone with Temporal access but not the gateway's key cannot add the step-up fact."""
    action = await page.submit("vault-forged")
    handle = page.service.client.get_workflow_handle_for(ActionWorkflow.run, action.id)
    plain = DecisionRequest(approver="bob@example.com", decision="approve", digest=action.digest)
    signed_without = SIGNER.decision(plain, action.id)
    claimed = signed_without.model_copy(
        update={"step_up": StepUp(method="webauthn", credential_id="made-up")}
    )
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ActionWorkflow.decide, claimed)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(ActionWorkflow.decide, signed_without)
    status = await page.service.status(action.id)
    assert status.decisions == []
    assert [r.code for r in status.refused] == [
        RefusalCode.SIGNATURE_MISMATCH,
        RefusalCode.STEP_UP_REQUIRED,
    ]
    # With the gateway's signature over the fact, the same decision counts.
    proven = SIGNER.decision(
        plain.model_copy(update={"step_up": StepUp(method="webauthn", credential_id="key-1")}),
        action.id,
    )
    accepted = await handle.execute_update(ActionWorkflow.decide, proven)
    [decision] = accepted.decisions
    assert decision.step_up == StepUp(method="webauthn", credential_id="key-1")


async def test_every_channel_links_to_the_page(caplog: pytest.LogCaptureFixture) -> None:
    """The console line, the Slack message and the Teams card all name `/a/{id}`."""
    request = ActionRequest(
        action="noop", target="one-links", justification="why", requester="agent:bot"
    )
    status = ActionStatus(
        id="act-links",
        digest=request.digest,
        request=request,
        status=Status.PENDING_APPROVAL,
        created_at=datetime.now(UTC),
    )
    page_url = approval_page_url("https://signoff.test/", "act-links")
    assert page_url == "https://signoff.test/a/act-links"
    with caplog.at_level(logging.INFO, logger="signoff.notify"):
        await ConsoleNotifier(page_base="https://signoff.test").post(
            NotifyInput(channel="console", status=status, groups=["dba"])
        )
    [line] = [r.getMessage() for r in caplog.records]
    assert line.endswith(f"; page {page_url}")
    blocks = json.dumps([b.to_dict() for b in request_blocks(status, None, {}, page_url=page_url)])
    assert f"<{page_url}|Open the approval page>" in blocks
    card = approval_card(status, page_url=page_url)
    assert {"type": "Action.OpenUrl", "title": "Open the approval page", "url": page_url} in card[
        "actions"
    ]


async def test_a_person_removes_only_their_own_security_keys(page: Page, ledger: Ledger) -> None:
    store = CredentialStore(ledger.pool)
    suffix = uuid.uuid4().hex[:8]
    mine, theirs = f"bob-key-{suffix}", f"alice-key-{suffix}"
    assert await store.add(mine, "bob@example.com", b"public-key", 0)
    assert await store.add(theirs, "alice@example.com", b"public-key", 0)
    assert not await store.add(mine, "alice@example.com", b"other", 0)  # ids are unique
    shown = await sign_in(page.browser, page.idp, "/a/register", "bob@example.com")
    assert shown.status_code == 200
    assert mine[:16] in shown.text
    assert theirs[:16] not in shown.text
    match = re.search(r'data-csrf="([^"]+)"', shown.text)
    assert match is not None
    csrf = match.group(1)
    forged = await page.browser.post("/a/register/remove", data={"credential_id": mine})
    assert forged.status_code == 403
    other = await page.browser.post(
        "/a/register/remove", data={"csrf": csrf, "credential_id": theirs}
    )
    assert other.status_code == 404
    assert theirs in [c.credential_id for c in await store.of("alice@example.com")]
    removed = await page.browser.post(
        "/a/register/remove", data={"csrf": csrf, "credential_id": mine}
    )
    assert removed.status_code == 303
    assert mine not in [c.credential_id for c in await store.of("bob@example.com")]


async def test_the_agents_owner_cannot_approve_on_the_page(page: Page) -> None:
    action = await page.submit("one-owner")
    shown = await page.signed_in(action.id, "dave@example.com")  # owns agent:bot, in dba
    assert shown.status_code == 200
    assert 'id="decide"' not in shown.text
    assert "nobody decides their own action" in shown.text
    # The form is missing, so craft the POST: the workflow refuses it, and records it.
    csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    assert csrf is not None
    answer = await page.browser.post(
        f"/a/{action.id}/decide",
        data={"csrf": csrf.group(1), "digest": action.digest, "decision": "approve"},
    )
    assert answer.status_code == 403
    assert "self_approval" in answer.text
    status = await page.service.status(action.id)
    assert status.decisions == []
    assert [(r.code, r.channel) for r in status.refused] == [(RefusalCode.SELF_APPROVAL, "web")]


# --- approve with changes ---------------------------------------------------------------------


def amend_fields(page_text: str) -> dict[str, str]:
    """The amend form's hidden fields and what its params textarea shows."""
    match = re.search(r'<form id="amend"[^>]*>(.*?)</form>', page_text, re.S)
    assert match, "the page has no amend form"
    form = match.group(1)
    fields = {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form)
    }
    params = re.search(r'<textarea id="amend-params"[^>]*>(.*?)</textarea>', form, re.S)
    assert params is not None
    fields["params"] = html.unescape(params.group(1))
    return fields


async def test_amend_on_the_page_supersedes_and_opens_the_successor(page: Page) -> None:
    action = await page.submit("one-amend-page", rows=5, table="orders")
    shown = await page.signed_in(action.id, "alice@example.com")
    fields = amend_fields(shown.text)
    assert fields["digest"] == action.digest
    assert json.loads(fields["params"]) == {"rows": 5, "table": "orders"}  # prefilled
    assert f"<code>{action.digest}</code>" in shown.text.split('id="amend"')[1]
    changed = json.dumps({"rows": 1, "table": "orders"})
    answer = await page.browser.post(
        f"/a/{action.id}/amend", data={**fields, "params": changed, "reason": "one row first"}
    )
    assert answer.status_code == 303, answer.text
    original = await page.service.status(action.id)
    assert original.status is Status.SUPERSEDED
    assert original.superseded_by is not None
    assert answer.headers["location"] == approval_page_url("", original.superseded_by)
    successor = await page.service.status(original.superseded_by)
    assert successor.request.params == {"rows": 1, "table": "orders"}
    assert (successor.request.amended_from, successor.request.amended_by) == (
        action.id,
        "alice@example.com",
    )
    assert successor.request.requester == "agent:bot"
    # Her own page for the successor: no decision form, and why.
    for _ in range(100):
        if successor.status is Status.PENDING_APPROVAL:
            break
        await asyncio.sleep(0.1)
        successor = await page.service.status(successor.id)
    landed = await page.browser.get(answer.headers["location"])
    assert landed.status_code == 200
    assert 'id="decide"' not in landed.text
    assert 'id="amend"' not in landed.text
    assert "proposed these params" in landed.text


async def test_bad_amend_params_on_the_page_change_nothing_and_say_why(page: Page) -> None:
    action = await page.submit("one-amend-bad", rows=5)
    fields = amend_fields((await page.signed_in(action.id, "alice@example.com")).text)
    cases = [
        ({"params": '{"rows": 1', "reason": "x"}, "not valid JSON"),
        ({"params": "[1, 2]", "reason": "x"}, "must be a JSON object"),
        ({"params": '{"rows": 1}', "reason": "  "}, "say what you changed"),
        ({"params": '{"rows": "\\u0000"}', "reason": "x"}, "Not changed: params"),
        ({"params": '{"rows": 1}', "reason": "x", "digest": "nope"}, "Not changed: digest"),
        ({"params": '{"rows": 5}', "reason": "x"}, "the same action"),
        ({"params": '{"rows": 1}', "reason": "x", "digest": "0" * 64}, "digest_mismatch"),
    ]
    for data, said in cases:
        answer = await page.browser.post(f"/a/{action.id}/amend", data={**fields, **data})
        assert answer.status_code == 422, (data, answer.status_code)
        assert said in html.unescape(answer.text), (said, answer.text)
        # What was typed is kept for the next try.
        assert amend_fields(answer.text)["params"] == data["params"]
    status = await page.service.status(action.id)
    assert (status.status, status.superseded_by) == (Status.PENDING_APPROVAL, None)
    assert status.request.params == {"rows": 5}
    # The two the workflow judged are recorded as refused amendments; nothing else reached it.
    assert [(r.kind, r.code) for r in status.refused] == [
        ("amend", RefusalCode.DIGEST_MISMATCH),
        ("amend", RefusalCode.DIGEST_MISMATCH),
    ]


async def test_amend_without_the_csrf_token_is_refused(page: Page) -> None:
    action = await page.submit("one-amend-csrf", rows=5)
    fields = amend_fields((await page.signed_in(action.id, "alice@example.com")).text)
    for csrf in ({}, {"csrf": "forged"}):
        data = {"digest": fields["digest"], "params": '{"rows": 1}', "reason": "x", **csrf}
        answer = await page.browser.post(f"/a/{action.id}/amend", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    status = await page.service.status(action.id)
    assert (status.status, status.superseded_by, status.refused) == (
        Status.PENDING_APPROVAL,
        None,
        [],
    )


async def test_the_owner_and_outsiders_cannot_amend_on_the_page(page: Page) -> None:
    action = await page.submit("one-amend-owner", rows=5)
    shown = await page.signed_in(action.id, "dave@example.com")  # owns agent:bot, in dba
    assert 'id="amend"' not in shown.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    assert csrf is not None
    data = {"csrf": csrf.group(1), "digest": action.digest, "params": '{"rows": 1}', "reason": "x"}
    owner = await page.browser.post(f"/a/{action.id}/amend", data=data)
    assert owner.status_code == 403
    assert "self_approval" in owner.text
    # Someone in no group of the rule may not even see it: a 404, nothing recorded.
    page.browser.cookies.clear()
    outsider = await page.signed_in(action.id, "nobody@example.com")
    assert outsider.status_code == 404
    keys = await page.browser.get("/a/register")  # a page of hers that carries the token
    csrf = re.search(r'name="csrf" value="([^"]+)"', keys.text)
    assert csrf is not None
    answer = await page.browser.post(f"/a/{action.id}/amend", data={**data, "csrf": csrf.group(1)})
    assert answer.status_code == 404
    status = await page.service.status(action.id)
    assert (status.status, status.superseded_by) == (Status.PENDING_APPROVAL, None)
    assert [(r.approver, r.kind, r.code, r.channel) for r in status.refused] == [
        ("dave@example.com", "amend", RefusalCode.SELF_APPROVAL, "web")
    ]


async def test_a_step_up_rule_is_not_amended_from_the_page(page: Page) -> None:
    action = await page.submit("vault-amend", rows=5)
    assert action.verdict is not None
    assert action.verdict.step_up == "webauthn"
    shown = await page.signed_in(action.id, "bob@example.com")
    assert 'id="amend"' not in shown.text
    assert "not offered on this page" in shown.text
    fields = form_fields(shown.text)
    answer = await page.browser.post(
        f"/a/{action.id}/amend", data={**fields, "params": '{"rows": 1}', "reason": "x"}
    )
    assert answer.status_code == 403
    assert "needs a security key" in answer.text
    status = await page.service.status(action.id)
    assert (status.status, status.superseded_by) == (Status.PENDING_APPROVAL, None)


async def test_a_person_known_only_to_the_identity_provider_amends_on_the_page(
    page: Page,
) -> None:
    action = await page.submit("one-amend-idp", rows=5)
    fields = amend_fields((await page.signed_in(action.id, "zoe@example.com")).text)
    answer = await page.browser.post(
        f"/a/{action.id}/amend", data={**fields, "params": '{"rows": 2}', "reason": "two"}
    )
    assert answer.status_code == 303, answer.text
    original = await page.service.status(action.id)
    assert original.status is Status.SUPERSEDED
    assert original.superseded_by is not None
    successor = await page.service.status(original.superseded_by)
    assert successor.request.amended_by == "zoe@example.com"
