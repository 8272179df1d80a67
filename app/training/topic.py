"""Training of the topic gate (:mod:`app.filters.topic`): this pack's questions against other domains'.

A logistic regression on the pack's own question vectors. Fitting is plain full-batch gradient descent
for a fixed number of steps from zero (no randomness: the same questions give the same gate), on the
class-weighted log-loss with a small L2 term; stopping early keeps the weights small, which is what lets the
gate generalise from one dataset's phrasing to a user's. The threshold is chosen from cross-validated
scores of the pack's own questions (each scored by a gate that did not see it): the highest that turns
away at most ``max_false`` of them, so a new in-domain question is gated about that often.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.errors import SlmragError
from app.filters.cross_encoder import sigmoid
from app.filters.topic import INFO, WEIGHTS
from app.pack_edit import round_down
from app.training import replace_dir, scratch_dir


def fit_logistic(x: np.ndarray, y: np.ndarray, *, steps: int = 500, lr: float = 0.5,
                 l2: float = 1e-3) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the class-balanced mean log-loss (+ l2/2 |w|^2) by ``steps`` of gradient
    descent from zero; each class weighs the same in total, however many rows it has."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise SlmragError("The topic gate needs questions of both kinds: the pack's and other domains'.")
    sw = np.where(y > 0, len(y) / (2 * n_pos), len(y) / (2 * n_neg))
    w = np.zeros(x.shape[1])
    b = 0.0
    for _ in range(steps):
        g = sw * (sigmoid(x @ w + b) - y)
        w -= lr * (x.T @ g / len(y) + l2 * w)
        b -= lr * float(g.mean())
    return w, b


def cross_validated(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, **fit) -> np.ndarray:
    """Each row's score from a gate fitted on the other folds (rows assigned to folds by ``seed``)."""
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    out = np.zeros(len(y))
    for f in range(folds):
        w, b = fit_logistic(x[fold != f], y[fold != f], **fit)
        out[fold == f] = sigmoid(x[fold == f] @ w + b)
    return out


def choose_topic_threshold(in_scores: Sequence[float], max_false: float) -> float:
    """The highest threshold that gates at most ``max_false`` of ``in_scores`` (the pack's own questions)."""
    s = np.sort(np.asarray(in_scores, dtype="float64"))
    allowed = int(np.floor(max_false * len(s)))  # this many may fall below
    return float(s[min(allowed, len(s) - 1)])


def train_topic_gate(embedder, in_questions: Sequence[str], out_questions: Sequence[str], out_dir: Path | str, *,
                     max_false: float = 0.02, folds: int = 5, seed: int = 0, info: dict | None = None,
                     progress: Callable[[int], None] | None = None) -> dict:
    """Embed both question sets with the pack's ``embedder``, fit the gate, choose its threshold from
    cross-validated scores and save it to ``out_dir``; returns the metadata written to ``topic.json``
    (``threshold`` among it)."""
    in_questions = [q for q in in_questions if q and q.strip()]
    out_questions = [q for q in out_questions if q and q.strip()]
    if len(in_questions) < folds or len(out_questions) < folds:
        raise SlmragError(f"The topic gate needs at least {folds} of the pack's questions and {folds} of other domains' "
                          f"(got {len(in_questions)} and {len(out_questions)}): pass --train with the pack's "
                          "questions and --out-of-pack with other domains'.")
    x = embedder.encode(list(in_questions) + list(out_questions), progress=progress)
    y = np.concatenate([np.ones(len(in_questions)), np.zeros(len(out_questions))])
    cv = cross_validated(x, y, folds=folds, seed=seed)
    threshold = choose_topic_threshold(cv[y > 0], max_false)
    w, b = fit_logistic(x, y)
    out_dir = Path(out_dir)
    tmp = scratch_dir(out_dir)
    from safetensors.numpy import save_file

    save_file({"weight": w.astype("float32"), "bias": np.array([b], dtype="float32")}, str(tmp / WEIGHTS))
    digest = hashlib.sha256("\n".join(list(in_questions) + ["\0"] + list(out_questions)).encode()).hexdigest()
    meta = {**(info or {}), "embedder": embedder.settings.model, "dim": int(x.shape[1]),
            "in_questions": len(in_questions), "out_questions": len(out_questions), "questions_sha256": digest,
            # Rounded down, as every stored threshold is: the stored value never gates a question the chosen one admits.
            "seed": seed, "folds": folds, "max_false": max_false, "threshold": round_down(threshold),
            "cross_validated": {"in_gated": float(np.mean(cv[y > 0] < threshold)),
                                "out_admitted": float(np.mean(cv[y == 0] >= threshold))}}
    (tmp / INFO).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)
    return meta
