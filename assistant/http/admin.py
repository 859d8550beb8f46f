"""The authenticated admin API: the operator console's actions over HTTP (and the CLI's way in
while the server holds the database). Token attempts are limited per client address, counted
before the token is compared; a token shorter than MIN_TOKEN_CHARS is refused at start-up."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from assistant.http.limits import RateLimiter
from assistant.turns.operator import ACTIONS, Operator
from errors import AssistantError, BusyError, ConfigError, TransitionError

MIN_TOKEN_CHARS = 32
"""Shortest admin token accepted: guessing 32 random characters is out of reach."""
MAX_REASON_CHARS = 1000


class ActionBody(BaseModel):
    """An operator action's optional reason (kept in the audit log)."""

    reason: str | None = Field(
        default=None, max_length=MAX_REASON_CHARS, description="why, for the audit log"
    )

    @field_validator("reason")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "the reason is not valid text (it holds a lone surrogate "
                    "character): fix its encoding"
                ) from None
        return value


class ForgetBody(BaseModel):
    user: str = Field(min_length=1, max_length=256, description="the user id to delete")
    include_trained: bool = Field(
        default=False, description="also scrub datasets adapters were already trained on"
    )


def check_admin_token(token: str | None, env_name: str = "ASSISTANT_ADMIN_TOKEN") -> None:
    """ConfigError when an admin token is set but too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{env_name} is {len(token)} characters long; an admin token needs at "
            f'least {MIN_TOKEN_CHARS}: generate one with `python -c "import '
            'secrets; print(secrets.token_urlsafe(32))"` and restart'
        )


def check_token(
    expected: str | None,
    authorization: str | None,
    limiter: RateLimiter | None = None,
    address: str = "unknown",
) -> str:
    """The operator's name for the audit log, or an HTTP error: 403 when operator features are
    off, 429 after too many attempts from `address`, 401 for a missing or wrong token
    (compared in constant time; the attempt is counted first, a correct one given back)."""
    if not expected:
        raise HTTPException(
            403,
            "operator features are disabled: set the environment variable "
            "named by server.admin_token_env and restart the server",
        )
    scheme, _, token = (authorization or "").partition(" ")
    guess = scheme.lower() == "bearer" and bool(token)
    if limiter is not None and guess:  # a request without a token guesses nothing
        try:
            limiter.check(address)
        except BusyError as exc:
            raise HTTPException(429, str(exc)) from None
    if not guess or not hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode()):
        raise HTTPException(
            401,
            "missing or wrong admin token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if limiter is not None:
        limiter.refund(address)  # only failed guesses count
    return "operator"


def admin_router(
    operator: Operator,
    token: str | None,
    attempts_per_minute: int = 5,
    env_name: str = "ASSISTANT_ADMIN_TOKEN",
) -> APIRouter:
    """Routes under /admin, every one behind the admin token (ConfigError: token too short)."""
    check_admin_token(token, env_name)
    router = APIRouter(prefix="/admin", tags=["admin"])
    limiter = RateLimiter(attempts_per_minute, what="admin token attempts from this address")

    def operator_of(request: Request, authorization: str | None) -> str:
        address = request.client.host if request.client else "unknown"
        return check_token(token, authorization, limiter, address)

    @router.get("/overview")
    def overview(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        """The console's data: adapters, the live rollout, cycles, documents, audit log."""
        operator_of(request, authorization)
        return operator.overview()

    @router.post("/actions/{action}")
    def act(
        request: Request,
        action: str,
        body: ActionBody | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, str]:
        """Run an operator action: cycle, pause, resume, promote or rollback."""
        actor = operator_of(request, authorization)
        if action not in ACTIONS:
            raise HTTPException(
                404, f"unknown action {action[:80]!r}: use one of {', '.join(ACTIONS)}"
            )
        try:
            message = operator.act(
                action,  # type: ignore[arg-type]
                actor=f"{actor}:api",
                reason=body.reason if body else None,
            )
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        except AssistantError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"result": message}

    @router.post("/forget")
    def forget(
        body: ForgetBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        actor = check_token(token, authorization)
        try:
            return operator.forget(
                body.user, include_trained=body.include_trained, actor=f"{actor}:api"
            )
        except AssistantError as exc:
            raise HTTPException(400, str(exc)) from None

    return router
