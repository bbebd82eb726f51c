"""The approval page in Debian's Chromium, driven by Playwright, against real parts only.

A person signs in through the real OpenID Provider's pages, registers a security key with
Chromium's virtual authenticator (DevTools `WebAuthn.addVirtualAuthenticator`), sees a Slack
click on a step-up rule answered with the page's link instead of a decision, and approves on
the page with a fresh assertion. The worker, Temporal, Postgres and the fake Slack API are the
same as in every other test; the gateway app runs under uvicorn on a real port. A phone-sized
screenshot of the page lands in docs/, where the README shows it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from pydantic import SecretStr
from temporalio.client import Client

from activities.ledger.store import Ledger
from channels.slack.blocks import APPROVE_ACTION, DENY_ACTION
from policies.loader import load_policy_and_directory
from signoff.executor import registry
from signoff.links import approval_page_url
from signoff.models import ActionStatus, ActionSubmission, RefusalCode, Status
from tests.conftest import running_worker
from tests.fake_slack import FakeSlack
from tests.gateway_fixtures import free_port
from tests.oidc_fixtures import start_provider
from tests.page_fixtures import page_settings
from tests.test_slack import SECRET, buttons_of, click, form, signed
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, DOCS
from workers.gateway.app import create_app
from workers.gateway.service import ActionService
from workers.settings import Settings
from workers.wiring.slack import slack_notifier, slack_router

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
# In the signed-in page: a real assertion for action A (other), sent to decide action B with
# B's digest, then sent again for A. Both must be refused by the gateway.
STOLEN_ASSERTION = """async ([otherId, otherDigest, targetId, csrf]) => {
  const enc = (b) => btoa(String.fromCharCode(...new Uint8Array(b)))
    .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  const dec = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')
    + '='.repeat((4 - s.length % 4) % 4)), (c) => c.charCodeAt(0));
  const post = (url, data) => fetch(url, {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/x-www-form-urlencoded'},
    body: new URLSearchParams(data), redirect: 'manual'});
  const options = await (await post(`/a/${otherId}/step-up`, {csrf, digest: otherDigest})).json();
  const p = options.publicKey;
  p.challenge = dec(p.challenge);
  p.allowCredentials.forEach((c) => { c.id = dec(c.id); });
  const a = await navigator.credentials.get({publicKey: p});
  const assertion = JSON.stringify({id: a.id, rawId: enc(a.rawId), type: a.type, response: {
    clientDataJSON: enc(a.response.clientDataJSON),
    authenticatorData: enc(a.response.authenticatorData),
    signature: enc(a.response.signature), userHandle: null}});
  const target = document.querySelector('#decide input[name="digest"]').value;
  const answers = [];
  for (const [id, digest] of [[targetId, target], [otherId, otherDigest]]) {
    const r = await post(`/a/${id}/decide`, {csrf, digest, decision: 'approve',
      nonce: options.nonce, assertion});
    answers.push({status: r.status, text: await r.text()});
  }
  return answers;
}"""
SCREENSHOT = DOCS / "approval-page-phone.png"


def slack_directory(source: Path, folder: Path) -> Path:
    """The test directory with bob's Slack user id, so his clicks are his."""
    document = yaml.safe_load(source.read_text())
    for principal in document["principals"]:
        if principal["id"] == "bob@example.com":
            principal["slack_user_id"] = "U0BOB"
    path = folder / "directory-slack.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[None]:
    """The app under uvicorn on 127.0.0.1:`port` until the block ends."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        await task


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    """Poll an async `check` until it returns something truthy."""
    for _ in range(int(timeout / 0.1)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s")


async def test_step_up_in_chromium_slack_refused_page_approves(
    client: Client, settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail("needs Debian's chromium at /usr/bin/chromium (make test installs it)")
    from playwright.async_api import async_playwright, expect

    port = free_port()
    # localhost, not 127.0.0.1: a WebAuthn relying party id is a host name, never an address.
    public = f"http://localhost:{port}"
    idp = start_provider(web_redirect=f"{public}/a/callback")
    fake = FakeSlack()
    await fake.start()
    try:
        base = settings.model_copy(
            update={"directory": slack_directory(settings.directory, tmp_path)}
        )
        configured = page_settings(base, idp, public, tmp_path).model_copy(
            update={
                "slack_bot_token": SecretStr(fake.bot_token),
                "slack_signing_secret": SecretStr(SECRET),
                "slack_api_url": fake.url,
            }
        )
        policy, directory = load_policy_and_directory(configured.policy, configured.directory)
        service = ActionService(client, configured, policy, directory, registry, ledger=ledger)
        app = create_app(
            service,
            directory,
            configured,
            routers=[slack_router(configured, service, directory)],
        )
        notifier = slack_notifier(configured, directory)
        async with (
            running_worker(client, configured, ledger, notifiers=[notifier]),
            app.router.lifespan_context(app),
            serving(app, port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            await run_scenario(service, fake, http, public, ledger, async_playwright, expect)
    finally:
        await fake.stop()
        idp.stop()


async def run_scenario(
    service: ActionService,
    fake: FakeSlack,
    http: httpx.AsyncClient,
    public: str,
    ledger: Ledger,
    async_playwright: Any,
    expect: Any,
) -> None:
    """The whole story, from the agent's request to the approval with a security key."""
    bot = await service.directory.principal("agent:bot")
    assert bot is not None
    action = await service.submit(
        bot,
        ActionSubmission(
            action="noop",
            target="vault-prod",
            params={"rotate": "db-root-password", "notify": ["dba", "security"]},
            justification="quarterly rotation of the production database root password",
        ),
    )
    page_url = approval_page_url(public, action.id)

    # Slack: the message links to the page; an approve click on a step-up rule decides nothing.
    [posted] = await fake.wait_for(
        "chat.postMessage",
        channel="C0SEC",
        where=lambda call: "attachments" in call.args and action.id in json.dumps(call.args),
    )
    assert page_url in json.dumps(posted.args)
    assert "security key required" in json.dumps(posted.args)
    buttons = buttons_of(posted)
    for button in (APPROVE_ACTION, DENY_ACTION):
        body = form(click("U0BOB", button, buttons[button]["value"]))
        answer = await http.post("/slack/interactions", content=body, headers=signed(body))
        assert answer.status_code == 200
    ephemerals = await fake.wait_for("chat.postEphemeral", count=2, user="U0BOB")
    for ephemeral in ephemerals:
        assert f"<{page_url}|Open the approval page>" in ephemeral.args["text"]
        assert "Nothing was decided" in ephemeral.args["text"]
    status = await service.status(action.id)
    assert status.decisions == []
    [refused] = status.refused  # the approve click, recorded; the deny click went to the page
    assert (refused.approver, refused.code, refused.channel) == (
        "bob@example.com",
        RefusalCode.STEP_UP_REQUIRED,
        "slack",
    )

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        context = await browser.new_context(
            viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
        )
        page = await context.new_page()
        page.set_default_timeout(20_000)
        expect.set_options(timeout=20_000)
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        authenticator = await cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "usb",
                    "hasResidentKey": False,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )

        # The link from Slack: sign in at the real OpenID Provider, then the page.
        await page.goto(page_url)
        await page.locator('input[name="login"]').fill("bob@example.com")
        await page.locator('input[name="password"]').fill("any")
        await page.get_by_role("button", name="Sign-in").click()
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("heading", name="noop on vault-prod")).to_be_visible()
        assert page.url == page_url
        await expect(page.get_by_text("no security key registered yet")).to_be_visible()
        await expect(page.get_by_text("step_up_required")).to_be_visible()  # Slack's attempt

        # Register a security key: Chromium's virtual authenticator answers.
        await page.get_by_role("link", name="Security keys").click()
        await page.get_by_role("button", name="Register a security key").click()
        await expect(page.get_by_text("last used -")).to_be_visible()
        credentials = await cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": authenticator["authenticatorId"]}
        )
        [credential] = credentials["credentials"]

        # Back to the action: read it, then approve with the key.
        await page.goto(page_url)
        await expect(page.get_by_text("This rule needs a security key")).to_be_visible()
        await expect(
            page.get_by_label("Reason (required to deny; the agent is told)")
        ).to_be_visible()
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        # A POST from outside the page (no CSRF token) is refused, even with the cookie.
        forged = await page.request.post(
            f"{page_url}/decide",
            form={"decision": "approve", "digest": action.digest},
            max_redirects=0,
        )
        assert forged.status == 403

        # An assertion made for another action cannot decide this one, nor be used twice.
        other = await service.submit(
            bot,
            ActionSubmission(action="noop", target="vault-dev", justification="another one"),
        )
        csrf = await page.locator('#decide input[name="csrf"]').get_attribute("value")
        answers = await page.evaluate(STOLEN_ASSERTION, [other.id, other.digest, action.id, csrf])
        assert answers[0]["status"] == 403, answers
        assert "asked about another action" in answers[0]["text"]
        assert answers[1]["status"] == 403, answers
        assert "expired or was already used" in answers[1]["text"]
        assert (await service.status(other.id)).decisions == []

        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_text("approved by bob@example.com")).to_be_visible()
        await browser.close()

    async def finished() -> ActionStatus | None:
        current = await service.status(action.id)
        return current if current.status is Status.SUCCEEDED else None

    status = await until(finished, "the approved action's run")
    [decision] = status.decisions
    assert (decision.approver, decision.channel) == ("bob@example.com", "web")
    assert decision.step_up is not None
    credential_id = decision.step_up.credential_id
    raw_id = credential["credentialId"]  # standard base64 from DevTools
    assert credential_id == raw_id.replace("+", "-").replace("/", "_").rstrip("=")
    # The ledger records that the step-up happened, and with which credential.
    rows = await ledger.events(action.id)
    [accepted] = [row for row in rows if row.kind == "decision"]
    assert accepted.channel == "web"
    assert accepted.payload["step_up"] == {"method": "webauthn", "credential_id": credential_id}
    assert [row.payload["code"] for row in rows if row.kind == "refused"] == ["step_up_required"]
    assert SCREENSHOT.stat().st_size > 10_000
