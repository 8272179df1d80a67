"""Process-wide environment defaults, applied once when the package is imported.

Why here: slmrag must never reach a model hub. Hugging Face libraries read these variables at import
time, so they have to be set before transformers / sentence-transformers are imported anywhere.
We only set defaults (``setdefault``) so an operator can still override them deliberately.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Streamlit phones home for usage stats unless told not to.
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    # ...and on a first, non-headless `slmrag ui` it would stop to ask for an e-mail address.
    "STREAMLIT_SERVER_SHOW_EMAIL_PROMPT": "false",
}


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_VARS.items():
        os.environ.setdefault(key, value)


def checkout_root() -> Path | None:
    """The source checkout slmrag runs from, or None when it runs from an installed wheel.

    A checkout (``pip install -e .``, or ``python -m app`` inside the repository) keeps the design card's
    layout: built-in packs in ``domains/``, indexes in ``indexes/``. An installed wheel has no checkout
    around its ``app`` package: its built-in packs ship inside the package and what it writes (indexes,
    new packs) goes to the user's data folder, :func:`data_dir`.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "domains").is_dir() else None


def data_dir() -> Path:
    """Where an installed slmrag keeps its data: ``$XDG_DATA_HOME/slmrag``, by default ~/.local/share/slmrag."""
    base = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "slmrag"


def cache_dir() -> Path:
    """Where derived model files (requantized GGUF, converted HF weights, ONNX) are cached."""
    base = os.environ.get("SLMRAG_CACHE_DIR")
    path = Path(base).expanduser() if base else Path.home() / ".cache" / "slmrag"
    path.mkdir(parents=True, exist_ok=True)
    return path


def threads() -> int:
    """Threads for model inference: all cores, overridable with SLMRAG_THREADS."""
    value = os.environ.get("SLMRAG_THREADS")
    if value:
        return max(1, int(value))
    return max(1, os.cpu_count() or 1)
