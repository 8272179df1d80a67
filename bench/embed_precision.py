#!/usr/bin/env python
"""Embedding throughput by precision and runtime (issue 16, part 5: ingest is bound by embedding).

    python bench/embed_precision.py texts  [--work DIR] [--n 2000]
    python bench/embed_precision.py run    [--work DIR] --variants torch-fp32,torch-bf16,... [--batch 64]
    python bench/embed_precision.py report [--work DIR]

Run ``texts`` first (no model), then ``run`` with a few variants at a time, each under the shared lock
(``flock /tmp/slmrag-cpu.lock``); torch-fp32 first: it is the reference every other variant's vectors are
compared with. ``report`` prints the table.

* ``texts``: real chunk texts, as ingestion embeds them: the dev finance PDFs (``/work/shared/data/finance/
  corpus``, in name order) parsed with ``ingest.loaders.load`` and cut by the finance pack's chunker (title
  and heading in front), until ``--n`` texts. Kept in ``--work`` (default ``/tmp/slmrag-embed-precision``),
  outside the repository: FinanceBench is non-commercial.
* ``run``: each variant embeds all texts on ``threads()`` threads (2 here), in length-sorted batches of
  ``--batch``, after a warm-up batch; figures: chunks/s, and cosine of each vector with torch-fp32's
  (mean, min). Variants:

  - ``torch-fp32``, ``torch-bf16``: ``app.embedder.Embedder`` with that precision (what ingest runs);
  - ``torch-int8``: the same SentenceTransformer with its Linear layers through
    ``torch.ao.quantization.quantize_dynamic`` (int8 weights, activations quantized per batch);
  - ``ort-fp32``: ``app.onnx_encoder.OnnxEncoder``: the encoder exported with mean pooling and
    normalisation inside (what answers questions);
  - ``ort-int8-pc``: the same graph through ``onnxruntime.quantization.quantize_dynamic`` with per-channel
    QInt8 weights (what ``embedder.precision: int8`` runs, documents and questions);
  - ``ort-int8``, ``ort-int8-u8``: the quantizations not taken: per-tensor QInt8, per-tensor QUInt8.

Tried and dropped: ``onnxruntime.transformers.optimizer`` (model_type bert) fused GELU and skip layer norms
but no attention in this export: fp32 50.8 chunks/s against 53.1 unfused, and its graph failed to quantize.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "finance" / "corpus"
sys.path.insert(0, str(REPO))

VARIANTS = ("torch-fp32", "torch-bf16", "torch-int8", "ort-fp32", "ort-int8", "ort-int8-pc", "ort-int8-u8")


def _record(work: Path, key: str, result: dict) -> None:
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = result
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps({key: result}))


# ------------------------------------------------------------------------------------------------ texts
def texts(work: Path, n: int, source: Path) -> None:
    import logging

    from app.embedder import Embedder
    from app.packs import load_pack
    from ingest.chunking import Chunker
    from ingest.loaders import load

    logging.disable(logging.WARNING)  # pypdf warns about every quirk of real filings
    pack = load_pack("finance")
    cfg = pack.config
    chunker = Chunker(cfg.chunking, Embedder(cfg.embedder, pack.path).count_tokens)  # tokenizer only
    out: list[str] = []
    files = []
    for pdf in sorted(source.glob("*.pdf")):
        info, pages = load(pdf)
        for page in pages:
            out += [c.embed_text(info.title, cfg.chunking.contextual_header) for c in chunker.split(page.text, page.page)]
        files.append(pdf.name)
        if len(out) >= n:
            break
    (work / "texts.json").write_text(json.dumps(out[:n]))
    print(json.dumps({"texts": len(out[:n]), "files": files}))


# ---------------------------------------------------------------------------------------------- encoders
def _encoder(variant: str, batch: int, work: Path):
    """``encode(texts) -> vectors`` for a variant, loaded."""
    from app.embedder import Embedder, encode_sorted
    from app.onnx_encoder import OnnxEncoder, onnx_path
    from app.settings import EmbedderSettings

    runtime, precision = variant.split("-", 1)
    if runtime == "torch":
        emb = Embedder(EmbedderSettings(precision="fp32" if precision == "int8" else precision, batch_size=batch))
        emb.load()
        if precision == "int8":
            import torch

            emb._model = torch.ao.quantization.quantize_dynamic(emb._model, {torch.nn.Linear}, dtype=torch.qint8)
        return emb.encode
    settings = EmbedderSettings()
    model_dir = Path(Embedder(settings).model_path)
    # fp32 and int8-pc are the cached graphs slmrag runs (exported and quantized on first use)
    onnx = OnnxEncoder(model_dir, settings.max_seq_tokens, int8=precision != "fp32").load()
    if precision not in ("fp32", "int8-pc"):  # the quantizations not taken, from the same fp32 export
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = work / f"{variant}.onnx"
        if not target.is_file():
            quantize_dynamic(str(onnx_path(model_dir)), str(target),
                             weight_type=QuantType.QUInt8 if precision == "int8-u8" else QuantType.QInt8)
        onnx.load(target)
    return lambda texts: encode_sorted(texts, batch, onnx.encode_batch, onnx.dim)


# --------------------------------------------------------------------------------------------------- run
def run(work: Path, variants: list[str], batch: int) -> None:
    from app.env import threads

    all_texts = json.loads((work / "texts.json").read_text())
    ref_path = work / "vectors-torch-fp32.npy"
    for variant in variants:
        if variant not in VARIANTS:
            sys.exit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        t = time.perf_counter()
        encode = _encoder(variant, batch, work)
        encode(all_texts[:batch])  # warm-up: first-call allocations and kernel selection
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        vecs = np.asarray(encode(all_texts), dtype="float32")
        seconds = time.perf_counter() - t
        if variant == "torch-fp32" and batch == 64:
            np.save(ref_path, vecs)
        result = {"variant": variant, "batch": batch, "threads": threads(), "texts": len(all_texts),
                  "seconds": round(seconds, 1), "chunks_per_s": round(len(all_texts) / seconds, 1),
                  "load_s": round(load_s, 1)}
        if ref_path.is_file():
            cos = np.sum(vecs * np.load(ref_path), axis=1)
            result.update(cos_mean=round(float(cos.mean()), 6), cos_min=round(float(cos.min()), 6))
        _record(work, f"{variant}@{batch}", result)


def report(work: Path) -> None:
    results = json.loads((work / "results.json").read_text())
    print("| variant | batch | chunks/s | cos mean | cos min |\n|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['variant']} | {r['batch']} | {r['chunks_per_s']} | {r.get('cos_mean', '')} | {r.get('cos_min', '')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["texts", "run", "report"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/slmrag-embed-precision"))
    ap.add_argument("--source", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--variants", default="torch-fp32")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    work = args.work.resolve()
    if work == REPO or REPO in work.parents:
        sys.exit(f"--work {work} is inside the repository; use a folder outside it (the texts are FinanceBench's).")
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "texts":
        texts(work, args.n, args.source)
    elif args.step == "run":
        run(work, args.variants.split(","), args.batch)
    else:
        report(work)


if __name__ == "__main__":
    main()
