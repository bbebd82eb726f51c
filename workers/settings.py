"""Settings for every signoff process, read from `SIGNOFF_*` environment variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies import EXAMPLES_DIR
from signoff.models import Duration
from workers.event_loop import EventLoopChoice, loop_factory

# Microsoft's public cloud; sovereign clouds have their own (Azure Government:
# https://login.microsoftonline.us and https://api.botframework.us/.default).
PUBLIC_AUTHORITY_HOST = "https://login.microsoftonline.com"
PUBLIC_BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"


class Settings(BaseSettings):
    """Configuration of worker, gateway and tools; each field is `SIGNOFF_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", extra="ignore")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "signoff"
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = Field(default=None, description="client cert (mTLS)")
    temporal_tls_key: Path | None = Field(default=None, description="client key (mTLS)")
    temporal_tls_ca: Path | None = Field(default=None, description="server CA bundle")
    temporal_api_key: SecretStr | None = Field(default=None, description="Temporal Cloud API key")
    ui_url: str = Field(default="http://localhost:8233", description="Temporal Web UI base URL")

    # Policy, identity and targets
    policy: Path = EXAMPLES_DIR / "policy.yaml"
    directory: Path = EXAMPLES_DIR / "directory.yaml"
    targets: Path = EXAMPLES_DIR / "targets.yaml"
    executor_modules: list[str] = Field(
        default_factory=list, description="modules that register extra executors on import"
    )

    # Worker tuning
    heartbeat_timeout: Duration = timedelta(seconds=30)
    # How long a caller-mode action waits for its requester to report the result.
    caller_report_timeout: Duration = timedelta(hours=1)
    # Long enough for running executors to finish before a deploy replaces the worker.
    worker_shutdown_timeout: Duration = timedelta(seconds=30)
    # Temporal's default too. Each cached run costs ~150 KB (B3 in bench/RESULTS.md); an evicted
    # one costs nothing until its next event, then a replay.
    max_cached_workflows: int = 1000
    # Temporal's sandbox stops workflow code calling the clock, randomness or I/O, at a CPU and
    # memory cost on every workflow task (bench/RESULTS.md, B1). The only workflow code is
    # signoff's own (executors and policies run in activities), and CI runs it in the sandbox:
    # the tests' workers, every recorded history replayed, every path run without it replayed
    # in it. So production workers skip it unless asked.
    workflow_sandbox: bool = False
    max_concurrent_activities: int = 200
    # The worker's and gateway's event loop: uvloop where installed, else asyncio's own.
    event_loop: EventLoopChoice = "auto"
    worker_metrics_port: int | None = None
    # All interfaces: Prometheus and the Kubernetes probes reach the worker on its pod IP.
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104

    # Gateway /metrics: how long a visibility count is reused, and what "expiring soon" means.
    metrics_cache_seconds: float = 5.0
    metrics_expiry_warning: Duration = timedelta(minutes=15)
    metrics_expiry_scan_limit: int = 1000

    # Signed messages (signoff.signing): the gateway signs with its private key, workers verify
    # with public keys only. Rotation: add the new public key to verify_keys, then switch
    # signing_key, then remove the old public key.
    signing_key: Path | None = Field(
        default=None, description="gateway: Ed25519 private key (PEM) it signs messages with"
    )
    verify_keys: Path | None = Field(
        default=None, description="worker: public key PEM file, or a directory of *.pem"
    )
    signature_max_age: Duration = Field(
        default=timedelta(minutes=10), description="older signed messages are refused as stale"
    )

    # Audit ledger
    database_url: SecretStr | None = None
    data_dir: Path = Path(".signoff")
    ledger_partitions: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="worker: independent hash chains new actions spread over (by action id)",
    )
    ledger_checkpoint_interval: Duration = Field(
        default=timedelta(minutes=1),
        description="gateway: how often it signs a checkpoint over every chain's head (0: never)",
    )

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    max_body_bytes: int = 1024 * 1024
    # Refused decisions (and decisions on actions one may not see) per principal: a burst, then
    # this many a minute; beyond that 429 with Retry-After.
    refused_decisions_burst: int = Field(default=10, ge=1)
    refused_decisions_per_minute: float = Field(default=6.0, gt=0)

    # The approval page (/a/{id}): its public base URL, used in every message's link, and who
    # signs people in (an OIDC client of the IdP, authorization code flow with PKCE).
    public_url: str | None = Field(
        default=None, description="the gateway's public base URL, e.g. https://signoff.example"
    )
    web_oidc_issuer: str | None = None
    web_oidc_client_id: str | None = None
    web_oidc_client_secret: SecretStr | None = None
    web_oidc_scope: str = "openid email groups"
    # The API's audience as a resource indicator (RFC 8707), when the IdP wants one to issue a
    # JWT access token the directory's `oidc:` issuers accept.
    web_oidc_resource: str | None = None
    web_session_ttl: Duration = timedelta(hours=1)
    web_sessions_max: int = Field(default=10_000, ge=1)
    # WebAuthn relying party: the host of public_url unless set.
    webauthn_rp_id: str | None = None
    webauthn_rp_name: str = "signoff"

    # The CLI's and SDK's own SIGNOFF_GATEWAY and SIGNOFF_TOKEN: signoff.settings.ClientSettings.

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Whose clicks count when matched by email: members of this workspace (T…) or of this
    # Enterprise Grid organisation (E…). Unset: the bot token's own workspace (auth.test).
    slack_team_id: str | None = None
    slack_enterprise_id: str | None = None

    # Microsoft Teams
    teams_app_id: str | None = None
    teams_app_password: SecretStr | None = None
    teams_tenant_id: str | None = None
    # Inbound activities must come from one of these tenants (teams_tenant_id counts as one);
    # with none, every activity is refused unless teams_allow_any_tenant says otherwise.
    teams_allowed_tenants: list[str] = Field(default_factory=list)
    teams_allow_any_tenant: bool = False
    teams_openid_metadata_url: str = (
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    )
    teams_allowed_service_urls: list[str] = Field(
        default_factory=lambda: ["smba.trafficmanager.net"],
        description="hosts that may receive our bot token (the serviceUrl of an activity)",
    )
    teams_certificate_path: Path | None = Field(
        default=None, description="PFX certificate instead of the app password"
    )
    teams_certificate_password: SecretStr | None = None
    teams_service_url: str = Field(
        default="https://smba.trafficmanager.net/teams/",
        description="where to post to a conversation the bot has no stored reference for",
    )
    # Sovereign clouds (Azure Government, Azure China) sign in elsewhere and scope the bot's
    # token to their own Bot Framework.
    teams_authority_host: str = Field(
        default=PUBLIC_AUTHORITY_HOST,
        description="the Entra host the bot's token comes from (https URL, no path)",
    )
    teams_token_scope: str = Field(
        default=PUBLIC_BOT_FRAMEWORK_SCOPE,
        description="the scope of the bot's token: its cloud's Bot Framework /.default",
    )

    # Email (SMTP with STARTTLS, always): sent to each policy group's `email` addresses.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str | None = Field(default=None, description="From: address, e.g. signoff@corp")
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the SMTP server's certificate"
    )

    @field_validator("event_loop")
    @classmethod
    def _event_loop(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop":
            loop_factory(value)  # refused where it is not installed; auto falls back instead
        return value

    @field_validator("teams_authority_host")
    @classmethod
    def _authority_host(cls, value: str) -> str:
        return authority_host(value)

    @field_validator("teams_token_scope")
    @classmethod
    def _token_scope(cls, value: str) -> str:
        return token_scope(value)


class SettingsError(ValueError):
    """The environment's SIGNOFF_* settings are not valid; the message names each one."""


def authority_host(value: str) -> str:
    """An Entra authority host as msal takes it: `https://host[:port]`, no path or query."""
    text = value.strip().rstrip("/")
    example = "e.g. https://login.microsoftonline.us for Azure Government"
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme != "https" or not parts.hostname or not port_ok:
        # msal itself refuses anything but https; saying so here beats its error at first post.
        raise ValueError(f"must be an https URL of the sign-in host ({example}), not {value!r}")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            f"must be the host alone, without a tenant, path or credentials ({example}), "
            f"not {value!r}"
        )
    return text


def token_scope(value: str) -> str:
    """A client-credentials scope: an https resource followed by `/.default`."""
    text = value.strip()
    resource = text.removesuffix("/.default")
    example = "e.g. https://api.botframework.us/.default for Azure Government"
    parts = urlsplit(resource)
    if resource == text or parts.scheme != "https" or not parts.netloc:
        raise ValueError(
            f"must be an https resource ending in /.default ({example}), not {value!r}"
        )
    return text


def load_settings() -> Settings:
    """The settings from the environment; SettingsError says which variables are wrong."""
    try:
        return Settings()
    except ValidationError as err:
        problems = [
            f"SIGNOFF_{'.'.join(str(p) for p in e['loc']).upper()}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise SettingsError("; ".join(problems)) from None
