"""Fitting a pack's label offsets (``answers.label_bias``) on its training rows.

A small model's label probabilities carry signal but a skewed prior: the 135M generator (adapted or not)
prefers one label whatever the passages say, and contextual calibration (dividing by a content-free
prompt's probabilities) replaces that skew by a flat prior, which is not the prior of real questions
either. A per-label log-offset, fitted by maximum likelihood on the pack's training rows asked exactly as
the pack asks them (its retrieval, filter, prompt, adapter and calibration), corrects the prior and
nothing else: it cannot learn a rule about any question's wording, only how often each label is right.
It is a bias-only multinomial logistic regression, so the fit is convex and deterministic.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from app.answers.shapes import route


@dataclass
class LabelRow:
    row_id: str
    gold: str
    probs: dict[str, float]  # calibrated as the pack calibrates, before any fitted offset


def gold_label(row: dict, labels: list[str]) -> str | None:
    """The label a training row's answer gives: the answer itself when it is a label (PubMedQA), else for
    rows that say whether their contract holds the clause, the first label (affirms) or the second (denies)."""
    answer = str(row.get("answer") or "").strip().lower().rstrip(".")
    if answer in labels:
        return answer
    if "answerable" in row:
        return labels[0] if row["answerable"] is not False else labels[1]
    return None


def collect(assistant, rows: list[dict], *, max_rows: int | None = None, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> list[LabelRow]:
    """Ask each label-routed training row as the pack would (retrieve, filter, label prompt) and record the
    labels' probabilities; a row whose passages are all dropped is skipped (the pack abstains on it)."""
    from app.answers.compose import label_probabilities
    from app.assistant import AskOptions
    from app.evaluation.questions import scope

    cfg = assistant.pack.config.answers
    labels = list(cfg.labels)
    prior = assistant.label_prior() if cfg.label_calibration == "content_free" else None
    picked = [r for r in rows if str(r.get("question") or "").strip()
              and route(r["question"], cfg.route, cfg.shapes, cfg.default) == "label" and gold_label(r, labels)]
    random.Random(seed).shuffle(picked)
    picked = picked[: max_rows or len(picked)]
    out: list[LabelRow] = []
    for i, row in enumerate(picked, start=1):
        question = row["question"].strip()
        found = assistant.retrieve(question, AskOptions(doc=scope(row)))
        if found.kept:
            prompt = assistant.prompts.build(question, found.kept, None, "label")
            probs = label_probabilities(assistant.generator, prompt, labels, prior=prior)
            out.append(LabelRow(str(row.get("id", i)), gold_label(row, labels), probs))
        if progress:
            progress(i, len(picked))
    return out


def fit_bias(rows: list[LabelRow], labels: list[str], steps: int = 3000, lr: float = 1.0) -> dict[str, float]:
    """Per-label log-offsets maximising the likelihood of the gold labels (gradient ascent on a concave
    objective; the first label's offset is 0, since only differences matter)."""
    if not rows:
        return {}
    logp = [[math.log(max(r.probs.get(lab, 0.0), 1e-9)) for lab in labels] for r in rows]
    gold = [labels.index(r.gold) for r in rows]
    b = [0.0] * len(labels)
    for _ in range(steps):
        grad = [0.0] * len(labels)
        for lp, g in zip(logp, gold):
            z = [v + bj for v, bj in zip(lp, b)]
            m = max(z)
            e = [math.exp(v - m) for v in z]
            s = sum(e)
            for j in range(len(labels)):
                grad[j] += (1.0 if j == g else 0.0) - e[j] / s
        b = [bj + lr * gj / len(rows) for bj, gj in zip(b, grad)]
    return {lab: round(bj - b[0], 4) for lab, bj in zip(labels, b)}


def predict(probs: dict[str, float], labels: list[str], bias: dict[str, float]) -> str:
    """The label the pack would choose: offsets applied by the same function as when answering."""
    from app.answers.compose import biased

    shifted = biased({lab: probs.get(lab, 0.0) for lab in labels}, bias)
    return max(labels, key=shifted.get)


def scores(rows: list[LabelRow], labels: list[str], bias: dict[str, float]) -> dict:
    """Accuracy, macro-F1 over the labels and how often each label is predicted."""
    return _scores([predict(r.probs, labels, bias) for r in rows], rows, labels)


def _scores(preds: list[str], rows: list[LabelRow], labels: list[str]) -> dict:
    n = len(rows) or 1
    f1s = []
    for lab in labels:
        tp = sum(1 for p, r in zip(preds, rows) if p == lab and r.gold == lab)
        fp = sum(1 for p, r in zip(preds, rows) if p == lab and r.gold != lab)
        fn = sum(1 for p, r in zip(preds, rows) if p != lab and r.gold == lab)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"n": len(rows), "accuracy": round(sum(p == r.gold for p, r in zip(preds, rows)) / n, 4),
            "macro_f1": round(sum(f1s) / len(labels), 4),
            "predicted": {lab: preds.count(lab) for lab in labels}}


def cross_validated(rows: list[LabelRow], labels: list[str], folds: int = 5) -> dict:
    """The fitted offsets' scores on rows they were not fitted on (k-fold, fixed split): the honest estimate."""
    held: list[LabelRow] = []
    preds: list[str] = []
    for f in range(folds):
        bias = fit_bias([r for i, r in enumerate(rows) if i % folds != f], labels)
        test = [r for i, r in enumerate(rows) if i % folds == f]
        held += test
        preds += [predict(r.probs, labels, bias) for r in test]  # each row scored without itself in the fit
    return _scores(preds, held, labels)
