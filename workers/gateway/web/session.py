"""Server-side sessions of the approval page, keyed by a random id in a secure cookie.

The cookie holds only a random 256-bit id; everything else (who signed in, the pending sign-in,
the CSRF token, WebAuthn challenges) stays in the gateway's memory, in the one bounded cache, so
no number of visitors grows it without bound. Sign-in rotates the id (no session fixation).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from fastapi import Request, Response

from policies.cache import BoundedCache
from policies.directory import Authenticated

COOKIE = "signoff_session"
# With https, the __Host- prefix makes the browser refuse the cookie from anything but this
# exact host over TLS, with Path=/ and no Domain.
SECURE_COOKIE = "__Host-signoff_session"
LOGIN_TTL = 600.0  # seconds to come back from the identity provider
CHALLENGE_TTL = 120.0  # seconds a WebAuthn challenge may be answered in
MAX_CHALLENGES = 8  # per session; older ones are dropped


@dataclass
class PendingLogin:
    """A sign-in sent to the identity provider: what must come back, and where to go then."""

    state: str
    nonce: str
    verifier: str
    next_path: str
    started: float


@dataclass
class Challenge:
    """A WebAuthn challenge issued once, for one purpose (and one action and digest)."""

    purpose: str  # "register" or "step-up"
    challenge: bytes
    expires: float
    action_id: str = ""
    digest: str = ""


@dataclass
class WebSession:
    """One browser's session: its CSRF token and, once signed in, who it is."""

    id: str
    csrf: str
    identity: Authenticated | None = None
    login: PendingLogin | None = None
    challenges: dict[str, Challenge] = field(default_factory=dict)

    def csrf_ok(self, token: str | None) -> bool:
        """Whether a form carried this session's CSRF token (constant-time compare)."""
        return bool(token) and hmac.compare_digest(self.csrf.encode(), str(token).encode())

    def add_challenge(self, nonce: str, challenge: Challenge) -> None:
        """Remember a challenge under its nonce; the oldest goes when there are too many."""
        self.challenges[nonce] = challenge
        while len(self.challenges) > MAX_CHALLENGES:
            self.challenges.pop(next(iter(self.challenges)))

    def take_challenge(self, nonce: str, purpose: str) -> Challenge | None:
        """The live challenge for this nonce and purpose, removed: each is answered once."""
        found = self.challenges.pop(nonce, None)
        if found is None or found.purpose != purpose or found.expires < time.monotonic():
            return None
        return found


class SessionStore:
    """Sessions by id, at most `maxsize`, each living `ttl` seconds from its creation."""

    def __init__(self, maxsize: int, ttl: float, *, secure: bool) -> None:
        self._sessions: BoundedCache[str, WebSession] = BoundedCache(maxsize, ttl=ttl)
        self.ttl = ttl
        self.secure = secure
        self.cookie = SECURE_COOKIE if secure else COOKIE

    def current(self, request: Request) -> WebSession | None:
        """The session the request's cookie names, if it is still alive."""
        sid = request.cookies.get(self.cookie)
        if not sid or len(sid) > 100:
            return None
        return self._sessions.get(sid)

    def new(self) -> WebSession:
        """A fresh, signed-out session."""
        session = WebSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        self._sessions.put(session.id, session)
        return session

    def rotate(self, old: WebSession, identity: Authenticated) -> WebSession:
        """A new id and CSRF token for a session that just signed in; the old id dies."""
        self._sessions.pop(old.id)
        session = self.new()
        session.identity = identity
        return session

    def drop(self, session: WebSession) -> None:
        """Forget a session (sign-out)."""
        self._sessions.pop(session.id)

    def set_cookie(self, response: Response, session: WebSession) -> None:
        """Send the session's cookie: HttpOnly, SameSite=Lax, Secure over https."""
        response.set_cookie(
            self.cookie,
            session.id,
            max_age=int(self.ttl),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def clear_cookie(self, response: Response) -> None:
        """Tell the browser to forget the cookie."""
        response.delete_cookie(
            self.cookie, path="/", secure=self.secure, httponly=True, samesite="lax"
        )
