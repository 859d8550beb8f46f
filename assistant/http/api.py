"""HTTP routes: the OpenAI-compatible `/v1` API, `/healthz`, `/metrics`, `/login`/`/logout`.

API conversations: a request with the extension field `conversation_id` continues that stored
conversation (the caller's own; its logged turns are the history, earlier messages in the request
are ignored). Without it, every request starts a new stored conversation whose prompt history is
the request's earlier user/assistant pairs; the response carries its `conversation_id` to go on
with. System messages in a request are ignored: the product's system prompt is the one it is
trained with. The completion `id` is the turn id (what `/v1/feedback` rates); a stream's chunks
share a provisional id that `/v1/feedback` also accepts, and the last chunk carries `turn_id`.
Identity: see assistant/identity.py (API keys, or one shared anonymous API identity).
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

from assistant.http.identity import COOKIE, login_page, parse_form, safe_next
from assistant.http.prometheus import CONTENT_TYPE
from assistant.turns.chat import MODEL_NAMES, TurnHandle
from errors import (
    AdapterError,
    AssistantError,
    BusyError,
    InputError,
    ModelError,
    NotFoundError,
    StoreError,
)
from store import logs

if TYPE_CHECKING:
    from assistant.http.identity import ASGIApp, Receive, Scope, Send
    from assistant.http.prometheus import Metrics
    from assistant.turns.service import Services

MAX_BODY_BYTES = 2_000_000


class ApiError(Exception):
    """An OpenAI-style error response."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": {"message": self.message, "type": self.type,
                                       "code": self.code, "param": None}},
                            status_code=self.status, headers=headers)


def translate(exc: AssistantError) -> ApiError:
    """A domain error as the API reports it."""
    if isinstance(exc, InputError):
        return ApiError(400, str(exc))
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), "not_found_error", "not_found")
    if isinstance(exc, BusyError):
        return ApiError(429, str(exc), "rate_limit_error", "rate_limit_exceeded")
    if isinstance(exc, AdapterError):
        return ApiError(404, str(exc), "invalid_request_error", "model_not_found")
    if isinstance(exc, (StoreError, ModelError)):
        return ApiError(503, str(exc), "server_error", "unavailable")
    return ApiError(400, str(exc))


# ---- request parsing -------------------------------------------------------------------------

async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is {len(body):,} bytes; the limit is "
                            f"{MAX_BODY_BYTES:,}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc}): send a JSON object "
                            "with Content-Type: application/json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _opt(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ApiError(400, f"'{name}' must be {what}, not {json.dumps(value)[:80]}")
    return value


def _number(data: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = _opt(data, name, (int, float), "a number")
    if value is not None and not lo <= value <= hi:
        raise ApiError(400, f"'{name}' = {value} is out of range: use {lo}..{hi}")
    return value


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}: only text content parts are supported "
                                    "({'type': 'text', 'text': '...'})")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts")


def parse_messages(data: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(the last user message, earlier (question, answer) pairs) of a chat request."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects")
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'")
        role, text = m["role"], _text(m.get("content"), f"messages[{i}]")
        if role == "user":
            pending = text if pending is None else pending + "\n\n" + text
        elif role == "assistant":
            if pending is not None:
                turns.append((pending, text))
                pending = None
        elif role not in ("system", "developer", "tool"):
            raise ApiError(400, f"messages[{i}].role {role!r} is unknown: use 'system', "
                                "'user' or 'assistant'")
    if pending is None:
        raise ApiError(400, "the last message must come from the user: it is the question")
    return pending, turns


# ---- routes ----------------------------------------------------------------------------------

def api_router(services: Services) -> APIRouter:
    """The OpenAI-compatible routes under /v1."""
    router = APIRouter(prefix="/v1")
    chat, cfg, metrics = services.chat, services.cfg, services.metrics

    def user_of(request: Request) -> str:
        user = services.identity.api_user(request.headers.get("authorization"))
        if user is None:
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
        return user.user_id

    async def guarded(fn: Any, *args: Any) -> Response:
        try:
            return await fn(*args)
        except ApiError as exc:
            metrics.error("api", str(exc.status))
            return exc.response()
        except AssistantError as exc:
            err = translate(exc)
            metrics.error("api", type(exc).__name__)
            return err.response()

    def completion_args(data: dict[str, Any]) -> dict[str, Any]:
        model = data.get("model", "assistant")
        if not isinstance(model, str):
            raise ApiError(400, "'model' must be a string")
        if model not in MODEL_NAMES:
            raise ApiError(404, f"the model {model!r} does not exist: use one of "
                                f"{', '.join(MODEL_NAMES)} (see GET /v1/models)",
                           code="model_not_found")
        if (_opt(data, "n", int, "an integer") or 1) != 1:
            raise ApiError(400, "'n' must be 1: one answer per request")
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int)
                                       or isinstance(max_tokens, bool)
                                       or not 1 <= max_tokens <= cfg.model.max_new_tokens):
            raise ApiError(400, f"'max_tokens' must be an integer in 1..{cfg.model.max_new_tokens}")
        conversation_id = _opt(data, "conversation_id", str, "a string")
        _opt(data, "user", str, "a string")  # accepted for compatibility, never an identity
        question, history = parse_messages(data)
        return {"message": question, "conversation_id": conversation_id, "model": model,
                "history": None if conversation_id else history,
                "temperature": _number(data, "temperature", 0.0, 2.0),
                "top_p": _number(data, "top_p", 0.01, 1.0),
                "seed": _opt(data, "seed", int, "an integer"), "max_new_tokens": max_tokens}

    def extras(handle: TurnHandle) -> dict[str, Any]:
        notes = [handle.retrieval_note] if handle.retrieval_note else []
        if handle.dropped_turns:
            notes.append(f"{handle.dropped_turns} earlier turn(s) were left out of the prompt "
                         "to fit the model's context window")
        return {"conversation_id": handle.conversation_id, "arm": handle.arm,
                "adapter_version": handle.adapter_version, "notes": notes,
                "sources": [{"n": i, "source": p.source, "chunk_id": p.chunk_id,
                             "score": p.score} for i, p in enumerate(handle.passages, 1)]}

    async def completions(request: Request) -> Response:
        user_id = user_of(request)
        data = await read_json(request)
        args = completion_args(data)
        stream = _opt(data, "stream", bool, "true or false") or False
        options = _opt(data, "stream_options", dict, "an object") or {}
        model = args["model"]
        handle: TurnHandle = await run_in_threadpool(lambda: chat.ask(user_id, **args))
        created = int(time.time())
        if not stream:
            text = await run_in_threadpool(lambda: "".join(handle))
            turn_id = await run_in_threadpool(services.finish_turn, handle, "api")
            result = handle.result
            assert result is not None
            if result.error:
                raise ApiError(503, f"the answer could not be generated ({result.error}); "
                                    "try again", "server_error", "generation_failed")
            return JSONResponse({
                "id": turn_id, "object": "chat.completion", "created": created,
                "model": model, **extras(handle),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": _finish(result.finish_reason)}],
                "usage": {"prompt_tokens": result.prompt_tokens,
                          "completion_tokens": result.completion_tokens,
                          "total_tokens": result.prompt_tokens + result.completion_tokens}})
        return StreamingResponse(
            sse(services, handle, model, created,
                extras(handle), bool(options.get("include_usage"))),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache",
                                                     "X-Accel-Buffering": "no"})

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await guarded(completions, request)

    async def models(request: Request) -> Response:
        user_of(request)
        state = await run_in_threadpool(chat.state)
        data = [{"id": "assistant", "object": "model", "created": 0, "owned_by": "assistant",
                 "description": "routed: production, or the canary for its share of new "
                                "conversations", "adapter_version": state.production_version},
                {"id": "production", "object": "model", "created": 0, "owned_by": "assistant",
                 "adapter_version": state.production_version}]
        if state.canary_version is not None and state.rollout_id is not None:
            data.append({"id": "canary", "object": "model", "created": 0,
                         "owned_by": "assistant", "adapter_version": state.canary_version})
        data.append({"id": "base", "object": "model", "created": 0, "owned_by": "assistant",
                     "adapter_version": 0})
        return JSONResponse({"object": "list", "data": data})

    @router.get("/models")
    async def list_models(request: Request) -> Response:
        return await guarded(models, request)

    async def feedback(request: Request) -> Response:
        user_id = user_of(request)
        data = await read_json(request)
        turn_id = data.get("id")
        if not isinstance(turn_id, str) or not turn_id:
            raise ApiError(400, "'id' must be the completion id (a string) to rate")
        rating = data.get("rating")
        if rating not in ("up", "down", None):
            raise ApiError(400, "'rating' must be 'up', 'down' or null (withdraw the vote)")
        comment = _opt(data, "comment", str, "a string")
        correction = _opt(data, "correction", str, "a string")
        vote = await run_in_threadpool(services.rate, user_id, turn_id, rating, comment,
                                       correction, request.client.host if request.client
                                       else None)
        return JSONResponse({"id": turn_id, "rating": vote.rating if vote else None,
                             "comment": vote.comment if vote else None,
                             "correction": vote.correction if vote else None})

    @router.post("/feedback")
    async def post_feedback(request: Request) -> Response:
        return await guarded(feedback, request)

    async def conversations(request: Request) -> Response:
        user_id = user_of(request)
        rows = await run_in_threadpool(logs.list_conversations, services.db, user_id)
        return JSONResponse({"object": "list", "data": [
            {"id": c.id, "title": c.title, "turns": c.turn_count,
             "created_at": c.created_at.isoformat(),
             "last_activity": c.last_activity.isoformat()} for c in rows]})

    @router.get("/conversations")
    async def list_conversations(request: Request) -> Response:
        return await guarded(conversations, request)

    async def conversation(request: Request, conversation_id: str) -> Response:
        user_id = user_of(request)
        turns = await run_in_threadpool(logs.conversation_turns, services.db, conversation_id,
                                        user_id)
        return JSONResponse({"id": conversation_id, "turns": [
            {"id": t.id, "question": t.question, "answer": t.answer,
             "created_at": t.created_at.isoformat(),
             "rating": next((v.rating for v in t.votes if v.user_id == user_id), None)}
            for t in turns]})

    @router.get("/conversations/{conversation_id}")
    async def get_conversation(request: Request, conversation_id: str) -> Response:
        return await guarded(conversation, request, conversation_id)

    return router


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def sse(services: Services, handle: TurnHandle, model: str, created: int,
              extra: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """The answer as OpenAI `chat.completion.chunk` events, ending with `data: [DONE]`. Every
    chunk carries the turn id, which `/v1/feedback` rates."""
    base = {"id": handle.id, "object": "chat.completion.chunk", "created": created,
            "model": model}
    pieces = iter(handle)
    done = object()
    finished = False
    try:
        yield _sse({**base, **extra, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        while True:
            piece = await run_in_threadpool(next, pieces, done)
            if piece is done:
                break
            yield _sse({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                             "finish_reason": None}]})
        turn_id = await run_in_threadpool(services.finish_turn, handle, "api")
        finished = True
        result = handle.result
        assert result is not None
        final: dict[str, Any] = {**base, "turn_id": turn_id, "choices": [
            {"index": 0, "delta": {}, "finish_reason": _finish(result.finish_reason)}]}
        if result.error:
            final["error"] = {"message": f"the answer could not be generated ({result.error})",
                              "type": "server_error", "code": "generation_failed"}
        if include_usage:
            final["usage"] = {"prompt_tokens": result.prompt_tokens,
                              "completion_tokens": result.completion_tokens,
                              "total_tokens": result.prompt_tokens + result.completion_tokens}
        yield _sse(final)
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away: stop generating, still log what was said
            handle.cancel()

            threading.Thread(target=services.finish_turn, args=(handle, "api"),
                             name="turn-clean-up", daemon=True).start()


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
        return JSONResponse({"status": status, "checks": checks},
                            status_code=200 if serving else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
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
            user_id = await run_in_threadpool(identity.login, form.get("username", ""),
                                               form.get("password", ""), client)
        except BusyError as exc:
            services.metrics.error("login", "rate_limited")
            return HTMLResponse(login_page(str(exc), next_path), status_code=429)
        except ValueError as exc:
            services.metrics.error("login", "failed")
            return HTMLResponse(login_page(str(exc), next_path), status_code=401)
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append("set-cookie", identity.cookie_header(
            user_id, secure=request.url.scheme == "https"))
        return response

    @router.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login" if identity.login_required else "/",
                                    status_code=303)
        response.headers.append("set-cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly")
        return response

    return router


class RequestMetricsMiddleware:
    """Counts HTTP requests by route group and status code."""

    GROUPS = ("/v1/chat/completions", "/v1/feedback", "/v1/models", "/v1/", "/healthz",
              "/metrics", "/login", "/gradio_api/queue", "/gradio_api/")

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
