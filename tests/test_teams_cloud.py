"""Teams in a sovereign cloud: the bot's token from the configured authority, for its scope.

Real msal against the fake Microsoft (tests/fake_teams.py): once rerouted in-process for a
cloud msal knows (Azure Government), once over real TLS to a host it does not know, as the
bench's worker reaches it. Bad values stop `signoff worker` and `signoff gateway` at startup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from channels.teams import BotConnector, BotFrameworkValidator
from channels.teams.auth import TeamsAuthError
from tests.cli import app
from tests.fake_teams import FakeMicrosoft, MsalRoute, self_signed_certificate, server_tls
from workers.settings import Settings
from workers.wiring.teams import bot_tokens

APP_ID = "6c1e3b8e-0000-4000-8000-00000000c10d"
TENANT = "11111111-2222-3333-4444-00000000c10d"
SECRET = "bot-secret"
GOV_HOST = "login.microsoftonline.us"
GOV_SCOPE = "https://api.botframework.us/.default"
CONVERSATION = "19:gov@thread.tacv2"

runner = CliRunner()


@pytest.fixture
async def fake() -> AsyncIterator[FakeMicrosoft]:
    """Microsoft's services on 127.0.0.1, playing Azure Government's scope."""
    fake = await FakeMicrosoft(client_id=APP_ID, client_secret=SECRET).start()
    fake.bot_scope = GOV_SCOPE
    yield fake
    await fake.stop()


def cloud_settings(authority_host: str) -> Settings:
    """Teams configured for a cloud whose authority is `authority_host`."""
    return Settings(
        teams_app_id=APP_ID,
        teams_app_password=SecretStr(SECRET),
        teams_tenant_id=TENANT,
        teams_allowed_service_urls=["127.0.0.1"],
        teams_authority_host=authority_host,
        teams_token_scope=GOV_SCOPE,
    )


async def post_card(settings: Settings, fake: FakeMicrosoft, route: MsalRoute | None) -> None:
    """Send one activity to the fake connector as the bot, with the token the settings get."""
    connector = BotConnector(bot_tokens(settings, http_client=route), ["127.0.0.1"])
    await connector.send(f"{fake.url}/gov/", CONVERSATION, {"type": "message", "text": "hi"})


async def test_the_token_comes_from_the_configured_authority_for_the_configured_scope(
    fake: FakeMicrosoft,
) -> None:
    fake.authority_host = GOV_HOST
    route = MsalRoute(fake.url, host=GOV_HOST)
    try:
        await post_card(cloud_settings(f"https://{GOV_HOST}"), fake, route)
    finally:
        route.close()
    # msal knows the government cloud: discovery and token both at its host, for its tenant.
    assert route.requests
    assert all(url.startswith(f"https://{GOV_HOST}/{TENANT}/") for url in route.requests)
    [request] = fake.bot_token_requests()
    assert request["scope"] == GOV_SCOPE
    assert request["client_id"] == APP_ID
    # The fake connector accepts only a token issued for the configured scope.
    [post] = fake.connector
    assert post.path == f"/gov/v3/conversations/{CONVERSATION}/activities"
    assert fake.issued[(post.authorization or "").removeprefix("Bearer ")] == GOV_SCOPE


async def test_a_host_msal_does_not_know_is_used_as_configured_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    fake = await FakeMicrosoft(client_id=APP_ID, client_secret=SECRET).start(
        tls=server_tls(cert, key)
    )
    fake.bot_scope = GOV_SCOPE
    # msal's own requests session, trusting the fake's certificate as a separate process would.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    try:
        await post_card(cloud_settings(fake.authority_url), fake, None)
    finally:
        await fake.stop()
    # No instance discovery at the public cloud (that would have needed the network).
    assert fake.discovery_requests == 1
    [request] = fake.bot_token_requests()
    assert request["scope"] == GOV_SCOPE
    [post] = fake.connector
    assert fake.issued[(post.authorization or "").removeprefix("Bearer ")] == GOV_SCOPE


async def test_the_default_is_the_public_cloud(fake: FakeMicrosoft) -> None:
    tokens = bot_tokens(
        Settings(teams_app_id=APP_ID, teams_app_password=SecretStr(SECRET), teams_tenant_id=TENANT)
    )
    assert tokens.authority == f"https://login.microsoftonline.com/{TENANT}"
    assert tokens.scopes == ["https://api.botframework.com/.default"]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("teams_authority_host", "login.microsoftonline.us", "https URL"),
        ("teams_authority_host", "http://login.microsoftonline.us", "https URL"),
        ("teams_authority_host", "htps://login.microsoftonline.us", "https URL"),
        ("teams_authority_host", f"https://{GOV_HOST}/{TENANT}", "without a tenant"),
        ("teams_token_scope", "https://api.botframework.us", "/.default"),
        ("teams_token_scope", "api.botframework.us/.default", "https resource"),
    ],
)
def test_a_bad_value_is_refused(name: str, value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**{name: value})


@pytest.mark.parametrize("command", ["worker", "gateway"])
def test_a_bad_value_stops_the_process_at_startup(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_TEAMS_AUTHORITY_HOST", "login.microsoftonline.us")
    monkeypatch.setenv("SIGNOFF_TEAMS_TOKEN_SCOPE", GOV_SCOPE)
    result = runner.invoke(app, [command])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "SIGNOFF_TEAMS_AUTHORITY_HOST: must be an https URL" in text
    assert "'login.microsoftonline.us'" in text
    assert "Traceback" not in text


def test_sovereign_values_are_accepted() -> None:
    settings = Settings(
        teams_authority_host="https://login.microsoftonline.us/",
        teams_token_scope="https://api.botframework.us/.default",
    )
    assert settings.teams_authority_host == "https://login.microsoftonline.us"


async def test_button_presses_are_checked_against_the_issuer_the_clouds_metadata_names(
    fake: FakeMicrosoft,
) -> None:
    # Azure Government's Bot Framework signs as https://api.botframework.us: inbound tokens
    # are checked against the issuer of the metadata SIGNOFF_TEAMS_OPENID_METADATA_URL names.
    fake.bot_issuer = "https://api.botframework.us"
    validator = BotFrameworkValidator(APP_ID, fake.metadata_url)
    service_url = f"{fake.url}/gov/"
    claims = await validator.validate(f"Bearer {fake.bot_jwt(service_url=service_url)}")
    assert claims["iss"] == "https://api.botframework.us"
    public = fake.bot_jwt(service_url=service_url, issuer="https://api.botframework.com")
    with pytest.raises(TeamsAuthError, match="invalid token"):
        await validator.validate(f"Bearer {public}")
