"""The authenticated admin API: the operator console's actions over HTTP (and the CLI's way in
while the server holds the database)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException
from pydantic import BaseModel, Field

from assistant.turns.operator import ACTIONS, Operator
from errors import AssistantError, TransitionError


class ActionBody(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class ForgetBody(BaseModel):
    user: str = Field(min_length=1, max_length=256, description="the user id to delete")
    include_trained: bool = Field(default=False, description="also scrub datasets adapters "
                                  "were already trained on")


def check_token(expected: str | None, authorization: str | None) -> str:
    """The operator's name for the audit log, or an HTTP error: 403 when operator features are
    off, 401 for a missing or wrong token (compared in constant time)."""
    if not expected:
        raise HTTPException(403, "operator features are disabled: set the environment variable "
                                 "named by server.admin_token_env and restart the server")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(),
                                                             expected.encode()):
        raise HTTPException(401, "missing or wrong admin token: send 'Authorization: Bearer "
                                 "<token>'", headers={"WWW-Authenticate": "Bearer"})
    return "operator"


def admin_router(operator: Operator, token: str | None) -> APIRouter:
    """Routes under /admin, every one behind the admin token."""
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/overview")
    def overview(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        check_token(token, authorization)
        return operator.overview()

    @router.post("/actions/{action}")
    def act(action: str, body: ActionBody | None = None,
            authorization: Annotated[str | None, Header()] = None) -> dict[str, str]:
        actor = check_token(token, authorization)
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}: use one of "
                                     f"{', '.join(ACTIONS)}")
        try:
            message = operator.act(action, actor=f"{actor}:api",  # type: ignore[arg-type]
                                   reason=body.reason if body else None)
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        except AssistantError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"result": message}

    @router.post("/forget")
    def forget(body: ForgetBody, authorization: Annotated[str | None, Header()] = None
               ) -> dict[str, Any]:
        actor = check_token(token, authorization)
        try:
            return operator.forget(body.user, include_trained=body.include_trained,
                                   actor=f"{actor}:api")
        except AssistantError as exc:
            raise HTTPException(400, str(exc)) from None

    return router
