"""The one admin token, checked one way everywhere an operator acts.

The admin API (`/admin/...`, a bearer token) and the console (`/operator/login`, then a session
cookie) share one OperatorAuth: one constant-time compare, one attempt limit per address (a
guess on either counts against both, so alternating between them does not double the rate;
the attempt is counted before the compare, so parallel guesses cannot race past it, and a
correct one is given back), and one rule for the token itself (at least MIN_TOKEN_CHARS,
checked at start). Console sessions are random ids in an HttpOnly, SameSite=Strict cookie,
kept in memory for SESSION_SECONDS.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time

from fastapi import HTTPException, Request

from assistant.http.limits import RateLimiter
from errors import BusyError, ConfigError

MIN_TOKEN_CHARS = 32
COOKIE = "operator_session"
SESSION_SECONDS = 12 * 3600
OPERATOR = "operator"
"""The operator's name in the audit log (with ':api' or ':console' for where they acted)."""


def check_admin_token(token: str | None, env_name: str = "ASSISTANT_ADMIN_TOKEN") -> None:
    """ConfigError when an admin token is set but too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{env_name} is {len(token)} characters long; an admin token needs at "
            f'least {MIN_TOKEN_CHARS}: generate one with `python -c "import '
            'secrets; print(secrets.token_urlsafe(32))"` and restart'
        )


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class OperatorAuth:
    """The admin token (None: operator features are off), its attempt limit, console sessions."""

    def __init__(
        self,
        token: str | None,
        attempts_per_minute: int = 5,
        env_name: str = "ASSISTANT_ADMIN_TOKEN",
    ) -> None:
        check_admin_token(token, env_name)
        self.token, self.env_name = token, env_name
        self.limiter = RateLimiter(
            attempts_per_minute, what="operator token attempts from this address"
        )
        self._sessions: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def _matches(self, address: str, guess: str) -> bool:
        """Count the attempt (BusyError past the limit), then compare in constant time."""
        assert self.token
        self.limiter.check(address)
        if not hmac.compare_digest(guess.encode("utf-8", "replace"), self.token.encode()):
            return False
        self.limiter.refund(address)  # only failed guesses count
        return True

    # ---- the admin API: a bearer token on every request ------------------------------------

    def bearer(self, request: Request, authorization: str | None) -> str:
        """The operator's name for the audit log, or an HTTP error: 403 when operator features
        are off, 429 after too many failed attempts from this address, 401 for a missing or
        wrong token (a request without a token guesses nothing and is not counted)."""
        if not self.enabled:
            raise HTTPException(
                403,
                "operator features are disabled: set the environment variable "
                f"{self.env_name} (server.admin_token_env) and restart the server",
            )
        scheme, _, token = (authorization or "").partition(" ")
        ok = False
        if scheme.lower() == "bearer" and token:
            try:
                ok = self._matches(_address(request), token)
            except BusyError as exc:
                raise HTTPException(429, str(exc)) from None
        if not ok:
            raise HTTPException(
                401,
                "missing or wrong admin token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return OPERATOR

    # ---- the console: a login, then a session cookie ----------------------------------------

    def login(self, address: str, token: str) -> str:
        """A new session id, or BusyError (too many attempts) / PermissionError (wrong)."""
        if not self.enabled:
            raise PermissionError(
                "operator features are disabled on this server: set the "
                f"environment variable {self.env_name} and restart"
            )
        if not self._matches(address, token):
            raise PermissionError("wrong operator token")
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for old in [s for s, expiry in self._sessions.items() if expiry < now]:
                del self._sessions[old]  # expired sessions do not pile up
            self._sessions[session] = now + SESSION_SECONDS
        return session

    def valid(self, session: str | None) -> bool:
        if not session:
            return False
        with self._lock:
            expiry = self._sessions.get(session)
            if expiry is None or expiry < time.monotonic():
                self._sessions.pop(session, None)
                return False
            return True

    def logout(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)

    def user(self, request: Request) -> str | None:
        """Gradio's auth_dependency: the operator's name, or None (401)."""
        return OPERATOR if self.valid(request.cookies.get(COOKIE)) else None
