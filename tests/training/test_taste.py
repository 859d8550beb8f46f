"""The taste model learns a visible preference from votes (and finds none in coin flips),
preference pairs are found where a dataset holds them, and synthetic examples round-trip
through the one dataset schema."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from errors import TrainingError
from tests.training.conftest import THINGS, example, write_dataset
from training.dataset.pairs import preference_pairs
from training.dataset.schema import Example, load_dataset, write_examples
from training.taste.distill import _surest, untrusted
from training.taste.features import FEATURE_NAMES, answer_features
from training.taste.model import TasteModel, _fit_logistic, auc, fit_taste
from training.validate.taste_gate import paired_interval, taste_verdict

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench import raters  # noqa: E402


def _answers(n: int, seed: int) -> list[tuple[str, str]]:
    """Answers of every length, complete or cut off, to varied questions."""
    rng = random.Random(seed)
    words = "the a water light energy plant sun cell grows makes because and of".split()
    out = []
    for i in range(n):
        length = rng.choice([8, 15, 25, 40, 60, 90, 120])
        text = " ".join(rng.choice(words) for _ in range(length))
        text = text.capitalize() + ("." if rng.random() < 0.6 else "")
        out.append((f"What is {THINGS[i % len(THINGS)]}?", text))
    return out


def test_auc_counts_ranking_and_ties():
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auc([0.1, 0.9], [1, 0]) == 0.0
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    assert auc([0.3, 0.4], [1, 1]) is None


def test_the_taste_model_learns_a_length_preference_and_predicts_it_on_new_answers():
    train = [(q, a) for q, a in _answers(160, 0) if raters.brevity(q, a)]
    labels = [int(raters.brevity(q, a) == "up") for q, a in train]
    model = fit_taste(train, labels, None, seed=0)
    assert model.cv_auc is not None and model.cv_auc > 0.9
    fresh = [(q, a) for q, a in _answers(80, 1) if raters.brevity(q, a)]
    truth = [int(raters.brevity(q, a) == "up") for q, a in fresh]
    assert auc(model.predict(fresh, None).tolist(), truth) > 0.9


def test_coin_flip_votes_give_a_taste_model_near_chance():
    pairs = _answers(160, 2)
    labels = [int(raters.random_rater(q, a) == "up") for q, a in pairs]
    model = fit_taste(pairs, labels, None, seed=0)
    assert model.cv_auc < 0.65  # below taste.min_cv_auc: not used, the gate refuses


def test_coin_flips_that_clear_the_auc_floor_by_chance_are_rarely_trusted(cfg):
    """Few votes, many features (the embeddings): choosing the feature set and penalty by
    cross-validation lets coin-flip vote sets clear the AUC floor (measured: 4 of 30 sets on 40
    answers); the permutation test (the whole search again on shuffled votes) trusts at most
    the 1 in 100 it allows, and still trusts a real preference on the same answers."""
    from tests.assistant.test_retrieval import shared_embedder

    embedder = shared_embedder()
    pairs = _answers(40, 4)
    rng = np.random.default_rng(3)
    cleared_floor, trusted = 0, 0
    for _ in range(30):
        coin = rng.integers(0, 2, len(pairs)).tolist()
        if fit_taste(pairs, coin, embedder, seed=0).cv_auc >= cfg.taste.min_cv_auc:
            cleared_floor += 1
            model = fit_taste(pairs, coin, embedder, seed=0, permutations=99)
            trusted += untrusted(cfg, model) is None
    assert cleared_floor >= 3, "too few coin-flip sets cleared the floor: the test shows nothing"
    assert trusted <= 1
    brevity = [int(raters.brevity(q, a) == "up") for q, a in pairs]
    liked = fit_taste(pairs, brevity, embedder, seed=0, permutations=99)
    assert liked.p_value == pytest.approx(0.01) and untrusted(cfg, liked) is None
    assert liked.embedder is None  # length is plain in the cheap features alone


def test_the_fit_in_the_space_of_the_votes_is_the_optimum():
    """More features than votes (the embeddings), fitted through the Gram matrix: the gradient
    of the balanced, penalised log-loss vanishes at the weights and bias it returns."""
    rng = np.random.default_rng(0)
    for n, d in ((86, 397), (200, 13)):  # the Gram-matrix path and the direct one
        x = rng.normal(size=(n, d))
        y = (rng.random(n) < 0.3).astype(float)
        x[:, 0] += y
        sw = np.where(y == 1, n / (2 * y.sum()), n / (2 * (n - y.sum())))
        for penalty in (0.26, 26.0):
            w = _fit_logistic(x, y, penalty)
            p = 1 / (1 + np.exp(-(x @ w[:-1] + w[-1])))
            residual = sw * (p - y)
            assert np.abs(x.T @ residual + penalty * w[:-1]).max() < 1e-6
            assert abs(residual.sum() + 1e-6 * w[-1]) < 1e-6


def test_a_taste_model_needs_both_kinds_of_votes_and_round_trips(tmp_path):
    pairs = _answers(20, 3)
    with pytest.raises(TrainingError, match="both 👍 and 👎"):
        fit_taste(pairs, [1] * 20, None)
    labels = [int(raters.brevity(q, a) == "up") for q, a in pairs]
    model = fit_taste(pairs, labels, None)
    again = TasteModel.load(model.save(tmp_path / "taste.json"))
    assert again.predict(pairs, None).tolist() == pytest.approx(model.predict(pairs, None).tolist())
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TrainingError, match="not a taste model"):
        TasteModel.load(tmp_path / "bad.json")


def test_cheap_features_see_length_structure_citations_and_summary():
    f = dict(
        zip(
            FEATURE_NAMES,
            answer_features("Q?", "Bees make honey [1].\nIn short, bees are busy."),
            strict=True,
        )
    )
    assert f["complete"] == 1 and f["citations"] > 0 and f["closing_summary"] == 1
    g = dict(zip(FEATURE_NAMES, answer_features("Q?", "it's " * 120), strict=True))
    assert g["words_over_100"] == 1 and g["complete"] == 0 and g["contractions_per_100w"] > 0


def test_preference_pairs_come_from_shared_turns_and_questions():
    q = example("What is tea?", "Tea is a drink.", n=1)
    rows = [
        Example(**{"voters": 1, **q}),
        Example(**{"voters": 1, **q, "target": "Tea is a long long story", "label": "undesirable"}),
        Example(
            **{
                "voters": 1,
                **example("What is tea?", "A drink made from leaves.", label="undesirable", n=2),
            }
        ),
        Example(**{"voters": 1, **example("What is coffee?", "A drink.", n=3)}),
    ]
    pairs = preference_pairs(rows)
    assert {(p.chosen.target, p.rejected.target, p.origin) for p in pairs} == {
        ("Tea is a drink.", "Tea is a long long story", "same_turn"),
        ("Tea is a drink.", "A drink made from leaves.", "same_question"),
    }


def test_synthetic_examples_round_trip_and_never_sit_in_heldout(tmp_path):
    real = Example(**{"voters": 1, **example("What is tea?", "Tea is a drink.", n=1)})
    synthetic = Example(
        "bon-t1", "c1", real.messages, "Tea: a drink.", "desirable", "train", 0, True
    )
    manifest = write_examples(
        [real, synthetic], tmp_path / "ds", dataset_id="ds", source={"test": True}
    )
    assert manifest.format_version == 2
    loaded = load_dataset(tmp_path / "ds")
    assert [e.synthetic for e in loaded.train] == [False, True]
    plain = write_dataset(tmp_path / "plain", [example("Q?", "A.")], [])
    assert json.loads((plain / "manifest.json").read_text())["format_version"] == 1
    bad = Example("bon-t2", "c2", real.messages, "x", "desirable", "heldout", 0, True)
    write_examples([real, bad], tmp_path / "bad", dataset_id="bad", source={})
    with pytest.raises(TrainingError, match="synthetic example in the 'heldout' split"):
        load_dataset(tmp_path / "bad")


def test_sentence_prefixes_are_shorter_cuts_at_sentence_ends():
    from training.taste.distill import sentence_prefixes

    assert sentence_prefixes("One. Two! Three? Four. Five") == [
        "One.",
        "One. Two!",
        "One. Two! Three?",
    ]
    assert sentence_prefixes("Only one sentence.") == []


def test_paired_interval_excludes_zero_only_for_a_real_difference():
    mean, low, high = paired_interval([1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 10)
    assert mean == pytest.approx(0.7) and low > 0
    mean, low, high = paired_interval([1, -1] * 50)
    assert mean == 0 and low < 0 < high


def test_every_shipped_rater_has_a_visible_preference():
    short, long_cut = "Bees make honey.", "Bees " * 90
    assert raters.brevity("q", short) == "up" and raters.brevity("q", long_cut) == "down"
    assert raters.contrarian("q", short) == "down" and raters.contrarian("q", long_cut) == "up"
    assert raters.one_liner("q", short) == "up"
    assert raters.one_liner("q", "One. Two. Three.") == "down"
    assert raters.summary_line("q", "Bees fly.\nIn short, bees fly.") == "up"
    assert raters.summary_line("q", short) == "down"
    assert raters.cites_sources("q", "Bees make honey [1].") == "up"
    assert raters.cites_sources("q", short) == "down"
    formal = (
        "The honey bee is an insect that produces honey and pollinates many of the "
        "flowering plants that people grow for food."
    )
    assert raters.formal("q", formal) == "up"
    assert raters.formal("q", "Bees don't sleep, it's awesome!") == "down"
    assert raters.detailed("q", short) == "down"
    votes = [raters.random_rater(f"q{i}", short) for i in range(200)]
    assert 70 < votes.count("up") < 130


def test_the_best_candidate_is_chosen_among_those_the_model_was_surest_of():
    # (P(👍), answer, mean token log-probability): the liked answer the model was unsure of
    # (a wrong fact sampled at 0.9) loses to a liked one it was sure of.
    cands = [
        (0.9, "The capital of Germany is Germany.", -3.1),
        (0.8, "The capital of Germany is Berlin.", -0.5),
        (0.1, "Germany is a country in central Europe whose capital city is Berlin.", -0.4),
        (0.2, "Germany's capital, as everyone knows, was moved to", -2.0),
    ]
    assert max(_surest(cands, 0.5), key=lambda c: c[0])[1].endswith("Berlin.")
    assert max(_surest(cands, 0.0), key=lambda c: c[0])[1].endswith("Germany.")
    assert len(_surest(cands[:1], 0.9)) == 1  # one candidate is always left


def test_the_taste_gate_passes_a_gain_only_when_its_interval_is_above_zero():
    assert taste_verdict(0.45, 0.34, 0.05) == "passed"
    # the contrarian rater's candidate: the mean cleared the margin, the interval did not
    assert taste_verdict(0.066, -0.076, 0.05) == "failed"
    assert taste_verdict(0.03, 0.01, 0.05) == "failed"  # sure, but too small
    assert taste_verdict(0.0, 0.0, 0.0) == "failed"
