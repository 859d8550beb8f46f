"""The operator console: a Gradio page at /console behind its own login.

Operators sign in at /operator/login with the admin token, checked by the server's one
OperatorAuth (assistant/http/operator_auth.py, shared with the admin API); the session is a
random id in an HttpOnly, SameSite=Strict cookie. Every request under /console,
the page and its Gradio API alike, needs that session (Gradio's `auth_dependency`), and every
action goes through `Operator.act`, which records it in the audit log.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from assistant.http.operator_auth import COOKIE, SESSION_SECONDS, OperatorAuth
from assistant.pages.console_cycles import progress_text
from assistant.pages.console_rollout import evidence_svg, rollout_markdown
from assistant.retrieval.library import DocumentLibrary
from assistant.turns.operator import Operator
from errors import AssistantError, BusyError

ACTOR = "operator:console"


_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Operator sign-in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto}}
input,button{{font-size:1rem;padding:.5rem;width:100%;margin:.3rem 0}}
.err{{color:#b00020}}</style></head><body><h1>Operator console</h1>
<p>Sign in with the operator token (the value of the server's admin token variable).</p>
<form method="post" action="/operator/login"><label>Token
<input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit" id="sign-in">Sign in</button></form><p class="err">{error}</p>
</body></html>"""


def login_router(sessions: OperatorAuth) -> APIRouter:
    router = APIRouter(prefix="/operator")

    @router.get("/login", response_class=HTMLResponse)
    def login_form() -> str:
        return _LOGIN_PAGE.format(error="")

    @router.post("/login")
    def login(request: Request, token: str = Form("")) -> Response:
        address = request.client.host if request.client else "unknown"
        try:
            session = sessions.login(address, token)
        except BusyError as exc:
            return HTMLResponse(_LOGIN_PAGE.format(error=html.escape(str(exc))), 429)
        except PermissionError as exc:
            return HTMLResponse(_LOGIN_PAGE.format(error=html.escape(str(exc))), 401)
        response = RedirectResponse("/console/", status_code=303)
        response.set_cookie(
            COOKIE, session, max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/"
        )
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        sessions.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/operator/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return router


# ---- rendering the overview ------------------------------------------------------------------


def adapters_rows(overview: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for a in overview["adapters"]:
        validation = (a.get("metrics") or {}).get("validation") or {}
        train = (a.get("metrics") or {}).get("train") or {}
        verdict = (
            "passed"
            if validation.get("passed")
            else "; ".join(validation.get("reasons", []))[:200]
            if validation
            else ""
        )
        rows.append(
            [
                f"v{a['version']}",
                "" if a["parent"] is None else f"v{a['parent']}",
                a["status"],
                a.get("dataset_id") or "",
                train.get("best_heldout_loss", train.get("heldout_loss", "")),
                verdict,
                a["created_at"][:19],
            ]
        )
    return rows


def cycles_rows(overview: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for c in overview["cycles"]:
        progress = progress_text(c)
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in (c.get("stage_timings") or {}).items())
        rows.append(
            [
                c["started_at"][:19],
                c["trigger"],
                c["status"],
                c.get("stage") or "",
                progress.strip(),
                timings,
                (c.get("reason") or "")[:300],
            ]
        )
    return rows


def ratings_frame(overview: dict[str, Any]) -> Any:
    import pandas as pd

    points = [
        {
            "time": pd.Timestamp(p["bucket"]),
            "version": f"v{p['adapter_version']}",
            "👍 rate": p["up"] / (p["up"] + p["down"]),
        }
        for p in overview["ratings"]
        if p["up"] + p["down"]
    ]
    return pd.DataFrame(points, columns=["time", "version", "👍 rate"])


def documents_markdown(overview: dict[str, Any]) -> str:
    docs = overview.get("documents") or {}
    if not docs:
        return "Document search is not configured."
    if "error" in docs:
        return f"Document search is unavailable: {html.escape(str(docs['error']))}"
    return " · ".join(
        f"**{html.escape(str(k))}:** {html.escape(str(v))}"
        for k, v in docs.items()
        if not isinstance(v, (list, dict))
    )


def schedule_markdown(overview: dict[str, Any]) -> str:
    s = overview["schedule"]
    state = (
        "running a cycle now"
        if s["cycle_running"]
        else (f"waiting: {s['blocked_because']}" if s["blocked_because"] else "ready for a cycle")
    )
    return f"**Scheduler:** {'on' if s['enabled'] else 'off'}; {html.escape(state)}" + (
        f"; cooldown {s['cooldown_minutes_left']} min left" if s["cooldown_minutes_left"] else ""
    )


def build_console(
    operator: Operator,
    refresh_seconds: float = 10.0,
    library: DocumentLibrary | None = None,
    documents_unavailable: str = "retrieval is off or Milvus could not be opened",
) -> Any:
    """The console page: an overview tab (live rollout, controls, lineage, plot, cycles, audit
    log) and tabs for documents, training cycles and feedback review."""
    import gradio as gr

    from assistant.pages.console_cycles import build_cycles_tab
    from assistant.pages.console_documents import build_documents_tab
    from assistant.pages.console_feedback import build_feedback_tab

    def refresh() -> tuple[Any, ...]:
        o = operator.overview()
        events = [[e["at"][:19], e["actor"], e["action"], e["subject"]] for e in o["events"]]
        return (
            rollout_markdown(o),
            evidence_svg(o),
            schedule_markdown(o),
            adapters_rows(o),
            ratings_frame(o),
            cycles_rows(o),
            documents_markdown(o),
            events,
        )

    def act(action: str, reason: str) -> tuple[Any, ...]:
        try:
            message = operator.act(
                action,  # type: ignore[arg-type]
                actor=ACTOR,
                reason=reason.strip() or None,
            )
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(message)
        return (f"✅ {html.escape(message)}", *refresh())

    with gr.Blocks(title="Operator console") as console:
        gr.Markdown("# Operator console")
        with gr.Tab("Overview", id="overview"):
            overview_tab = _overview_tab(gr)
        with gr.Tab("Documents", id="documents"):
            documents = build_documents_tab(library, documents_unavailable)
        with gr.Tab("Training cycles", id="cycles"):
            cycle_page = build_cycles_tab(operator)
        with gr.Tab("Feedback", id="feedback"):
            feedback = build_feedback_tab(operator)
        outputs = overview_tab["outputs"]
        for name, button in overview_tab["buttons"].items():
            button.click(
                lambda r, name=name: act(name, r),
                inputs=[overview_tab["reason"]],
                outputs=[overview_tab["result"], *outputs],
                api_visibility="private",
            )
        console.load(refresh, outputs=outputs, api_visibility="private")
        for tab in (documents, cycle_page, feedback):
            if tab is not None:
                console.load(tab[0], outputs=tab[1], api_visibility="private")
        gr.Timer(refresh_seconds).tick(refresh, outputs=outputs, api_visibility="private")
    return console


def _overview_tab(gr: Any) -> dict[str, Any]:
    """The overview's components: rollout, schedule, controls, plot, adapters, cycles, log."""
    with gr.Row():
        rollout_md = gr.Markdown(elem_id="rollout")
    evidence = gr.HTML(elem_id="evidence")
    schedule_md = gr.Markdown(elem_id="schedule")
    with gr.Row():
        reason = gr.Textbox(label="Reason (recorded in the audit log)", scale=3)
        buttons = {
            name: gr.Button(label, elem_id=f"btn-{name}", variant=variant)
            for name, label, variant in [
                ("cycle", "Run a cycle", "secondary"),
                ("pause", "Pause", "secondary"),
                ("resume", "Resume", "secondary"),
                ("promote", "Promote", "primary"),
                ("rollback", "Roll back", "stop"),
            ]
        }
    result = gr.Markdown(elem_id="action-result")
    gr.Markdown("## 👍 rate per version over time")
    plot = gr.LinePlot(x="time", y="👍 rate", color="version", y_lim=[0, 1], height=280)
    gr.Markdown("## Adapters")
    adapters = gr.Dataframe(
        headers=[
            "version",
            "parent",
            "status",
            "dataset",
            "held-out loss",
            "validation",
            "created",
        ],
        interactive=False,
        elem_id="adapters",
    )
    gr.Markdown("## Training cycles")
    cycles = gr.Dataframe(
        headers=["started", "trigger", "status", "stage", "progress", "durations", "reason"],
        interactive=False,
    )
    gr.Markdown("## Documents")
    documents = gr.Markdown()
    gr.Markdown("## Audit log")
    events = gr.Dataframe(headers=["at", "who", "action", "subject"], interactive=False)
    return {
        "outputs": [rollout_md, evidence, schedule_md, adapters, plot, cycles, documents, events],
        "buttons": buttons,
        "reason": reason,
        "result": result,
    }


def mount_console(
    app: FastAPI,
    operator: Operator,
    sessions: OperatorAuth,
    library: DocumentLibrary | None = None,
    documents_unavailable: str = "",
    max_upload_bytes: int = 0,
) -> None:
    """Add the login routes and the console (at /console) to the server app."""
    import gradio as gr

    app.include_router(login_router(sessions))

    @app.middleware("http")
    async def console_login_redirect(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if (
            path in ("/console", "/console/")
            and request.method == "GET"
            and not sessions.valid(request.cookies.get(COOKIE))
        ):
            return RedirectResponse("/operator/login", status_code=303)
        return await call_next(request)

    console = build_console(
        operator,
        library=library,
        documents_unavailable=documents_unavailable
        or "retrieval is off or Milvus could not be opened",
    )
    # Uploads (the Documents tab only) are capped per request; 0 refuses every upload.
    gr.mount_gradio_app(
        app,
        console,
        path="/console",
        auth_dependency=sessions.user,
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        ssr_mode=False,
        mcp_server=False,
        max_file_size=max_upload_bytes if library is not None else 0,
    )
