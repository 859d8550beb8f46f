"""Property-based fuzzing of a live server (issue 14): schemathesis drives the published OpenAPI
document of /v1 and /admin with valid and invalid requests, and a hypothesis pass throws random
cookies, random headers and invalid UTF-8 bodies at every kind of route. Zero 5xx allowed.

Bounded: a fixed number of examples per operation (derandomized, no shrinking database), on the
tiny model with 12-token answers, against a server this module starts and stops itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import config as config_mod
from tests.assistant.conftest import RunningServer, run_server, server_config

TOKEN_ENV = "TEST_FUZZ_ADMIN_TOKEN"
TOKEN = "fuzz-admin-token-0123456789-abcdefghijkl"
EXAMPLES_PER_OPERATION = 30
RAW_EXAMPLES = 120


@pytest.fixture(scope="module")
def fuzz_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The whole server (anonymous API, admin API and console attached, scheduler off) on the
    tiny model, on a free loopback port; stopped when the module ends."""
    from assistant.turns.service import build_services
    from training.loop.operator import attach_learning_loop

    os.environ[TOKEN_ENV] = TOKEN
    cfg = server_config(
        tmp_path_factory.mktemp("fuzz") / "data",
        tiny_model_dir,
        admin_token_env=TOKEN_ENV,
        login_attempts_per_minute=1000,
    )
    cfg = config_mod.with_overrides(cfg, schedule={"enabled": False})
    services = build_services(cfg)
    attach_learning_loop(services)
    running = run_server(services)
    yield running
    running.stop()
    services.close()
    os.environ.pop(TOKEN_ENV, None)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: RunningServer):  # noqa: ANN201
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=EXAMPLES_PER_OPERATION,
        deterministic=True,
        no_shrink=True,
        database="none",
    )
    return schema


def test_the_openapi_document_covers_v1_and_admin(fuzz_server):
    doc = httpx.get(fuzz_server.url + "/openapi.json").json()
    paths = set(doc["paths"])
    assert {
        "/v1/chat/completions",
        "/v1/feedback",
        "/v1/models",
        "/v1/conversations",
        "/admin/overview",
        "/admin/actions/{action}",
    } <= paths
    assert all(p.startswith(("/v1/", "/admin/")) for p in paths)
    seed = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["seed"]
    assert "maximum" in str(seed)  # ranges are part of the document


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_the_schema_describes_gets_a_5xx(api_schema, mode):
    """Every operation of the document, EXAMPLES_PER_OPERATION requests each: valid ones
    (positive) and ones that break the schema (negative: wrong types, out-of-range numbers,
    missing fields). The admin routes get the real token so the fuzz reaches their code."""
    failures: list[tuple[object, ...]] = []
    calls = [0]
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            admin = case.path.startswith("/admin")
            response = case.call(
                headers={"Authorization": f"Bearer {TOKEN}"} if admin else None, timeout=60
            )
            calls[0] += 1
            if response.status_code >= 500:
                failures.append(
                    (
                        case.method,
                        case.formatted_path,
                        case.body,
                        response.status_code,
                        response.text[:300],
                    )
                )

        try:
            call()
        except Unsatisfiable:  # nothing to break (e.g. GET /v1/models has no parameters)
            assert mode == GenerationMode.NEGATIVE
    assert calls[0] >= EXAMPLES_PER_OPERATION  # the fuzz really ran
    assert not failures, failures[:5]


# ---- random cookies, random headers, invalid UTF-8 ------------------------------------------------

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/models"),
    ("GET", "/v1/conversations"),
    ("GET", "/v1/conversations/x"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/config"),
    ("POST", "/login"),
    ("GET", "/login"),
    ("POST", "/operator/login"),
    ("GET", "/admin/overview"),
    ("POST", "/admin/actions/pause"),
    ("POST", "/gradio_api/queue/join"),
    ("GET", "/gradio_api/queue/data"),
    ("POST", "/gradio_api/cancel"),
    ("GET", "/gradio_api/info"),
    ("GET", "/console/"),
    ("GET", "/openapi.json"),
]
HEADER_NAMES = [
    "cookie",
    "authorization",
    "content-type",
    "accept",
    "user-agent",
    "x-api-key",
    "accept-language",
    "x-forwarded-for",
    "origin",
    "referer",
    "range",
    "if-none-match",
    "accept-encoding",
    "x-gradio-user",
]

# What HTTP/1.1 lets through on the wire: no CR, LF or NUL, no outer whitespace.
header_bytes = st.binary(min_size=1, max_size=300).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F or c == 9).strip() or b"x"
)
cookies = st.one_of(
    header_bytes,
    st.builds(
        lambda name, value: name + b"=" + value,
        st.sampled_from([b"assistant_id", b"operator_session", b"\xe9"]),
        header_bytes,
    ),
    st.builds(lambda v: b'assistant_id="anon-' + v + b'.x"', header_bytes),
)
bodies = st.one_of(
    st.binary(max_size=2000),  # mostly invalid UTF-8
    st.builds(
        lambda raw: b'{"messages": [{"role": "user", "content": "' + raw + b'"}]}',
        st.binary(max_size=200),
    ),
    st.builds(
        lambda raw: b'{"data": ["' + raw + b'"], "fn_index": 0, "session_hash": "s"}',
        st.binary(max_size=200),
    ),
    st.just(b'{"reason": "\\ud800"}'),
    st.just(b"[" * 5000),
    st.just(b'{"seed": 1e999}'),
)


@given(
    route=st.sampled_from(ROUTES),
    cookie=cookies,
    body=bodies,
    extra=st.dictionaries(st.sampled_from(HEADER_NAMES), header_bytes, max_size=4),
    content_type=st.sampled_from(
        [
            b"application/json",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"text/plain",
            b"\xff",
        ]
    ),
)
@settings(
    max_examples=RAW_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_random_cookies_headers_and_bytes_never_get_a_5xx(
    fuzz_server, route, cookie, body, extra, content_type
):
    method, path = route
    headers = {"content-type": content_type, **extra, "cookie": cookie}
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as http:
        r = http.request(method, path, headers=headers, content=body if method == "POST" else None)
    assert r.status_code < 500, (method, path, headers, body[:200], r.status_code, r.text[:300])
