"""Variants: slmrag with one thing changed, measured in the same ``slmrag eval`` run as the pack itself.

"What does the adapter add?", "what does the filter add?" and "is the trained filter better than cosine?" are
answered best on the same questions, the same index and the same machine minutes, side by side in one report
(``slmrag eval --variant base --variant cosine``), rather than by diffing separate runs. A variant is a name
(``base``, ``no-filter``, ``cosine``, ``trained``), optionally with a value (``cosine=0.33``), applied to a fresh copy of
the pack's settings; its answers are recorded under the system name ``slmrag[<name>]``.

``cosine`` without a value takes its threshold from the run's own questions by the rule every shipped threshold
was chosen with (:func:`app.evaluation.calibration.calibrate`: the highest that keeps 95 % of the gold
passages among the pack's top-k candidates), so the two filters are compared at the same share of gold kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from app.errors import InputError
from app.pack_edit import round_down

KEEP = 0.95  # the share of gold passages a calibrated variant threshold keeps (as `filter calibrate`)


@dataclass(frozen=True)
class VariantKind:
    name: str
    help: str
    takes_value: bool = False


KINDS = {k.name: k for k in (
    VariantKind("base", "answers with the base model: the pack's generator.adapter off (what the adapter adds)"),
    VariantKind("no-filter", "every retrieved passage kept: the pack's relevance filter and gates off (what the "
                             "filter adds)"),
    VariantKind("cosine", "the cosine filter instead of the pack's (threshold: cosine=T, or calibrated on these "
                          "questions to keep 95 % of gold at the pack's k)", takes_value=True),
    VariantKind("trained", "the pack's trained relevance model (filter.model) instead of its filter (threshold: "
                           "trained=T, or the one `filter calibrate` recorded in the model's filter.json, with its gate)",
                takes_value=True),
)}


@dataclass(frozen=True)
class Variant:
    name: str
    value: float | None = None

    @property
    def system(self) -> str:
        """The key of this variant's answers in the report's records and aggregates."""
        return f"slmrag[{self.name}]"


def parse_variant(text: str) -> Variant:
    """``name`` or ``name=value`` (see :data:`KINDS`); a clear error for anything else."""
    name, sep, raw = text.strip().partition("=")
    kind = KINDS.get(name.strip())
    if kind is None:
        raise InputError(f"--variant {text!r}: unknown variant; choose from "
                         + "; ".join(f"'{k.name}': {k.help}" for k in KINDS.values()) + ".")
    if not sep:
        return Variant(kind.name)
    if not kind.takes_value:
        raise InputError(f"--variant {text!r}: '{kind.name}' takes no value; write --variant {kind.name}.")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"--variant {text!r}: '{raw}' is not a number; write e.g. --variant {kind.name}=0.33, "
                         f"or --variant {kind.name} to calibrate it on the questions.") from None
    if not math.isfinite(value):
        raise InputError(f"--variant {text!r}: the threshold must be a finite number.")
    return Variant(kind.name, value)


def parse_variants(texts) -> tuple[Variant, ...]:
    out = tuple(parse_variant(t) for t in texts or ())
    names = [v.name for v in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"--variant {dup[0]} is given twice; each variant runs once.")
    return out


def apply_variant(variant: Variant, pack, threshold_for: Callable[[object], float]) -> dict:
    """Change ``pack``'s settings (a fresh copy) to ``variant`` in place and say what was changed, for the report.
    ``threshold_for(pack)``: the calibrated cosine threshold of the changed pack, when no value was given."""
    cfg = pack.config
    if variant.name == "base":
        if not cfg.generator.adapter:
            raise InputError(f"--variant base: pack '{pack.name}' has no generator.adapter, so its answers are the "
                             "base model's already; drop the variant.")
        cfg.generator.adapter = None
        return {"change": "generator.adapter off (the base model)"}
    if variant.name == "no-filter":
        if cfg.filter.kind == "none" and cfg.filter.gate is None and not cfg.filter.topic_model:
            raise InputError(f"--variant no-filter: pack '{pack.name}' has no filter (filter.kind: none, no gate); "
                             "drop the variant.")
        cfg.filter.kind, cfg.filter.gate, cfg.filter.topic_model = "none", None, None  # cosine_keep goes with the kind
        return {"change": "filter.kind none: every retrieved passage kept, no gate"}
    if variant.name == "cosine":
        if cfg.filter.kind == "cosine" and variant.value is None:
            raise InputError(f"--variant cosine: pack '{pack.name}' filters by cosine already; give another threshold "
                             "to compare (--variant cosine=T) or drop the variant.")
        cfg.filter.kind = "cosine"  # the pack's gates stay in front of it, as in front of its own filter
        if variant.value is not None:
            cfg.filter.threshold = variant.value
            return {"change": f"filter.kind cosine, threshold {variant.value} (given)", "threshold": variant.value}
        cfg.filter.threshold = round_down(float(threshold_for(pack)))  # as filter calibrate --write stores it
        return {"change": f"filter.kind cosine, threshold {cfg.filter.threshold} (calibrated on these questions: the "
                          f"highest that keeps {KEEP:.0%} of gold passages at k={cfg.retrieval.k})",
                "threshold": cfg.filter.threshold}
    if variant.name == "trained":
        return _trained(variant, pack)
    raise AssertionError(variant.name)  # parse_variant admits only KINDS


def _trained(variant: Variant, pack) -> dict:
    """The pack's relevance model in place of its filter, at the threshold (and cosine gate, floor and keep, int8
    or fp32) that ``slmrag filter calibrate`` recorded beside it ("dev" in its filter.json) unless one is given."""
    import json

    cfg = pack.config.filter
    if not cfg.model:
        raise InputError(f"--variant trained: pack '{pack.name}' has no filter.model (a relevance model trained by "
                         "`slmrag filter train`); drop the variant.")
    if cfg.kind == "cross_encoder" and variant.value is None:
        raise InputError(f"--variant trained: pack '{pack.name}' filters with its trained model already; give another "
                         "threshold to compare (--variant trained=T) or drop the variant.")
    info_file = pack.path / cfg.model / "filter.json"
    try:
        dev = json.loads(info_file.read_text(encoding="utf-8")).get("dev") or {}
    except (OSError, ValueError, AttributeError):
        dev = {}
    if variant.value is None and not isinstance(dev.get("threshold"), (int, float)):
        raise InputError(f"--variant trained: {info_file} records no calibrated threshold; run `slmrag filter "
                         f"calibrate --pack {pack.name} --kind cross_encoder --questions DEV.jsonl --write` on a copy, "
                         "or give one (--variant trained=T).")
    # The threshold was chosen given the gate, floor and keep it was calibrated with: all four come from the
    # record, or a given threshold runs with the pack's gate alone.
    recorded = {k: dev.get(k) for k in ("gate", "cosine_floor", "cosine_keep")} if variant.value is None else \
        {"gate": cfg.gate, "cosine_floor": None, "cosine_keep": None}
    number = {k: float(v) if isinstance(v, (int, float)) else None for k, v in recorded.items()}
    cfg.kind, cfg.gate, cfg.cosine_floor, cfg.cosine_keep = ("cross_encoder", number["gate"], number["cosine_floor"],
                                                             number["cosine_keep"])
    cfg.threshold = float(variant.value if variant.value is not None else dev["threshold"])
    if dev.get("precision") in ("fp32", "int8") and variant.value is None:
        cfg.precision = dev["precision"]
    if variant.value is None:  # how the model read and how its scores were read when the threshold was chosen
        if isinstance(dev.get("read_tokens"), int):
            cfg.read_tokens = dev["read_tokens"]
        relative, prior = dev.get("relative_to_best"), dev.get("rank_prior")
        cfg.relative_to_best = float(relative) if isinstance(relative, (int, float)) else 0.0
        cfg.rank_prior = float(prior) if isinstance(prior, (int, float)) else 0.0
    source = "given" if variant.value is not None else f"recorded by filter calibrate in {cfg.model}/filter.json"
    cosine = "".join(f", cosine {name} {round(v, 4)}" for name, v in
                     (("gate", cfg.gate), ("floor", cfg.cosine_floor), ("keep", cfg.cosine_keep)) if v is not None)
    relative = (f", relative to best {cfg.relative_to_best:g}" if cfg.relative_to_best else "") + (
        f", rank prior {cfg.rank_prior:g}" if cfg.rank_prior else "")
    return {"change": f"filter.kind cross_encoder ({cfg.model}/, {cfg.precision}), threshold {round(cfg.threshold, 4)}"
                      f"{cosine}{relative} ({source})",
            "threshold": cfg.threshold, "gate": cfg.gate, "cosine_floor": cfg.cosine_floor, "cosine_keep": cfg.cosine_keep}
