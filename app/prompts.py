"""Prompt templates: data files rendered with a strict, sandboxed Jinja2 environment.

Strict: a variable the template uses but the caller does not pass is an error (StrictUndefined), and
every pack's templates are test-rendered when the pack loads, so the error appears at load time with the
file name. Sandboxed: a pack someone hands you cannot reach Python internals from a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from app.errors import ConfigError

# The variables each template may use; load-time validation renders with these sample values.
TEMPLATE_VARIABLES: dict[str, dict] = {
    "system": {"pack": {"title": "T", "name": "n"}},
    "answer": {
        "question": "Q?",
        "passages": [{"n": 1, "source": "a.pdf", "page": 1, "text": "passage", "heading": ""}],
        "pack": {"title": "T", "name": "n"},
        "shape": "free",  # the answer shape the question was routed to (app/answers/shapes.py)
        "labels": ["yes", "no"],  # the pack's answers.labels, for the 'label' shape
    },
    # reason: "filter" (no passage passed the relevance filter), "unsupported" (the answer was not supported
    # by the passages it cited), "model" (the model said the passages do not answer), "unnamed" (the
    # passages come from several documents and the question names none of them), "other_document" (the question
    # names a document and the answer came from another), "off_topic" (the pack's topic gate) or "gated" (no
    # passage reached the pack's cosine gate, filter.gate)
    "abstain": {"question": "Q?", "nearest": [{"n": 1, "source": "a.pdf", "page": 1, "text": "t"}], "reason": "filter"},
}

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@dataclass(frozen=True)
class PromptSet:
    system: str
    answer: str
    abstain: str
    disclaimer: str

    def render(self, which: str, **variables) -> str:
        source = getattr(self, which)
        try:
            return _ENV.from_string(source).render(**variables).strip()
        except TemplateError as exc:
            raise ConfigError(f"Prompt template '{which}' failed to render: {exc}") from exc


def load_prompts(pack_dir: Path, files: dict[str, str]) -> PromptSet:
    texts: dict[str, str] = {}
    for key, rel in files.items():
        path = (pack_dir / rel).resolve()
        if not path.is_relative_to(pack_dir.resolve()):
            raise ConfigError(f"{pack_dir / 'pack.yaml'}: prompts.{key} points outside the pack folder: {rel}")
        if not path.is_file():
            raise ConfigError(f"{pack_dir / 'pack.yaml'}: prompts.{key} file not found: {path}")
        texts[key] = path.read_text(encoding="utf-8")
    prompts = PromptSet(**texts)
    for key, sample in TEMPLATE_VARIABLES.items():
        try:
            _ENV.from_string(texts[key]).render(**sample)
        except TemplateError as exc:
            raise ConfigError(
                f"{pack_dir / files[key]}: template error: {exc}. Templates may use only: "
                f"{', '.join(sorted(sample))}."
            ) from exc
    return prompts
