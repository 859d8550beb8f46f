"""Parsing and checking /v1 request bodies: JSON text only, every field typed and ranged, errors
in OpenAI's shape (ApiError) naming the field and what to send instead."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from errors import (
    AdapterError,
    AssistantError,
    BusyError,
    InputError,
    ModelError,
    NotFoundError,
    StoreError,
)

MAX_API_MESSAGES = 1000
"""Most messages one chat request may carry (the prompt keeps only the latest turns anyway)."""
MAX_STOP_SEQUENCES = 4
MAX_FIELD_CHARS = 256
"""Longest short text field (model name, ids, stop sequences) looked at."""
IGNORED_NUMBERS = {"presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0)}
"""OpenAI sampling fields accepted for compatibility (range-checked, no effect here)."""


class ApiError(Exception):
    """An OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": None,
                }
            },
            status_code=self.status,
            headers=headers,
        )


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
    """The request body as a JSON object of valid text (its size is limited by the
    BodyLimitMiddleware before it is read)."""
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400,
            f"the request body is not valid JSON ({str(exc)[:200]}): send a "
            "JSON object with Content-Type: application/json",
        ) from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _check_strings(data, "body")
    return data


def _check_strings(value: Any, where: str, depth: int = 0) -> None:
    """Refuse lone surrogates (JSON escapes like \\ud800 that are not text) anywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400,
                f"{where[:120]} is not valid text (it holds a lone surrogate "
                "character): fix its encoding",
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k, f"{where} key")
            _check_strings(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{where}[{i}]", depth + 1)


def opt_field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """`data[name]` when present and of type `kind` (bools are not numbers), else None or a 400."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ApiError(400, f"'{name}' must be {what}, not {json.dumps(value)[:80]}")
    return value


def number_field(data: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    """An optional finite number in lo..hi, else a 400 naming the field and the range."""
    value = opt_field(data, name, (int, float), "a number")
    if value is not None and (
        isinstance(value, float) and not math.isfinite(value) or not lo <= value <= hi
    ):
        raise ApiError(400, f"'{name}' = {json.dumps(value)[:40]} is out of range: use {lo}..{hi}")
    return value


def int_field(data: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    """An optional integer in lo..hi, else a 400 naming the field and the range."""
    value = opt_field(data, name, int, "an integer")
    if value is not None and not lo <= value <= hi:
        raise ApiError(
            400, f"'{name}' = {str(value)[:40]} is out of range: use an integer in {lo}..{hi}"
        )
    return value


def quoted(value: Any) -> str:
    """A caller's value quoted in an error message, cut short."""
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:MAX_FIELD_CHARS]) + ("..." if len(text) > MAX_FIELD_CHARS else "")


def check_ignored_fields(data: dict[str, Any]) -> None:
    """The OpenAI fields accepted without effect still get their types and ranges checked."""
    for name, (lo, hi) in IGNORED_NUMBERS.items():
        number_field(data, name, lo, hi)
    if opt_field(data, "logprobs", bool, "true or false"):
        raise ApiError(400, "'logprobs' is not supported: leave it out or set it to false")
    if int_field(data, "top_logprobs", 0, 20):
        raise ApiError(400, "'top_logprobs' is not supported: leave it out")
    bias = opt_field(data, "logit_bias", dict, "an object of token id -> bias") or {}
    if len(bias) > 300 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and -100 <= v <= 100
        for v in bias.values()
    ):
        raise ApiError(400, "'logit_bias' must map at most 300 token ids to numbers in -100..100")
    stop = data.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else None
    if stop is not None and (
        stops is None
        or len(stops) > MAX_STOP_SEQUENCES
        or not all(isinstance(x, str) and len(x) <= MAX_FIELD_CHARS for x in stops)
    ):
        raise ApiError(
            400,
            f"'stop' must be a string or a list of at most "
            f"{MAX_STOP_SEQUENCES} strings of up to {MAX_FIELD_CHARS} "
            "characters",
        )
    options = opt_field(data, "stream_options", dict, "an object") or {}
    if not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "'stream_options.include_usage' must be true or false")


def text_content(content: Any, where: str) -> str:
    """A message's content: a string, or the text of a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ApiError(
                    400,
                    f"{where}: only text content parts are supported "
                    "({'type': 'text', 'text': '...'})",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts")


def parse_messages(data: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(the last user message, earlier (question, answer) pairs) of a chat request."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects")
    if len(messages) > MAX_API_MESSAGES:
        raise ApiError(
            400,
            f"'messages' has {len(messages):,} messages; the limit is "
            f"{MAX_API_MESSAGES:,}: send only the recent ones",
        )
    turns: list[tuple[str, str]] = []
    pending: list[str] | None = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'")
        role, text = m["role"], text_content(m.get("content"), f"messages[{i}]")
        if role == "user":  # consecutive user messages are one question (joined once)
            pending = [text] if pending is None else pending + [text]
        elif role == "assistant":
            if pending is not None:
                turns.append(("\n\n".join(pending), text))
                pending = None
        elif role not in ("system", "developer", "tool"):
            raise ApiError(
                400,
                f"messages[{i}].role {quoted(role)} is unknown: use 'system', "
                "'user' or 'assistant'",
            )
    if pending is None:
        raise ApiError(400, "the last message must come from the user: it is the question")
    return "\n\n".join(pending), turns
