"""The taste (reward) model: L2-regularised logistic regression over the cheap features of
training.taste.features, alone or with frozen sentence embeddings of question and answer,
fitted on the users' 👍/👎 votes with balanced class weights. The feature set and the
regularisation are chosen by stratified k-fold cross-validation, and the cross-validated AUC is
reported (0.5 = no learnable preference) with a permutation p-value: the same cross-validation,
choices included, on shuffled votes.

Why the p-value: picking the best of several fits on ~100 votes inflates the AUC of votes that
carry no preference (measured on coin flips with 108 answers: 0.672, where a floor of 0.65 had
been set; on 40 answers 4 of 30 coin-flip sets cleared it), and anyone can cast coin-flip
votes. With more features than votes the fit runs in the votes' space, so 99 permutations of
~100 votes take a few seconds."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from errors import TrainingError
from training.taste.features import FEATURE_NAMES, feature_matrix

PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0)  # L2 strengths tried by cross-validation
TASTE_FILE = "taste_model.json"


class TextEmbedder(Protocol):
    """What the taste model needs of assistant.retrieval.embedder.Embedder."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None without both classes."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


_BIAS_PENALTY = 1e-6  # the bias is (all but) not penalised
# Votes up to which the permutation test runs: its cost grows with the cube of the votes, and the
# AUC of pure noise narrows as they grow (null sd ~0.03 at 400 votes, well under the AUC floor).
PERMUTATION_MAX_VOTES = 400


def _fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float, iters: int = 25) -> np.ndarray:
    """Newton's method on balanced, L2-penalised log-loss; returns weights with the bias last.
    With fewer examples than features it is solved in the examples' space (`_fit_dual`)."""
    if len(x) <= x.shape[1]:
        beta = _fit_dual(x @ x.T, y, penalty, iters)
        return np.append(x.T @ beta / penalty, beta.sum() / _BIAS_PENALTY)
    xb = np.hstack([x, np.ones((len(x), 1))])
    sw = _balanced_weights(y)
    reg = np.full(xb.shape[1], penalty)
    reg[-1] = _BIAS_PENALTY
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (sw * (p - y)) + reg * w
        hess = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    n_pos, n_neg = max(y.sum(), 1), max((1 - y).sum(), 1)
    return np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg))


def _fit_dual(gram: np.ndarray, y: np.ndarray, penalty: float, iters: int = 25) -> np.ndarray:
    """The same fit seeing the features only through their Gram matrix x @ x.T: the weights are
    w = x.T @ beta / penalty and the bias sum(beta) / _BIAS_PENALTY, and each Newton step solves
    an n x n system (Woodbury) instead of a d x d one. Returns beta (agrees with the direct
    solution to 1e-9, tested)."""
    sw = _balanced_weights(y)
    g = gram / penalty + 1 / _BIAS_PENALTY  # xb @ diag(1 / penalties) @ xb.T
    beta = np.zeros(len(y))
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(g @ beta, -30, 30)))
        v = sw * (p - y) + beta
        curvature = np.maximum(sw * p * (1 - p), 1e-12)
        step = v - np.linalg.solve(np.diag(1 / curvature) + g, g @ v)
        beta -= step
        if np.abs(g @ step).max() < 1e-6:  # the scores stopped moving
            break
    return beta


def _cv_auc(
    xs: np.ndarray, gram: np.ndarray | None, y: np.ndarray, k: int, seed: int
) -> tuple[float, float]:
    """(best pooled out-of-fold AUC, its penalty) over PENALTIES, on stratified folds."""
    parts = _folds(y.astype(int), k, seed)
    labels = y.astype(int).tolist()
    best: tuple[float, float] = (-1.0, PENALTIES[0])
    for penalty in PENALTIES:
        out = np.zeros(len(y))
        for test in parts:
            train = np.setdiff1d(np.arange(len(y)), test)
            lam = penalty * len(train) / 100
            if gram is None:
                w = _fit_logistic(xs[train], y[train], lam)
                out[test] = xs[test] @ w[:-1] + w[-1]
            else:
                beta = _fit_dual(gram[np.ix_(train, train)], y[train], lam)
                out[test] = (gram[np.ix_(test, train)] / lam + 1 / _BIAS_PENALTY) @ beta
        score = auc(out.tolist(), labels) or 0.5
        if score > best[0]:
            best = (score, penalty)
    return best


def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified fold index of every example."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=int)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


@dataclass(frozen=True)
class TasteModel:
    """A fitted taste model: predicts P(👍 | question, answer)."""

    weights: list[float]
    mean: list[float]
    scale: list[float]
    penalty: float
    cv_auc: float | None
    votes_up: int
    votes_down: int
    embedder: str | None
    p_value: float | None = None  # permutation p-value of cv_auc; None when not computed

    def predict(
        self, pairs: Sequence[tuple[str, str]], embedder: TextEmbedder | None
    ) -> np.ndarray:
        """P(👍) for each (question, answer) pair."""
        x = _design(list(pairs), embedder if self.embedder else None)
        x = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        w = np.asarray(self.weights)
        return 1 / (1 + np.exp(-np.clip(x @ w[:-1] + w[-1], -30, 30)))

    def save(self, path: Path) -> Path:
        """Write the model as JSON (atomically)."""
        tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
        tmp.write_text(
            json.dumps({"features": list(FEATURE_NAMES), **asdict(self)}), encoding="utf-8"
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> TasteModel:
        """Read a model written by `save`; a TrainingError names a broken or foreign file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.pop("features") != list(FEATURE_NAMES):
                raise ValueError("written with other features")
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise TrainingError(
                f"{path} is not a taste model this version reads ({exc}); "
                "train a new adapter to refit it"
            ) from exc


def _design(pairs: list[tuple[str, str]], embedder: TextEmbedder | None) -> np.ndarray:
    cheap = feature_matrix(pairs)
    if embedder is None:
        return cheap.astype(float)
    answers = embedder.embed([a for _, a in pairs])
    questions = embedder.embed([q for q, _ in pairs])
    cosine = (answers * questions).sum(axis=1, keepdims=True)
    return np.hstack([cheap, cosine, answers]).astype(float)


def fit_taste(
    pairs: Sequence[tuple[str, str]],
    labels: Sequence[int],
    embedder: TextEmbedder | None,
    *,
    folds: int = 5,
    seed: int = 0,
    permutations: int = 0,
) -> TasteModel:
    """Fit on votes (1 = 👍, 0 = 👎); needs both kinds. The feature set (the cheap features
    alone, or with the answer's and question's embeddings) and penalty with the best pooled
    out-of-fold AUC are kept and the final model refitted on every vote: with a few 👍 votes a
    visible taste such as length is drowned by 384 embedding dimensions (measured: brevity on
    9 👍 / 83 👎 reached a cross-validated AUC of 0.695 with them). With `permutations`,
    the whole cross-validation runs again on that many shuffles of the votes (up to
    PERMUTATION_MAX_VOTES votes) and the share that reach the AUC is its p-value."""
    y = np.asarray(labels, dtype=float)
    ups, downs = int(y.sum()), int(len(y) - y.sum())
    if ups == 0 or downs == 0:
        raise TrainingError(f"a taste model needs both 👍 and 👎 votes (got {ups} 👍, {downs} 👎)")
    k = max(2, min(folds, ups, downs))
    designs = [_Design.of(feature_matrix(list(pairs)).astype(float), None)]
    if embedder is not None:
        designs.append(_Design.of(_design(list(pairs), embedder), embedder.name))

    def search(votes: np.ndarray) -> tuple[float, float, _Design]:
        best: tuple[float, float, _Design] = (-1.0, PENALTIES[0], designs[0])
        for d in designs:  # the simpler design first: it wins a tie
            cv, penalty = _cv_auc(d.xs, d.gram, votes, k, seed)
            if cv > best[0]:
                best = (cv, penalty, d)
        return best

    cv_auc, penalty, chosen = search(y)
    p_value = None
    if permutations and len(y) <= PERMUTATION_MAX_VOTES:
        rng = np.random.default_rng(seed)
        at_least = sum(search(rng.permutation(y))[0] >= cv_auc for _ in range(permutations))
        p_value = (1 + at_least) / (1 + permutations)
    w = _fit_logistic(chosen.xs, y, penalty * len(y) / 100)
    return TasteModel(
        weights=w.tolist(),
        mean=chosen.mean.tolist(),
        scale=chosen.scale.tolist(),
        penalty=penalty,
        cv_auc=cv_auc,
        votes_up=ups,
        votes_down=downs,
        embedder=chosen.embedder,
        p_value=p_value,
    )


@dataclass(frozen=True)
class _Design:
    """One candidate feature set, standardised, with its Gram matrix when it has more
    features than votes (the fit then runs in the votes' space)."""

    xs: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    gram: np.ndarray | None
    embedder: str | None

    @classmethod
    def of(cls, x: np.ndarray, embedder: str | None) -> _Design:
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        xs = (x - mean) / scale
        return cls(xs, mean, scale, xs @ xs.T if len(xs) <= xs.shape[1] else None, embedder)


def load_taste_embedder(spec: str, root: Path) -> Any:
    """The retrieval embedder (frozen all-MiniLM-L6-v2 by default) the taste model reads."""
    from assistant.retrieval.embedder import load_embedder

    return load_embedder(spec, root)
