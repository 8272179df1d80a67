"""Merging a GGUF LoRA into a GGUF model, on files small enough to check by hand.

The base has one adapted weight (4 x 3, F32), one quantized tensor that must be copied byte for byte
(Q8_0) and one that the adapter does not touch; the LoRA has rank 2 and alpha 4, so the merge adds
``(4 / 2) * B @ A``. The end-to-end case (the packaged SmolLM2 with a trained adapter, merged and applied
at run time) is in test_adapter.py.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from app.errors import SlmragError
from app.gguf_build import merge_lora

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 8  # (out, in), as GGUF stores rows
A = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)  # (r, in)
B = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float32)  # (out, r)
EMB = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)


def _write(path, arch, kv, tensors):
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, value)
    for name, (data, qtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def base(tmp_path):
    emb = gguf.quants.quantize(EMB, gguf.GGMLQuantizationType.Q8_0)
    return _write(tmp_path / "base.gguf", "llama",
                  {"general.name": "tiny", "llama.block_count": 1, "tokenizer.ggml.tokens": ["a", "b", "<s>"]},
                  {"token_embd.weight": (emb, gguf.GGMLQuantizationType.Q8_0),
                   "blk.0.attn_q.weight": (W, None),
                   "blk.0.attn_k.weight": (W[:2].copy(), None)})


def _lora(tmp_path, tensors, alpha=4.0, kind="lora"):
    return _write(tmp_path / "lora.gguf", "llama",
                  {"general.type": "adapter", "adapter.type": kind, "adapter.lora.alpha": alpha},
                  {name: (data.astype(np.float16), None) for name, data in tensors.items()})


def _read(path):
    r = gguf.GGUFReader(str(path))
    return r, {t.name: t for t in r.tensors}


def test_merge_adds_scaled_b_times_a_and_copies_the_rest(base, tmp_path):
    lora = _lora(tmp_path, {"blk.0.attn_q.weight.lora_a": A, "blk.0.attn_q.weight.lora_b": B})
    out = merge_lora(base, lora, tmp_path / "merged.gguf")
    reader, t = _read(out)
    # by hand: B @ A = [[1,0,0],[0,1,0],[0,0,0],[1,1,0]], times alpha / r = 2
    expected = W + 2 * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=np.float32)
    assert t["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    np.testing.assert_allclose(np.asarray(t["blk.0.attn_q.weight"].data, dtype=np.float32), expected, atol=1e-3)
    _, t0 = _read(base)
    for name in ("token_embd.weight", "blk.0.attn_k.weight"):  # untouched: same type, same bytes
        assert t[name].tensor_type == t0[name].tensor_type
        assert bytes(t[name].data) == bytes(t0[name].data)
    assert reader.fields["general.name"].contents() == "tiny"
    assert reader.fields["tokenizer.ggml.tokens"].contents() == ["a", "b", "<s>"]
    assert reader.fields["general.architecture"].contents() == "llama"


def test_a_lora_without_alpha_is_applied_at_scale_one(base, tmp_path):
    lora = _lora(tmp_path, {"blk.0.attn_q.weight.lora_a": A, "blk.0.attn_q.weight.lora_b": B}, alpha=0.0)
    _, t = _read(merge_lora(base, lora, tmp_path / "merged.gguf"))
    np.testing.assert_allclose(np.asarray(t["blk.0.attn_q.weight"].data, dtype=np.float32), W + B @ A, atol=1e-3)


@pytest.mark.parametrize("tensors,match", [
    ({"blk.5.attn_q.weight.lora_a": A, "blk.5.attn_q.weight.lora_b": B}, "another base model"),
    ({"blk.0.attn_q.weight.lora_a": A[:, :2], "blk.0.attn_q.weight.lora_b": B}, "does not fit"),
    ({"blk.0.attn_q.weight.lora_a": A}, "not both"),
    ({"blk.0.attn_q.weight": A}, "unexpected tensor"),
])
def test_an_adapter_that_does_not_fit_the_base_is_refused(base, tmp_path, tensors, match):
    out = tmp_path / "merged.gguf"
    with pytest.raises(SlmragError, match=match):
        merge_lora(base, _lora(tmp_path, tensors), out)


def test_a_file_that_is_not_a_lora_is_refused(base, tmp_path):
    with pytest.raises(SlmragError, match="not a GGUF LoRA"):
        merge_lora(base, _lora(tmp_path, {"blk.0.attn_q.weight.lora_a": A}, kind="control_vector"),
                   tmp_path / "merged.gguf")
