"""The HTTP edge under attack (issue 14), malformed input: odd numbers, garbage cookies and
headers, malformed, oversized and never-ending bodies, undecodable and deeply nested JSON.
Identities, logins, limits and turns under attack: test_edge_sessions.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

import config as config_mod
from assistant.http.identity import COOKIE
from tests.assistant.edge_servers import (
    ADMIN_TOKEN,
    ALICE,
    MESSAGES,
    anon,
    auth,
    logins,
)

__all__ = ["anon", "logins"]  # module-scoped fixtures: one server each for this file


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
