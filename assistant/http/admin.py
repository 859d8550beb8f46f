"""The authenticated admin API: the operator console's actions over HTTP (and the CLI's way in
while the server holds the database). Every route checks the admin token through the server's
one OperatorAuth (assistant/http/operator_auth.py: attempts limited per address together with
the console's logins; a token that is too short is refused at start-up)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from assistant.http.operator_auth import OperatorAuth
from assistant.turns.operator import ACTIONS, Operator
from errors import AssistantError, TransitionError

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


def admin_router(operator: Operator, auth: OperatorAuth) -> APIRouter:
    """Routes under /admin, every one behind the admin token."""
    router = APIRouter(prefix="/admin", tags=["admin"])
    operator_of = auth.bearer

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
        request: Request,
        body: ForgetBody,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        actor = operator_of(request, authorization)
        try:
            return operator.forget(
                body.user, include_trained=body.include_trained, actor=f"{actor}:api"
            )
        except AssistantError as exc:
            raise HTTPException(400, str(exc)) from None

    return router
