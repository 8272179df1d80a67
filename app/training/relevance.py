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

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.errors import SlmragError, require
from app.filters.cross_encoder import HEAD_FILE, base_model_dir, model_passage, relevance_logits
from app.training import balanced_bce, replace_dir, warmup_then_decay

INFO = "filter.json"
LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


@dataclass
class Pair:
    question: str
    passage: str
    label: float
    kind: str  # "gold" | "same_doc" | "other_doc" | "out_of_pack"


def build_pairs(assistant, rows: list[dict], *, out_of_pack: list[dict] = (), k: int = 10, seed: int = 0,
                max_rows: int | None = None, negatives: int = 4,
                progress: Callable[[int, int], None] | None = None) -> list[Pair]:
    from app.evaluation.questions import holds_evidence, scope

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
        gold = [p for p in found if holds_evidence(p, row)]
        if not gold:
            gold = [p for p in retriever.search(q, 50, doc=row["doc"]) if holds_evidence(p, row)][:1]
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
                    lr: float = 1e-3, rank: int = 8, max_length: int = 192, seed: int = 0,
                    progress: Callable[[int, int, float], None] | None = None, info: dict | None = None) -> dict:
    """Train the LoRA cross-encoder on ``pairs`` (BCE, positives weighted up) and save it to ``out_dir``."""
    torch = require("torch")
    peft = require("peft")
    transformers = require("transformers")
    from app.embedder import native_bf16
    from app.env import threads

    torch.manual_seed(seed)
    torch.set_num_threads(threads())
    base = base_model_dir()
    tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    encoder = transformers.AutoModel.from_pretrained(str(base), local_files_only=True)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=LORA_TARGETS,
                             task_type="FEATURE_EXTRACTION")
    model = peft.get_peft_model(encoder, config)
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    rng = random.Random(seed)
    order = [i for _ in range(epochs) for i in rng.sample(range(len(pairs)), len(pairs))]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    params = [p for p in model.parameters() if p.requires_grad]
    # The head starts from nothing: it needs a far larger step than the low-rank updates of the encoder.
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": head.parameters(), "lr": lr * 10}],
                            weight_decay=0.01)
    sched = warmup_then_decay(opt, len(batches))
    bce = balanced_bce([p.label for p in pairs])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
    model.train()
    t0 = time.perf_counter()
    ema = None
    for step, idx in enumerate(batches, start=1):
        enc = tok([pairs[i].question for i in idx], [pairs[i].passage for i in idx], truncation="only_second",
                  max_length=max_length, padding=True, return_tensors="pt")
        with autocast:
            logits = relevance_logits(model, head, enc, torch)
        loss = bce(logits, torch.tensor([pairs[i].label for i in idx], dtype=torch.float32))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params + list(head.parameters()), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if progress:
            progress(step, len(batches), ema)
    seconds = time.perf_counter() - t0
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    from safetensors.torch import save_file

    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(tmp / HEAD_FILE))
    (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; filter.json says how it was made
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    meta = {**(info or {}), "pairs": len(pairs), "pair_kinds": kinds, "steps": len(batches), "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "rank": rank, "max_length": max_length, "seed": seed,
            "seconds": round(seconds, 1), "final_loss": round(float(ema or 0.0), 4), "base_model": "packaged:minilm"}
    (tmp / INFO).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)
    return meta
