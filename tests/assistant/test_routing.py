"""The canary split is sticky, uniform, monotone in the weight and independent across rollouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant.turns.routing import RolloutRoute, bucket, route
from errors import InputError

N = 100_000
IDS = [f"conv-{i}" for i in range(N)]


@pytest.fixture(scope="module")
def buckets() -> np.ndarray:
    return np.array([bucket("rollout-a", c) for c in IDS])


def test_the_same_conversation_always_gets_the_same_arm():
    r = RolloutRoute("rollout-a", 0.25)
    assert [route(c, r) for c in IDS[:2000]] == [route(c, r) for c in IDS[:2000]]


def test_the_split_survives_a_restart():
    # A process-salted hash (Python's hash()) would reshuffle users on every restart; this pins
    # the sha256-based bucket so a change that does is caught.
    assert bucket("rollout-a", "conv-0") == 0.8680409635523151
    assert bucket("rollout-a", "conv-0") != bucket("rollout-b", "conv-0")


def test_raising_the_weight_never_moves_a_canary_conversation_back():
    arms = {
        w: [route(c, RolloutRoute("rollout-a", w)) for c in IDS[:20_000]] for w in (0.05, 0.25, 0.5)
    }
    for low, high in ((0.05, 0.25), (0.25, 0.5)):
        assert all(arms[high][i] == "canary" for i, arm in enumerate(arms[low]) if arm == "canary")


@pytest.mark.parametrize("weight", [0.05, 0.1, 0.25, 0.5])
def test_the_canary_gets_its_share_of_conversations(buckets, weight):
    share = float(np.mean(buckets < weight))
    tolerance = 5 * math.sqrt(weight * (1 - weight) / N)
    print(f"weight {weight:.2f}: canary share {share:.4f} over {N} conversations")
    assert abs(share - weight) < tolerance
    assert sum(route(c, RolloutRoute("rollout-a", weight)) == "canary" for c in IDS[:1000]) == int(
        np.sum(buckets[:1000] < weight)
    )


def test_buckets_are_uniform(buckets):
    counts, _ = np.histogram(buckets, bins=20, range=(0.0, 1.0))
    assert ((buckets >= 0) & (buckets < 1)).all()
    # chi-square with 19 degrees of freedom: 43.8 is its 99.9th percentile
    expected = N / 20
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8


def test_two_rollouts_pick_their_canaries_independently(buckets):
    other = np.array([bucket("rollout-b", c) for c in IDS])
    a, b = buckets < 0.5, other < 0.5
    r = float(np.corrcoef(a, b)[0, 1])
    both = float(np.mean(a & b))
    print(f"assignment correlation between two rollouts: {r:+.4f}; both canary {both:.4f}")
    assert abs(r) < 5 / math.sqrt(N)
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)


def test_weight_zero_one_and_no_rollout():
    assert {route(c, RolloutRoute("r", 0.0)) for c in IDS[:5000]} == {"production"}
    assert {route(c, RolloutRoute("r", 1.0)) for c in IDS[:5000]} == {"canary"}
    assert {route(c, None) for c in IDS[:100]} == {"production"}


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_an_impossible_weight_is_refused(weight):
    with pytest.raises(InputError, match="between 0 and 1"):
        RolloutRoute("r", weight)
    with pytest.raises(InputError, match="rollout_id"):
        RolloutRoute("", 0.5)
