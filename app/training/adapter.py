"""A LoRA adapter for a pack's generator, trained on CPU from labelled rows (``questions.jsonl`` + ``corpus/``).

Examples are built the way the pack is used (RAFT-style): the pack's own retrieval runs over the training
corpus, the pack's own prompt template places the question and the passages (the gold passage among the
distractors retrieval returns; for some examples without it, and for rows marked ``answerable: false``,
the target is "I could not find this in your documents."), and the target is written in the answer shape
the pack routes the question to (:mod:`app.answers.shapes`).

The adapter is trained with peft on the transformers weights of the base model (the packaged GGUF,
dequantized), saved as safetensors for the transformers backend, and written as a GGUF LoRA file for
llama.cpp (:func:`write_gguf_lora`, with the ``gguf`` package: no converter script, no network). A small
``adapter.json`` records the base model's hash, the training data's hash, the seed, the command and the
figures; it belongs to the pack and travels with ``packs export``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.answers.shapes import NOT_FOUND, locate, route, sentences
from app.errors import SlmragError, require
from app.store import file_sha256
from app.training import replace_dir, scratch_dir, warmup_then_decay

ADAPTER_INFO = "adapter.json"
GGUF_FILE = "adapter.gguf"
# HF module name -> GGUF tensor name inside a block (llama-architecture models such as SmolLM2).
_GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
               "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
TARGET_MODULES = list(_GGUF_NAMES)


@dataclass
class Example:
    question: str
    shape: str
    messages: list[dict]
    target: str
    has_gold: bool
    row_id: str


@dataclass
class AdapterReport:
    out_dir: Path
    examples: int
    shapes: dict
    steps: int
    seconds: float
    tokens: int
    final_loss: float
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"out_dir": str(self.out_dir), "examples": self.examples, "shapes": self.shapes, "steps": self.steps,
                "seconds": round(self.seconds, 1), "train_tokens": self.tokens,
                "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None,
                "final_loss": round(self.final_loss, 4)}


# ---------------------------------------------------------------------------------------------- data
def data_hash(train_dir: Path) -> str:
    """One hash over the questions file and every corpus file (names and bytes), in a fixed order."""
    h = hashlib.sha256()
    files = [train_dir / "questions.jsonl", *sorted(p for p in (train_dir / "corpus").rglob("*") if p.is_file())]
    for p in files:
        h.update(str(p.relative_to(train_dir)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def _trim_words(text: str, n: int) -> str:
    words = text.split()
    return text.strip() if len(words) <= n else " ".join(words[:n]) + " ..."


def _first_sentence(text: str) -> str:
    s = sentences(text)
    return s[0] if s else text.strip()


def target_for(row: dict, shape: str, labels: list[str], gold_n: int | None, gold_text: str) -> str | None:
    """The answer the model should write for ``row`` in ``shape``, citing passage ``gold_n``; None when the
    row has nothing usable for that shape. No gold passage in the prompt -> the not-found answer."""
    if gold_n is None or row.get("answerable") is False:
        return NOT_FOUND
    cite = f"[{gold_n}]"
    answer = str(row.get("answer") or "").strip()
    evidence = str(row.get("evidence") or "").strip()
    if shape == "label":
        label = answer.lower().rstrip(".")
        if label not in labels:
            # A clause question ("is there a ... clause?") is answered by the clause's presence.
            label = labels[0] if (answer or evidence) else None
        if label is None:
            return None
        support = str(row.get("long_answer") or "").strip()
        support = _first_sentence(support) if support else f"\u201c{_trim_words(evidence, 30)}\u201d"
        return f"{label.capitalize()}. {support} {cite}"
    if shape == "extract":
        for span in (answer, evidence):
            found = locate(span, [gold_text]) if span else None
            if found is not None:
                return f"\u201c{_trim_words(found[1], 60)}\u201d {cite}"
        return None
    if shape == "calculate":
        derivation = str(row.get("derivation") or "").strip()
        if derivation and re.search(r"[-+*/]", derivation):
            return f"{derivation} {cite}"
        return f"{answer} {cite}" if answer else None
    # free
    if not answer:
        return None
    return f"{_trim_words(' '.join(sentences(answer)[:2]) or answer, 60)} {cite}"


def build_examples(pack, assistant, rows: list[dict], *, seed: int = 0, max_examples: int | None = None,
                   drop_gold: float = 0.15, passages: int = 3, passage_words: int = 110,
                   progress: Callable[[int, int], None] | None = None) -> list[Example]:
    """RAFT-style examples: the pack's retrieval over the training corpus, its prompt, its shapes."""
    from app.evaluation.questions import holds_evidence, scope

    rng = random.Random(seed)
    order = list(rows)
    rng.shuffle(order)
    cfg = pack.config.answers
    retriever = assistant.retriever
    chunks_by_doc: dict[str, list] = {}
    for c in assistant.snapshot.chunks:
        chunks_by_doc.setdefault(c.doc_id, []).append(c)
    out: list[Example] = []
    total = min(len(order), max_examples or len(order))
    for row in order:
        if len(out) >= total:
            break
        question = str(row.get("question") or "").strip()
        if not question:
            continue
        shape = route(question, cfg.route, cfg.shapes, cfg.default)
        found = retriever.search(question, max(pack.config.retrieval.k, passages + 2), doc=scope(row))
        gold = [p for p in found if row.get("doc") and row.get("answerable") is not False and holds_evidence(p, row)]
        others = [p for p in found if p not in gold]
        keep_gold = row.get("answerable") is not False and rng.random() >= drop_gold
        if keep_gold and not gold and row.get("doc") and row.get("answerable") is not False:
            gold = _gold_chunk(assistant, row, retriever, question)
        if keep_gold and not gold:
            continue  # the evidence cannot be placed: skip rather than teach a wrong "not found"
        chosen = others[: passages - 1] if keep_gold else others[:passages]
        gold_n = None
        if keep_gold:
            at = rng.randrange(len(chosen) + 1)
            chosen.insert(at, gold[0])
            gold_n = at + 1
        chosen = [_shortened(p, passage_words, row if i + 1 == gold_n else None) for i, p in enumerate(chosen)]
        target = target_for(row, shape, cfg.labels, gold_n, chosen[gold_n - 1].text if gold_n else "")
        if target is None:
            continue
        messages = assistant.prompts.messages(question, chosen, shape)
        out.append(Example(question, shape, messages, target, gold_n is not None, str(row.get("id", ""))))
        if progress:
            progress(len(out), total)
    return out


def _gold_chunk(assistant, row: dict, retriever, question: str) -> list:
    """The gold passage when retrieval missed it: the best chunk of the row's document that holds the evidence."""
    from app.evaluation.questions import holds_evidence

    in_doc = retriever.search(question, 50, doc=row["doc"])
    return [p for p in in_doc if holds_evidence(p, row)][:1]


def _shortened(p, words: int, row: dict | None):
    """Cut a passage to ``words`` words, keeping the evidence inside the gold passage."""
    import dataclasses

    tokens = p.text.split()
    if len(tokens) <= words:
        return p
    start = 0
    if row is not None and row.get("evidence"):
        i = p.text.find(str(row["evidence"])[:40])
        if i > 0:
            start = max(0, len(p.text[:i].split()) - words // 3)
    return dataclasses.replace(p, text=" ".join(tokens[start:start + words]))


# ---------------------------------------------------------------------------------------------- training
def _encode(tok, ex: Example, max_len: int) -> tuple[list[int], list[int]] | None:
    prompt = tok.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(ex.target + tok.eos_token, add_special_tokens=False)["input_ids"]
    if len(t_ids) >= max_len // 2:
        t_ids = t_ids[: max_len // 2]
    if len(p_ids) + len(t_ids) > max_len:
        return None  # longer than we train on; rare with shortened passages
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def train_adapter(base_model: str, examples: list[Example], out_dir: Path | str, *, rank: int = 8, alpha: int = 16,
                  lr: float = 3e-4, epochs: int = 1, grad_accum: int = 4, max_len: int = 768, seed: int = 0,
                  base_dir: Path | None = None, progress: Callable[[int, int, float], None] | None = None,
                  info: dict | None = None) -> AdapterReport:
    """Train a LoRA adapter on ``examples`` and save it (peft safetensors + GGUF LoRA + adapter.json)."""
    torch = require("torch")
    peft = require("peft")
    from app.env import threads
    from app.generators import TransformersGenerator
    from app.settings import GeneratorSettings

    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_num_threads(threads())
    gen = TransformersGenerator(GeneratorSettings(backend="transformers", model=base_model), base_dir).load()
    model, tok = gen.model, gen.tokenizer
    encoded = [e for e in (_encode(tok, ex, max_len) for ex in examples) if e is not None]
    if not encoded:
        raise SlmragError("No training example fits the sequence limit; check the training rows and the pack's prompt.")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05, target_modules=TARGET_MODULES,
                             bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order = [i for _ in range(epochs) for i in rng.sample(range(len(encoded)), len(encoded))]
    steps = math.ceil(len(order) / grad_accum)
    sched = warmup_then_decay(opt, steps, floor=0.05)
    from app.embedder import native_bf16

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16())
    model.train()
    t0 = time.perf_counter()
    n_tokens, ema, step = 0, None, 0
    for j, i in enumerate(order, start=1):
        ids, labels = encoded[i]
        x = torch.tensor([ids])
        y = torch.tensor([labels])
        with autocast:
            loss = model(input_ids=x, labels=y).loss / grad_accum
        loss.backward()
        n_tokens += len(ids)
        value = float(loss.detach()) * grad_accum
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if j % grad_accum == 0 or j == len(order):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if progress:
                progress(step, steps, ema)
    seconds = time.perf_counter() - t0
    model.eval()
    out_dir = Path(out_dir)
    tmp = scratch_dir(out_dir)
    _save_peft(model, tmp, torch, base_model)
    write_gguf_lora(tmp, tmp / GGUF_FILE, gen.gguf_source())
    shapes: dict[str, int] = {}
    for ex in examples:
        shapes[ex.shape] = shapes.get(ex.shape, 0) + 1
    report = AdapterReport(out_dir, len(encoded), shapes, step, seconds, n_tokens, float(ema or 0.0))
    meta = {**(info or {}), **report.to_json(), "rank": rank, "alpha": alpha, "lr": lr, "epochs": epochs,
            "grad_accum": grad_accum, "max_len": max_len, "seed": seed, "target_modules": TARGET_MODULES,
            "not_found_examples": sum(1 for e in examples if not e.has_gold)}
    meta.pop("out_dir", None)
    (tmp / ADAPTER_INFO).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)
    report.info = meta
    return report


def _save_peft(model, folder: Path, torch, base_model: str) -> None:
    """The peft adapter as fp16 safetensors (half the size; loading casts back) plus its config, which names
    the base as the pack does (``base_model``), not by this machine's path to its dequantized copy."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = model.peft_config["default"]
    config.base_model_name_or_path = base_model
    config.save_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------- GGUF
def _permute_rows(w, n_head: int):
    """llama.cpp's converter reorders the rows of q/k projections for its rotary layout; a LoRA B matrix
    (rows = output features) must be reordered the same way to apply to the converted weights."""
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_lora(peft_dir: Path, out_file: Path, base_gguf: Path) -> Path:
    """Write the peft adapter in ``peft_dir`` as a llama.cpp GGUF LoRA file for the base model ``base_gguf``."""
    gguf = require("gguf")
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((peft_dir / "adapter_config.json").read_text(encoding="utf-8"))
    reader = gguf.GGUFReader(str(base_gguf))

    def field_value(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        part = f.parts[f.data[0]]
        return bytes(part).decode() if f.types and f.types[0] == gguf.GGUFValueType.STRING else part[0]

    arch = field_value("general.architecture")
    if arch != "llama":
        raise SlmragError(f"GGUF LoRA export supports llama-architecture base models; {base_gguf} is '{arch}'.")
    n_head = int(field_value(f"{arch}.attention.head_count"))
    n_head_kv = int(field_value(f"{arch}.attention.head_count_kv") or n_head)
    state = load_file(str(peft_dir / "adapter_model.safetensors"))
    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
    pattern = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
    count = 0
    for key in sorted(state):
        m = pattern.search(key)
        if not m or m.group(2) not in _GGUF_NAMES:
            raise SlmragError(f"Unexpected tensor '{key}' in the adapter; only {TARGET_MODULES} are exported.")
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        w = state[key].astype(np.float32)
        if ab == "B" and module == "q_proj":
            w = _permute_rows(w, n_head)
        elif ab == "B" and module == "k_proj":
            w = _permute_rows(w, n_head_kv)
        name = f"blk.{layer}.{_GGUF_NAMES[module]}.weight.lora_{ab.lower()}"
        writer.add_tensor(name, w.astype(np.float16))
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if count == 0:
        raise SlmragError(f"{peft_dir} holds no LoRA tensors.")
    return out_file


# ---------------------------------------------------------------------------------------------- dev figures
def adapter_dev_figures(pack, report: dict, base: dict | None = None) -> tuple[dict, str]:
    """The answer figures of a full ``slmrag eval`` report (adapter on) to keep in ``adapter.json``, with the
    base model's beside them when ``base`` (the same run with ``--no-adapter``) is given; returns (figures,
    the eval's command). Refuses a report of another pack, another adapter, a subset or without answers."""
    from app.generators import adapter_file
    from app.store import file_sha256

    def answers_of(r: dict, want_adapter: bool) -> dict:
        meta = r.get("meta") or {}
        gen = (meta.get("pack") or {}).get("generator") or {}
        if (meta.get("pack") or {}).get("name") != pack.name:
            raise SlmragError(f"The report is of pack '{(meta.get('pack') or {}).get('name')}', not '{pack.name}'.")
        if not meta.get("answers"):
            raise SlmragError("The report has no answers (it was run with --no-answers); run `slmrag eval` with answers.")
        if meta.get("questions_run") != meta.get("questions_total"):
            raise SlmragError(f"The report ran {meta.get('questions_run')} of {meta.get('questions_total')} questions "
                              "(--limit); dev figures are recorded from the full set only.")
        if want_adapter and gen.get("adapter_sha256") != file_sha256(adapter_file(pack.config.generator, pack.path, "gguf")):
            raise SlmragError("The report was not made with this pack's current adapter (adapter_sha256 differs or is "
                              "missing); run `slmrag eval` again with the adapter on.")
        if not want_adapter and gen.get("adapter"):
            raise SlmragError("The --base report was made with an adapter; run it with --no-adapter.")
        s = r["aggregates"]["all"]["slmrag"]
        a = s.get("answers") or {}
        return {"questions": meta.get("questions_file"), "n": meta.get("questions_run"),
                "adapter_merge": gen.get("adapter_merge") if gen.get("adapter") else None, "tasks": a.get("tasks"),
                "abstention_rate": a.get("abstention_rate"), "grounded_rate": a.get("grounded_rate"),
                "withheld_rate": a.get("withheld_rate"),
                "first_token_p50_s": ((s.get("latency") or {}).get("first_token_s") or {}).get("p50"),
                "decode_tok_s_mean": (s.get("tokens_per_s") or {}).get("mean"),
                "decode_tok_s_pooled": (s.get("tokens_per_s") or {}).get("pooled")}

    figures = answers_of(report, True)
    if base is not None:
        figures["base_model"] = answers_of(base, False) | {"command": (base.get("meta") or {}).get("command")}
    return figures, str((report.get("meta") or {}).get("command") or "")
