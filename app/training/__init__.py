"""Training of a pack's own models from its indexed documents or labelled rows.

One module per model: :mod:`app.training.cross_encoder` trains the relevance filter's cross-encoder,
beside it the generator's adapter. Training imports torch; nothing on the answer path imports this
package. A trainer writes its model into a scratch folder and moves it into place with
:func:`replace_dir`, so a crash never leaves a half-written model for the answer path to load.
"""

from __future__ import annotations

import shutil
from pathlib import Path


PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth")


def scratch_dir(target: Path) -> Path:
    """An empty folder beside ``target`` for a trainer to write its model into (what was left there by a
    crashed run is removed first); :func:`replace_dir` then moves it into place."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(built: Path, target: Path) -> None:
    """Move the finished folder ``built`` to ``target``, replacing the model that was there. A folder holding
    a pickle file is deleted instead: nothing slmrag stores may run code when loaded."""
    from app.errors import SlmragError

    unsafe = [p.name for p in built.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if unsafe:  # pragma: no cover - every trainer saves safetensors only
        shutil.rmtree(built, ignore_errors=True)
        raise SlmragError(f"Refusing to store a model with pickle files: {unsafe}")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def warmup_then_decay(opt, total: int, floor: float = 0.0):
    """The learning-rate schedule every trainer here uses: linear warm-up over the first tenth of the
    ``total`` steps, then linear decay, never below ``floor`` times the base rate."""
    import torch

    warm = max(1, total // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(floor, (total - s) / max(1, total - warm)))


def balanced_bce(labels):
    """BCE on logits with the positives weighted up to the negatives' count (pairs are mostly negative)."""
    import torch

    n_pos = sum(1 for y in labels if y > 0)
    return torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([max(1.0, (len(labels) - n_pos) / max(1, n_pos))]))
