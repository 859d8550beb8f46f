"""bench/loop.py's simulated users: a summary_line or cites_sources user's corrected answer is
one that user likes, only the asked share of 👎 voters types one (the coin is fixed per turn),
and --top-k answers from the bundled guide's passages."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench import raters  # noqa: E402
from bench.loop import correction_of  # noqa: E402

ANSWER = "Paris is the capital of France. It is known for the Eiffel Tower and its long"


def test_a_summary_line_users_correction_is_an_answer_they_like():
    assert raters.summary_line("q", ANSWER) == "down"
    fixed = raters.summary_correction("q", ANSWER)
    assert fixed is not None and raters.summary_line("q", fixed) == "up"
    assert "and its long" not in fixed  # the cut-off sentence is not kept
    assert raters.summary_correction("q", "no sentence ends here") is None


def test_a_cites_sources_users_correction_cites_the_first_passage():
    assert raters.cites_sources("q", ANSWER) == "down"
    fixed = raters.cites_correction("q", ANSWER)
    assert fixed == "Paris is the capital of France [1]."
    assert raters.cites_sources("q", fixed) == "up"
    assert raters.cites_correction("q", fixed) is None  # already cites: nothing to correct
    assert raters.cites_correction("q", "no sentence ends here") is None


def test_only_the_asked_share_of_down_voters_types_a_correction():
    turns = [f"turn-{i}" for i in range(400)]
    given = [correction_of(raters.summary_line, "q", ANSWER, t, 0.25) for t in turns]
    assert 70 <= sum(g is not None for g in given) <= 130
    assert given == [correction_of(raters.summary_line, "q", ANSWER, t, 0.25) for t in turns]
    assert all(correction_of(raters.summary_line, "q", ANSWER, t, 0.0) is None for t in turns)
    assert all(correction_of(raters.brevity, "q", ANSWER, t, 1.0) is None for t in turns)


def test_the_bench_answers_from_the_guides_passages_when_asked(tmp_path):
    from bench.grounding import cited_share, grounded
    from bench.loop import bench_config

    questions = ["How do I roll back a bad adapter?", "Tell me about penguins."]
    plain = grounded(bench_config(tmp_path / "off", 32, {}), questions)
    assert all(p == [] and "Passages" not in m[0]["content"] for m, p in plain)
    cfg = bench_config(tmp_path / "on", 32, {"retrieval": {"top_k": 2}})
    (messages, passages), (_, none) = grounded(cfg, questions)
    assert len(passages) == 2 and all(p.source.startswith("guide/") for p in passages)
    assert "[1] (guide/" in messages[0]["content"] and messages[-1]["content"] == questions[0]
    assert none == []  # nothing in the guide scores above the threshold for penguins
    assert cited_share([(messages, passages), (messages, none)]) == 0.5
