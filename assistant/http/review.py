"""The admin API's review routes: one cycle's report, recent votes for feedback review, and
excluding a vote from training (or including it again); every one behind the admin token."""

# No `from __future__ import annotations`: FastAPI must see the local dependency types.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request

from assistant.http.admin import ActionBody
from assistant.http.operator_auth import OperatorAuth
from assistant.turns.operator import Operator
from errors import AssistantError, InputError, NotFoundError


def _http(exc: AssistantError) -> HTTPException:
    code = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputError) else 409
    return HTTPException(code, str(exc))


def review_router(operator: Operator, auth: OperatorAuth) -> APIRouter:
    """Routes under /admin/cycles and /admin/feedback."""
    router = APIRouter(prefix="/admin", tags=["admin"])

    def need(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
        return f"{auth.bearer(request, authorization)}:api"

    Actor = Annotated[str, Depends(need)]

    @router.get("/cycles/{cycle_id}")
    def cycle(cycle_id: str, _: Actor) -> dict[str, Any]:
        try:
            return operator.cycle_report(cycle_id)
        except AssistantError as exc:
            raise _http(exc) from None

    @router.get("/feedback")
    def feedback(
        _: Actor,
        rating: Annotated[str, Query(max_length=8)] = "down",
        version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
        since_days: Annotated[float | None, Query(gt=0, le=3660)] = None,
        reason: Annotated[str | None, Query(max_length=200)] = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        try:
            return operator.feedback(
                rating=rating,
                version=version,
                since_days=since_days,
                reason=reason,
                text=text,
                limit=limit,
            )
        except AssistantError as exc:
            raise _http(exc) from None

    @router.post("/feedback/{vote_id}/{change}")
    def exclude(
        vote_id: str, change: str, actor: Actor, body: ActionBody | None = None
    ) -> dict[str, str]:
        if change not in ("exclude", "include"):
            raise HTTPException(404, f"unknown change {change!r}: use exclude or include")
        try:
            message = operator.exclude_vote(
                vote_id,
                excluded=change == "exclude",
                actor=actor,
                reason=body.reason if body else None,
            )
        except AssistantError as exc:
            raise _http(exc) from None
        return {"result": message}

    return router
