"""The one server process: the app around the services (assistant.turns.service).

`create_app` puts FastAPI in front of the services: the chat page (Gradio, mounted at `/`), the
OpenAI-compatible `/v1` API, `/healthz`, `/metrics`, `/login`, and the operator console and
admin API, and the scheduler, plugged in through `Services`.
Every path Gradio would serve that the product does not need is closed by `GradioGate`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError

from assistant.http.bodylimit import BodyLimitMiddleware
from assistant.http.identity import (
    ASGIApp,
    IdentityMiddleware,
    Receive,
    Scope,
    Send,
    _respond,
    scope_user,
)
from assistant.http.openapi import openapi_document
from assistant.turns.service import Services, build_services
from config import Config

log = logging.getLogger(__name__)


# ---- the app --------------------------------------------------------------------------------


class GradioGate:
    """Lets through only the Gradio routes the chat page and gradio_client need.

    Gradio also serves files (`/file=`, `/gradio_api/file=`), uploads, a monitoring page, run
    history, an MCP server, direct `/run`/`/call` endpoints and more; none is part of the
    product, so anything not listed here answers 404 before Gradio sees it."""

    EXACT = frozenset(
        {
            "/",
            "/config",
            "/config/",
            "/theme.css",
            "/favicon.ico",
            "/manifest.json",
            "/robots.txt",
            "/gradio_api/info",
            "/gradio_api/info/",
            "/gradio_api/queue/join",
            "/gradio_api/queue/data",
            "/gradio_api/cancel",
            "/gradio_api/startup-events",
            "/gradio_api/app_id",
            "/gradio_api/app_id/",
            "/gradio_api/reset",
            "/gradio_api/reset/",
        }
    )
    PREFIXES = ("/assets/", "/static/", "/svelte/", "/gradio_api/heartbeat/", "/pwa_icon")

    def __init__(self, app: ASGIApp, passthrough: Callable[[], list[str]]) -> None:
        self.app = app
        self.passthrough = passthrough

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if (
            scope["type"] not in ("http", "websocket")
            or path in self.EXACT
            or path.startswith(self.PREFIXES)
            or any(path == p.rstrip("/") or path.startswith(p) for p in self.passthrough())
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _respond(
            send, 404, b'{"detail": "Not Found"}', [(b"content-type", b"application/json")]
        )


class JsonBodyGuard:
    """Gradio's JSON routes (queue/join, cancel, ...) get only bodies that are JSON text: any
    other body is answered 422 here, because Gradio's own error handler fails (500) when it
    tries to echo undecodable bytes back. The body is read (already bounded by the body
    limit) and replayed to Gradio unchanged."""

    SUFFIXES = (
        "/gradio_api/queue/join",
        "/gradio_api/cancel",
        "/gradio_api/reset",
        "/gradio_api/reset/",
        "/gradio_api/heartbeat/",
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not any(path.endswith(s) or s.endswith("/") and s in path for s in self.SUFFIXES)
        ):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            if body:  # re-encoding finds lone surrogates (\\ud800 escapes) and 1e999 anywhere
                data = json.loads(body.decode("utf-8"))
                json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
        except (UnicodeError, ValueError, RecursionError):
            await _respond(
                send,
                422,
                json.dumps(
                    {"detail": "the request body must be JSON in UTF-8, with finite numbers"}
                ).encode(),
                [(b"content-type", b"application/json")],
            )
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


OWN_PATHS = ["/v1/", "/healthz", "/metrics", "/login", "/logout", "/admin/", "/openapi.json"]


async def invalid_request(request: Any, exc: Exception) -> Any:
    """FastAPI's 422 for a body or parameter that does not validate, without echoing the input
    (which may not even be encodable text: a lone surrogate made the default handler fail)."""
    from fastapi.responses import Response

    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    detail = [
        {
            "loc": [str(p)[:100] for p in e.get("loc", ())],
            "msg": str(e.get("msg"))[:300],
            "type": str(e.get("type"))[:100],
        }
        for e in errors[:20]
    ]
    body = json.dumps({"detail": detail}, ensure_ascii=True)  # escapes, never fails
    return Response(body, status_code=422, media_type="application/json")


def create_app(services: Services, on_started: Callable[[], None] | None = None) -> Any:
    """The FastAPI app of the server process (chat page at `/`), with every extension of
    `services` installed; `on_started` runs once the server is up."""
    import anyio.to_thread
    import gradio as gr
    from fastapi import FastAPI

    from assistant.http import api
    from assistant.pages import chat_page as ui

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Streams are read from worker threads: allow one per queued request plus headroom.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(
            limiter.total_tokens, 2 * services.cfg.model.max_queued_requests + 40
        )
        for extension in services.extensions:
            extension.start()
        if on_started is not None:
            on_started()
        yield

    app = FastAPI(
        title="Assistant", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.include_router(api.ops_router(services))
    app.include_router(api.api_router(services))
    app.include_router(api.login_router(services))
    for extension in services.extensions:  # e.g. the operator console: before the chat's `/`
        extension.install(app)
    open_paths = OWN_PATHS + [p for e in services.extensions for p in e.open_paths]
    published: dict[str, Any] = {}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json() -> dict[str, Any]:
        """The OpenAPI document of /v1 and /admin (as OpenAI-compatible servers publish)."""
        if not published:
            published.update(openapi_document(app))
        return published

    blocks = ui.build_chat(services)
    root = str(Path(services.cfg.root).resolve())
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        footer_links=[],
        run_history=False,
        show_error=False,
        allowed_paths=[],
        blocked_paths=[root, str(Path.cwd().resolve())],
        max_file_size=0,
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        auth_dependency=lambda request: scope_user(request.scope),
        css=ui.CSS,
    )

    app.add_middleware(JsonBodyGuard)
    app.add_middleware(GradioGate, passthrough=lambda: open_paths)
    app.add_middleware(
        IdentityMiddleware, identity=services.identity, open_paths=lambda: tuple(open_paths)
    )
    app.add_middleware(api.RequestMetricsMiddleware, metrics=services.metrics)
    # Outermost: no route, page or Gradio queue ever reads more than the body limit.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=services.cfg.server.max_body_bytes,
        uploads=tuple(u for e in services.extensions for u in e.upload_paths),
    )
    return app


def serve(
    cfg: Config,
    host: str | None = None,
    port: int | None = None,
    extend: Callable[[Services], object] | None = None,
) -> None:
    """Run the server until interrupted (`main.py serve`); `extend` adds extensions to the
    services first (the learning loop: scheduler, console, admin API)."""
    import uvicorn

    from assistant.http.startup import quiet_known_noise, startup_summary

    quiet_known_noise()
    host = host or cfg.server.host
    port = port or cfg.server.port
    services = build_services(cfg)
    try:
        if extend is not None:
            extend(services)

        def announce() -> None:
            shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
            print(startup_summary(services, f"http://{shown}:{port}/"), flush=True)

        app = create_app(services, on_started=announce)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,
            ws_max_size=cfg.server.max_body_bytes,
        )
    finally:
        services.close()
