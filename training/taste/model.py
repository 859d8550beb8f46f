"""The taste (reward) model: L2-regularised logistic regression over frozen sentence embeddings
of the answer plus the cheap features of training.taste.features, fitted on the users' 👍/👎
votes with balanced class weights; the regularisation is chosen by stratified k-fold
cross-validation and the cross-validated AUC is reported (0.5 = no learnable preference)."""

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


def _fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float, iters: int = 25) -> np.ndarray:
    """Newton's method on balanced, L2-penalised log-loss; returns weights with the bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    n_pos, n_neg = max(y.sum(), 1), max((1 - y).sum(), 1)
    sw = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg))
    reg = np.full(xb.shape[1], penalty)
    reg[-1] = 1e-6  # the bias is not penalised
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
) -> TasteModel:
    """Fit on votes (1 = 👍, 0 = 👎); needs both kinds. The penalty with the best pooled
    out-of-fold AUC is kept and the final model refitted on every vote."""
    y = np.asarray(labels, dtype=float)
    ups, downs = int(y.sum()), int(len(y) - y.sum())
    if ups == 0 or downs == 0:
        raise TrainingError(f"a taste model needs both 👍 and 👎 votes (got {ups} 👍, {downs} 👎)")
    x = _design(list(pairs), embedder)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / scale
    k = max(2, min(folds, ups, downs))
    parts = _folds(y.astype(int), k, seed)
    best: tuple[float, float] = (-1.0, PENALTIES[0])
    for penalty in PENALTIES:
        out = np.zeros(len(y))
        for test in parts:
            train = np.setdiff1d(np.arange(len(y)), test)
            w = _fit_logistic(xs[train], y[train], penalty * len(train) / 100)
            out[test] = xs[test] @ w[:-1] + w[-1]
        score = auc(out.tolist(), y.astype(int).tolist()) or 0.5
        if score > best[0]:
            best = (score, penalty)
    w = _fit_logistic(xs, y, best[1] * len(y) / 100)
    return TasteModel(
        weights=w.tolist(),
        mean=mean.tolist(),
        scale=scale.tolist(),
        penalty=best[1],
        cv_auc=best[0],
        votes_up=ups,
        votes_down=downs,
        embedder=getattr(embedder, "name", None) if embedder else None,
    )


def load_taste_embedder(spec: str, root: Path) -> Any:
    """The retrieval embedder (frozen all-MiniLM-L6-v2 by default) the taste model reads."""
    from assistant.retrieval.embedder import load_embedder

    return load_embedder(spec, root)
