"""The published OpenAPI document (`GET /openapi.json`) of the `/v1` and `/admin` routes.

The /v1 routes parse their bodies themselves (OpenAI-style errors, see assistant/http/api.py);
the models here document those bodies, with the same types and ranges the routes check, so
clients and the fuzz test (tests/assistant/test_fuzz.py) can be generated from the document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from assistant.generation.worker import MAX_SEED

PUBLISHED = ("/v1/", "/admin/")
REF = "#/components/schemas/{model}"


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions: OpenAI's request, plus `conversation_id` to continue a stored
    conversation. The last message is the question; it must come from the user."""

    model_config = ConfigDict(extra="allow")
    model: Literal["assistant", "production", "canary", "base"] = "assistant"
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.01, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, description="at most model.max_new_tokens")
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="at most model.max_new_tokens"
    )
    n: int | None = Field(default=None, ge=1, le=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = Field(default=None)
    conversation_id: str | None = Field(default=None, max_length=256)
    user: str | None = Field(default=None, description="accepted, never an identity")


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: rate (or withdraw, rating null) an answer you were given."""

    id: str = Field(min_length=1, max_length=256, description="the completion id")
    rating: Literal["up", "down"] | None
    comment: str | None = Field(default=None, max_length=5000)
    correction: str | None = Field(default=None, max_length=200_000)


BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/feedback": FeedbackRequest,
}


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that parses `model`'s body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def openapi_document(app: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's /v1 and /admin routes, with the bodies above."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(
        title="Assistant API",
        version="1",
        routes=app.routes,
        description="OpenAI-compatible chat API and the operator's admin API. "
        "/admin needs 'Authorization: Bearer <admin token>'.",
    )
    doc["paths"] = {p: v for p, v in doc.get("paths", {}).items() if p.startswith(PUBLISHED)}
    _, defs = models_json_schema([(m, "validation") for m in BODIES.values()], ref_template=REF)
    doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    return doc
