"""Training of a pair model (:mod:`app.pair_model`): a LoRA adapter on the packaged MiniLM and a linear head.

One loop for every pair model a pack trains; what differs is the head's size and the loss, which the
caller passes: the relevance filter (one output, balanced BCE) and the label reader (labels + "none",
cross-entropy). The model is written to a scratch folder and moved into place (:func:`replace_dir`).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from app.errors import require
from app.pair_model import HEAD_FILE, base_model_dir, pooled_logits
from app.training import replace_dir, warmup_then_decay

LORA_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def train_pair_model(pairs: Sequence[tuple[str, str]], targets: Sequence, out_dir: Path | str, *, outputs: int,
                     loss, info_name: str, info: dict | None = None, epochs: int = 1, batch_size: int = 16,
                     lr: float = 1e-3, rank: int = 8, max_length: int = 192, seed: int = 0,
                     progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train on (question, passage) ``pairs`` and save adapter + head + ``info_name`` (metadata) to ``out_dir``.

    ``loss(logits [batch, outputs], targets of the batch)`` gives the batch loss; ``targets`` are floats
    (one output) or class indices. The same seed and pairs give the same model.
    """
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
    head = torch.nn.Linear(encoder.config.hidden_size, outputs)
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
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
    model.train()
    t0 = time.perf_counter()
    ema = None
    for step, idx in enumerate(batches, start=1):
        enc = tok([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], truncation="only_second",
                  max_length=max_length, padding=True, return_tensors="pt")
        with autocast:
            logits = pooled_logits(model, head, enc, torch)
        value_t = loss(logits.float(), [targets[i] for i in idx])
        value_t.backward()
        torch.nn.utils.clip_grad_norm_(params + list(head.parameters()), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(value_t.detach())
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if progress:
            progress(step, len(batches), ema)
    seconds = time.perf_counter() - t0
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    from safetensors.torch import save_file

    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
              str(tmp / HEAD_FILE))
    (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; the info file says how it was made
    meta = {**(info or {}), "pairs": len(pairs), "steps": len(batches), "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "rank": rank, "max_length": max_length, "seed": seed, "seconds": round(seconds, 1),
            "final_loss": round(float(ema or 0.0), 4), "base_model": "packaged:minilm"}
    (tmp / info_name).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)
    return meta
