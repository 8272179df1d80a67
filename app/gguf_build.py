"""GGUF files derived once from the pack's model into the cache: requantized, and with a LoRA merged in.

Why merge: llama.cpp applies an unmerged LoRA (``Llama(lora_path=...)``) as two extra small matrix
products on every linear layer for every token. On SmolLM2-135M that costs about a third of the decode
speed and half a second of first token (bench/adapter_speed.py: 0.76x the base model's decode). Adding
``scale * B @ A`` to the base weights once and quantizing the result (Q8_0, see :func:`merged`) gives a
model that runs at the base model's speed and answers as the adapter does, up to that quantization.

Everything here reads and writes GGUF with the ``gguf`` package and llama.cpp's own quantizer: tensors
and key/values only, no code is loaded from either file. Outputs are keyed by what they are made of
(the source file's path, size and mtime; the adapter file's sha256; the quantization), written to a
temporary name and renamed, so a crash or two processes at once never leave a half-written model behind.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from app.env import cache_dir, threads
from app.errors import SlmragError, require

# llama.cpp's file types (enum llama_ftype) that slmrag writes.
FTYPE_Q4_0 = 2
FTYPE_Q8_0 = 7


def source_key(path: Path) -> str:
    """A cheap identity for a large local file: its resolved path, size and modification time."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def quantize(src: Path, dst: Path, ftype: int) -> bool:
    """llama.cpp's quantizer, ``src`` -> ``dst`` as file type ``ftype``; False (and no ``dst``) if it fails."""
    llama_cpp = require("llama_cpp", "llama-cpp-python")
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True  # the shipped file is already Q4_1; llama.cpp refuses without this
    params.nthread = threads()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, dst)
    return True


def requantized(src: Path) -> Path:
    """``src`` as Q4_0 (cached): on CPU, Q4_0 prefills about twice as fast as the shipped Q4_1.
    Falls back to ``src`` itself if llama.cpp cannot quantize it."""
    if "Q4_0" in src.name:
        return src
    dst = cache_dir() / f"{src.stem}.{source_key(src)}.Q4_0.gguf"
    if dst.exists() or quantize(src, dst, FTYPE_Q4_0):
        return dst
    return src


def merged(src: Path, lora: Path) -> Path:
    """The model ``src`` with the GGUF LoRA ``lora`` merged into its weights, as Q8_0 (cached).

    Why Q8_0 and not the Q4_0 the base runs as: the adapter's changes to each weight are small next to a
    4-bit step (16 levels per block), so 4-bit rounding keeps them only on average; 8-bit (256 levels)
    keeps them. Measured on finance dev (TAT-QA EM): adapter applied at run time .427, merged Q8_0 .409,
    merged Q4_0 .373. On SmolLM2-135M Q8_0 costs no speed: medical dev prompts, first token p50 1.27 s and
    113 tok/s merged Q8_0 against 1.43 s and 118 tok/s for the base Q4_0 (30 prompts, alternating).
    """
    from app.store import file_sha256  # here, not at the top: app.generators imports this module, and the
    # store (numpy, the index) has no business in loading a pack's settings

    dst = cache_dir() / f"{src.stem}.{source_key(src)}+lora-{file_sha256(lora)[:16]}.Q8_0.gguf"
    if dst.exists():
        return dst
    raw = dst.with_name(f"{dst.name}.f16-{os.getpid()}")
    try:
        merge_lora(src, lora, raw)
        if not quantize(raw, dst, FTYPE_Q8_0):
            raise SlmragError(
                f"llama.cpp could not quantize the merged model from {src} and {lora}. Set "
                "generator.adapter_merge: false in pack.yaml to apply the adapter at run time instead.")
    finally:
        raw.unlink(missing_ok=True)
    return dst


def merge_lora(base: Path, lora: Path, out: Path) -> Path:
    """Write ``base`` with ``W + (alpha / r) * B @ A`` for every tensor the GGUF LoRA ``lora`` adapts.

    The adapted tensors are written as F16 (quantize the file afterwards); every other tensor and every
    key/value is copied unchanged. ``A`` is stored ``(r, in)`` and ``B`` ``(out, r)``, as llama.cpp
    applies them (its converter has already permuted the q/k rows), so the product lines up with the base
    weight's ``(out, in)`` rows.
    """
    gguf = require("gguf")
    import numpy as np

    lr = gguf.GGUFReader(str(lora))
    if _field(lr, "general.type") != "adapter" or _field(lr, "adapter.type") != "lora":
        raise SlmragError(f"{lora} is not a GGUF LoRA adapter (general.type 'adapter', adapter.type 'lora').")
    alpha = float(_field(lr, "adapter.lora.alpha") or 0.0)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in lr.tensors:
        name, _, ab = t.name.rpartition(".lora_")
        if ab not in ("a", "b"):
            raise SlmragError(f"{lora}: unexpected tensor '{t.name}' (a LoRA file holds *.lora_a/*.lora_b).")
        pairs.setdefault(name, {})[ab] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)

    br = gguf.GGUFReader(str(base))
    arch = _field(br, "general.architecture")
    if _field(lr, "general.architecture") not in (None, arch):
        raise SlmragError(f"{lora} is for '{_field(lr, 'general.architecture')}' models; {base} is '{arch}'.")
    writer = gguf.GGUFWriter(str(out), arch)  # writes general.architecture itself
    for key, f in br.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        writer.add_key_value(key, f.contents(), vtype, sub_type=sub)
    done = set()
    for t in br.tensors:
        pair = pairs.get(t.name)
        if pair is None:  # copied byte for byte, in its own (possibly quantized) type
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
            continue
        if set(pair) != {"a", "b"}:
            raise SlmragError(f"{lora}: '{t.name}' has lora_{''.join(pair)} but not both lora_a and lora_b.")
        a, b = pair["a"], pair["b"]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1] or a.shape[0] != b.shape[1]:
            raise SlmragError(
                f"{lora} does not fit {base}: '{t.name}' is {w.shape} but B @ A is {b.shape} @ {a.shape}. "
                "Train the adapter on this base model (`slmrag adapt train`).")
        w += (alpha / a.shape[0] if alpha else 1.0) * (b @ a)  # llama.cpp: no alpha means scale 1
        writer.add_tensor(t.name, w.astype(np.float16))
        done.add(t.name)
    missing = sorted(set(pairs) - done)
    if missing:
        raise SlmragError(f"{lora} adapts tensors {base} does not have ({', '.join(missing[:3])}...): "
                          "it was trained on another base model.")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
