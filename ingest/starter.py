"""Build a pack's index from its starter corpus on first use (the UI, ``slmrag filter train``, tests).

It lives on the ingest side so that the query side (:mod:`app.assistant`) never imports the ingest
stack: whoever needs an index built calls this first, then answers.
"""

from __future__ import annotations

from app.packs import Pack
from app.store import IndexStore
from ingest.ingestor import Ingestor, ProgressSink


def ensure_index(pack: Pack, progress: ProgressSink | None = None) -> bool:
    """Ingest the pack's starter corpus if its index does not exist yet; True if it ingested."""
    store = IndexStore(pack.index_dir)
    if store.exists() and store.generation() > 0:
        return False
    corpus = pack.corpus_path
    if not corpus.is_dir():
        return False
    Ingestor(pack).ingest([corpus], progress=progress)
    return True
