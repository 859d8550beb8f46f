"""HTTP routes: the OpenAI-compatible `/v1` API, `/healthz`, `/metrics`, `/login`/`/logout`.

API conversations: a request with the extension field `conversation_id` continues that stored
conversation (the caller's own; its logged turns are the history, earlier messages in the request
are ignored). Without it, every request starts a new stored conversation whose prompt history is
the request's earlier user/assistant pairs; the response carries its `conversation_id` to go on
with. System messages in a request are ignored: the product's system prompt is the one it is
trained with. The completion `id` is the turn id (what `/v1/feedback` rates); a stream's chunks
share a provisional id that `/v1/feedback` also accepts, and the last chunk carries `turn_id`.
Identity: see assistant/http/identity.py (API keys, or per-caller anonymous keys issued in the
`X-API-Key` response header). Every field has a type and a range checked here, at the edge, with
a 400 naming the field; bodies are limited before they are read (assistant/http/bodylimit.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from assistant.generation.worker import MAX_SEED
from assistant.http.identity import API_KEY_HEADER, COOKIE, login_page, parse_form, safe_next
from assistant.http.limits import RateLimiter
from assistant.http.openapi import ChatCompletionRequest, FeedbackRequest, body_doc
from assistant.http.prometheus import CONTENT_TYPE
from assistant.http.requests import (
    MAX_FIELD_CHARS,
    ApiError,
    check_ignored_fields,
    int_field,
    number_field,
    opt_field,
    parse_messages,
    quoted,
    read_json,
    translate,
)
from assistant.turns.chat import MODEL_NAMES, TurnHandle
from errors import (
    AssistantError,
    BusyError,
)
from store import logs

if TYPE_CHECKING:
    from assistant.http.identity import ASGIApp, Receive, Scope, Send
    from assistant.http.prometheus import Metrics
    from assistant.turns.service import Services
    from config import Config

# ---- routes ----------------------------------------------------------------------------------


def api_router(services: Services) -> APIRouter:
    """The OpenAI-compatible routes under /v1 (each answers through _V1.guarded)."""
    router = APIRouter(prefix="/v1")
    v1 = _V1(services)

    @router.post("/chat/completions", openapi_extra=body_doc(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        return await v1.guarded(v1.completions, request)

    @router.get("/models")
    async def list_models(request: Request) -> Response:
        return await v1.guarded(v1.models, request)

    @router.post("/feedback", openapi_extra=body_doc(FeedbackRequest))
    async def post_feedback(request: Request) -> Response:
        return await v1.guarded(v1.feedback, request)

    @router.get("/conversations")
    async def list_conversations(request: Request) -> Response:
        return await v1.guarded(v1.conversations, request)

    @router.get("/conversations/{conversation_id}")
    async def get_conversation(request: Request, conversation_id: str) -> Response:
        return await v1.guarded(v1.conversation, request, conversation_id)

    return router


def completion_args(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """ChatService.ask's arguments from a /v1/chat/completions body, every field checked."""
    model = data.get("model", "assistant")
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string")
    if model not in MODEL_NAMES:
        raise ApiError(
            404,
            f"the model {quoted(model)} does not exist: use one of "
            f"{', '.join(MODEL_NAMES)} (see GET /v1/models)",
            code="model_not_found",
        )
    int_field(data, "n", 1, 1)  # one answer per request
    longest = cfg.model.max_new_tokens
    max_tokens = int_field(data, "max_tokens", 1, longest)
    max_tokens = int_field(data, "max_completion_tokens", 1, longest) or max_tokens
    conversation_id = opt_field(data, "conversation_id", str, "a string")
    if conversation_id is not None and len(conversation_id) > MAX_FIELD_CHARS:
        raise ApiError(
            400,
            f"'conversation_id' is longer than {MAX_FIELD_CHARS} "
            "characters: use an id a response gave you",
        )
    opt_field(data, "user", str, "a string")  # accepted for compatibility, never an identity
    check_ignored_fields(data)
    question, history = parse_messages(data)
    return {
        "message": question,
        "conversation_id": conversation_id,
        "model": model,
        "history": None if conversation_id else history,
        "temperature": number_field(data, "temperature", 0.0, 2.0),
        "top_p": number_field(data, "top_p", 0.01, 1.0),
        "seed": int_field(data, "seed", 0, MAX_SEED),
        "max_new_tokens": max_tokens,
    }


def turn_extras(handle: TurnHandle) -> dict[str, Any]:
    """The extension fields of a completion: conversation, arm, adapter, notes and sources."""
    notes = [handle.retrieval_note] if handle.retrieval_note else []
    if handle.dropped_turns:
        notes.append(
            f"{handle.dropped_turns} earlier turn(s) were left out of the prompt "
            "to fit the model's context window"
        )
    return {
        "conversation_id": handle.conversation_id,
        "arm": handle.arm,
        "adapter_version": handle.adapter_version,
        "notes": notes,
        "sources": [
            {"n": i, "source": p.source, "chunk_id": p.chunk_id, "score": p.score}
            for i, p in enumerate(handle.passages, 1)
        ],
    }


def _model(model_id: str, version: int | None, **more: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "assistant",
        **more,
        "adapter_version": version,
    }


class _V1:
    """The /v1 handlers: one caller identity per request, every failure a JSON error."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.chat, self.cfg, self.metrics = services.chat, services.cfg, services.metrics
        # Anonymous identities cost nothing to make, so their making is limited per address:
        # keyless calls from one address share one user's message rate.
        self.minted = RateLimiter(
            self.cfg.server.rate_limit_per_minute,
            what="new anonymous API callers from this address (send the key from "
            "the X-API-Key header of your first answer)",
        )

    def user_of(self, request: Request) -> str:
        user = self.services.identity.api_user(request.headers.get("authorization"))
        if user is None:
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        if user.issued_key:  # a new anonymous caller: guarded() hands it its key
            self.minted.check(request.client.host if request.client else "unknown")
            request.state.issued_key = user.issued_key
        return user.user_id

    async def guarded(self, fn: Any, request: Request, *args: Any) -> Response:
        try:
            response = await fn(request, *args)
        except ApiError as exc:
            self.metrics.error("api", str(exc.status))
            response = exc.response()
        except AssistantError as exc:
            err = translate(exc)
            self.metrics.error("api", type(exc).__name__)
            response = err.response()
        issued = getattr(request.state, "issued_key", None)
        if issued:
            response.headers[API_KEY_HEADER] = issued
        return response

    async def completions(self, request: Request) -> Response:
        user_id = self.user_of(request)
        data = await read_json(request)
        args = completion_args(self.cfg, data)
        stream = opt_field(data, "stream", bool, "true or false") or False
        options = opt_field(data, "stream_options", dict, "an object") or {}
        model = args["model"]
        handle: TurnHandle = await run_in_threadpool(lambda: self.chat.ask(user_id, **args))
        created = int(time.time())
        if stream:
            usage = bool(options.get("include_usage"))
            return StreamingResponse(
                sse(self.services, handle, model, created, turn_extras(handle), usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        text = await run_in_threadpool(lambda: "".join(handle))
        turn_id = await run_in_threadpool(self.services.finish_turn, handle, "api")
        result = handle.result
        assert result is not None
        if result.error:
            raise ApiError(
                503,
                f"the answer could not be generated ({result.error}); try again",
                "server_error",
                "generation_failed",
            )
        return JSONResponse(
            {
                "id": turn_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                **turn_extras(handle),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": _finish(result.finish_reason),
                    }
                ],
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.prompt_tokens + result.completion_tokens,
                },
            }
        )

    async def models(self, request: Request) -> Response:
        self.user_of(request)
        state = await run_in_threadpool(self.chat.state)
        routed = "routed: production, or the canary for its share of new conversations"
        data = [
            _model("assistant", state.production_version, description=routed),
            _model("production", state.production_version),
        ]
        if state.canary_version is not None and state.rollout_id is not None:
            data.append(_model("canary", state.canary_version))
        data.append(_model("base", 0))
        return JSONResponse({"object": "list", "data": data})

    async def feedback(self, request: Request) -> Response:
        user_id = self.user_of(request)
        data = await read_json(request)
        turn_id = data.get("id")
        if not isinstance(turn_id, str) or not turn_id or len(turn_id) > MAX_FIELD_CHARS:
            raise ApiError(400, "'id' must be the completion id (a string) to rate")
        rating = data.get("rating")
        if rating not in ("up", "down", None):
            raise ApiError(400, "'rating' must be 'up', 'down' or null (withdraw the vote)")
        comment = opt_field(data, "comment", str, "a string")
        correction = opt_field(data, "correction", str, "a string")
        reasons = opt_field(data, "reasons", list, f"a list of reasons ({', '.join(logs.REASONS)})")
        vote = await run_in_threadpool(
            self.services.rate,
            user_id,
            turn_id,
            rating,
            comment,
            correction,
            reasons,
            request.client.host if request.client else None,
        )
        return JSONResponse(
            {
                "id": turn_id,
                "rating": vote.rating if vote else None,
                "comment": vote.comment if vote else None,
                "correction": vote.correction if vote else None,
                "reasons": list(vote.reasons) if vote else [],
            }
        )

    async def conversations(self, request: Request) -> Response:
        user_id = self.user_of(request)
        rows = await run_in_threadpool(logs.list_conversations, self.services.db, user_id)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": c.id,
                        "title": c.title,
                        "turns": c.turn_count,
                        "created_at": c.created_at.isoformat(),
                        "last_activity": c.last_activity.isoformat(),
                    }
                    for c in rows
                ],
            }
        )

    async def conversation(self, request: Request, conversation_id: str) -> Response:
        user_id = self.user_of(request)
        turns = await run_in_threadpool(
            logs.conversation_turns, self.services.db, conversation_id, user_id
        )
        return JSONResponse(
            {
                "id": conversation_id,
                "turns": [
                    {
                        "id": t.id,
                        "question": t.question,
                        "answer": t.answer,
                        "created_at": t.created_at.isoformat(),
                        "rating": next((v.rating for v in t.votes if v.user_id == user_id), None),
                    }
                    for t in turns
                ],
            }
        )


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def sse(
    services: Services,
    handle: TurnHandle,
    model: str,
    created: int,
    extra: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The answer as OpenAI `chat.completion.chunk` events, ending with `data: [DONE]`. Every
    chunk carries the turn id, which `/v1/feedback` rates."""
    base = {"id": handle.id, "object": "chat.completion.chunk", "created": created, "model": model}
    pieces = iter(handle)
    done = object()
    finished = False
    try:
        yield _sse(
            {
                **base,
                **extra,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
        while True:
            piece = await run_in_threadpool(next, pieces, done)
            if piece is done:
                break
            yield _sse(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
        turn_id = await run_in_threadpool(services.finish_turn, handle, "api")
        finished = True
        result = handle.result
        assert result is not None
        final: dict[str, Any] = {
            **base,
            "turn_id": turn_id,
            "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(result.finish_reason)}],
        }
        if result.error:
            final["error"] = {
                "message": f"the answer could not be generated ({result.error})",
                "type": "server_error",
                "code": "generation_failed",
            }
        if include_usage:
            final["usage"] = {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
        yield _sse(final)
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away: stop generating, still log what was said
            handle.cancel()

            threading.Thread(
                target=services.finish_turn, args=(handle, "api"), name="turn-clean-up", daemon=True
            ).start()


# ---- ops -------------------------------------------------------------------------------------


def ops_router(services: Services) -> APIRouter:
    """`/healthz` and `/metrics`."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        # 503 only when answers cannot be served (model or database down). Without Milvus the
        # assistant still answers, ungrounded and saying so: "degraded", still 200, so a load
        # balancer keeps the instance while monitoring sees the failing check.
        ok, checks = await run_in_threadpool(services.health)
        serving = checks["model"]["ok"] and checks["database"]["ok"]
        status = "ok" if ok else "degraded" if serving else "unavailable"
        return JSONResponse(
            {"status": status, "checks": checks}, status_code=200 if serving else 503
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        # Answers admitted and not finished yet, read from the model worker at scrape time.
        services.metrics.in_flight.set(services.generator.admission().get("queued") or 0)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    return router


def login_router(services: Services) -> APIRouter:
    """The login form (only when logins are configured) and logout."""
    router = APIRouter()
    identity = services.identity

    @router.get("/login")
    async def login_form(next: str = "/") -> Response:
        if not identity.login_required:
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(login_page(next_path=next))

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not identity.login_required:
            return RedirectResponse("/", status_code=303)
        body = await request.body()
        form = parse_form(body[:10_000])
        client = request.client.host if request.client else "unknown"
        next_path = safe_next(form.get("next"))
        try:
            user_id = await run_in_threadpool(
                identity.login, form.get("username", ""), form.get("password", ""), client
            )
        except BusyError as exc:
            services.metrics.error("login", "rate_limited")
            return HTMLResponse(login_page(str(exc), next_path), status_code=429)
        except ValueError as exc:
            services.metrics.error("login", "failed")
            return HTMLResponse(login_page(str(exc), next_path), status_code=401)
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append(
            "set-cookie", identity.cookie_header(user_id, secure=request.url.scheme == "https")
        )
        return response

    @router.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login" if identity.login_required else "/", status_code=303)
        response.headers.append("set-cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly")
        return response

    return router


class RequestMetricsMiddleware:
    """Counts HTTP requests by route group and status code."""

    GROUPS = (
        "/v1/chat/completions",
        "/v1/feedback",
        "/v1/models",
        "/v1/",
        "/healthz",
        "/metrics",
        "/login",
        "/gradio_api/queue",
        "/gradio_api/",
    )

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        group = next((g for g in self.GROUPS if path.startswith(g)), "page")

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(group, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
