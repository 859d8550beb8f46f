"""Who is asking: browser identities (signed cookies), optional logins, API keys.

Browser: every visitor gets a random anonymous id in a signed, HttpOnly cookie, minted by
`IdentityMiddleware` on the first request; a cookie whose signature does not verify is replaced,
so a client can never choose its user id. When `server.users_env` names logins, the chat needs
a login instead (`/login`): passwords are kept only as salted scrypt hashes in memory, compared in
constant time, and attempts are limited per client address and per account name, each attempt
counted before its password is hashed. A cookie that is malformed in any way (not ASCII, no
signature, forged) is no identity at all.

API: when `server.api_keys_env` holds keys, `Authorization: Bearer <key>` is required and the user
is `api:<sha256 of the key, 16 hex>`. Without keys the API is anonymous but never shared: a call
without a key the server issued gets a new anonymous identity and its key in the `X-API-Key`
response header (a signed `ak-...` value, like the browser cookie); sending that key as the
bearer token continues as the same caller. The request's `user` field is never an identity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from assistant.http.limits import RateLimiter
from config import Config
from errors import ConfigError

log = logging.getLogger(__name__)

COOKIE = "assistant_id"
COOKIE_MAX_AGE = 365 * 24 * 3600
API_KEY_HEADER = "X-API-Key"
ISSUED_KEY_PREFIX = "ak-"
MAX_CREDENTIAL_CHARS = 512
"""Longest cookie value or bearer token looked at; anything longer is no identity."""
SECRET_FILE = "session.key"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)


def parse_users(spec: str | None) -> dict[str, str]:
    """'name:password,name2:password2' -> {name: password}; ConfigError lists every bad entry."""
    users: dict[str, str] = {}
    problems = []
    for i, entry in enumerate((spec or "").split(","), start=1):
        if not entry.strip():
            continue
        name, sep, password = entry.strip().partition(":")
        if not sep or not name.strip() or not password:
            problems.append(f"entry {i} is not 'name:password'")
        elif not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            problems.append(f"entry {i}: user names may use letters, digits, '-', '_', '.'")
        else:
            users[name.strip()] = password
    if problems:
        raise ConfigError("the chat logins variable is malformed: " + "; ".join(problems))
    return users


def load_secret(data_dir: Path) -> bytes:
    """The cookie-signing key, created once under the data dir (so identities survive restarts)."""
    path = data_dir / SECRET_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


@dataclass(frozen=True)
class ApiUser:
    """The identity of one API call."""

    user_id: str
    issued_key: str | None = None
    """A key issued with this call (a new anonymous caller): the client sends it from now on."""


class Identity:
    """Signs and checks browser identities, logins and API keys."""

    def __init__(
        self,
        secret: bytes,
        users: dict[str, str] | None = None,
        api_keys: list[str] | None = None,
        login_attempts_per_minute: int = 5,
    ) -> None:
        self._secret = secret
        self._users = {
            name: (salt, _hash_password(pw, salt))
            for name, pw in (users or {}).items()
            for salt in [secrets.token_bytes(16)]
        }
        self._dummy = (secrets.token_bytes(16), secrets.token_bytes(32))
        self._api_keys = {hashlib.sha256(k.encode()).digest() for k in (api_keys or []) if k}
        self.login_limiter = RateLimiter(
            login_attempts_per_minute, what="login attempts from this address"
        )
        self.account_limiter = RateLimiter(
            login_attempts_per_minute, what="login attempts for this account"
        )

    @classmethod
    def from_config(cls, cfg: Config) -> Identity:
        keys = [k.strip() for k in (cfg.secret(cfg.server.api_keys_env) or "").split(",")]
        return cls(
            load_secret(cfg.data_dir),
            parse_users(cfg.secret(cfg.server.users_env)),
            [k for k in keys if k],
            cfg.server.login_attempts_per_minute,
        )

    @property
    def login_required(self) -> bool:
        return bool(self._users)

    # ---- signed cookie values ------------------------------------------------------------

    def _sign(self, user_id: str, domain: str = "") -> str:
        mac = hmac.new(self._secret, (domain + user_id).encode(), hashlib.sha256).digest()[:18]
        return f"{user_id}.{base64.urlsafe_b64encode(mac).decode()}"

    def _signed(self, value: str | None, domain: str = "") -> str | None:
        """The signed id in `value`, or None when it is missing, malformed or forged."""
        if (
            not value
            or len(value) > MAX_CREDENTIAL_CHARS
            or not value.isascii()
            or "." not in value
        ):
            return None
        user_id = value.rsplit(".", 1)[0]
        if not user_id or not hmac.compare_digest(
            self._sign(user_id, domain).encode(), value.encode()
        ):
            return None
        return user_id

    def verify(self, value: str | None) -> str | None:
        """The user id in a cookie value, or None when it is missing, malformed or forged."""
        user_id = self._signed(value)
        return user_id if user_id is not None and self._allowed(user_id) else None

    def _allowed(self, user_id: str) -> bool:
        if user_id.startswith("user:"):
            return user_id[5:] in self._users
        return user_id.startswith("anon-") and not self.login_required

    def new_anonymous(self) -> str:
        return "anon-" + secrets.token_urlsafe(16)

    def cookie_header(self, user_id: str | None, secure: bool = False) -> str:
        """A Set-Cookie header value for `user_id` (None: delete the cookie)."""
        value, age = (self._sign(user_id), COOKIE_MAX_AGE) if user_id else ("", 0)
        return f"{COOKIE}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Lax" + (
            "; Secure" if secure else ""
        )

    # ---- logins -----------------------------------------------------------------------------

    def login(self, name: str, password: str, client: str) -> str:
        """The user id for a correct login; BusyError when this address or this account name
        had too many attempts, ValueError for a wrong name or password.

        The attempt is counted (per address and per name) BEFORE the password is hashed, so
        parallel guesses cannot all pass the check; a correct login gives its count back."""
        name = name[:MAX_CREDENTIAL_CHARS]
        self.login_limiter.check(client)
        self.account_limiter.check(name)
        salt, expected = self._users.get(name, self._dummy)  # same work for unknown names
        ok = hmac.compare_digest(_hash_password(password, salt), expected) and name in self._users
        if not ok:
            raise ValueError("wrong user name or password")
        self.login_limiter.refund(client)
        self.account_limiter.refund(name)
        return f"user:{name}"

    # ---- API ----------------------------------------------------------------------------------

    def api_user(self, authorization: str | None) -> ApiUser | None:
        """The API identity of a request, or None when a key is required and missing/wrong.

        Without configured keys, a key this server issued names its caller; any other call
        (no key, or a key the server never issued) is a new anonymous caller with a new key."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not self._api_keys:
            anonymous = self._signed(key, domain="api-key:")
            if anonymous is not None and anonymous.startswith(ISSUED_KEY_PREFIX):
                return ApiUser("api:anon-" + anonymous[len(ISSUED_KEY_PREFIX) :])
            new = secrets.token_urlsafe(16)
            return ApiUser(
                "api:anon-" + new, issued_key=self._sign(ISSUED_KEY_PREFIX + new, domain="api-key:")
            )
        if not key or len(key) > MAX_CREDENTIAL_CHARS:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        if not any(hmac.compare_digest(digest, k) for k in self._api_keys):
            return None
        return ApiUser("api:" + hashlib.sha256(key.encode()).hexdigest()[:16])


def _cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header is treated as no cookie
                continue
    return {k: m.value for k, m in jar.items()}


def scope_user(scope: Scope) -> str | None:
    """The browser identity the middleware resolved for this request."""
    return scope.get("state", {}).get("user_id")


class IdentityMiddleware:
    """Resolves the browser identity of every request (minting an anonymous one when needed)
    and keeps login-only deployments closed to visitors who have not logged in."""

    def __init__(
        self, app: ASGIApp, identity: Identity, open_paths: Callable[[], tuple[str, ...]]
    ) -> None:
        self.app = app
        self.identity = identity
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        user = self.identity.verify(_cookies(scope).get(COOKIE))
        set_cookie = None
        if user is None and not path.startswith(self.open_paths()):
            if self.identity.login_required:
                await self._refuse_anonymous(scope, send, path)
                return
            user = self.identity.new_anonymous()
            set_cookie = self.identity.cookie_header(user, secure=scope.get("scheme") == "https")
        scope.setdefault("state", {})["user_id"] = user

        async def send_with_cookie(message: Message) -> None:
            if set_cookie and message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"set-cookie", set_cookie.encode("latin-1"))
                ]
            await send(message)

        await self.app(scope, receive, send_with_cookie if set_cookie else send)

    async def _refuse_anonymous(self, scope: Scope, send: Send, path: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope.get("method") == "GET" and "/gradio_api/" not in path:
            await _respond(send, 303, b"", [(b"location", b"/login?next=" + quote(path).encode())])
        else:
            await _respond(
                send,
                401,
                b'{"detail": "log in first: open /login"}',
                [(b"content-type", b"application/json")],
            )


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())] + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Log in</title>
<style>body{{font-family:sans-serif;max-width:22rem;margin:4rem auto}}input{{width:100%;
margin:.3rem 0 .8rem;padding:.4rem}}.err{{color:#b00}}</style></head><body>
<h1>Log in</h1><p class="err">{error}</p>
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>User name<input name="username" autocomplete="username" required></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required>
</label><button type="submit">Log in</button></form></body></html>"""


def login_page(error: str = "", next_path: str = "/") -> str:
    return LOGIN_PAGE.format(error=html.escape(error), next=html.escape(safe_next(next_path)))


def safe_next(path: str | None) -> str:
    """Only same-site paths may be redirected to after a login (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def parse_form(body: bytes) -> dict[str, str]:
    """An urlencoded form body -> first value of each field (bad bytes are replaced)."""
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}
