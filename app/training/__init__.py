"""Training of a pack's own models from its indexed documents or labelled rows.

One module per model: :mod:`app.training.cross_encoder` trains the relevance filter's cross-encoder,
beside it the generator's adapter. Training imports torch; nothing on the answer path imports this
package. A trainer writes its model into a scratch folder and moves it into place with
:func:`replace_dir`, so a crash never leaves a half-written model for the answer path to load.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def replace_dir(built: Path, target: Path) -> None:
    """Move the finished folder ``built`` to ``target``, replacing the model that was there."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)
