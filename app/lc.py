"""slmrag's parts as LangChain components, for use inside your own LangChain code.

* :class:`SlmragRetriever` - a ``BaseRetriever``: the pack's hybrid retrieval and relevance filter; returns
  ``Document``s whose metadata carry ``source``, ``name``, ``page``, ``score``, ``filter_score`` and
  ``kept`` (only kept passages unless ``include_dropped``).
* :class:`SlmragAnswerer` - a ``Runnable`` from a question (a string, or ``{"question": ...}``) to the
  checked answer (``Answer.to_json()``: answer, shape, label, grounded, citations...). ``invoke``, ``batch``
  and ``stream`` (the answer's text, then nothing: answers are shown only once checked) come from LangChain,
  and every call reports through LangChain's callbacks as a chain run.

::

    from app.packs import load_pack
    from app.assistant import Assistant
    from app.lc import SlmragAnswerer, SlmragRetriever

    assistant = Assistant(load_pack("medical")).load()
    docs = SlmragRetriever(assistant=assistant).invoke("What is the target INR on warfarin?")
    answer = SlmragAnswerer(assistant=assistant).invoke("What is the target INR on warfarin?")
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict

from app.assistant import AskOptions, Assistant
from app.prompting import clean_question


def _question(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("question", "")
    return clean_question(str(value))


class SlmragRetriever(BaseRetriever):
    """The pack's retrieval + relevance filter as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assistant: Assistant
    k: int | None = None
    include_dropped: bool = False

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        found = self.assistant.retrieve(_question(query), AskOptions(k=self.k))
        passages = found.passages if self.include_dropped else found.kept
        return [Document(page_content=p.text, metadata={
            "source": p.source, "name": p.name, "page": p.page, "heading": p.heading, "score": float(p.score),
            "filter_score": None if p.filter_score is None else float(p.filter_score), "kept": bool(p.kept)})
            for p in passages]


class SlmragAnswerer(Runnable):
    """The pack's whole answer pipeline (retrieve, filter, shape, generate, check) as a LangChain Runnable."""

    def __init__(self, assistant: Assistant, options: AskOptions | None = None):
        self.assistant = assistant
        self.options = options or AskOptions()

    def _answer(self, value: Any) -> dict:
        return self.assistant.ask(_question(value), self.options).run().to_json()

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._call_with_config(self._answer, input, config, run_type="chain")
