"""Helpers for the approval page's tests: a policy with a step-up rule, a directory trusting the
test OpenID Provider, page settings, and signing in through the provider's real HTML pages.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import SecretStr

from tests.oidc_fixtures import AUDIENCE, OpenIdProvider
from workers.settings import Settings

DATA = Path(__file__).parent / "data"
WEB_CLIENT = "signoff-web"
WEB_SECRET = "signoff-web-secret"
WEB_SCOPE = "openid email groups signoff"
STEP_UP_RULE = {
    "id": "vault-needs-key",
    "description": "Secrets need a security key",
    "match": {"action": "noop", "target": "vault-*"},
    "effect": "require_approval",
    "risk": "critical",
    "approvals": [{"group": "security", "min": 1}],
    "expires_after": "1h",
    "step_up": "webauthn",
}
_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)
_INPUT = re.compile(r"<input\b([^>]*)/?>", re.I)
_ATTR = re.compile(r'([\w-]+)="([^"]*)"')


def policy_with_step_up(folder: Path) -> Path:
    """The test policy plus a rule that needs a WebAuthn step-up for `noop` on `vault-*`."""
    document = yaml.safe_load((DATA / "policy.yaml").read_text())
    document["rules"].insert(0, STEP_UP_RULE)
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def directory_trusting(idp: OpenIdProvider, folder: Path, source: Path | None = None) -> Path:
    """The test directory (or `source`), trusting `idp`'s tokens for people."""
    document = yaml.safe_load((source or DATA / "directory.yaml").read_text())
    document["oidc"] = {
        "issuers": [{"issuer": idp.issuer, "audience": AUDIENCE}],
        "groups": {"dba": ["dba-team"], "oncall": ["Platform On-Call"]},
    }
    path = folder / "directory-oidc.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def page_settings(
    settings: Settings, idp: OpenIdProvider, public_url: str, folder: Path
) -> Settings:
    """`settings` with the approval page signing in through `idp`, served at `public_url`."""
    return settings.model_copy(
        update={
            "policy": policy_with_step_up(folder),
            "directory": directory_trusting(idp, folder, settings.directory),
            "public_url": public_url,
            "web_oidc_issuer": idp.issuer,
            "web_oidc_client_id": WEB_CLIENT,
            "web_oidc_client_secret": SecretStr(WEB_SECRET),
            "web_oidc_scope": WEB_SCOPE,
            "web_oidc_resource": AUDIENCE,
        }
    )


def _first_form(text: str) -> tuple[str, dict[str, str]]:
    forms = _FORM.findall(text)
    assert forms, f"no form on the identity provider's page: {text[:300]}"
    attrs, inner = forms[0]
    fields: dict[str, str] = {}
    for raw in _INPUT.findall(inner):
        field = dict(_ATTR.findall(raw))
        if "name" in field:
            fields[field["name"]] = html.unescape(field.get("value", ""))
    return html.unescape(dict(_ATTR.findall(attrs)).get("action", "")), fields


async def sign_in(
    gateway: httpx.AsyncClient, idp: OpenIdProvider, path: str, account: str
) -> httpx.Response:
    """Open `path` on the gateway, sign in at the provider as `account` when sent there.

    `gateway` keeps the page's cookie; the provider's pages are driven as a browser would
    (following redirects between the two, filling in the login and consent forms). Returns the
    gateway's first answer that is not a redirect.
    """
    gateway_host = urlsplit(str(gateway.base_url)).netloc
    location = path
    async with httpx.AsyncClient(timeout=10) as browser:
        for _ in range(20):
            parts = urlsplit(location)
            if not parts.netloc or parts.netloc == gateway_host:
                answer = await gateway.get(parts.path + (f"?{parts.query}" if parts.query else ""))
                if answer.status_code not in (302, 303):
                    return answer
                location = answer.headers["location"]
                continue
            page = await browser.get(location)
            if page.status_code in (302, 303):
                location = str(page.url.join(page.headers["location"]))
                continue
            action, fields = _first_form(page.text)
            if "login" in fields:
                fields["login"] = account
                fields["password"] = "any"
            posted = await browser.post(str(page.url.join(action)), data=fields)
            assert posted.status_code in (302, 303), posted.text[:300]
            location = str(posted.url.join(posted.headers["location"]))
    raise AssertionError("the sign-in never came back to the gateway")


def form_fields(page: str) -> dict[str, Any]:
    """The hidden fields of the page's decision form (csrf, digest)."""
    match = re.search(r'<form id="decide"[^>]*>(.*?)</form>', page, re.S)
    assert match, "the page has no decision form"
    return {
        dict(_ATTR.findall(raw))["name"]: html.unescape(dict(_ATTR.findall(raw)).get("value", ""))
        for raw in _INPUT.findall(match.group(1))
        if 'type="hidden"' in raw
    }
