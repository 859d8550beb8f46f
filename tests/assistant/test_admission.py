"""Admission to the model worker is exception-safe: a request that fails to start releases its
queue slot, so odd requests can never fill the queue and lock every user out (issue 14, #1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.generation.worker import Generator, SamplingParams
from core.base_model import load_model
from core.prompts import build_messages, encode_prompt
from errors import BusyError

SHORT = SamplingParams(max_new_tokens=3, temperature=1.0, seed=1)


@pytest.fixture
def small_queue(tiny_model_dir: Path):
    loaded = load_model(str(tiny_model_dir), "fp32", "cpu")
    g = Generator(loaded.model, loaded.tokenizer, context_window=512, max_queued=2)
    yield g
    g.close()


def test_a_request_that_fails_admission_releases_its_slot(small_queue):
    ids = encode_prompt(
        small_queue.tokenizer, build_messages("hi"), context_window=512, max_new_tokens=8
    ).input_ids
    for seed in (2**64, -(2**64), 2**70):  # torch refuses these seeds
        with pytest.raises(Exception) as err:
            small_queue.stream(ids, None, SamplingParams(seed=seed))
        assert not isinstance(err.value, BusyError)
    # Every slot is free again: more requests than the queue holds, one after the other.
    for _ in range(4):
        stream = small_queue.stream(ids, None, SHORT)
        stream.text()
        assert stream.wait(60).finish_reason in ("stop", "length")
    assert small_queue.admission()["queued"] == 0
    assert small_queue.admission()["admitting"] is True


def test_a_full_queue_is_reported_as_not_admitting(small_queue):
    ids = encode_prompt(
        small_queue.tokenizer, build_messages("hi"), context_window=512, max_new_tokens=8
    ).input_ids
    streams = [
        small_queue.stream(ids, None, SamplingParams(max_new_tokens=400, seed=2)) for _ in range(2)
    ]
    try:
        state = small_queue.admission()
        assert state["admitting"] is False and state["queued"] == 2
        with pytest.raises(BusyError):
            small_queue.stream(ids, None, SHORT)
    finally:
        for s in streams:
            s.cancel()
            s.wait(60)
    assert small_queue.admission()["admitting"] is True
