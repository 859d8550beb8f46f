"""The assembled server: safe defaults, identity cookies, logins, health, metrics, adapters."""

from __future__ import annotations

import shutil

import httpx
import pytest

from assistant.http.identity import COOKIE, Identity, load_secret
from config import with_overrides
from store import registry
from tests.assistant.conftest import API_KEYS, run_server, server_config

CLOSED = [
    "/monitoring",
    "/monitoring/summary",
    "/gradio_api/file=config.toml",
    "/file=config.toml",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file/config.toml",
    "/gradio_api/upload",
    "/gradio_api/runs",
    "/gradio_api/openapi.json",
    "/gradio_api/mcp/sse",
    "/gradio_api/mcp/schema",
    "/gradio_api/proxy=http://x",
    "/gradio_api/dev/reload",
    "/gradio_api/vibe-code",
    "/gradio_api/upload_progress",
    "/docs",
    "/redoc",
    "/config.toml",
    "/gradio_api/user",
    "/gradio_api/token",
    "/gradio_api/login_check",
    "/gradio_api/deep_link",
]


@pytest.mark.parametrize("path", CLOSED)
def test_what_the_product_does_not_need_is_not_served(live, path):
    for method in ("GET", "POST"):
        r = httpx.request(method, live.url + path)
        assert r.status_code in (404, 405), (method, path, r.status_code)
        assert "[server]" not in r.text


def test_the_chat_page_and_ops_endpoints_are_served(live):
    with live.client() as http:
        page = http.get("/")
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert http.get("/config").status_code == 200
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["checks"]["database"]["ok"]


def test_each_browser_gets_a_signed_httponly_identity_it_cannot_choose(live):
    r = httpx.get(live.url + "/")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=anon-") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    value = r.cookies[COOKIE]
    again = httpx.get(live.url + "/", cookies={COOKIE: value})
    assert "set-cookie" not in again.headers  # recognised, kept
    forged = value.rsplit(".", 1)[0][:-1] + "x." + value.rsplit(".", 1)[1]
    for bad in (forged, "anon-chosen-by-me", "user:admin.AAAA", ""):
        r = httpx.get(live.url + "/", cookies={COOKIE: bad})
        new = r.cookies[COOKIE]
        assert new != bad and new.rsplit(".", 1)[0] != bad.rsplit(".", 1)[0]


def test_without_milvus_answers_go_on_ungrounded_and_say_so(live, services):
    saved = services.cfg
    # Retrieval on, but Milvus could not be opened at start (no retriever).
    services.cfg = services.chat.cfg = with_overrides(saved, retrieval={"top_k": 4})
    try:
        r = httpx.get(live.url + "/healthz")
        with live.client(headers={"Authorization": f"Bearer {API_KEYS[0]}"}) as http:
            done = http.post(
                "/v1/chat/completions",
                json={"model": "assistant", "messages": [{"role": "user", "content": "any docs?"}]},
            )
    finally:
        services.cfg = services.chat.cfg = saved
    # Still serving (200) but degraded, with the failing check named.
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"
    assert body["checks"]["retrieval"]["ok"] is False and body["checks"]["model"]["ok"]
    # The answer comes, says it is not grounded, and the turn records why.
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["choices"][0]["message"]["content"]
    assert any("Document search is unavailable" in n for n in answer["notes"])
    with services.db.reader() as cur:
        note = cur.execute(
            "SELECT retrieval_note FROM turns WHERE id = ?", [answer["id"]]
        ).fetchone()
    assert note and "Document search is unavailable" in note[0]


def test_healthz_is_503_when_the_model_worker_is_dead(tiny_model_dir, tmp_path):
    # A server of its own whose model worker really stops (its thread ends): the health check
    # must say so while the HTTP side still answers.
    from assistant.turns.service import build_services

    services = build_services(server_config(tmp_path / "data", tiny_model_dir))
    running = run_server(services)
    try:
        assert httpx.get(running.url + "/healthz").status_code == 200
        services.generator.close()
        r = httpx.get(running.url + "/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert r.json()["checks"]["model"]["ok"] is False
    finally:
        running.stop()
        services.close()


def test_metrics_count_turns_latency_tokens_ratings_and_errors(live):
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    with live.client(headers=headers) as http:
        done = http.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "count me"}]},
        ).json()
        http.post("/v1/feedback", json={"id": done["id"], "rating": "up"})
        http.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        text = http.get("/metrics").text
    for name in (
        "assistant_turns_total{",
        "assistant_turn_seconds_bucket{",
        "assistant_time_to_first_token_seconds_bucket{",
        "assistant_completion_tokens_total{",
        'assistant_ratings_total{adapter="v0",arm="production",rating="up"}',
        "assistant_errors_total{",
        'assistant_http_requests_total{route="/v1/chat/completions",status="200"}',
    ):
        assert name in text, name


def test_metrics_show_the_answers_being_generated_now(live, services):
    def in_flight() -> float:
        text = httpx.get(live.url + "/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("assistant_turns_in_flight "))
        return float(line.split()[1])

    before = in_flight()
    handle = services.chat.ask(
        "metrics-user", "Tell me a long story about the sea.", max_new_tokens=400
    )
    try:
        assert in_flight() == before + 1  # admitted, not finished (it always said 0)
    finally:
        handle.cancel()
        services.finish_turn(handle, "api")
    assert in_flight() == before


def test_a_registered_production_adapter_is_loaded_and_served(services, tiny_adapters, tmp_path):
    from assistant.generation.reconciler import AdapterReconciler
    from store.db import open_database

    folder = services.cfg.data_dir / "adapters" / "test-v1"
    shutil.copytree(tiny_adapters["a"], folder, dirs_exist_ok=True)
    db = open_database(tmp_path / "registry.duckdb")
    try:
        version = registry.register_adapter(
            db,
            parent=0,
            base_model="tiny",
            path=str(folder),
            dataset_id=None,
            train_config={},
            actor="test",
        )
        registry.set_status(db, version, "candidate", actor="test", reason="test")
        registry.set_status(db, version, "production", actor="test", reason="test", force=True)
        state = AdapterReconciler(services.cfg, db, services.generator)()
        assert state.production_version == version
        assert f"v{version}" in services.generator.adapter_names()
    finally:
        db.close()
        if f"v{version}" in services.generator.adapter_names():
            services.generator.unload_adapter(f"v{version}")


@pytest.fixture(scope="module")
def login_server(live, tmp_path_factory, tiny_model_dir):
    """A second server (own database, the same model) where logins are configured."""
    from assistant.turns.service import build_services

    cfg = server_config(
        tmp_path_factory.mktemp("login") / "data", tiny_model_dir, login_attempts_per_minute=3
    )
    services = build_services(cfg, generator=live.services.generator)
    services.identity = Identity(
        load_secret(cfg.data_dir), users={"alice": "wonderland"}, login_attempts_per_minute=3
    )
    running = run_server(services)
    yield running
    running.stop()
    services.db.close()  # the generator belongs to the main test server


def test_with_logins_the_chat_needs_a_login_and_failed_logins_are_limited(login_server):
    url = login_server.url
    r = httpx.get(url + "/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert httpx.get(url + "/gradio_api/info").status_code == 401
    assert "set-cookie" not in r.headers
    assert httpx.get(url + "/login").status_code == 200

    ok = httpx.post(
        url + "/login",
        data={"username": "alice", "password": "wonderland", "next": "//evil.example"},
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
    cookie = ok.cookies[COOKIE]
    assert cookie.startswith("user:alice.")
    assert httpx.get(url + "/", cookies={COOKIE: cookie}).status_code == 200

    wrong = [
        httpx.post(url + "/login", data={"username": name, "password": "guess"})
        for name in ("alice", "nobody", "alice")
    ]
    assert [r.status_code for r in wrong] == [401, 401, 401]
    refused = httpx.post(url + "/login", data={"username": "alice", "password": "wonderland"})
    assert refused.status_code == 429
    assert "too many login attempts" in refused.text and COOKIE not in refused.cookies

    out = httpx.get(url + "/logout", cookies={COOKIE: cookie})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    # An anonymous cookie signed by the same key is not accepted once logins are required.
    anon = login_server.services.identity._sign("anon-someone")
    assert httpx.get(url + "/", cookies={COOKIE: anon}).status_code == 303


def test_status_reads_the_database_or_points_at_the_server(cfg, capsys):
    from assistant.pages.status import print_status
    from store.db import database_path, open_database

    cfg = with_overrides(cfg, retrieval={"top_k": 0})
    assert print_status(cfg) == 0
    out = capsys.readouterr().out
    assert "production v0" in out and "rollout    none running" in out
    with open_database(database_path(cfg)):  # as a running server would hold it
        assert print_status(cfg) == 1
    err = capsys.readouterr().err
    assert "in use by process" in err and "/admin/overview" in err
