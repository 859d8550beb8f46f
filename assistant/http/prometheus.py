"""Prometheus metrics of the serving path: requests, latency, time to first token, tokens,
ratings and errors, labelled by where a turn came from (ui/api), its arm and adapter version.

One `Metrics` object per server (its own registry), so tests can build several apps."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from assistant.generation.worker import StreamResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    """The counters and histograms the server updates; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "assistant_http_requests_total",
            "HTTP requests by route group and status code.",
            ["route", "status"],
            registry=r,
        )
        self.turns = Counter(
            "assistant_turns_total",
            "Answered turns.",
            ["source", "arm", "adapter", "finish_reason"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "assistant_turn_seconds",
            "Time to the full answer.",
            ["source", "arm"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "assistant_time_to_first_token_seconds",
            "Time to the first answer token.",
            ["source", "arm"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "assistant_prompt_tokens_total", "Prompt tokens.", ["arm"], registry=r
        )
        self.completion_tokens = Counter(
            "assistant_completion_tokens_total", "Generated tokens.", ["arm"], registry=r
        )
        self.ratings = Counter(
            "assistant_ratings_total",
            "Votes given, by rating, arm and adapter version.",
            ["rating", "arm", "adapter"],
            registry=r,
        )
        self.errors = Counter(
            "assistant_errors_total",
            "Requests refused or failed, by kind.",
            ["source", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "assistant_turns_in_flight", "Answers being generated now.", registry=r
        )

    def turn(self, source: str, arm: str, version: int, result: StreamResult) -> None:
        """Record one finished turn."""
        self.turns.labels(source, arm, f"v{version}", result.finish_reason).inc()
        self.turn_latency.labels(source, arm).observe(result.total_s)
        if result.ttft_s is not None:
            self.ttft.labels(source, arm).observe(result.ttft_s)
        self.prompt_tokens.labels(arm).inc(result.prompt_tokens)
        self.completion_tokens.labels(arm).inc(result.completion_tokens)
        if result.error:
            self.errors.labels(source, "generation").inc()

    def rating(self, rating: str | None, arm: str, version: int) -> None:
        self.ratings.labels(rating or "withdrawn", arm, f"v{version}").inc()

    def error(self, source: str, kind: str) -> None:
        self.errors.labels(source, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
