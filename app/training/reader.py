"""Training of the label reader (:mod:`app.answers.reader`) on a pack's labelled rows.

Examples are built the way the reader will be used: each label-routed training row whose answer is one of
the pack's labels is asked as the pack asks it (retrieval over the training corpus), and every retrieved
passage becomes an example - the passage that holds the row's gold evidence with the row's label, the
others with "none" (they state no verdict on this question). A row marked ``answerable: false`` (legal:
the clause is absent from that contract) gives only "none" examples: its passages are the near misses. All retrieved passages, not only those the
filter keeps: which ones it keeps depends on its threshold, and the reader must tell every one of them apart. When retrieval did not
keep the evidence passage, it is looked up in the row's own document, so every row teaches its verdict.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.answers.reader import INFO, NONE
from app.errors import SlmragError, require
from app.filters.cross_encoder import model_passage
from app.pair_model import READ_LENGTH


@dataclass
class ReaderExample:
    question: str
    passage: str
    target: str  # one of the pack's labels, or NONE
    row_id: str


def build_examples(assistant, rows: list[dict], labels: list[str], *, seed: int = 0, max_rows: int | None = None,
                   negatives: int = 3, progress: Callable[[int, int], None] | None = None) -> list[ReaderExample]:
    """``negatives``: most "none" passages per row, those of the row's own document first (the near misses
    document-first search returns: a study's methods beside its conclusion)."""
    from app.answers.shapes import route
    from app.assistant import AskOptions
    from app.evaluation.questions import evidence_passages, scope
    from app.training.labels import gold_label

    cfg = assistant.pack.config.answers
    picked = [r for r in rows if str(r.get("question") or "").strip() and r.get("doc")
              and route(r["question"], cfg.route, cfg.shapes, cfg.default) == "label"
              and (r.get("answerable") is False or (r.get("evidence") and gold_label(r, labels) in labels))]
    random.Random(seed).shuffle(picked)
    picked = picked[: max_rows or len(picked)]
    out: list[ReaderExample] = []
    for i, row in enumerate(picked, start=1):
        question, rid = row["question"].strip(), str(row.get("id", i))
        found = assistant.retrieve(question, AskOptions(doc=scope(row))).passages
        gold = []
        if row.get("answerable") is not False:  # unanswerable: no passage states anything on it
            gold = evidence_passages(assistant.retriever, found, row)[:1]
            if gold:
                out.append(ReaderExample(question, model_passage(gold[0].text, gold[0].name, gold[0].heading),
                                         gold_label(row, labels), rid))
        others = [p for p in found if not gold or p.vid != gold[0].vid]
        others.sort(key=lambda p: p.name != row["doc"])  # stable: the own document's first, in retrieval order
        if gold or row.get("answerable") is False:  # a row whose evidence is lost teaches nothing
            out += [ReaderExample(question, model_passage(p.text, p.name, p.heading), NONE, rid)
                    for p in others[:negatives]]
        if progress:
            progress(i, len(picked))
    if not any(e.target != NONE for e in out):
        raise SlmragError("No label-routed training row with a label answer had its evidence in the training corpus; "
                          "check that the rows' answers are the pack's answers.labels, their 'doc' files are in corpus/ "
                          "and their 'evidence' is text of those files.")
    return out


def train_reader(examples: list[ReaderExample], labels: list[str], out_dir: Path | str, *, epochs: int = 6,
                 lr: float = 5e-4, rank: int = 16, max_length: int = READ_LENGTH, seed: int = 0,
                 progress: Callable[[int, int, float], None] | None = None, info: dict | None = None) -> dict:
    """Train the reader (cross-entropy over labels + "none") and save it to ``out_dir``."""
    torch = require("torch")
    from app.training.pair_model import train_pair_model

    classes = list(labels) + [NONE]
    targets = [classes.index(e.target) for e in examples]
    counts = Counter(e.target for e in examples)
    # Class weights against the imbalance: "none" passages outnumber each label, and an unweighted loss is
    # satisfied by telling verdicts from "none" while every verdict comes out as the commonest label (seen on
    # PubMedQA: all "yes"). The square root of the balanced weight: fully balanced, the rarest label
    # ("maybe", 11 % of rows) would be predicted far more often than it is right.
    weights = torch.tensor([(len(examples) / (len(classes) * counts[c])) ** 0.5 if counts.get(c) else 0.0
                            for c in classes])
    meta = {**(info or {}), "labels": list(labels), "examples_by_target": {c: counts.get(c, 0) for c in classes},
            "class_weights": [round(float(w), 4) for w in weights],
            "rows": len({e.row_id for e in examples})}
    return train_pair_model([(e.question, e.passage) for e in examples], targets, out_dir, outputs=len(classes),
                            loss=lambda logits, y: torch.nn.functional.cross_entropy(logits, torch.tensor(y), weight=weights),
                            info_name=INFO, info=meta, epochs=epochs, lr=lr, rank=rank, max_length=max_length,
                            seed=seed, progress=progress)
