"""slmrag inside LangChain: the retriever and the answer pipeline in real LCEL chains, packaged models."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda

from app.assistant import Assistant, AskOptions
from app.lc import SlmragAnswerer, SlmragRetriever
from ingest.starter import ensure_index

pytestmark = pytest.mark.slow

QUESTION = "What is the target INR range for a patient with a mechanical mitral valve on warfarin?"


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    from app.packs import load_pack

    pack = load_pack("medical", tmp_path_factory.mktemp("lc") / "medical")
    ensure_index(pack)
    return Assistant(pack).load()


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.events: list[str] = []

    def on_chain_start(self, serialized, inputs, **kwargs):
        self.events.append("chain_start")

    def on_chain_end(self, outputs, **kwargs):
        self.events.append("chain_end")

    def on_retriever_end(self, documents, **kwargs):
        self.events.append(f"retriever_end:{len(documents)}")


def test_retriever_in_an_lcel_chain(assistant):
    retriever = SlmragRetriever(assistant=assistant, k=5)
    chain = retriever | RunnableLambda(lambda docs: [d.metadata["name"] for d in docs])
    rec = Recorder()
    names = chain.invoke(QUESTION, config={"callbacks": [rec]})
    assert names and names[0] == "anticoagulation_warfarin.txt"
    docs = retriever.invoke(QUESTION)
    assert all(d.metadata["kept"] for d in docs)
    assert {"source", "name", "page", "score", "filter_score", "kept"} <= set(docs[0].metadata)
    everything = SlmragRetriever(assistant=assistant, k=5, include_dropped=True).invoke(QUESTION)
    assert len(everything) == 5 and len(everything) >= len(docs)
    assert any(e.startswith("retriever_end:") for e in rec.events)


def test_answerer_invoke_batch_and_callbacks(assistant):
    answerer = SlmragAnswerer(assistant, AskOptions(max_tokens=48))
    rec = Recorder()
    out = answerer.invoke({"question": QUESTION}, config={"callbacks": [rec]})
    assert out["citations"] and out["citations"][0]["name"] == "anticoagulation_warfarin.txt"
    assert rec.events[0] == "chain_start" and rec.events[-1] == "chain_end"
    both = answerer.batch([QUESTION, "Which planet has the tallest volcano in the solar system?"])
    assert not both[0]["abstained"] and both[1]["abstained"]
    pieces = list(answerer.stream(QUESTION))
    assert pieces and pieces[-1]["answer"] == out["answer"]  # greedy decoding: the same answer again
