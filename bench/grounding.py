"""Retrieval for bench/loop.py (`--top-k K`): the bundled guide (docs/guide) ingested into a
Milvus Lite file under the bench's data dir and searched per prompt as the chat searches it
(retrieval.* settings, score threshold included), so answers are drawn, logged, rated and
trained on with the numbered passages a user of `make run` would get. With top_k 0 (the
bench's default) every prompt gets the plain system prompt."""

from __future__ import annotations

from collections.abc import Sequence

from config import Config
from core.domain import ServedPassage
from core.prompts import Message, build_messages


def grounded(
    cfg: Config, prompts: Sequence[str]
) -> list[tuple[list[Message], list[ServedPassage]]]:
    """Per prompt, the served chat messages and the passages in them (none when retrieval is
    off or nothing scores above retrieval.score_threshold)."""
    if cfg.retrieval.top_k == 0 or not prompts:
        return [(build_messages(q), []) for q in prompts]
    from assistant.retrieval.ingest import ensure_sample_docs
    from assistant.retrieval.retriever import open_retriever

    with open_retriever(cfg) as retriever:
        ensure_sample_docs(retriever)
        found = [retriever.search(q) for q in prompts]
    return [(build_messages(q, passages=p), p) for q, p in zip(prompts, found, strict=True)]


def cited_share(grounding: Sequence[tuple[list[Message], list[ServedPassage]]]) -> float:
    """Share of the prompts that were given at least one passage."""
    return sum(bool(p) for _, p in grounding) / len(grounding) if grounding else 0.0
