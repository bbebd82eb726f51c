"""Slack, inbound: verified button clicks and the deny modal become `Reviews.decide` calls.

Two doors feed one handler: `POST /slack/interactions` (signed by Slack, verified here over the
raw body) and Socket Mode (an outbound WebSocket authenticated by the app token). Decisions go
through `Reviews`, and so the same workflow update, as the HTTP API's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from channels.notifier import (
    REVIEW_OUTCOMES,
    REVIEW_REASON_MISSING,
    STEP_UP_TEXT,
    review_refused_text,
    reviewable,
    revoke_refused_text,
)
from channels.review import Reviews, WindowReviews
from channels.slack.blocks import (
    APPROVE_ACTION,
    APPROVE_WINDOW_ACTION,
    DENY_ACTION,
    DENY_CALLBACK,
    OUTCOME_BLOCK,
    OUTCOME_INPUT,
    REASON_BLOCK,
    REASON_INPUT,
    REASON_MAX,
    REVIEW_ACTION,
    REVIEW_CALLBACK,
    REVOKE_ACTION,
    REVOKE_WINDOW_ACTION,
    SHOW_FULL_ACTION,
    deny_modal,
    escape,
    full_reachable,
    full_request_modal,
    is_open,
    modal_metadata,
    parse_button_value,
    parse_modal_metadata,
    parse_window_value,
    review_modal,
)
from channels.slack.client import SlackPermanentError, SlackUnavailable, call_slack
from channels.slack.payloads import BlockActions, ViewSubmission, form_payload
from channels.slack.reply import OK, Rejected, Reply, rejection
from channels.slack.workspace import Clicker, Workspace
from policies.cache import BoundedCache
from policies.directory import Directory, vouched_groups
from policies.unavailable import IdentityProviderUnavailable
from signoff.links import approval_page_url
from signoff.models import (
    ActionStatus,
    DecisionKind,
    DecisionRequest,
    RefusalCode,
    ReviewOutcome,
    ReviewRequest,
    RevokeRequest,
    WindowRevokeRequest,
)
from signoff.neutralise import mrkdwn_code as code_text
from workflows.errors import (
    ActionError,
    ActionNotFound,
    ActionNotPending,
    DecisionRefusedError,
    MessageRefusedError,
)

log = logging.getLogger("signoff.slack")

MAX_SKEW = 5 * 60  # Slack's own recommendation for the timestamp window, in seconds
# Seen signatures (and Socket Mode envelope ids): a replay within the window is refused.
REPLAY_TTL = 2 * MAX_SKEW
REPLAY_MAX = 50_000
USERS_MAX = 10_000
KNOWN_TTL = 10 * 60.0
UNKNOWN_TTL = 60.0
DRAIN_SECONDS = 10.0
IDP_DOWN = (
    "the identity provider is unavailable, so nobody can say who you are just now: "
    "your click was not counted, try again in a minute"
)


@dataclass(frozen=True)
class Linked:
    """Whom a Slack user is: a principal id, and the verified email when only the IdP knows them.

    For such a person the IdP is asked again when they decide (through its cache of a short
    TTL), so someone offboarded or moved out of a group stops counting in that time.
    """

    principal_id: str
    idp_email: str | None = None


class SlackInteractions:
    """Verifies, parses and acts on Slack interactions; decisions go through `Reviews`."""

    def __init__(
        self,
        reviews: Reviews,
        directory: Directory,
        client: AsyncWebClient,
        signing_secret: str | None,
        workspace: Workspace | None = None,
        *,
        page_base: str | None = None,
    ) -> None:
        self.reviews = reviews
        # The gateway's public URL: a click on a step-up rule answers with the page's link.
        self.page_base = page_base
        self.directory = directory
        self.client = client
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        # Unset: the workspace the bot token belongs to, asked of auth.test once.
        self.workspace = workspace
        self._signatures: BoundedCache[str, None] = BoundedCache(REPLAY_MAX, ttl=REPLAY_TTL)
        # A user's principal id (None: not in the directory), and why an unmatched one was
        # refused; both forget a user together.
        self._users: BoundedCache[str, Linked | None] = BoundedCache(USERS_MAX)
        self._refusals: BoundedCache[str, str] = BoundedCache(USERS_MAX)
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_http(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Answer one `POST /slack/interactions`: verify the signature, then handle the payload."""
        try:
            self._verify(body, headers)
            payload = form_payload(body)
        except Rejected as err:
            log.warning("slack interaction rejected (%s): %s", err.status, err.reason)
            return rejection(err.status)
        return await self.handle_payload(payload)

    async def handle_payload(self, payload: dict[str, Any]) -> Reply:
        """Act on a verified payload (HTTP or Socket Mode); slow work goes on in the background."""
        try:
            kind = payload.get("type")
            if kind == "block_actions":
                return await self._block_actions(BlockActions.model_validate(payload))
            if kind == "view_submission":
                return await self._view_submission(ViewSubmission.model_validate(payload))
        except ValidationError as err:
            where = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors()[:3])
            log.warning("slack interaction rejected (400): malformed %s payload (%s)", kind, where)
            return rejection(400)
        except Rejected as err:
            log.warning("slack interaction rejected (%s): %s", err.status, err.reason)
            return rejection(err.status)
        # view_closed, shortcuts and the like: nothing of ours, but Slack wants a 200.
        log.info("slack interaction of type %r ignored", kind)
        return OK

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Signature over the raw body, timestamp within five minutes, and never seen before."""
        if self.verifier is None:
            raise Rejected(401, "no signing secret is configured (SIGNOFF_SLACK_SIGNING_SECRET)")
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            raise Rejected(401, "missing X-Slack-Signature or X-Slack-Request-Timestamp")
        # ASCII only: str.isdigit() also takes superscript and other scripts' digits, which int()
        # then chokes on (a 500) or reads.
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise Rejected(401, "malformed X-Slack-Request-Timestamp")
        skew = abs(time.time() - int(timestamp))
        if skew > MAX_SKEW:
            raise Rejected(401, f"stale timestamp ({int(skew)} s from now; at most {MAX_SKEW})")
        if not self.verifier.is_valid(body, timestamp, signature):
            raise Rejected(401, "bad signature")
        # A valid signature covers the timestamp and body: seeing it twice means a replay.
        if not self._signatures.add(signature, None):
            raise Rejected(401, "replayed request (signature already seen)")

    async def _block_actions(self, payload: BlockActions) -> Reply:
        action = payload.actions[0]
        if action.action_id == REVOKE_WINDOW_ACTION:
            return await self._revoke_window(payload)
        known = (
            APPROVE_ACTION,
            APPROVE_WINDOW_ACTION,
            DENY_ACTION,
            SHOW_FULL_ACTION,
            REVOKE_ACTION,
            REVIEW_ACTION,
        )
        if action.action_id not in known:
            raise Rejected(400, f"unknown action_id {action.action_id[:40]!r}")
        parsed = parse_button_value(action.value)
        if parsed is None:
            raise Rejected(400, f"malformed button value on {action.action_id}")
        action_id, digest = parsed
        channel = payload.channel.id if payload.channel else None
        linked = await self._principal_for(Clicker.of(payload), channel)
        principal_id = linked.principal_id
        status = await self._checked_status(action_id, digest, principal_id)
        if action.action_id == SHOW_FULL_ACTION:
            # Only shows: the request as the digest binds it, read fresh. Decides nothing.
            if not payload.trigger_id:
                raise Rejected(400, "show-full click without a trigger_id")
            modal = full_request_modal(status)
            self._spawn(self._open_modal(payload.trigger_id, modal.to_dict(), principal_id))
            return OK
        if action.action_id == REVOKE_ACTION:
            self._spawn(self._revoke_grant(principal_id, payload.user.id, channel, action_id))
            return OK
        if action.action_id == REVIEW_ACTION:
            if not reviewable(status):
                text = f"There is no open review on this action ({status.status.value})."
                self._spawn(self._ephemeral(channel, payload.user.id, text))
                return OK
            if not payload.trigger_id:
                raise Rejected(400, "review click without a trigger_id")
            view = review_modal(status, modal_metadata(action_id, digest, channel))
            self._spawn(self._open_modal(payload.trigger_id, view.to_dict(), principal_id))
            return OK
        if action.action_id in (APPROVE_ACTION, APPROVE_WINDOW_ACTION) and not full_reachable(
            status
        ):
            # Slack cannot show all of it, so no approval may come from Slack (an old message).
            text = f"Too large to review in Slack: use `signoff approve {code_text(action_id)}`."
            self._spawn(self._ephemeral(channel, payload.user.id, text))
            return OK
        if action.action_id == DENY_ACTION and _needs_step_up(status):
            # A deny needs the security key too: straight to the page, no modal to fill in.
            self._spawn(self._ephemeral(channel, payload.user.id, self._step_up_text(action_id)))
            return OK
        if action.action_id == APPROVE_ACTION:
            self._spawn(
                self._decide(linked, payload.user.id, channel, action_id, digest, "approve")
            )
            return OK
        if action.action_id == APPROVE_WINDOW_ACTION:
            # The window the button showed: the rule's maximum, read from the checked status.
            offer = status.verdict.window if status.verdict else None
            if offer is None:
                raise Rejected(400, f"approve-for-a-window click on {action_id}, which offers none")
            self._spawn(
                self._decide(
                    linked,
                    payload.user.id,
                    channel,
                    action_id,
                    digest,
                    "approve",
                    window=offer.max_duration,
                )
            )
            return OK
        if not is_open(status):
            self._spawn(
                self._ephemeral(
                    channel, payload.user.id, f"This action is {status.status.value}, not pending."
                )
            )
            return OK
        if not payload.trigger_id:
            raise Rejected(400, "deny click without a trigger_id")
        view = deny_modal(status, modal_metadata(action_id, digest, channel))
        # trigger_id is valid for three seconds, so the modal opens now, after the answer.
        self._spawn(self._open_modal(payload.trigger_id, view.to_dict(), principal_id))
        return OK

    async def _view_submission(self, payload: ViewSubmission) -> Reply:
        view = payload.view
        if view.callback_id == REVIEW_CALLBACK:
            return await self._review_submission(payload)
        if view.callback_id != DENY_CALLBACK:
            raise Rejected(400, f"unknown view callback_id {view.callback_id[:40]!r}")
        parsed = parse_modal_metadata(view.private_metadata)
        if parsed is None:
            raise Rejected(400, "malformed deny modal metadata")
        action_id, digest, channel = parsed
        value = view.state.values.get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("value")
        reason = value.strip() if isinstance(value, str) else ""
        if not reason or len(reason) > REASON_MAX:
            # Shown under the input; the modal stays open for a better answer.
            error = "Say why, so the agent learns" if not reason else "At most 2000 characters"
            return Reply(200, {"response_action": "errors", "errors": {REASON_BLOCK: error}})
        linked = await self._principal_for(Clicker.of(payload), channel)
        await self._checked_status(action_id, digest, linked.principal_id)
        self._spawn(
            self._decide(linked, payload.user.id, channel, action_id, digest, "deny", reason)
        )
        return OK

    async def _review_submission(self, payload: ViewSubmission) -> Reply:
        """The review modal: a reason and an outcome, recorded as the clicker's review."""
        view = payload.view
        parsed = parse_modal_metadata(view.private_metadata)
        if parsed is None:
            raise Rejected(400, "malformed review modal metadata")
        action_id, digest, channel = parsed
        values = view.state.values
        value = values.get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("value")
        reason = value.strip() if isinstance(value, str) else ""
        if not reason or len(reason) > REASON_MAX:
            # Shown under the input; the modal stays open for a better answer.
            error = REVIEW_REASON_MISSING if not reason else "At most 2000 characters"
            return Reply(200, {"response_action": "errors", "errors": {REASON_BLOCK: error}})
        selected = values.get(OUTCOME_BLOCK, {}).get(OUTCOME_INPUT, {}).get("selected_option")
        outcome = selected.get("value") if isinstance(selected, dict) else None
        if outcome not in REVIEW_OUTCOMES:
            error = "Choose accepted or disputed"
            return Reply(200, {"response_action": "errors", "errors": {OUTCOME_BLOCK: error}})
        chosen: ReviewOutcome = "disputed" if outcome == "disputed" else "accepted"
        linked = await self._principal_for(Clicker.of(payload), channel)
        await self._checked_status(action_id, digest, linked.principal_id)
        request = ReviewRequest(
            reviewer=linked.principal_id,
            digest=digest,
            reason=reason,
            outcome=chosen,
            channel="slack",
        )
        self._spawn(self._review(request, payload.user.id, channel, action_id))
        return OK

    async def _review(
        self, request: ReviewRequest, user_id: str, channel: str | None, action_id: str
    ) -> None:
        """Record the review; a refusal (recorded by the workflow) is told to the clicker only."""
        reviewer = request.reviewer
        try:
            await self.reviews.review(action_id, request)
        except DecisionRefusedError as err:
            log.info("slack review by %s on %s refused: %s", reviewer, action_id, err)
            await self._ephemeral(channel, user_id, "⛔ " + escape(review_refused_text(str(err))))
            return
        except (ActionNotPending, ActionNotFound) as err:
            await self._ephemeral(
                channel, user_id, f"Your review was not counted: {escape(str(err))}"
            )
            return
        except Exception:
            log.exception("slack review by %s on %s failed", reviewer, action_id)
            await self._ephemeral(
                channel,
                user_id,
                f"Your review could not be recorded; try again, or use `signoff review "
                f"{code_text(action_id)}`.",
            )
            return
        log.info("slack review by %s on %s accepted", reviewer, action_id)

    async def _checked_status(self, action_id: str, digest: str, principal_id: str) -> ActionStatus:
        """The action's status, after checking it exists and the clicked digest is its digest."""
        try:
            status = await self.reviews.status(action_id)
        except ActionNotFound:
            raise Rejected(400, f"unknown action {action_id[:80]!r} (by {principal_id})") from None
        if not hmac.compare_digest(status.digest, digest):
            raise Rejected(
                400,
                f"digest {digest[:12]}… does not match action {action_id} "
                f"({status.digest[:12]}…; by {principal_id})",
            )
        return status

    async def _principal_for(self, clicker: Clicker, channel: str | None) -> Linked:
        """Who a Slack user is: by Slack id in the file, else by their Slack email (file or IdP).

        By email only for a member of our workspace (or organisation) whose email Slack has
        confirmed: a Slack Connect guest from elsewhere can put anyone's address on a profile.
        """
        user_id = clicker.user_id
        found, cached = self._users.lookup(user_id)
        if not found:
            try:
                cached = await self._lookup(clicker)
            except IdentityProviderUnavailable as err:
                # Not cached: the next click asks again. Nothing is decided on a guess.
                self._spawn(self._ephemeral(channel, user_id, f"⛔ {IDP_DOWN}."))
                raise Rejected(503, f"Slack user {user_id}: {err}") from None
            self._users.put(user_id, cached, KNOWN_TTL if cached else UNKNOWN_TTL)
        if cached is None:
            refusal = self._refusals.get(user_id)
            if refusal is not None:
                self._spawn(
                    self._ephemeral(channel, user_id, f"⛔ Your click was not counted: {refusal}.")
                )
                raise Rejected(403, f"Slack user {user_id} refused: {refusal}")
            self._spawn(
                self._ephemeral(
                    channel,
                    user_id,
                    "Your Slack account is not linked to anyone in the signoff directory or "
                    "the identity provider, so your click was not counted. Ask an admin to add "
                    "your slack_user_id.",
                )
            )
            raise Rejected(401, f"Slack user {user_id} is not in the directory")
        return cached

    async def _lookup(self, clicker: Clicker) -> Linked | None:
        user_id = clicker.user_id
        self._refusals.pop(user_id)
        principal = await self.directory.by_slack_user(user_id)
        if principal is not None:
            return Linked(principal.id)
        try:
            info = await call_slack("users.info", user_id, self.client.users_info, user=user_id)
        except SlackPermanentError as err:
            log.warning("cannot look up Slack user: %s", err)
            return None
        except SlackUnavailable as err:
            raise Rejected(503, f"cannot look up Slack user: {err}") from None
        user = info.get("user") or {}
        if user.get("deleted") or user.get("is_bot"):
            return None
        email = (user.get("profile") or {}).get("email")
        if not isinstance(email, str) or not email:
            return None
        refusal = await self._foreign(clicker, user)
        if refusal is not None:
            self._refusals.put(user_id, refusal)
            return None
        # Trusted because Slack confirmed it (is_email_confirmed) for a member of our own
        # workspace, checked just above; the IdP then says whether it names a person.
        principal = await self.directory.person_by_email(email)
        if principal is None:
            return None
        if await self.directory.principal(principal.id) is None:
            return Linked(principal.id, idp_email=email)
        return Linked(principal.id)

    async def _foreign(self, clicker: Clicker, user: dict[str, Any]) -> str | None:
        """Why a user matched by email is not one of ours; None when they are."""
        if user.get("is_stranger"):
            return "your account belongs to another organisation (Slack Connect)"
        ours = await self._our_workspace()
        enterprise_user = user.get("enterprise_user")
        enterprise_id = (
            enterprise_user.get("enterprise_id") if isinstance(enterprise_user, dict) else None
        )
        if not ours.includes(_str(user.get("team_id")), _str(enterprise_id)):
            return "your account is not a member of this Slack workspace"
        if clicker.team_id is not None and not ours.includes(
            clicker.team_id, clicker.enterprise_id
        ):
            return "you clicked from another Slack workspace"
        if user.get("is_email_confirmed") is not True:
            return "Slack has not confirmed your email address, so it cannot identify you"
        return None

    async def _our_workspace(self) -> Workspace:
        """Our workspace: as configured, else the bot token's own (auth.test, once)."""
        if self.workspace is None:
            try:
                info = await call_slack("auth.test", "-", self.client.auth_test)
            except (SlackPermanentError, SlackUnavailable) as err:
                raise Rejected(
                    503,
                    f"cannot tell our Slack workspace ({err}); set SIGNOFF_SLACK_TEAM_ID",
                ) from None
            team_id = _str(info.get("team_id"))
            enterprise_id = _str(info.get("enterprise_id"))
            if team_id is None and enterprise_id is None:
                raise Rejected(503, "auth.test named no workspace; set SIGNOFF_SLACK_TEAM_ID")
            self.workspace = Workspace(team_id, enterprise_id)
        return self.workspace

    # --- background work ------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run after the answer: Slack wants one within three seconds."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background work to finish (tests, and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Let running decisions finish (for up to ten seconds), then stop."""
        try:
            await asyncio.wait_for(self.drain(), timeout=DRAIN_SECONDS)
        except TimeoutError:
            log.warning("stopping with %d Slack interactions unfinished", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()

    async def _vouched(self, linked: Linked, channel: str | None, user_id: str) -> list[str] | None:
        """The IdP groups to sign into the decision of a person only the IdP knows, asked now.

        Raises LookupError (after telling the clicker) when the IdP cannot say or no longer
        knows them: then nothing is decided.
        """
        if linked.idp_email is None:
            return None
        try:
            person = await self.directory.person_by_email(linked.idp_email)
            groups = None if person is None else await vouched_groups(self.directory, person)
        except IdentityProviderUnavailable as err:
            log.warning("slack click by %s not counted: %s", linked.principal_id, err)
            await self._ephemeral(channel, user_id, f"⛔ {IDP_DOWN}.")
            raise LookupError(linked.principal_id) from None
        if person is None or person.id != linked.principal_id or groups is None:
            self._users.pop(user_id)
            await self._ephemeral(
                channel,
                user_id,
                "⛔ The identity provider no longer knows you as an active person, so your "
                "click was not counted.",
            )
            raise LookupError(linked.principal_id)
        return groups

    async def _decide(
        self,
        linked: Linked,
        user_id: str,
        channel: str | None,
        action_id: str,
        digest: str,
        decision: DecisionKind,
        reason: str = "",
        window: timedelta | None = None,
    ) -> None:
        principal_id = linked.principal_id
        try:
            groups = await self._vouched(linked, channel, user_id)
        except LookupError:
            return
        request = DecisionRequest(
            approver=principal_id,
            decision=decision,
            digest=digest,
            reason=reason,
            channel="slack",
            approver_groups=groups,
            window=window,
        )
        try:
            await self.reviews.decide(action_id, request)
        except DecisionRefusedError as err:
            log.info("slack %s by %s on %s refused: %s", decision, principal_id, action_id, err)
            if err.attempt.code is RefusalCode.STEP_UP_REQUIRED:
                # Refused and recorded by the workflow; the click leads to the page instead.
                await self._ephemeral(channel, user_id, self._step_up_text(action_id))
                return
            await self._ephemeral(
                channel, user_id, f"⛔ Your {decision} was refused: {escape(str(err))}"
            )
            return
        except (ActionNotPending, ActionNotFound) as err:
            await self._ephemeral(
                channel, user_id, f"Your {decision} was not counted: {escape(str(err))}"
            )
            return
        except Exception:
            log.exception("slack %s by %s on %s failed", decision, principal_id, action_id)
            await self._ephemeral(
                channel,
                user_id,
                f"Your {decision} could not be recorded; try again, or use `signoff "
                f"{decision} {code_text(action_id)}`.",
            )
            return
        log.info("slack %s by %s on %s accepted", decision, principal_id, action_id)

    def _step_up_text(self, action_id: str) -> str:
        """The answer to a click on a step-up rule: the approval page's link, as mrkdwn."""
        if not self.page_base:
            return f"🔐 {escape(STEP_UP_TEXT)} (/a/{code_text(action_id)} on the gateway)."
        url = approval_page_url(self.page_base, action_id)
        return f"🔐 {escape(STEP_UP_TEXT)}: <{url}|Open the approval page>"

    async def _revoke_window(self, payload: BlockActions) -> Reply:
        """A Revoke window click in an approval's thread: a signed revoke the window judges."""
        window_id = parse_window_value(payload.actions[0].value)
        if window_id is None:
            raise Rejected(400, "malformed window button value")
        channel = payload.channel.id if payload.channel else None
        principal_id = (await self._principal_for(Clicker.of(payload), channel)).principal_id
        if not isinstance(self.reviews, WindowReviews):
            raise Rejected(400, "this gateway cannot revoke windows from Slack")
        reviews = self.reviews
        self._spawn(self._revoke(reviews, principal_id, payload.user.id, channel, window_id))
        return OK

    async def _revoke(
        self,
        reviews: WindowReviews,
        principal_id: str,
        user_id: str,
        channel: str | None,
        window_id: str,
    ) -> None:
        request = WindowRevokeRequest(by=principal_id, channel="slack")
        try:
            await reviews.revoke_window(window_id, request)
        except ActionError as err:
            # Refused (recorded by the window), already ended, or no such window.
            log.info("slack revoke of %s by %s refused: %s", window_id, principal_id, err)
            await self._ephemeral(
                channel, user_id, f"⛔ Your revoke was not counted: {escape(err.message)}"
            )
            return
        except Exception:
            log.exception("slack revoke of %s by %s failed", window_id, principal_id)
            await self._ephemeral(
                channel,
                user_id,
                "Your revoke could not be recorded; try "
                f"`signoff windows revoke {code_text(window_id)}`.",
            )
            return
        log.info("slack revoke of %s by %s accepted", window_id, principal_id)

    async def _revoke_grant(
        self, principal_id: str, user_id: str, channel: str | None, action_id: str
    ) -> None:
        """End an active grant as the clicker; the workflow decides whether they may."""
        request = RevokeRequest(by=principal_id, reason="revoked in Slack")
        try:
            await self.reviews.revoke(action_id, request)
        except MessageRefusedError as err:
            log.info("slack revoke by %s on %s refused: %s", principal_id, action_id, err)
            await self._ephemeral(channel, user_id, "⛔ " + escape(revoke_refused_text(str(err))))
            return
        except (ActionNotPending, ActionNotFound) as err:
            await self._ephemeral(channel, user_id, f"Nothing was revoked: {escape(str(err))}")
            return
        except Exception:
            log.exception("slack revoke by %s on %s failed", principal_id, action_id)
            await self._ephemeral(
                channel,
                user_id,
                f"Your revoke could not be recorded; try again, or use `signoff revoke "
                f"{code_text(action_id)}`.",
            )
            return
        log.info("slack revoke by %s on %s accepted", principal_id, action_id)

    async def _open_modal(self, trigger_id: str, view: dict[str, Any], principal_id: str) -> None:
        try:
            await call_slack(
                "views.open", principal_id, self.client.views_open, trigger_id=trigger_id, view=view
            )
        except (SlackPermanentError, SlackUnavailable) as err:
            log.warning("cannot open the modal: %s", err)

    async def _ephemeral(self, channel: str | None, user_id: str, text: str) -> None:
        """Tell only the clicker; a message they cannot see is logged instead."""
        if channel is None:
            log.info("no channel to tell Slack user %s: %s", user_id, text)
            return
        try:
            await call_slack(
                "chat.postEphemeral",
                channel,
                self.client.chat_postEphemeral,
                channel=channel,
                user=user_id,
                text=text,
            )
        except (SlackPermanentError, SlackUnavailable) as err:
            log.warning("cannot tell Slack user %s: %s", user_id, err)


def _str(value: Any) -> str | None:
    """A non-empty string from Slack's JSON, else None."""
    return value if isinstance(value, str) and value else None


def _needs_step_up(status: ActionStatus) -> bool:
    """Whether the action's rule needs a security-key step-up, which a click cannot give."""
    return status.verdict is not None and status.verdict.step_up is not None
