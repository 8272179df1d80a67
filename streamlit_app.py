"""slmrag chat UI: thin Streamlit glue over app/ (run with `slmrag ui`)."""

from __future__ import annotations

import os

import streamlit as st

import app  # noqa: F401  (sets the offline environment before any model library is imported)
from app.errors import SlmragError
from app.packs import list_packs, load_pack
from app.pipeline import Assistant, AskOptions, ensure_index

st.set_page_config(page_title="slmrag", page_icon="📚", layout="wide")


@st.cache_resource(show_spinner="Loading the pack's models and index...")
def get_assistant(pack_name: str) -> Assistant:
    """One Assistant (models + index) per pack, shared by all sessions; built once, not per rerun."""
    pack = load_pack(pack_name)
    ensure_index(pack)
    return Assistant(pack).load()


def render_sources(answer: dict) -> None:
    cites = answer.get("citations") or []
    if answer.get("abstained"):
        st.info("Not found in your documents. Nearest sources:")
        cites = [dict(n=i + 1, **p) for i, p in enumerate(answer.get("passages", [])[:3])]
    for c in cites:
        page = f", page {c['page']}" if c.get("page") else ""
        with st.expander(f"[{c['n']}] {c['name']}{page}"):
            if c.get("heading"):
                st.caption(c["heading"])
            st.text(c["text"])
    passages = answer.get("passages", [])
    if passages:
        with st.expander(f"Noise filter: kept {sum(p['kept'] for p in passages)} of {len(passages)} retrieved passages"):
            for p in passages:
                mark = "✅ kept" if p["kept"] else "❌ dropped"
                page = f" p.{p['page']}" if p.get("page") else ""
                score = p["filter_score"] if p["filter_score"] is not None else float("nan")
                st.markdown(f"{mark} · score {score:.3f} · **{p['name']}{page}**")
    t = answer.get("timings", {})
    if t:
        st.caption(f"retrieve {t.get('retrieve_s', 0):.2f}s · filter {t.get('filter_s', 0):.2f}s · "
                   f"first token {t.get('first_token_s', 0):.2f}s · total {t.get('total_s', 0):.2f}s")
    if answer.get("disclaimer"):
        st.caption(answer["disclaimer"])


def main() -> None:
    packs = list_packs()
    if not packs:
        st.error("No domain packs found. Create one with `slmrag packs new NAME --from medical`.")
        return
    default = os.environ.get("SLMRAG_DEFAULT_PACK", "medical")
    with st.sidebar:
        st.title("slmrag")
        pack_name = st.selectbox("Domain pack", packs, index=packs.index(default) if default in packs else 0, key="pack")
    try:
        assistant = get_assistant(pack_name)
    except SlmragError as exc:
        st.error(str(exc))
        return
    cfg = assistant.pack.config
    with st.sidebar:
        st.subheader(cfg.title)
        st.write(cfg.description)
        snap = assistant.snapshot
        st.caption(f"{len(snap.documents)} documents · {snap.n_chunks} chunks")
        if assistant.pack.disclaimer:
            st.warning(assistant.pack.disclaimer)
    history = st.session_state.setdefault("history", {}).setdefault(pack_name, [])
    st.header(cfg.title)
    for turn in history:
        with st.chat_message(turn["role"]):
            st.markdown(turn["content"])
            if turn["role"] == "assistant":
                render_sources(turn["answer"])
    question = st.chat_input(f"Ask the {pack_name} pack a question")
    if not question:
        return
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            stream = assistant.ask(question, AskOptions())
            st.write_stream(iter(stream))
            answer = stream.answer.to_json()
        except SlmragError as exc:
            st.error(str(exc))
            return
        render_sources(answer)
    history.append({"role": "assistant", "content": answer["answer"], "answer": answer})


main()
