"""Dev questions: the one loader, the one doc-scoping rule and the one evidence rule.

``slmrag eval`` (:mod:`app.evaluation.runner`), ``slmrag filter calibrate``
(:mod:`app.evaluation.calibration`) and the benchmarks all read question files and judge retrieved
passages through these, so a passage is "gold" by the same rule everywhere. The file format is in
``docs/eval.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.errors import InputError
from app.evaluation.metrics import passage_holds_evidence

REQUIRED_FIELDS = ("id", "question", "answer", "evidence", "doc")  # evidence may be "", answer too when answerable: false


def load_questions(path: Path | str, limit: int | None = None, *, labelled: bool = True) -> list[dict]:
    """Read a question JSONL file, the first ``limit`` questions when given (the whole file is still
    validated); raises InputError naming the bad line. ``labelled=False`` asks only for a ``question`` on
    each line (question files that teach which field a question belongs to, not its answer)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: no such question file; pass a .jsonl file with one question per line.")
    if limit is not None and limit < 1:
        raise InputError(f"the question limit must be at least 1, got {limit}.")
    questions: list[dict] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object.")
            if not isinstance(q, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(q).__name__}.")
            # A row marked answerable: false has no answer by definition (legal training rows: the clause
            # is absent from that contract), and an arithmetic answer may have no single evidence snippet.
            optional = {"evidence"} | ({"answer"} if q.get("answerable") is False else set())
            required = REQUIRED_FIELDS if labelled else ("question",)
            missing = [f for f in required
                       if not isinstance(q.get(f), str) or (f not in optional and not q[f].strip())]
            if missing:
                raise InputError(f"{path}:{lineno}: missing or empty field(s) {', '.join(missing)}; every question "
                                 f"needs {', '.join(required)} (see docs/eval.md).")
            if isinstance(q.get("id"), str):  # always, when labelled
                if q["id"] in seen:
                    raise InputError(f"{path}:{lineno}: duplicate id '{q['id']}'; ids must be unique.")
                seen.add(q["id"])
            questions.append(q)
    if not questions:
        raise InputError(f"{path}: holds no questions.")
    return questions if limit is None else questions[:limit]


def scope(q: dict) -> str | None:
    """The document a question is searched in: its own when it is ``doc_scoped`` (its wording only makes
    sense within that document, e.g. TAT-QA), else None (the whole index)."""
    return q.get("doc") if q.get("doc_scoped") else None


def evidence_passages(retriever, found: list, q: dict) -> list:
    """The passages of ``found`` (what retrieval returned for ``q``) that hold its gold evidence; when
    retrieval missed it, the first one of its own document's passages that does (so a training row still
    teaches where its answer is), or none."""
    gold = [p for p in found if holds_evidence(p, q)]
    return gold or [p for p in retriever.search(q["question"], 50, doc=q["doc"]) if holds_evidence(p, q)][:1]


def holds_evidence(passage, q: dict) -> bool:
    """Whether a retrieved passage holds the question's gold evidence (the rule of
    :func:`app.evaluation.metrics.passage_holds_evidence`); never for a question without a ``doc``."""
    if not q.get("doc"):
        return False
    return bool(passage_holds_evidence(passage.text, passage.source, passage.page, q))
