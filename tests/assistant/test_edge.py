"""The HTTP edge under attack (issue 14): odd numbers, garbage cookies and bodies, oversized and
never-ending bodies, anonymous API callers, refused requests, login races, stream floods."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import config as config_mod
from assistant.http.identity import COOKIE, Identity, load_secret
from assistant.http.limits import RateLimiter
from errors import BusyError, ConfigError
from store import logs
from tests.assistant.conftest import API_KEYS, RunningServer, run_server, server_config

ALICE = API_KEYS[0]
ADMIN_ENV = "TEST_EDGE_ADMIN_TOKEN"
ADMIN_TOKEN = "edge-admin-token-0123456789-abcdefghij"
MESSAGES = [{"role": "user", "content": "hi"}]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _server(
    live: RunningServer,
    root: Path,
    *,
    users: dict[str, str] | None = None,
    admin: bool = False,
    **server: object,
) -> tuple[RunningServer, object]:
    """Another server on the live server's model worker: its own database and identities."""
    from assistant.turns.service import build_services

    cfg = server_config(
        root / "data", Path(live.services.cfg.model.base), admin_token_env=ADMIN_ENV, **server
    )
    cfg = config_mod.with_overrides(cfg, schedule={"enabled": False})
    services = build_services(cfg, generator=live.services.generator)
    services.identity = Identity(
        load_secret(cfg.data_dir),
        users=users,
        login_attempts_per_minute=cfg.server.login_attempts_per_minute,
    )
    if admin:
        from training.loop.operator import attach_learning_loop

        os.environ[ADMIN_ENV] = ADMIN_TOKEN
        attach_learning_loop(services)
    return run_server(services), services


def _stop(running: RunningServer, services: object) -> None:
    running.stop()
    for extension in services.extensions:  # type: ignore[attr-defined]
        extension.stop()
    services.db.close()  # type: ignore[attr-defined]  # the generator is the live server's


@pytest.fixture(scope="module")
def anon(live, tmp_path_factory) -> Iterator[RunningServer]:
    """No API keys, no logins, the admin API and console attached."""
    running, services = _server(
        live, tmp_path_factory.mktemp("anon"), admin=True, login_attempts_per_minute=3
    )
    yield running
    _stop(running, services)
    os.environ.pop(ADMIN_ENV, None)


@pytest.fixture(scope="module")
def logins(live, tmp_path_factory) -> Iterator[RunningServer]:
    running, services = _server(
        live,
        tmp_path_factory.mktemp("logins"),
        users={"alice": "wonderland"},
        login_attempts_per_minute=3,
    )
    yield running
    _stop(running, services)


# ---- 1. numbers out of range ------------------------------------------------------------------

OUT_OF_RANGE = [
    ("seed", 18446744073709551616),
    ("seed", -1),
    ("seed", 2**63),
    ("seed", 1.5),
    ("temperature", -0.1),
    ("temperature", 1e309),
    ("top_p", 0),
    ("top_p", 1.5),
    ("max_tokens", 10**30),
    ("max_tokens", 0),
    ("max_completion_tokens", 10**6),
    ("n", 10**30),
    ("n", 0),
    ("presence_penalty", 3),
    ("frequency_penalty", -2.5),
    ("frequency_penalty", "x"),
    ("top_logprobs", 10**9),
    ("logprobs", 1),
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE)
def test_numbers_out_of_range_are_a_400_naming_the_field(live, field, value):
    body = json.dumps({"model": "assistant", "messages": MESSAGES, field: value})
    r = httpx.post(
        live.url + "/v1/chat/completions",
        content=body.replace("Infinity", "1e999"),
        headers={**auth(ALICE), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 400, (field, value, r.status_code, r.text)
    assert f"'{field}'" in r.json()["error"]["message"]


def test_non_finite_numbers_are_a_400(live):
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = (
            '{"model": "assistant", "messages": [{"role": "user", "content": "hi"}], '
            f'"temperature": {literal}}}'
        )
        r = httpx.post(
            live.url + "/v1/chat/completions",
            content=body,
            headers={**auth(ALICE), "Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 400, (literal, r.text)
        assert "'temperature'" in r.json()["error"]["message"]


def test_more_odd_seeds_than_queue_slots_leave_the_server_serving(live, services):
    slots = services.cfg.model.max_queued_requests
    with httpx.Client(base_url=live.url, headers=auth(ALICE), timeout=60) as http:
        for _ in range(slots + 2):
            r = http.post(
                "/v1/chat/completions",
                json={"model": "base", "messages": MESSAGES, "seed": 18446744073709551616},
            )
            assert r.status_code == 400
        ok = http.post(
            "/v1/chat/completions",
            json={"model": "base", "messages": MESSAGES, "seed": 7, "max_tokens": 2},
        )
        assert ok.status_code == 200, ok.text
        health = http.get("/healthz").json()
    assert health["status"] == "ok" and health["checks"]["model"]["admitting"] is True


def test_healthz_reports_a_worker_that_cannot_admit_work(live, services):
    generator = services.generator
    saved = generator._max_queued
    generator._max_queued = 0  # every slot taken: no new answer can start
    try:
        r = httpx.get(live.url + "/healthz")
    finally:
        generator._max_queued = saved
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] != "ok"
    assert body["checks"]["model"]["ok"] is False
    assert "cannot admit" in body["checks"]["model"]["error"]


# ---- 2. garbage cookies and headers -------------------------------------------------------------

GARBAGE_COOKIES = [
    b'assistant_id="anon-\xe9.x"',
    b"assistant_id=anon-\xff\xfe.\x80",
    b'assistant_id="\\"',
    b"assistant_id=" + b"a." * 5000,
    b"\xff=\xfe",
    b"assistant_id=user:\xc3\xa9.AAAA",
]


@pytest.mark.parametrize("cookie", GARBAGE_COOKIES)
def test_a_malformed_cookie_is_simply_no_identity(live, cookie):
    for path in ("/healthz", "/", "/config", "/v1/models"):
        r = httpx.get(live.url + path, headers={"Cookie": cookie, **auth(ALICE)})
        assert r.status_code < 500, (path, cookie, r.status_code)
    page = httpx.get(live.url + "/", headers={"Cookie": cookie})
    assert page.status_code == 200 and page.cookies[COOKIE].startswith("anon-")


def test_garbage_authorization_headers_are_a_401(live, anon):
    for value in (b"Bearer \xe9\xff", b"Bearer " + b"k" * 20000, b"\xff\xfe", b"Bearer"):
        r = httpx.get(live.url + "/v1/models", headers={"Authorization": value})
        assert r.status_code == 401, (value[:20], r.status_code)
        r = httpx.get(anon.url + "/admin/overview", headers={"Authorization": value})
        assert r.status_code in (401, 429), (value[:20], r.status_code)


# ---- 3. anonymous API callers are separate --------------------------------------------------------


def test_two_anonymous_api_callers_cannot_see_or_touch_each_others_conversations(anon):
    with httpx.Client(base_url=anon.url, timeout=60) as first:
        done = first.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "my secret"}]},
        )
        assert done.status_code == 200, done.text
        key = done.headers["x-api-key"]
        conversation_id, turn_id = done.json()["conversation_id"], done.json()["id"]
    mine = {"Authorization": f"Bearer {key}"}
    # Another caller without a key, and one with a made-up key: each is someone else.
    for other in ({}, {"Authorization": "Bearer sk-no-key-required"}):
        with httpx.Client(base_url=anon.url, timeout=60, headers=other) as them:
            listed = them.get("/v1/conversations").json()["data"]
            assert conversation_id not in [c["id"] for c in listed]
            assert them.get(f"/v1/conversations/{conversation_id}").status_code == 404
            assert (
                them.post("/v1/feedback", json={"id": turn_id, "rating": "down"}).status_code == 404
            )
            r = them.post(
                "/v1/chat/completions",
                json={
                    "model": "assistant",
                    "conversation_id": conversation_id,
                    "messages": [{"role": "user", "content": "continue it"}],
                },
            )
            assert r.status_code == 404
    # The first caller, with the key it was issued, still owns everything.
    with httpx.Client(base_url=anon.url, timeout=60, headers=mine) as own:
        assert conversation_id in [c["id"] for c in own.get("/v1/conversations").json()["data"]]
        r = own.post("/v1/feedback", json={"id": turn_id, "rating": "up"})
        assert r.status_code == 200 and r.json()["rating"] == "up"
        again = own.post(
            "/v1/chat/completions",
            json={
                "model": "assistant",
                "conversation_id": conversation_id,
                "messages": [{"role": "user", "content": "and more"}],
            },
        )
        assert again.status_code == 200 and "x-api-key" not in again.headers
        turns = own.get(f"/v1/conversations/{conversation_id}").json()["turns"]
        assert [t["question"] for t in turns] == ["my secret", "and more"]
        assert turns[0]["rating"] == "up"


def test_an_issued_key_is_not_accepted_when_api_keys_are_configured(anon, live):
    key = httpx.post(
        anon.url + "/v1/chat/completions",
        timeout=60,
        json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
    ).headers["x-api-key"]
    assert httpx.get(live.url + "/v1/models", headers=auth(key)).status_code == 401


# ---- 4. malformed bodies on every route -----------------------------------------------------------

BAD_BYTES = [
    b"\xff\xfe\xfd",
    b'{"reason": "\xe9t\xe9"}',
    b'{"reason": "\xed\xa0\x80"}',
    b"\x00" * 10,
    b'{"reason": 5}',
    b"[1]",
    b'"x"',
    b'{"reason": "' + b"r" * 2000 + b'"}',
    b"{",
    b'{"reason": "\\ud800"}',
]


@pytest.mark.parametrize("content", BAD_BYTES)
@pytest.mark.parametrize(
    "route", ["/admin/actions/pause", "/admin/actions/cycle", "/admin/actions/nope"]
)
def test_malformed_bodies_on_the_admin_api_are_a_4xx_with_a_message(anon, route, content):
    r = httpx.post(
        anon.url + route,
        content=content,
        timeout=60,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.json()["detail"]


@pytest.mark.parametrize(
    "content", [b"\xff\xfe", b"username=\xe9&password=\xff", b"%%%", b"username=" + b"a" * 20000]
)
def test_malformed_login_forms_are_a_4xx(logins, content):
    r = httpx.post(
        logins.url + "/login",
        content=content,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= r.status_code < 500, r.status_code


# ---- 5. body limits, before the body is read ------------------------------------------------------

LIMITED = [
    "/v1/chat/completions",
    "/v1/feedback",
    "/login",
    "/operator/login",
    "/admin/actions/pause",
    "/gradio_api/queue/join",
    "/gradio_api/cancel",
    "/",
]


def _headers_only(url: str, path: str, length: int) -> bytes:
    """Send a request announcing `length` body bytes but none of them; return the reply."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "\r\n".encode()
        )
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except (TimeoutError, ConnectionError):
            pass
        return reply or b"(no answer while the body was awaited)"


@pytest.mark.parametrize("path", LIMITED)
def test_an_announced_oversized_body_is_refused_before_it_is_read(anon, path):
    reply = _headers_only(anon.url, path, 50_000_000)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"limit" in reply


FORM = "application/x-www-form-urlencoded"
READING = [
    ("anon", "/v1/chat/completions", "application/json"),
    ("anon", "/v1/feedback", "application/json"),
    ("anon", "/admin/actions/pause", "application/json"),
    ("anon", "/gradio_api/queue/join", "application/json"),
    ("anon", "/operator/login", FORM),
    ("logins", "/login", FORM),
]


@pytest.mark.parametrize("server,path,content_type", READING)
def test_a_streamed_body_over_the_limit_is_cut_off(request, server, path, content_type):
    """Chunked (no length announced): the route reads it, and reading stops at the limit."""
    url = request.getfixturevalue(server).url
    limit = 2_000_000
    sent = [0]

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 40):
            sent[0] += 65536
            yield (b"token=" if sent[0] == 65536 else b"") + b"x" * 65536

    try:
        r = httpx.post(
            url + path,
            content=chunks(),
            timeout=60,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    except httpx.TransportError:  # the server closed while the client was still sending
        assert sent[0] < limit + 40 * 65536
        return
    if content_type == FORM and r.status_code == 400:  # Starlette's own 1 MB form-field cap
        assert "maximum size" in r.text
        return
    assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert "limit" in r.text


def test_the_body_limit_is_a_setting(live):
    field = next(
        f
        for f in config_mod.ServerConfig.__dataclass_fields__.values()
        if f.name == "max_body_bytes"
    )
    assert field.metadata["help"]


# ---- 6. turns: written when the question arrives, nothing for refused requests ----------------------


def test_a_refused_request_writes_nothing(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    before = len(logs.list_conversations(services.db, user, limit=10_000))
    generator = services.generator
    saved = generator._max_queued
    generator._max_queued = 0
    try:
        r = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(ALICE),
            timeout=60,
            json={"model": "assistant", "messages": [{"role": "user", "content": "refused"}]},
        )
    finally:
        generator._max_queued = saved
    assert r.status_code == 429, r.text
    assert len(logs.list_conversations(services.db, user, limit=10_000)) == before


def test_the_question_is_logged_when_it_arrives(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "logged before the answer")
    try:
        turns = logs.conversation_turns(services.db, handle.conversation_id, user)
        assert [(t.id, t.question, t.finish_reason) for t in turns] == [
            (handle.id, "logged before the answer", "pending")
        ]
    finally:
        services.finish_turn(handle, "api")
    (turn,) = logs.conversation_turns(services.db, handle.conversation_id, user)
    assert turn.finish_reason in ("stop", "length", "cancelled") and turn.id == handle.id


def test_a_crash_mid_answer_keeps_the_question(tmp_path):
    from store.db import open_database

    db = open_database(tmp_path / "crash.duckdb")
    try:
        conversation = logs.create_conversation(db, "u1", title="q")
        turn_id = logs.begin_turn(
            db,
            conversation_id=conversation,
            user_id="u1",
            question="what happens on a crash?",
            messages=[],
            passages=[],
            adapter_version=0,
            arm="production",
        )
        # the process dies here; the next start closes what was left unfinished
        assert logs.close_unfinished_turns(db) == 1
        (turn,) = logs.conversation_turns(db, conversation, "u1")
        assert turn.id == turn_id and turn.question == "what happens on a crash?"
        assert turn.finish_reason == "error" and "stopped" in (turn.error or "")
    finally:
        db.close()


# ---- 9. login attempts ----------------------------------------------------------------------------


def test_parallel_wrong_passwords_are_limited_before_they_are_checked(live, tmp_path):
    running, services = _server(
        live, tmp_path, users={"alice": "wonderland"}, login_attempts_per_minute=3
    )

    start = threading.Barrier(16)

    def attempt(i: int) -> int:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            c.get("/login")  # connected before the race starts
            start.wait()
            return c.post(
                "/login", data={"username": "alice", "password": f"guess-{i}"}
            ).status_code

    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(attempt, range(16)))
    finally:
        _stop(running, services)
    assert codes.count(401) <= 3, codes  # the limit is 3 a minute
    assert codes.count(429) >= 13, codes


def test_failed_logins_are_limited_per_account_name_too(tmp_path):
    identity = Identity(
        load_secret(tmp_path), users={"alice": "wonderland"}, login_attempts_per_minute=3
    )
    outcomes = []
    for i in range(8):  # a botnet: every guess from another address
        try:
            identity.login("alice", f"guess-{i}", client=f"10.0.0.{i}")
            outcomes.append("ok")
        except BusyError:
            outcomes.append("busy")
        except ValueError:
            outcomes.append("wrong")
    assert outcomes.count("wrong") <= 3 and outcomes[-1] == "busy"
    # another account is not locked by alice's attackers
    with pytest.raises(ValueError):
        identity.login("bob", "guess", client="10.0.1.1")


def test_the_admin_api_limits_wrong_tokens(live, tmp_path):
    running, services = _server(live, tmp_path, admin=True, login_attempts_per_minute=3)
    try:
        with running.client() as c:
            codes = [
                c.get("/admin/overview", headers=auth(f"guess-{i}")).status_code for i in range(6)
            ]
            assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}
            refused = c.get("/admin/overview", headers=auth(ADMIN_TOKEN))
            assert refused.status_code == 429 and "wait" in refused.json()["detail"]
    finally:
        _stop(running, services)


def test_every_operator_door_shares_one_token_attempt_limit(live, tmp_path):
    # The admin token opens the admin API's routes (documents and review included) and the
    # console's login: guesses through any of them count against one limit per address, so
    # spreading them over the doors does not multiply the guessing rate.
    running, services = _server(live, tmp_path, admin=True, login_attempts_per_minute=3)
    try:
        with running.client() as c:
            codes = [
                c.get("/admin/documents", headers=auth("guess-1")).status_code,
                c.get("/admin/feedback", headers=auth("guess-2")).status_code,
                c.post("/operator/login", data={"token": "guess-3"}).status_code,
                c.get("/admin/cycles/x", headers=auth("guess-4")).status_code,
                c.post("/operator/login", data={"token": "guess-5"}).status_code,
                c.get("/admin/overview", headers=auth(ADMIN_TOKEN)).status_code,
            ]
        assert codes == [401, 401, 401, 429, 429, 429], codes
    finally:
        _stop(running, services)


def test_a_short_admin_token_is_refused_at_start():
    from assistant.http.operator_auth import OperatorAuth

    with pytest.raises(ConfigError, match="32"):
        OperatorAuth("s3cret")


# ---- 10. concurrent streams and limiter memory -------------------------------------------------


def test_concurrent_streams_per_user_are_limited(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    limit = services.cfg.server.max_streams_per_user
    handles = [services.chat.ask(user, f"stream {i}") for i in range(limit)]
    try:
        r = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(ALICE),
            timeout=60,
            json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
        )
        assert r.status_code == 429, r.text
        assert f"{limit} answers at once" in r.json()["error"]["message"]
        other = httpx.post(
            live.url + "/v1/chat/completions",
            headers=auth(API_KEYS[1]),
            timeout=60,
            json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
        )
        assert other.status_code == 200
    finally:
        for h in handles:
            services.finish_turn(h, "api")
    again = httpx.post(
        live.url + "/v1/chat/completions",
        headers=auth(ALICE),
        timeout=60,
        json={"model": "base", "messages": MESSAGES, "max_tokens": 2},
    )
    assert again.status_code == 200, again.text


def test_a_stream_the_client_abandons_releases_its_slot(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    released = threading.Event()
    with httpx.Client(base_url=live.url, headers=auth(ALICE), timeout=60) as http:
        for _ in range(services.cfg.server.max_streams_per_user + 2):
            with http.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "base", "stream": True, "messages": MESSAGES},
            ) as r:
                assert r.status_code == 200
                next(r.iter_lines())  # read one event, then hang up
            for _ in range(400):  # the server notices the hang-up and cleans up
                if services.chat.streams.active(user) == 0:
                    break
                released.wait(0.05)
            assert services.chat.streams.active(user) == 0
        r = http.post("/v1/chat/completions", json={"model": "base", "messages": MESSAGES})
        assert r.status_code == 200


def test_limiter_state_forgets_idle_identities():
    now = [0.0]
    limiter = RateLimiter(5, clock=lambda: now[0])
    for i in range(10_000):
        limiter.check(f"anon-{i}")
    assert len(limiter) == 10_000
    now[0] += 61
    limiter.check("anon-new")
    assert len(limiter) == 1
    from assistant.http.limits import ConcurrencyLimiter

    streams = ConcurrencyLimiter(2)
    for i in range(1000):
        streams.acquire(f"u{i}")
        streams.release(f"u{i}")
    assert len(streams) == 0


# ---- beyond the list: Gradio's JSON routes echo undecodable input in their errors -----------------


@pytest.mark.parametrize(
    "path", ["/gradio_api/queue/join", "/gradio_api/cancel", "/console/gradio_api/queue/join"]
)
@pytest.mark.parametrize(
    "content",
    [
        b"\x80",
        b'{"data": ["\xe9"], "fn_index": 0}',
        b'{"data": ["\\ud800"], "fn_index": 0}',
        b"[" * 5000,
        b'{"seed": 1e999}',  # parses as infinity, which Gradio answered with a 500
    ],
)
def test_gradio_json_routes_answer_undecodable_bodies_with_a_4xx(anon, path, content):
    for content_type in ("application/json", "text/plain", "x"):
        r = httpx.post(anon.url + path, content=content, headers={"Content-Type": content_type})
        assert 400 <= r.status_code < 500, (content_type, r.status_code, r.text[:200])


def test_deeply_nested_json_is_a_400(live):
    r = httpx.post(
        live.url + "/v1/chat/completions",
        content=b"[" * 100_000,
        headers={**auth(ALICE), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_many_user_messages_are_joined_without_quadratic_cost(live):
    many = [{"role": "user", "content": "x"}] * 1001
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=auth(ALICE),
        timeout=60,
        json={"model": "base", "messages": many},
    )
    assert r.status_code == 400 and "'messages'" in r.json()["error"]["message"]


def test_new_anonymous_api_callers_are_limited_per_address(live, tmp_path):
    """Fresh identities are free, so minting them is limited per address: keyless calls from
    one address share the per-user message rate, and a caller with its key is unaffected."""
    running, services = _server(live, tmp_path, rate_limit_per_minute=3)
    try:
        with running.client() as c:
            first = c.get("/v1/models")
            key = first.headers["x-api-key"]
            codes = [c.get("/v1/models").status_code for _ in range(4)]
            assert codes[:2] == [200, 200] and codes[-1] == 429, codes
            assert "new anonymous API callers" in c.get("/v1/models").json()["error"]["message"]
            assert c.get("/v1/models", headers=auth(key)).status_code == 200
    finally:
        _stop(running, services)


def test_a_cancelled_turn_that_nobody_reads_is_still_completed(live, services):
    """A page that cancels before reading any of its answer (closed at once) must not keep the
    user's stream slot or leave the turn pending."""
    user = "api:" + __import__("hashlib").sha256(API_KEYS[1].encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "cancelled before it was read")
    handle.cancel()
    waited = threading.Event()
    for _ in range(400):
        if services.chat.streams.active(user) == 0:
            break
        waited.wait(0.05)
    assert services.chat.streams.active(user) == 0
    (turn,) = logs.conversation_turns(services.db, handle.conversation_id, user)
    assert turn.finish_reason != "pending" and turn.question == "cancelled before it was read"


def test_an_answer_still_being_written_cannot_be_rated(live, services):
    user = "api:" + __import__("hashlib").sha256(ALICE.encode()).hexdigest()[:16]
    handle = services.chat.ask(user, "rate me too early")
    try:
        r = httpx.post(
            live.url + "/v1/feedback", headers=auth(ALICE), json={"id": handle.id, "rating": "up"}
        )
        assert r.status_code == 400 and "still being written" in r.json()["error"]["message"]
    finally:
        services.finish_turn(handle, "api")
    r = httpx.post(
        live.url + "/v1/feedback", headers=auth(ALICE), json={"id": handle.id, "rating": "up"}
    )
    assert r.status_code == 200, r.text
