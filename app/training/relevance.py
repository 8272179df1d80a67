"""A small relevance model trained on real labels: the pack's filter, shipped in the pack (a few MB).

Pairs come from labelled rows (``questions.jsonl`` + ``corpus/``) run through the pack's own retrieval over
that corpus, because those are the candidates the filter will see:

* positive: the question with the passage that holds its gold evidence;
* hard negatives: the other retrieved candidates - from the same document (what document-first search
  returns) and from other documents;
* out-of-pack negatives: questions of other domains (``--out-of-pack`` rows) with this pack's candidates.

The model is the packaged MiniLM read as a cross-encoder (question, "document | heading" + passage): its
token states mean-pooled and normalised, as the model was trained to use them, then a linear scoring
head; a LoRA adapter on its attention and feed-forward layers. Only the adapter and the head (a few MB of
safetensors) are saved; the base weights come from the installed package. :class:`app.filters.cross_encoder.RelevanceModel`
loads it for the ``cross_encoder`` filter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.errors import SlmragError, require
from app.filters.cross_encoder import model_passage
from app.pair_model import READ_LENGTH
from app.training import balanced_bce

INFO = "filter.json"


@dataclass
class Pair:
    question: str
    passage: str
    label: float
    kind: str  # "gold" | "same_doc" | "other_doc" | "out_of_pack"


def build_pairs(assistant, rows: list[dict], *, out_of_pack: list[dict] = (), k: int = 10, seed: int = 0,
                max_rows: int | None = None, negatives: int = 9,
                progress: Callable[[int, int], None] | None = None) -> list[Pair]:
    from app.evaluation.questions import evidence_passages, scope

    rng = random.Random(seed)
    rows = [r for r in rows if r.get("doc") and r.get("answerable") is not False and r.get("question")]
    rng.shuffle(rows)
    rows = rows[: max_rows or len(rows)]
    oop = list(out_of_pack)
    rng.shuffle(oop)
    oop = oop[: max(1, len(rows) // 4)] if oop else []
    total = len(rows) + len(oop)
    pairs: list[Pair] = []
    retriever = assistant.retriever
    for i, row in enumerate(rows, start=1):
        q = row["question"]
        found = retriever.search(q, k, doc=scope(row))
        gold = evidence_passages(retriever, found, row)
        if not gold:
            continue
        pairs.append(Pair(q, model_passage(gold[0].text, gold[0].name, gold[0].heading), 1.0, "gold"))
        others = [p for p in found if p not in gold][:negatives]
        for p in others:
            kind = "same_doc" if p.doc_id == gold[0].doc_id else "other_doc"
            pairs.append(Pair(q, model_passage(p.text, p.name, p.heading), 0.0, kind))
        if progress:
            progress(i, total)
    for j, row in enumerate(oop, start=len(rows) + 1):
        for p in retriever.search(row["question"], 3):
            pairs.append(Pair(row["question"], model_passage(p.text, p.name, p.heading), 0.0, "out_of_pack"))
        if progress:
            progress(j, total)
    if not any(p.label > 0 for p in pairs):
        raise SlmragError("No training row's gold evidence was found in the training corpus; check that the rows' "
                          "'doc' files are in corpus/ and their 'evidence' is text of those files.")
    return pairs


def train_relevance(pairs: list[Pair], out_dir: Path | str, *, epochs: int = 1, batch_size: int = 16,
                    lr: float = 1e-3, rank: int = 8, max_length: int = READ_LENGTH, seed: int = 0, scale: float = 20.0,
                    progress: Callable[[int, int, float], None] | None = None, info: dict | None = None) -> dict:
    """Train the LoRA cross-encoder on ``pairs`` (BCE, positives weighted up) and save it to ``out_dir``.

    ``max_length`` is the length the filter reads pairs at (:class:`app.filters.cross_encoder.RelevanceModel`),
    so no passage is cut shorter in training than in use; ``scale`` (:func:`app.pair_model.pooled_logits`)
    is what lets one epoch learn: legal's model trained with scale 1 ended at chance loss (dev AUC .55)."""
    torch = require("torch")
    from app.training.pair_model import train_pair_model

    bce = balanced_bce([p.label for p in pairs])
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    return train_pair_model([(p.question, p.passage) for p in pairs], [p.label for p in pairs], out_dir, outputs=1,
                            loss=lambda logits, y: bce(logits.view(-1), torch.tensor(y, dtype=torch.float32)),
                            info_name=INFO, info={**(info or {}), "pair_kinds": kinds}, epochs=epochs,
                            batch_size=batch_size, lr=lr, rank=rank, max_length=max_length, seed=seed,
                            scale=scale, progress=progress)
