"""Training of the cross-encoder relevance filter (:mod:`app.filters.cross_encoder`) on a pack's own index.

Label-free: :func:`build_training_pairs` takes a sentence, heading or keyword query out of a chunk
(:func:`pseudo_queries`), uses the rest of the chunk as the positive, BM25 / dense neighbours at other
positions as hard negatives, plus random negatives. :func:`train_cross_encoder` fine-tunes the packaged
MiniLM on them in a plain torch loop and saves it, as safetensors, where the filter loads it from.

Measured on the team's dev sets (docs/filter.md, bench/bench_filter.py): the trained model does not beat
the cosine baseline overall on 2 CPU cores, so the shipped packs use ``cosine``; it stays available per pack.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.errors import SlmragError, require
from app.filters.cross_encoder import doc_label, model_passage, normalize
from app.pair_model import QuestionBound
from app.training import balanced_bce, replace_dir, scratch_dir, warmup_then_decay

TRAIN_INFO = "slmrag_training.json"

_SENT_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[]?[A-Z0-9])|\n{2,}|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_SECTION_LABEL = re.compile(r"^\s*[A-Z][A-Z /&-]{2,30}:\s*")
_REF_WORD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Za-z&']{2,}(?![A-Za-z0-9])")
_REF_TEMPLATES = ("{ref}: {q}", "In the {ref}, {q}", "{q} ({ref})", "According to {ref}, {q}")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves shall may must also such upon within without herein thereof hereof hereby
    including include includes per any each other such said""".split()
)


@dataclass
class TrainingPair:
    query: str
    passage: str
    label: float
    kind: str  # "sentence" | "heading" | "keywords"; negatives: "bm25" | "dense" | "random"
    vid: int  # the chunk the passage text comes from
    query_vid: int  # the chunk the query was taken from


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text) if s and s.strip()]


def _good_sentence(s: str) -> bool:
    words = s.split()
    if not 6 <= len(words) <= 45:
        return False
    alpha = sum(ch.isalpha() for ch in s)
    digits = sum(ch.isdigit() for ch in s)
    return alpha >= 0.6 * len(s.replace(" ", "")) and digits <= 0.25 * max(1, alpha) and len(_WORD.findall(s)) >= 5


def _remove_span(text: str, span: str) -> str:
    i = text.find(span)
    if i < 0:
        return text
    return (text[:i].rstrip() + " " + text[i + len(span):].lstrip()).strip()


def pseudo_queries(text: str, heading: str, idf: dict[str, float], rng: random.Random,
                   max_queries: int = 1) -> list[tuple[str, str, str]]:
    """Up to ``max_queries`` (query, positive_passage, kind) made from one chunk.

    * sentence: an informative sentence taken *out* of the chunk; the rest of the chunk is the
      positive (so the model learns topical relevance, not string matching);
    * heading: the section heading, removed from the passage text when repeated there;
    * keywords: 3-5 of the chunk's rarest content words in random order (a terse search query).
    A query is dropped when its normalized form still occurs verbatim in its positive.
    """
    out: list[tuple[str, str, str]] = []
    sents = [s for s in split_sentences(text) if _good_sentence(s)]
    rng.shuffle(sents)
    head = heading.strip().splitlines()[-1].strip() if heading and heading.strip() else ""
    options: list[str] = ["sentence"] * min(len(sents), 3)
    if head and 2 <= len(_WORD.findall(head)) and len(head.split()) <= 16:
        options.append("heading")
    options.append("keywords")
    rng.shuffle(options)
    # a sentence, when there is one, comes first: it reads most like a question about the passage
    if "sentence" in options:
        options.remove("sentence")
        options.insert(0, "sentence")
    for kind in options:
        if len(out) >= max_queries:
            break
        if kind == "sentence":
            s = sents.pop()
            query = _SECTION_LABEL.sub("", s).rstrip(".;")  # "RESULTS: ..." -> "..."
            words = query.split()
            if len(words) > 24:  # a question is short: keep a window of the sentence
                start = rng.randrange(0, len(words) - 20)
                query = " ".join(words[start:start + 20])
            positive = _remove_span(text, s)
        elif kind == "heading":
            query = head
            positive = text.replace(head, " ").strip()
        else:
            counts: dict[str, int] = {}
            for w in _WORD.findall(text):
                lw = w.lower()
                if lw not in _STOP:
                    counts[lw] = counts.get(lw, 0) + 1
            if len(counts) < 4:
                continue
            ranked = sorted(counts, key=lambda w: -(idf.get(w, 1.0) * (1 + math.log(counts[w]))))[:10]
            picked = rng.sample(ranked, min(len(ranked), rng.randint(3, 5)))
            query = " ".join(picked)
            positive = text
        if len(positive.split()) < 15:
            continue
        nq = normalize(query)
        if not nq or nq in normalize(positive):
            continue
        out.append((query, positive, kind))
    return out


def _idf(texts: Sequence[str]) -> dict[str, float]:
    df: dict[str, int] = {}
    for t in texts:
        for w in {w.lower() for w in _WORD.findall(t)}:
            df[w] = df.get(w, 0) + 1
    n = len(texts)
    return {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}


def build_training_pairs(snapshot, *, max_queries: int = 400, hard_negatives: int = 2, random_negatives: int = 1,
                         seed: int = 0, neighbours: int = 20) -> list[TrainingPair]:
    """Label-free training pairs from an index snapshot (see :func:`pseudo_queries`).

    For each sampled chunk: one pseudo-query (up to three on a small index), half of them naming the
    document when its file name has distinctive words; the chunk (minus the query sentence) as positive,
    ``hard_negatives`` neighbours (alternating BM25 of the query and the chunk's nearest stored
    vectors) that are not the chunk, not an overlapping neighbour in the same document (chunks share
    overlap tokens) and do not contain the query text, and ``random_negatives`` random chunks.
    Passages are what the model reads at run time: :func:`model_passage` (document name, heading, text).
    """
    chunks = [c for c in snapshot.chunks if len(c.text.split()) >= 20]
    if len(chunks) < 4:
        raise SlmragError(
            f"The index at {snapshot.path} has {len(chunks)} usable chunks; ingest more documents before "
            "training the cross-encoder (it learns from the pack's own corpus)."
        )
    rng = random.Random(seed)
    idf = _idf([c.text for c in snapshot.chunks])
    pos_of = snapshot.vid_to_pos
    all_chunks = snapshot.chunks
    sample = rng.sample(chunks, min(len(chunks), max_queries))
    per_chunk = min(3, max(1, math.ceil(max_queries / len(chunks))))  # small indexes: more queries per chunk

    from app.retrieval import Retriever
    from app.settings import RetrievalSettings

    bm25 = Retriever(snapshot, None, RetrievalSettings())  # BM25 only; no embedder needed
    faiss_index = snapshot.faiss_index

    def acceptable(cand, src, query_norm: str) -> bool:
        if cand.vid == src.vid:
            return False
        if cand.doc_id == src.doc_id and abs(cand.ord - src.ord) <= 2:
            return False
        if len(cand.text.split()) < 10:
            return False
        ct = normalize(cand.text)
        return query_norm not in ct and ct not in normalize(src.text)

    pairs: list[TrainingPair] = []
    docs = snapshot.documents
    name_of = {d: (rec.name if rec else "") for d, rec in docs.items()}
    ref_df: dict[str, int] = {}
    for rec in docs.values():
        for w in {w.lower() for w in _REF_WORD.findall(doc_label(rec.name))}:
            ref_df[w] = ref_df.get(w, 0) + 1
    n_docs = max(1, len(docs))

    def doc_ref(doc_id: str) -> str:
        """Words of the document's name that tell it apart (in <= 30 % of names): "MetLife Remarketing"."""
        if n_docs < 2:
            return ""
        words = [w for w in _REF_WORD.findall(doc_label(name_of.get(doc_id, ""))) if ref_df.get(w.lower(), 0) / n_docs <= 0.3]
        return " ".join(words[:6])

    def as_passage(chunk, text: str | None = None, heading: str | None = None) -> str:
        return model_passage(chunk.text if text is None else text, name_of.get(chunk.doc_id, ""),
                             chunk.heading if heading is None else heading)

    jobs = [(src, made) for src in sample for made in pseudo_queries(src.text, src.heading, idf, rng, per_chunk)]
    for src, (query, positive, kind) in jobs[:max_queries]:
        qn = normalize(query)
        ref = doc_ref(src.doc_id)
        if ref and rng.random() < 0.5:  # real questions often name the contract or the company
            query = rng.choice(_REF_TEMPLATES).format(ref=ref, q=query)
        positive = as_passage(src, positive, "" if kind == "heading" else None)
        if normalize(query) in normalize(positive):  # e.g. a heading that repeats the document's name
            continue
        pairs.append(TrainingPair(query, positive, 1.0, kind, src.vid, src.vid))
        # hard negatives: interleave BM25 neighbours of the query and dense neighbours of the chunk
        bm = []
        scores = bm25.bm25_scores(query)
        for pos in np.argsort(-scores)[: neighbours + 3]:
            if scores[pos] > 0:
                bm.append(all_chunks[int(pos)])
        dn = []
        if faiss_index is not None and faiss_index.ntotal > 1:
            found = snapshot.search(snapshot.vector(src.vid), neighbours + 3)
            dn = [all_chunks[pos_of[vid]] for vid, _ in found if vid in pos_of]
        # other documents first: a neighbour from the query's own document is often relevant to it too
        bm.sort(key=lambda c: c.doc_id == src.doc_id)
        dn.sort(key=lambda c: c.doc_id == src.doc_id)
        used: set[int] = set()
        streams = [("bm25", iter(bm)), ("dense", iter(dn))]
        picked = 0
        while picked < hard_negatives and streams:
            name, it = streams.pop(0)
            for cand in it:
                if cand.vid not in used and acceptable(cand, src, qn):
                    used.add(cand.vid)
                    pairs.append(TrainingPair(query, as_passage(cand), 0.0, name, cand.vid, src.vid))
                    picked += 1
                    streams.append((name, it))  # take turns while a stream has candidates left
                    break
        tries = 0
        got = 0
        while got < random_negatives and tries < 20:
            tries += 1
            cand = rng.choice(all_chunks)
            if cand.vid not in used and acceptable(cand, src, qn):
                used.add(cand.vid)
                pairs.append(TrainingPair(query, as_passage(cand), 0.0, "random", cand.vid, src.vid))
                got += 1
    return pairs


# ---------------------------------------------------------------------------- training
@dataclass
class TrainReport:
    model_dir: Path
    pairs: int
    positives: int
    steps: int
    seconds: float
    final_loss: float
    kinds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"model_dir": str(self.model_dir), "pairs": self.pairs, "positives": self.positives,
                "steps": self.steps, "seconds": round(self.seconds, 1), "final_loss": round(self.final_loss, 4),
                "kinds": self.kinds}


def train_cross_encoder(snapshot, out_dir: Path | str, *, max_queries: int = 400, hard_negatives: int = 2,
                        random_negatives: int = 1, epochs: int = 1, batch_size: int = 16, lr: float = 3e-4,
                        max_length: int = 256, seed: int = 0, max_steps: int | None = None,
                        layers: int | None = None, train_max_length: int | None = 128, head_lr_mult: float = 10.0,
                        loss: str = "listwise",
                        base_model: Path | str | None = None,
                        progress: Callable[[int, int, float], None] | None = None,
                        pairs: list[TrainingPair] | None = None) -> TrainReport:
    """Fine-tune the packaged MiniLM as a 1-logit cross-encoder on label-free pairs; save safetensors.

    A plain PyTorch loop, so no ``datasets``/trainer machinery is needed: AdamW with linear warm-up and
    decay, word embeddings frozen, the head at ``head_lr_mult`` times the encoder's learning rate, and by
    default a listwise loss (softmax over each pseudo-question's positive and its negatives; ``loss="bce"``
    for pointwise BCE). Training reads pairs cut to ``train_max_length`` tokens (speed); the saved model
    scores up to ``max_length``. ``layers`` keeps only the first N encoder layers (a faster model).
    ``progress(step, total, loss)`` is called every step. The model is written to a temporary folder
    and renamed into place, so a crash never leaves a half-written model that the filter would load;
    no pickle file is ever written (checked).

    Measured (docs/filter.md): with the default budget (400 pseudo-questions, one epoch, 100 steps,
    2-4 minutes on 2 shared cores) it ranks better than cosine on the legal dev set (AUC 0.62 vs 0.50)
    and worse on medical (0.65 vs 0.71) and finance (0.46 vs 0.64); 30 steps learned nothing.
    """
    torch = require("torch")
    require("sentence_transformers", "sentence-transformers")
    from sentence_transformers import CrossEncoder

    from app.env import threads
    from app.models import packaged_path

    t0 = time.perf_counter()
    torch.set_num_threads(threads())
    torch.manual_seed(seed)
    if pairs is None:
        pairs = build_training_pairs(snapshot, max_queries=max_queries, hard_negatives=hard_negatives,
                                     random_negatives=random_negatives, seed=seed)
    if not pairs or not any(p.label > 0 for p in pairs):
        raise SlmragError("No training pairs could be built from this index (are its chunks very short?).")
    base = str(base_model or packaged_path("minilm"))
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)  # "Converting ... to CrossEncoder"
    from app.models import MODEL_LOAD_LOCK

    with MODEL_LOAD_LOCK:  # transformers' loading (its lazy imports too) is not thread-safe, see app.models
        ce = CrossEncoder(base, num_labels=1, max_length=max_length, local_files_only=True, device="cpu")
    model = ce.transformers_model
    tok = ce.tokenizer
    encoder_layers = model.base_model.encoder.layer
    if layers is not None and 0 < layers < len(encoder_layers):  # a shallower model: faster to train and run
        model.base_model.encoder.layer = torch.nn.ModuleList(list(encoder_layers)[:layers])
        model.config.num_hidden_layers = layers
    pooler = getattr(model.base_model, "pooler", None)
    dense = getattr(pooler, "dense", None)
    if isinstance(dense, torch.nn.Linear) and dense.in_features == dense.out_features:
        # The packaged MiniLM's pooler (never trained for sentence-transformers) maps [CLS] to outputs of
        # ~0.05 with almost no spread, so the head's gradients vanish; start it as tanh([CLS]) instead.
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.in_features))
            dense.bias.zero_()
    for p in model.base_model.embeddings.word_embeddings.parameters():
        p.requires_grad_(False)
    train_len = min(max_length, train_max_length or max_length)
    # A statement longer than the window is cut as a long question is read (the tokenizer refuses such a pair),
    # once, not at every step that draws it.
    bound = QuestionBound(train_len, Path(base) / "tokenizer.json" if (Path(base) / "tokenizer.json").is_file() else None)
    queries = [bound(p.query) for p in pairs]
    rng = random.Random(seed)
    # Groups: one pseudo-query with its positive and its negatives (build_training_pairs emits them together).
    groups: list[list[int]] = []
    for i, p in enumerate(pairs):
        if p.label > 0 or not groups or pairs[groups[-1][0]].query != p.query:
            groups.append([i])
        else:
            groups[-1].append(i)
    listwise = loss == "listwise"
    if listwise:
        groups = [g for g in groups if len(g) > 1 and pairs[g[0]].label > 0]
        if not groups:
            raise SlmragError("No pseudo-question got a negative passage; the index is too small to train on.")
    per_batch = max(1, batch_size // 4) if listwise else batch_size
    units = groups if listwise else [[i] for i in range(len(pairs))]
    batches: list[list[int]] = []
    for _ in range(epochs):
        order = list(range(len(units)))
        rng.shuffle(order)
        for b in range(0, len(order), per_batch):
            batches.append([i for u in order[b:b + per_batch] for i in units[u]])
    if max_steps is not None:
        batches = batches[:max_steps]
    total = len(batches)
    params = [p for p in model.parameters() if p.requires_grad]
    # The classification head starts random (the packaged MiniLM is a bi-encoder): with only tens of steps
    # it needs a far larger step size than the pretrained encoder layers to learn anything.
    head = [p for n, p in model.named_parameters() if p.requires_grad and ("classifier" in n or "pooler" in n)]
    head_ids = {id(p) for p in head}
    body = [p for p in params if id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}], weight_decay=0.01)
    sched = warmup_then_decay(opt, total)
    n_pos = sum(p.label > 0 for p in pairs)
    bce = balanced_bce([p.label for p in pairs])
    model.train()
    ema = None
    for step, idx in enumerate(batches, start=1):
        enc = tok([queries[i] for i in idx], [pairs[i].passage for i in idx], truncation="only_second",
                  max_length=train_len, padding=True, return_tensors="pt")
        logits = model(**enc).logits.view(-1)
        if listwise:
            # softmax over each query's group, the positive first: learn to rank it above its negatives
            value_loss, start = 0.0, 0
            sizes = []
            for i in idx:
                if pairs[i].label > 0:
                    sizes.append(1)
                else:
                    sizes[-1] += 1
            for n in sizes:
                value_loss = value_loss + torch.nn.functional.cross_entropy(logits[start:start + n].view(1, -1),
                                                                           torch.zeros(1, dtype=torch.long))
                start += n
            loss_t = value_loss / len(sizes)
        else:
            labels = torch.tensor([pairs[i].label for i in idx], dtype=torch.float32)
            loss_t = bce(logits, labels)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss_t.detach())
        ema = value if ema is None else 0.8 * ema + 0.2 * value
        if progress:
            progress(step, total, ema)
    model.eval()

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(out_dir)
    ce.save_pretrained(str(tmp), safe_serialization=True, create_model_card=False)
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    seconds = time.perf_counter() - t0
    report = TrainReport(out_dir, len(pairs), n_pos, total, seconds, float(ema or 0.0), kinds)
    info = report.to_json() | {"base_model": base, "index_generation": getattr(snapshot, "generation", None),
                               "max_length": max_length, "train_max_length": train_len, "lr": lr, "batch_size": batch_size,
                               "epochs": epochs, "layers": model.config.num_hidden_layers, "loss": loss}
    (tmp / TRAIN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    replace_dir(tmp, out_dir)
    return report
