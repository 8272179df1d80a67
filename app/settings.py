"""The validated settings tree of a domain pack (``pack.yaml``).

One pydantic model per concern, a description on every field, ``extra='forbid'`` everywhere so a typo
in a pack is an error that names the field instead of a silently ignored setting.
"""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

PACKAGED_GENERATOR = "packaged:smollm2"
PACKAGED_EMBEDDER = "packaged:minilm"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _registered_in(field: str, module: str, registry: str):
    """A validator: ``field`` must name an entry of the registry ``module.registry``, else the same error
    pydantic gives for a Literal.

    Extension points (generator backends, filter kinds) keep their one list in their registry, so the
    fields naming them are plain strings checked here rather than a Literal that would repeat the list.
    The registry is imported when a value is validated, not here: its module imports this one.
    """

    def check(cls, value: str) -> str:
        known = getattr(importlib.import_module(module), registry)
        if value not in known:
            names = [repr(name) for name in known]
            expected = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    return field_validator(field)(classmethod(check))


class GeneratorSettings(_Strict):
    backend: str = Field(
        "llamacpp",
        description="Which generator backend runs the model: 'llamacpp' (GGUF through llama-cpp-python, "
        "fastest on CPU), 'transformers' (a GGUF or any HF model directory/id), 'openai' (any "
        "OpenAI-compatible server such as vLLM, Ollama or llama.cpp's server), or one registered with "
        "app.generators.register_backend.",
    )
    _known_backend = _registered_in("backend", "app.generators", "BACKENDS")
    model: str = Field(
        PACKAGED_GENERATOR,
        description="'packaged:smollm2' for the embedded SmolLM2-135M-Instruct, a path to a .gguf file or an "
        "HF model directory, an HF model id already in the local cache, or the model name served by an "
        "OpenAI-compatible endpoint.",
    )
    adapter: str | None = Field(
        None,
        description="A LoRA adapter folder for the model, relative to the pack folder (trained by `slmrag "
        "adapt train`): adapter.gguf for llamacpp, adapter_model.safetensors + adapter_config.json for "
        "transformers, adapter.json with how it was trained. Only for the base model it was trained on.",
    )
    adapter_merge: bool = Field(
        True,
        description="llamacpp only: merge the adapter into the model's weights once (a cached Q8_0 GGUF, built "
        "in a few seconds on first load), so answers run at the base model's speed. False applies it at run "
        "time (Llama(lora_path=...)): no cache file, but ~0.76x the decode speed and +0.5 s to the first "
        "token on SmolLM2-135M.",
    )
    base_url: str | None = Field(
        None, description="For backend 'openai': the server's base URL, e.g. http://127.0.0.1:8000/v1."
    )
    api_key_env: str | None = Field(
        None,
        description="For backend 'openai': the environment variable holding the API key, if the server wants "
        "one (OPENAI_API_KEY is never read unless named here).",
    )
    tokenizer: str | None = Field(
        None,
        description="For backend 'openai': a local copy of the served model's tokenizer - 'packaged:smollm2', a "
        ".gguf file or an HF model directory. With it prompts are counted exactly, and 'label' answers and the "
        "'slm_judge' filter score choices from the server's next-token log-probabilities (/v1/completions with "
        "logprobs, as llama-cpp-python's server and vLLM return them). Without it tokens are estimated and "
        "labels are read from the answer's text.",
    )
    logprobs: int = Field(
        2000,
        ge=1,
        le=50000,
        description="For backend 'openai' with a tokenizer: how many of the likeliest next tokens the server "
        "returns when choices are scored; a label whose tokens are not among them counts as 0. After a long "
        "prompt a small model's labels can rank in the hundreds (medical dev: 'maybe' missing at 200, label "
        "scores within ~0.05 of the embedded model's at 2000). vLLM caps it at --max-logprobs (20 unless "
        "raised).",
    )
    extra_body: dict[str, object] | None = Field(
        None,
        description="For backend 'openai': fields added to every request, for a server's own sampling options, "
        "e.g. {repeat_penalty: 1.1} (llama.cpp servers) or {repetition_penalty: 1.1} (vLLM); repeat_penalty "
        "above is not sent, since servers name it differently.",
    )
    n_ctx: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    max_tokens: int = Field(200, ge=1, le=4096, description="Most tokens generated per answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Penalty on repeated tokens.")
    requantize: Literal["none", "q4_0"] = Field(
        "q4_0",
        description="llamacpp only: requantize the GGUF once into the cache (Q4_0 prefills ~2x faster on "
        "CPU than the shipped Q4_1).",
    )
    timeout_s: float = Field(
        120.0, gt=0,
        description="For backend 'openai': seconds to wait for the server's response (for each streamed piece).",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="For backend 'openai': seconds to wait for a connection to the server."
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="For backend 'openai': retries, with backoff, of a request that failed to connect, timed "
        "out or got 408/409/429/5xx, before the error is shown.",
    )
    concurrency: int = Field(
        1, ge=1, le=256,
        description="Answers generated at once; further questions wait their turn in a queue and are shown "
        "their place. 1 suits a model in this process on a small CPU (one answer already uses every core); "
        "raise it for a server backend that batches requests (e.g. vLLM).",
    )


class EmbedderSettings(_Strict):
    model: str = Field(
        PACKAGED_EMBEDDER,
        description="'packaged:minilm' for the embedded all-MiniLM-L6-v2, or a local sentence-transformers "
        "directory.",
    )
    # Small batches are faster on CPU, not slower: a batch's attention scores (batch x 12 heads x tokens^2
    # floats, ~80 MB at 64 chunks of ~230 tokens) stop fitting in cache. Measured on 1,000 finance chunks, 2
    # cores (bench/embed_precision.py run --batch B): torch bf16 66.5 chunks/s at 64, 85.3 at 16, 80.9 at 8;
    # ONNX int8 117.2 at 64, 135.9 at 16, 134.4 at 8.
    batch_size: int = Field(16, ge=1, le=1024, description="Chunks embedded per batch (16 is fastest on a "
                            "CPU; a GPU wants more).")
    max_seq_tokens: int = Field(256, ge=16, le=8192, description="The embedder's window in tokens.")
    query_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="How questions are embedded when answering: 'onnx' (ONNX Runtime, exported once from the "
        "same weights into the cache; no torch import, so a cold start is seconds faster), 'torch', or "
        "'auto' (onnx when onnxruntime is installed and the model is a mean-pooled sentence-transformers "
        "folder). Ingestion uses torch, except with precision 'int8'.",
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="Matrix precision of the embedder on CPU: 'bf16' runs the matrix products in bfloat16 "
        "(about 3x faster where the CPU has AMX; slower than fp32 on AVX512-BF16 alone; vectors within 1e-4 cosine of "
        "fp32), 'fp32' never does, 'auto' picks bf16 only on CPUs with AMX. 'int8' runs documents "
        "and questions through ONNX Runtime with int8 weights (quantized once into the cache; about 1.6x "
        "bf16's speed on 2 cores, vectors ~0.99 cosine of fp32): an index built with int8 is searched only "
        "with int8, and switching to or from it means ingesting again.",
    )

    @model_validator(mode="after")
    def _int8_on_onnx(self) -> "EmbedderSettings":
        if self.precision == "int8" and self.query_runtime == "torch":
            raise ValueError("precision 'int8' embeds questions with ONNX Runtime too (int8 vectors are searched "
                             "with int8 questions); set query_runtime to 'auto' or 'onnx', or pick another precision")
        return self


class ChunkingSettings(_Strict):
    strategy: Literal["sections", "legal", "finance"] = Field(
        "sections",
        description="'sections' (cut at headings, then paragraphs, then sentences), 'legal' (numbered clauses "
        "and headings stay with their text), 'finance' (table rows keep their header row).",
    )
    chunk_tokens: int = Field(
        200, ge=32, le=8192, description="Target chunk size in embedder tokens (must fit the embedder's window)."
    )
    overlap_tokens: int = Field(30, ge=0, le=2048, description="Tokens shared by consecutive chunks.")
    contextual_header: bool = Field(
        True,
        description="Embed each chunk with its document title and section heading in front; the stored text "
        "stays clean.",
    )

    @field_validator("strategy", mode="before")
    @classmethod
    def _renamed_strategy(cls, value: object) -> object:
        if value == "recursive":  # its former name; old pack.yaml files get told the new one
            raise ValueError("'recursive' is now called 'sections' (it cuts at headings, then paragraphs, then "
                             "sentences); write strategy: sections")
        return value

    @model_validator(mode="after")
    def _overlap_smaller(self) -> "ChunkingSettings":
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        return self


class RetrievalSettings(_Strict):
    mode: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="Which retrievers run.")
    k: int = Field(5, ge=1, le=50, description="Passages given to the generator (before the filter).")
    candidates: int = Field(30, ge=1, le=500, description="Candidates each retriever returns before fusion.")
    dense_weight: float = Field(1.0, ge=0.0, description="Weight of the dense ranking in reciprocal rank fusion.")
    bm25_weight: float = Field(1.0, ge=0.0, description="Weight of the BM25 ranking in reciprocal rank fusion.")
    rrf_k: int = Field(60, ge=1, description="The k constant of reciprocal rank fusion.")
    metadata_boost: float = Field(
        0.0,
        ge=0.0,
        description="Extra fusion score for chunks whose document metadata (years, names) the question "
        "mentions; 0 turns it off.",
    )
    expansions: str | None = Field(
        None,
        description="Pack-relative YAML file mapping a phrase to words added to the search query when a "
        "question contains it (e.g. a financial ratio to the statement line items that hold its inputs). "
        "Domain knowledge as data; the question shown to the filter and the generator is unchanged.",
    )
    table_row_boost: float = Field(
        0.0,
        ge=0.0,
        description="Extra fusion score for a chunk holding a table row whose label (first cell, e.g. "
        "'Service cost') the question names word for word; longer labels count more. 0 turns it off.",
    )
    doc_first: bool = Field(
        False,
        description="Document-first search: rank documents by their best BM25 chunk (plus the metadata the "
        "question names, when metadata_boost > 0); when one document clearly leads, its chunks are searched "
        "on their own and placed first, then the corpus-wide ranking fills the rest. Within that document the "
        "keyword query leaves out the words that name it ('Best Buy' for BESTBUY_2019_10K): every chunk is its.",
    )
    doc_margin: float = Field(
        1.2,
        ge=1.0,
        description="Document-first search routes only when the leading document's score is at least this "
        "many times the runner-up's; 1.0 always routes to the top document.",
    )


class FilterSettings(_Strict):
    kind: str = Field(
        "cosine",
        description="The relevance filter between retriever and generator: 'cosine' (embedding similarity), "
        "'cross_encoder' (trained on the pack's own corpus by `slmrag filter train`), 'slm_judge' (the "
        "generator scores yes/no from its logits), 'none', or one registered with "
        "app.filters.register_filter.",
    )
    _known_kind = _registered_in("kind", "app.filters", "FILTERS")
    model: str | None = Field(
        None,
        description="For kind 'cross_encoder': the pack-relative folder of a relevance model trained on labelled "
        "rows (`slmrag filter train --train DIR`), shipped with the pack. Unset: the model trained on the "
        "pack's own index (`slmrag filter train` without --train) is used.",
    )
    # Finance's relevance model on 2 cores without AMX (bench/filter_cost.py, its first 60 dev questions,
    # 10 candidates): fp32 (torch) 237 ms p50, int8 110 ms, dev AUC .847 vs .846 at k = 5 (docs/filter.md).
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="How the trained relevance model (filter.model) reads its pairs: 'fp32' in torch, 'int8' "
        "through ONNX Runtime with int8 weights (exported from the model once, cached; no torch import after "
        "that): about twice as fast on CPUs with AVX512-VNNI, scores within a few hundredths of fp32. Calibrate the "
        "threshold with the precision the pack ships.",
    )
    # Finance's relevance model, bench/filter_cost.py on its first 60 dev questions (10 candidates, int8, 2 AMX
    # cores): 188 ms p50 reading 256 tokens, 145 ms reading 192, at dev AUC .846 and .847 (docs/filter.md).
    read_tokens: int = Field(
        256,  # app.pair_model.READ_LENGTH: what `slmrag filter train` reads
        ge=32,
        le=512,
        description="Tokens of each (question, passage) pair the trained relevance model reads (filter.kind "
        "cross_encoder); the rest of a longer passage is not read. Its cost grows with them. Default: the length "
        "`slmrag filter train` reads; fewer is faster and may rank worse - measure with `slmrag filter calibrate` "
        "and bench/filter_cost.py, and calibrate the threshold at the length the pack ships.",
    )
    # Finance's relevance model, dev top 5 (stop 39): AUC .847 -> .873 at 0.75, the share chosen on 400 training
    # rows (AUC .932 -> .946, flat from 0.6 to 0.9; 1, the best alone, .932; docs/filter.md).
    relative_to_best: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="For a trained filter that scores probabilities (kind 'cross_encoder' or 'slm_judge'): the share "
        "of the question's best log-odds taken out of every candidate's before the threshold reads it, "
        "sigmoid(l - relative_to_best * l_best). 0: each passage on its own score; 1: each by its distance to the "
        "question's best alone; between, a passage is kept when it scores well and near the best. A model's scores "
        "drift from question to question, and the passage that answers is the question's best more often than it "
        "clears one fixed line. By itself (rank_prior 0) it leaves the order within a question as it was, and whether a "
        "question keeps anything still turns on its best passage. Kinds 'cosine' and 'none' ignore it. Calibrate the threshold with the share "
        "the pack ships.",
    )
    # Finance and medical, stop 40: chosen on training rows (400 of each; 0.8 best at k = 5 and 10 in
    # both); dev AUC at k = 10 finance .832 -> .853, medical's model .844 -> .943 (docs/filter.md).
    rank_prior: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="For a trained filter that scores probabilities (kind 'cross_encoder' or 'slm_judge'): log-odds "
        "taken off each candidate's score per place it stands down retrieval's list before the threshold reads it "
        "(the first loses nothing, the third 2 x rank_prior). Retrieval's order is a second opinion the model, "
        "reading one pair at a time, does not see. 0: the model alone. Applied after relative_to_best; kinds 'cosine' "
        "and 'none' ignore it. Calibrate the threshold with the value the pack ships.",
    )
    threshold: float = Field(
        0.2, description="Passages scoring below this are dropped; set by `slmrag filter calibrate`."
    )
    gate: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="A question-level floor on cosine similarity, checked before any filter kind: when no retrieved "
        "passage's embedding reaches it, nothing is kept and the answer is 'not found' (questions the pack's "
        "documents are not about). Lets a trained filter choose passages while cosine, which separates topics "
        "well, decides whether the question belongs here at all. With kind 'none' the gate alone decides: every "
        "passage of a question that passes it is kept, in retrieval's order (an ask's --filter none skips it). Set by "
        "`slmrag filter calibrate --gate`; unset: no gate.",
    )
    gate_coverage: float | None = Field(
        None, ge=0.0, le=1.0,
        description="With a gate: a question under it still passes when one candidate passage - with its "
        "document's name, heading and first answers.grounding.opening_words words - holds this share of the "
        "question's content words. A plain question that names what it asks about ('On what date will the term "
        "of the Halvorsen / Blue Heron master services agreement expire?') can sit under a gate fitted to "
        "longer, templated questions in cosine while its words are all in the contract. Legal: 0.75. Unset: "
        "cosine alone decides.",
    )
    cosine_keep: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="For a trained filter (kind 'cross_encoder' or 'slm_judge'): a passage whose cosine similarity "
        "reaches this is kept whatever the trained model scores it, so documents of a kind the model was not "
        "trained on (a discharge summary or a protocol, for a model trained on research abstracts) are still "
        "judged by their embedding; the model does not score such a passage (it is kept first in the prompt, "
        "by its cosine). Set by `slmrag filter calibrate --cosine-keep`, which then chooses the "
        "threshold given it; unset: the trained model alone decides.",
    )
    cosine_floor: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="For a trained filter (kind 'cross_encoder' or 'slm_judge'): a passage whose cosine similarity "
        "is under this is dropped whatever the trained model scores it. The model was trained to tell the "
        "passage that answers from others on the question's topic, and scores another study's confident "
        "conclusion high for a question it does not address; the embedding says it is off the topic. The model "
        "does not score such a passage. Set by `slmrag filter calibrate --cosine-floor`, "
        "which then chooses the threshold given it; unset: the trained model alone decides.",
    )
    order: Literal["filter", "cosine"] = Field(
        "filter",
        description="The order the kept passages reach the prompt in, best first: 'filter' by the filter's own "
        "score (those cosine_keep keeps first, by their cosine); 'cosine' by their cosine similarity to the "
        "question, whichever filter chose them, so a trained filter decides what is kept and not where it stands. "
        "The generator reads the first passages most: finance's answers are better in cosine's order than in its "
        "relevance model's or retrieval's (docs/filter.md). Kinds 'cosine' and 'none' keep their own order.",
    )
    topic_model: str | None = Field(
        None,
        description="The pack-relative folder of a topic gate (`slmrag filter topic`): a classifier of the question's "
        "embedding, trained on this pack's questions against other domains'. A question it scores under "
        "topic_threshold keeps no passage (the answer is 'not found', 'off_topic' in its filter report), whatever "
        "the filter kind. For packs whose documents touch every field (a 10-K mentions patients and lawsuits), "
        "where passage scores cannot tell another field's question apart. Unset: no topic gate.",
    )
    topic_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The topic gate's floor on P(the question belongs to this pack); set by `slmrag filter topic` "
        "from cross-validated scores of the pack's own training questions (at most 2 % of them gated).",
    )
    min_keep: int = Field(
        0,
        ge=0,
        le=50,
        description="Keep at least this many top passages even below the threshold (0 allows abstention).",
    )
    max_context_tokens: int = Field(
        900, ge=64, le=100000, description="Token budget for the passages placed in the prompt."
    )

    @model_validator(mode="after")
    def _int8_needs_a_model(self) -> "FilterSettings":
        if self.precision == "int8" and not self.model:
            raise ValueError("precision 'int8' is how a trained relevance model (filter.model) reads its pairs, and "
                             "this pack names none; set filter.model to its folder, or remove precision")
        return self


class IngestSettings(_Strict):
    redact_pii: bool = Field(
        False,
        description="Replace personal identifiers (names after titles, dates of birth, phone numbers, e-mail, "
        "record numbers) with placeholders before chunks are stored.",
    )
    max_file_mb: float = Field(200.0, gt=0, description="Files larger than this are refused.")
    max_pages: int = Field(5000, ge=1, description="PDF pages beyond this are not read (the file is reported).")
    parse_timeout_s: float = Field(300.0, gt=0, description="Most seconds spent parsing one file.")


class PromptFiles(_Strict):
    system: str = Field("prompts/system.j2", description="System prompt template, relative to the pack folder.")
    answer: str = Field(
        "prompts/answer.j2", description="User-turn template that places the question and the passages."
    )
    abstain: str = Field("prompts/abstain.j2", description="The message shown when no passage survives.")
    disclaimer: str = Field("prompts/disclaimer.md", description="Shown with every answer (may be empty).")


def _regex(value: str | None) -> str | None:
    """``value`` if it is a valid regular expression (or None), else the error pydantic reports for the field."""
    import re

    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from exc
    return value


class RouteRule(_Strict):
    shape: str = Field(description="The answer shape this rule sends a question to (one of answers.shapes).")
    pattern: str = Field(description="A regular expression searched in the question, case-insensitive.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _regex(value)


class GroundingSettings(_Strict):
    check: Literal["lexical", "none"] = Field(
        "lexical",
        description="How an answer is checked against the passages it cites before it is shown: 'lexical' "
        "(its content words and numbers must be found in the cited text) or 'none'.",
    )
    min_support: float = Field(
        0.6, ge=0.0, le=1.0,
        description="Least share of the answer's content (words, numbers; question words and numbers count "
        "double) found in its cited passages for the answer to count as grounded.",
    )
    min_question_coverage: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Least share of the question's content words found in the cited passage (with its "
        "document name and heading) for a label, or a sentence slmrag quotes on the model's behalf, to stand: "
        "below it the passage is about something else.",
    )
    min_label_coverage: float | None = Field(
        None, ge=0.0, le=1.0,
        description="min_question_coverage for a label (yes/no) answer, where it differs: a yes/no question is "
        "one claim, and the study or clause a verdict is read from must be about the whole of it, while 'What "
        "is the incubation period of MERS?' names its subject in two words. Medical: 0.51, more than half (an "
        "abstract sharing half of a title's words, 'risk', 'factor', 'pathological' of 'Aripiprazole: a new risk factor for "
        "pathological gambling?', is another study). None: min_question_coverage.",
    )
    question_words: Literal["equal", "rarity"] = Field(
        "equal",
        description="How the question's content words weigh in every coverage check (min_question_coverage, "
        "min_label_coverage, no_verdict_coverage, filter.gate_coverage): 'equal' (each once) or 'rarity' (each by "
        "how rare it is among the index's documents, BM25's idf). In a collection of like documents - contracts - "
        "every one holds 'liability' and 'breach'; the parties a question names are in one or none, and a clause "
        "from another contract then covers little of the question. Legal: rarity.",
    )
    opening_words: int = Field(
        0, ge=0, le=500,
        description="How many words from the start of the cited passage's document also count for "
        "min_question_coverage. For documents named by what their opening says (a contract by its parties, "
        "a filing by its company) and asked about by those names: 'In the agreement between Acme and Birch, "
        "...' is about the Acme/Birch contract even where its clause does not repeat the parties. 0: the "
        "passage, its document's name and its heading only.",
    )
    name_the_document: bool = Field(
        False,
        description="When the index holds several documents (and the user chose none), the answer's document "
        "must be named by the question (a word of its file name that not all of them share: 'Amazon' for "
        "AMAZON_2019_10K.pdf); "
        "otherwise the question is answered 'not found', asking the user to name the company or choose a "
        "document. For collections of like documents (filings of many companies), where the same question "
        "has a different answer in each: revenue 'in 2019' from whichever filing ranked first is another "
        "company's figure. A question scoped to one document always passes.",
    )
    on_unsupported: Literal["withhold", "flag"] = Field(
        "withhold",
        description="What happens to an answer that fails the check: 'withhold' (replaced by the abstention "
        "with the nearest sources) or 'flag' (shown, visibly marked as not supported).",
    )

    @property
    def label_coverage(self) -> float:
        """The least question coverage a label stands on (min_label_coverage, else min_question_coverage)."""
        return self.min_question_coverage if self.min_label_coverage is None else self.min_label_coverage


class RatioSettings(_Strict):
    of: list[str] = Field(..., min_length=1, description="Row labels of the numerator, any of which a statement "
                          "may use ('net income', 'net earnings').")
    per: list[str] = Field(..., min_length=1, description="Row labels of the denominator ('revenue', 'net sales').")
    percent: bool = Field(True, description="Shown in percent (a margin), else as a plain ratio (a current ratio).")


class AnswerSettings(_Strict):
    shapes: list[str] = Field(
        default_factory=lambda: ["free"],
        description="Answer shapes this pack uses: 'label' (yes/no/maybe chosen from the model's "
        "log-probabilities, then one cited sentence), 'extract' (a verbatim quote of a passage), 'calculate' "
        "(a formula over cited figures, evaluated by slmrag) and 'free' (a few sentences).",
    )
    route: list[RouteRule] = Field(
        default_factory=list,
        description="Ordered rules sending a question to a shape; the first whose pattern matches wins.",
    )
    default: str = Field("free", description="The shape of a question no rule matches.")
    labels: list[str] = Field(
        default_factory=lambda: ["yes", "no"],
        description="The labels a 'label' answer chooses from (each must start with a different token).",
    )
    max_sentences: int = Field(3, ge=1, le=20, description="Most sentences in a 'free' answer.")
    label_calibration: Literal["content_free", "none"] = Field(
        "content_free",
        description="How a 'label' answer's probabilities are corrected before the label is chosen: "
        "'content_free' divides them by those of the same prompt with 'N/A' for question and passages "
        "(contextual calibration), so the model's standing preference for one label does not decide; 'none'.",
    )
    label_bias: dict[str, float] = Field(
        default_factory=dict,
        description="Log-probability offsets per label, added after label_calibration before the label is "
        "chosen: they correct the model's prior over labels to the one its training rows show. Fitted by "
        "`slmrag adapt labels --write` (maximum likelihood on the pack's training rows, each asked as the "
        "pack asks it); empty: no offset.",
    )
    label_reader: str | None = Field(
        None,
        description="The pack-relative folder of a label reader (a MiniLM cross-encoder trained by `slmrag adapt "
        "reader` on the pack's labelled rows): when set, a 'label' answer's label is the verdict of the kept passage "
        "most likely to state one, read by this model, and that passage's best sentence is quoted as support; "
        "the generator's label scoring is not used. Unset: the generator scores the labels.",
    )
    min_verdict: float = Field(
        0.5, ge=0.0, le=1.0,
        description="With a label reader: the least verdict (1 - its probability of 'none') the deciding passage "
        "must reach for its label to be shown. Below it no kept passage of a document the question names states a "
        "verdict, and the answer is 'not found' (decided by the model). The reader's verdicts are near 0 or above "
        ".9, so the middle is the floor.",
    )
    no_verdict_coverage: float | None = Field(
        None, ge=0.0, le=1.0,
        description="With a label reader: when no kept passage states a verdict, quote the sentence that bears on "
        "the question most (no yes/no label; with an extract_selector, its best sentence) from a passage whose "
        "document holds at least this share of the question's content words. Guidelines and protocols say what to "
        "do ('Norepinephrine is the first-choice vasopressor'), not a study's verdict, and a reader trained on "
        "abstracts' conclusions finds none there. None: the answer is 'not found'. Set it above "
        "min_label_coverage (medical: 0.6): the quote's document must be about the question, not share half its words.",
    )
    extract_selector: str | None = Field(
        None,
        description="The pack-relative folder of a sentence selector (a MiniLM cross-encoder trained by `slmrag adapt "
        "selector` on the pack's labelled rows): when set, an 'extract' answer is the kept passages' sentence this "
        "model finds most likely to answer, quoted word for word with its citation, and nothing is generated. "
        "Unset: the generator writes the quote, which is then checked to be verbatim.",
    )
    label_selector: str | None = Field(
        None,
        description="The pack-relative folder of a sentence selector trained on the pack's 'label' rows (`slmrag "
        "adapt selector --shape label`): with a label reader, a 'label' answer quotes the sentence this model finds "
        "most likely to state what the answer rests on (the clause), from the kept passages of documents that cover "
        "what the question names, instead of the reader's own pick. Unset: the reader's sentence.",
    )
    selector_confident: float = Field(
        0.0, ge=0.0, le=1.0,
        description="With a sentence selector: the score under which it is unsure of its best sentence. Then the "
        "sentences it ranked are re-ordered by how many of the question's content words each holds (its score "
        "breaks ties): an unsure selector otherwise quotes a line that shares nothing with the question (a "
        "document's 'Last updated' line for 'on how many devices ...'). 0: its ranking always stands.",
    )
    selector_question_weight: float = Field(
        0.0, ge=0.0, le=20.0,
        description="With a sentence selector: how much the share of the question's content words a sentence holds "
        "adds to the selector's logit when its sentences are ranked (words naming the sentence's document aside). "
        "The selector scores several sentences of one passage alike (a study's 'mortality rate of more than 35 %' "
        "and its '18,400 deaths' line); the words the question asks with tell them apart. 0: the selector's own "
        "ranking.",
    )
    table_lookup: bool = Field(
        False,
        description="Answer a question that asks for one line item's figure in one year ('What was net income in "
        "2019?', no arithmetic form) with the cell of a kept passage's table whose row the question names and "
        "whose column is that year, shown with the row, the year and the table's unit; nothing is generated. "
        "Off: the generator reads the table.",
    )
    row_names: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Other names tables give a line item, for reading a row off a table (table_lookup and the "
        "fixed-form calculations): when a question says a key (a phrase, on word boundaries, lower case: 'cogs'), "
        "a row labelled by one of its names ('cost of revenue', 'cost of sales') counts as the row it names. "
        "Standard synonyms of the domain, not a question's wording; empty: a row must share the question's words.",
    )
    ratios: dict[str, RatioSettings] = Field(
        default_factory=dict,
        description="Ratios a 'calculate' question may ask for by name ('net profit margin'), computed from two "
        "rows of the kept passages' tables under the years the question names: one year's ratio, their average "
        "('3 year average ... FY2015 - FY2017') or its change between two years (in points). A row is one "
        "labelled by one of the names (mostly: 'Total net sales' for 'net sales'). Used when no row of the "
        "tables is the figure itself; the formula and both rows are shown and cited. Empty: none.",
    )
    term_end: str | None = Field(
        None,
        description="A regular expression for 'extract' questions that ask on what date a term ends ('on what "
        "date will the initial term expire'). With a sentence selector, such a question is answered from the "
        "selector's best term sentence: the end date it names; else the date slmrag computes, the start date "
        "the document states plus the duration the sentence gives, both cited; else 'no end date' for a term "
        "that runs until terminated (app/answers/dates.py). Unset: quoted as any extract answer.",
    )
    label_not_found: bool = Field(
        False,
        description="For 'label' answers, also score the start of 'I could not find this in your documents' "
        "against the labels, and abstain when it wins (for adapters trained to say it when the passages do "
        "not answer).",
    )
    grounding: GroundingSettings = Field(default_factory=GroundingSettings)

    @field_validator("term_end")
    @classmethod
    def _term_end_compiles(cls, value: str | None) -> str | None:
        return _regex(value)

    @field_validator("ratios")
    @classmethod
    def _ratio_names(cls, value: dict[str, RatioSettings]) -> dict[str, RatioSettings]:
        out = {" ".join(k.lower().split()): v for k, v in value.items()}
        if "" in out:
            raise ValueError("ratios: a ratio needs a name, e.g. 'net profit margin: {of: [net income], per: [revenue]}'")
        return out

    @field_validator("row_names")
    @classmethod
    def _row_names_are_phrases(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for term, names in value.items():
            key = " ".join(term.lower().split())
            kept = [" ".join(n.split()) for n in names if n.strip()]
            if not key or not kept:
                raise ValueError(f"row_names: '{term}' needs a phrase and at least one other name, e.g. "
                                 "cogs: [cost of revenue, cost of sales]")
            out[key] = kept
        return out

    @model_validator(mode="after")
    def _known_shapes(self) -> "AnswerSettings":
        from app.answers.shapes import SHAPES

        for name in [*self.shapes, self.default, *(r.shape for r in self.route)]:
            if name not in SHAPES:
                raise ValueError(f"unknown answer shape '{name}'; known: {', '.join(SHAPES)}")
        if self.default not in self.shapes:
            raise ValueError(f"answers.default '{self.default}' is not in answers.shapes {self.shapes}")
        if "label" in self.shapes and len(self.labels) < 2:
            raise ValueError("a 'label' shape needs at least two answers.labels")
        unknown = sorted(set(self.label_bias) - set(self.labels))
        if unknown:
            raise ValueError(f"answers.label_bias names {unknown}, which are not answers.labels {self.labels}")
        return self


class IndexSettings(_Strict):
    kind: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto",
        description="The dense index: 'flat' (exact; every vector in RAM, or mapped from the file), 'hnsw' "
        "(a graph over the float32 vectors: fastest queries, more RAM than flat, a removal rebuilds the graph), "
        "'ivfpq' (inverted lists of PQ codes, 1/18 of flat's RAM at 1M vectors in bench/big_index.py, with a "
        "shortlist re-scored exactly from float16 vectors kept on disk), or 'auto' (flat until auto_threshold vectors, then ivfpq). "
        "`slmrag ingest --index-kind` overrides it for that index.",
    )
    auto_threshold: int = Field(
        200_000, ge=1024,
        description="With kind 'auto': the vector count at which a flat index becomes ivfpq (flat at 200,000 "
        "MiniLM vectors is 300 MB of RAM and about 10 ms a query on 2 cores).",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="hnsw: graph neighbours per vector (more: better recall, "
                        "more RAM, slower build).")
    hnsw_ef_construction: int = Field(80, ge=8, le=1024, description="hnsw: candidate list size while building.")
    hnsw_ef_search: int = Field(64, ge=8, le=4096, description="hnsw: candidate list size while searching "
                                "(more: better recall, slower queries).")
    ivf_nlist: int = Field(0, ge=0, le=65536, description="ivfpq: coarse lists; 0 picks about 2*sqrt(vectors), a "
                           "power of two, when the index is trained.")
    ivf_nprobe: int = Field(32, ge=1, le=65536, description="ivfpq: lists scanned per query (more: better recall, "
                            "slower queries).")
    pq_m: int = Field(0, ge=0, le=512, description="ivfpq: PQ sub-quantizers (bytes per vector); 0 means one per 8 "
                      "dimensions (48 for MiniLM's 384).")
    rerank: int = Field(100, ge=0, le=10000, description="ivfpq: candidates taken from the PQ codes and re-scored "
                        "exactly from the float16 vectors (at least the number asked for); 0 returns PQ scores.")
    retrain_growth: float = Field(2.0, gt=1.0, description="ivfpq: retrain the lists and codebooks (and re-encode "
                                  "every vector) when the index has grown this many times since it was trained.")


class PackConfig(_Strict):
    name: str = Field(description="Short identifier, used for --pack and the index folder.")
    title: str = Field(description="Human title shown in the UI.")
    description: str = Field("", description="One paragraph on what this pack is for.")
    version: str = Field("0.1.0", description="Version of this pack.")
    corpus_license: str = Field("", description="Licence of the starter corpus shipped with the pack.")
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    answers: AnswerSettings = Field(default_factory=AnswerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    prompts: PromptFiles = Field(default_factory=PromptFiles)
    corpus_dir: str = Field("corpus", description="Starter corpus folder, relative to the pack folder.")
    examples: list[str] = Field(default_factory=list, description="Example questions shown in the UI.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value):
            raise ValueError(
                "must be 1-64 characters of lowercase letters, digits, '-' or '_', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _chunks_fit_embedder(self) -> "PackConfig":
        # A chunk longer than the embedder's window is silently truncated when embedded: its end would
        # never be searchable. Refuse the configuration instead.
        if self.chunking.chunk_tokens + 24 > self.embedder.max_seq_tokens:
            raise ValueError(
                f"chunking.chunk_tokens ({self.chunking.chunk_tokens}) leaves no room for the contextual "
                f"header within embedder.max_seq_tokens ({self.embedder.max_seq_tokens}); lower it"
            )
        return self
