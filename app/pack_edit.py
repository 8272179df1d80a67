"""Targeted edits of a pack's ``pack.yaml`` that keep its comments and layout.

:func:`write_filter_settings` stores a calibrated filter threshold (``slmrag filter calibrate --write``),
:func:`set_generator_adapter` a trained adapter (``slmrag adapt train``), :func:`set_label_bias` fitted label
offsets (``slmrag adapt labels``); all go through
:func:`set_block_values`. A YAML round trip would drop the comments that document a pack, so the file
is edited line by line and the result is validated as a :class:`~app.settings.PackConfig` before it
replaces the file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml

from app.errors import ConfigError
from app.settings import PackConfig


def round_down(threshold: float, places: int = 4) -> float:
    """Round a threshold *down* so a stored value never drops the passage it was chosen to keep."""
    f = 10 ** places
    return math.floor(float(threshold) * f + 1e-9) / f


def set_block_values(pack_yaml: Path | str, block: str, values: dict[str, str], check) -> str:
    """Set ``block.key: value`` for each of ``values`` in a pack.yaml, keeping its comments.

    A targeted line edit inside the top-level ``block:`` (the block, or the key, is added when missing);
    the result is re-parsed and validated, and ``check(config)`` must confirm the new values, before it
    replaces the file atomically. Returns the new text.
    """
    path = Path(pack_yaml)
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"^{block}\s*:\s*(#.*)?$", line)), None)
    if start is None:
        lines += [f"{block}:"] + [f"  {k}: {v}" for k, v in values.items()]
    else:
        end = start + 1  # the block: indented, blank or comment lines after "block:"
        while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t", "#"))):
            end += 1
        indent = next((m.group(1) for b in lines[start + 1:end] if (m := re.match(r"^(\s+)\w", b))), "  ")
        for key, val in values.items():
            pat = re.compile(rf"^{re.escape(indent)}{key}\s*:(?P<value>[^#]*?)(?P<comment>\s+#.*)?$")
            for j in range(start + 1, end):
                m = pat.match(lines[j])
                if m:
                    # A value already equal to the new one stays as the user wrote it ("0.8" is not rewritten
                    # "0.8000" when calibrate --write passes every setting it used).
                    if not _same_value(m.group("value"), val):
                        lines[j] = f"{indent}{key}: {val}{m.group('comment') or ''}"
                    break
            else:
                lines.insert(start + 1, f"{indent}{key}: {val}")
                end += 1
    new_text = "\n".join(lines) + "\n"
    wanted = ", ".join(f"{block}.{k}: {v}" for k, v in values.items())
    try:
        cfg = PackConfig.model_validate(yaml.safe_load(new_text))
    except Exception as exc:  # yaml.YAMLError or pydantic's ValidationError
        raise ConfigError(f"Updating {path} would make it invalid ({exc}); set {wanted} by hand.") from exc
    if not check(cfg):
        raise ConfigError(f"Could not update the {block} block of {path} safely; set {wanted} by hand.")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, path)
    return new_text


def _same_value(old: str, val: str) -> bool:
    """Whether the value text a line holds and ``val`` are the same value, as YAML reads both."""
    try:
        return yaml.safe_load(old) == yaml.safe_load(val)
    except yaml.YAMLError:
        return False


def write_filter_settings(pack_yaml: Path | str, *, threshold: float | None, kind: str | None = None,
                          gate: float | None = None, cosine_keep: float | None = None,
                          cosine_floor: float | None = None, relative_to_best: float | None = None,
                          rank_prior: float | None = None) -> str:
    """Set ``filter.threshold`` (rounded down to 4 decimals; None leaves it, for kind 'none' behind a gate),
    and ``filter.kind``, ``filter.gate``, ``filter.cosine_keep``, ``filter.cosine_floor``,
    ``filter.relative_to_best`` and ``filter.rank_prior`` when given."""
    # In the order they are written (a key the block lacks goes to its top); None: left as it is. Numbers are
    # written with 4 decimals, the threshold and gate rounded down.
    fields = {"threshold": None if threshold is None else round_down(threshold), "kind": kind or None,
              "gate": None if gate is None else round_down(gate), "cosine_keep": cosine_keep,
              "cosine_floor": cosine_floor, "relative_to_best": relative_to_best, "rank_prior": rank_prior}
    values = {key: v if key == "kind" else f"{v:.4f}" for key, v in fields.items() if v is not None}

    def written(cfg) -> bool:
        return all(cfg.filter.kind == v if key == "kind" else abs((getattr(cfg.filter, key) or 0) - float(v)) <= 1e-9
                   for key, v in values.items())

    return set_block_values(pack_yaml, "filter", values, written)


def set_generator_adapter(pack_yaml: Path | str, folder: str) -> str:
    """Point ``generator.adapter`` at a pack-relative adapter folder (``slmrag adapt train``)."""
    return set_block_values(pack_yaml, "generator", {"adapter": folder}, lambda cfg: cfg.generator.adapter == folder)


def set_label_bias(pack_yaml: Path | str, bias: dict[str, float]) -> str:
    """Store fitted label offsets as ``answers.label_bias`` (``slmrag adapt labels --write``); the labels are
    quoted, since YAML reads a bare yes/no as true/false."""
    import json

    value = json.dumps({k: round(float(v), 4) for k, v in bias.items()})
    return set_block_values(pack_yaml, "answers", {"label_bias": value},
                            lambda cfg: all(abs(cfg.answers.label_bias.get(k, 1e9) - round(float(v), 4)) <= 1e-9
                                            for k, v in bias.items()))


def record_dev_figures(info_file: Path | str, figures: dict, command: str) -> None:
    """Add the dev figures a calibration measured to a trained model's metadata file (``filter/filter.json``),
    under ``"dev"``, with the command that measured them; the rest of the file is kept."""
    import datetime
    import json

    path = Path(info_file)
    info = json.loads(path.read_text(encoding="utf-8"))
    info["dev"] = {**figures, "command": command,
                   "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
