"""Training of a pair model (:mod:`app.pair_model`): a LoRA adapter on the packaged MiniLM and a linear head.

One loop for every pair model a pack trains; what differs is the head's size and the loss, which the
caller passes: the relevance filter (one output, balanced BCE) and the label reader (labels + "none",
cross-entropy). The model is written to a scratch folder and moved into place (:func:`replace_dir`).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable, Sequence

from app.errors import require
from app.pair_model import (HEAD_FILE, SCALE_KEY, SPAN_FILE, QuestionBound, base_model_dir, passage_token_mask,
                             pooled_logits)
from app.training import replace_dir, scratch_dir, warmup_then_decay

BASE_NAME = "packaged:minilm"
LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def span_token_targets(tok, pairs: Sequence[tuple[str, str]], spans: Sequence[tuple[int, int] | None],
                       max_length: int) -> list[tuple[int, int] | None]:
    """The token indices (first, last) of each pair's answer span, given as character offsets in its passage
    (the pair's second text); None where there is none or truncation cut it off."""
    out: list[tuple[int, int] | None] = []
    for (q, text), span in zip(pairs, spans):
        if span is None:
            out.append(None)
            continue
        enc = tok(q, text, truncation="only_second", max_length=max_length, return_offsets_mapping=True)
        seq = enc.sequence_ids()
        toks = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if seq[i] == 1 and b > a and b > span[0] and a < span[1]]
        out.append((toks[0], toks[-1]) if toks and enc["offset_mapping"][toks[-1]][1] >= span[1] else None)
    return out


def train_pair_model(pairs: Sequence[tuple[str, str]], targets: Sequence, out_dir: Path | str, *, outputs: int,
                     loss, info_name: str, info: dict | None = None, epochs: int = 1, batch_size: int = 16,
                     lr: float = 1e-3, rank: int = 8, max_length: int = 192, seed: int = 0,
                     spans: Sequence[tuple[int, int] | None] | None = None, scale: float = 1.0,
                     progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train on (question, passage) ``pairs`` and save adapter + head + ``info_name`` (metadata) to ``out_dir``.

    ``loss(logits [batch, outputs], targets of the batch)`` gives the batch loss; ``targets`` are floats
    (one output) or class indices. ``spans``: per pair, the answer's character offsets in the passage (or
    None); given, a span head (start, end per token) is trained too, with cross-entropy over the passage's
    tokens, and saved as ``span.safetensors``; with ``loss=None`` it is the only objective (a span model).
    ``scale`` multiplies the pooled vector before the heads (:func:`app.pair_model.pooled_logits`); it is
    stored in the head file, so the model is read as it was trained. The same seed and pairs give the same model.
    """
    if loss is None and spans is None:
        raise ValueError("train_pair_model needs a loss, or spans to train a span model on")
    torch = require("torch")
    peft = require("peft")
    transformers = require("transformers")
    from app.embedder import native_bf16
    from app.env import threads

    torch.manual_seed(seed)
    torch.set_num_threads(threads())
    # A question longer than the window leaves its passage no room (the tokenizer refuses the pair): cut it as
    # the model will be read, rather than failing the run at the row.
    bound = QuestionBound(max_length)
    pairs = [(bound(q), text) for q, text in pairs]
    base = base_model_dir()
    from app.models import MODEL_LOAD_LOCK

    with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
        tok = transformers.AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        encoder = transformers.AutoModel.from_pretrained(str(base), local_files_only=True)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=LORA_TARGETS,
                             task_type="FEATURE_EXTRACTION")
    model = peft.get_peft_model(encoder, config)
    head = torch.nn.Linear(encoder.config.hidden_size, outputs)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    span_head, span_tokens = None, None
    if spans is not None:
        span_tokens = span_token_targets(tok, pairs, spans, max_length)
        span_head = torch.nn.Linear(encoder.config.hidden_size, 2)
        torch.nn.init.normal_(span_head.weight, std=0.02)
        torch.nn.init.zeros_(span_head.bias)
    heads = list(head.parameters()) + (list(span_head.parameters()) if span_head is not None else [])
    rng = random.Random(seed)
    order = [i for _ in range(epochs) for i in rng.sample(range(len(pairs)), len(pairs))]
    batches = [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
    params = [p for p in model.parameters() if p.requires_grad]
    # The head starts from nothing: it needs a far larger step than the low-rank updates of the encoder.
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": heads, "lr": lr * 10}], weight_decay=0.01)
    sched = warmup_then_decay(opt, len(batches))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
    model.train()
    t0 = time.perf_counter()
    ema = None
    for step, idx in enumerate(batches, start=1):
        enc = tok([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], truncation="only_second",
                  max_length=max_length, padding=True, return_tensors="pt")
        with autocast:
            out = pooled_logits(model, head, enc, torch, span_head, scale)
        logits, token_logits = out if span_head is not None else (out, None)
        value_t = loss(logits.float(), [targets[i] for i in idx]) if loss is not None else 0.0
        if token_logits is not None:
            value_t = value_t + _span_loss(token_logits.float(), [span_tokens[i] for i in idx], enc, torch)
        value_t.backward()
        torch.nn.utils.clip_grad_norm_(params + heads, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(value_t.detach())
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if progress:
            progress(step, len(batches), ema)
    seconds = time.perf_counter() - t0
    out_dir = Path(out_dir)
    tmp = scratch_dir(out_dir)
    # The base is always the installed package (never this machine's path to it, which the config would record).
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    model.save_pretrained(str(tmp), safe_serialization=True)
    from safetensors.torch import save_file

    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(tmp / HEAD_FILE), metadata={SCALE_KEY: repr(float(scale))})
    if span_head is not None:
        save_file({"weight": span_head.weight.detach().contiguous(), "bias": span_head.bias.detach().contiguous()},
                  str(tmp / SPAN_FILE))
    (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; the info file says how it was made
    meta = {**(info or {}), "pairs": len(pairs), "steps": len(batches), "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "rank": rank, "max_length": max_length, "seed": seed, "pooled_scale": scale, "seconds": round(seconds, 1),
            "final_loss": round(float(ema or 0.0), 4), "base_model": BASE_NAME,
            **({"span_examples": sum(t is not None for t in span_tokens)} if span_tokens is not None else {})}
    (tmp / info_name).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)
    return meta


def _span_loss(token_logits, spans: list, enc, torch):
    """Mean cross-entropy of the start and end tokens over the passage's tokens, for the pairs with a span."""
    rows = [k for k, sp in enumerate(spans) if sp is not None]
    if not rows:
        return token_logits.sum() * 0.0
    allowed = passage_token_mask(enc, torch)[rows]
    logits = token_logits[rows].masked_fill(~allowed.unsqueeze(-1), -1e4)
    starts = torch.tensor([spans[k][0] for k in rows])
    ends = torch.tensor([spans[k][1] for k in rows])
    ce = torch.nn.functional.cross_entropy
    return (ce(logits[:, :, 0], starts) + ce(logits[:, :, 1], ends)) / 2
