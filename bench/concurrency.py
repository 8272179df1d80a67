"""Many users at once: concurrent askers on one Assistant, with and without an ingest running.

    python bench/concurrency.py --backend embedded --ingest off --out bench/results/concurrency-embedded-off.json
    python bench/concurrency.py --backend embedded --ingest on  --out bench/results/concurrency-embedded-on.json
    python bench/concurrency.py --backend server   --ingest off --out bench/results/concurrency-server-off.json
    python bench/concurrency.py --backend server   --ingest on  --out bench/results/concurrency-server-on.json

One process holds one Assistant (as the UI does for all its browser sessions) over the medical starter
pack, indexed into a temporary folder. For each level (``--askers 1,2,4,8``) that many threads start
together and each asks ``--per-asker`` questions of its own (no two requests share a question).

Backends: ``embedded`` is SmolLM2 through llama.cpp in this process; ``server`` is the same GGUF served by
llama-cpp-python's own OpenAI-compatible server on a loopback port (``python -m llama_cpp.server``),
reached through the pack's ``generator: {backend: openai, base_url: ...}``.

``--ingest on``: ``slmrag ingest`` (a separate process, at its default lowered priority unless
``--ingest-nice`` says otherwise) indexes copies of the FinanceBench PDFs into the same index the askers
read, for the whole sweep; askers refresh before every question, as every UI rerun does.

Checks, per answer (a failure is counted and listed, the bench never stops on one):
  * no exception;
  * the text the stream yielded is the final answer, and the prompt the generator received in this
    request's thread holds this request's own question;
  * ``--ingest off``: what the generator wrote for the request equals what it wrote for the same question
    asked alone (a sequential reference pass first): no tokens of one answer in another;
  * every passage exists, with the same text, in the index snapshot of the generation the answer reports,
    and every citation is one of the answer's own passages.

Prints a table (askers, backend, ingest, latency p50/p95, first token p50, queue wait p50, answers/min)
and saves all figures and per-answer records as JSON. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import app  # noqa: F401
from app.assistant import AskOptions, Assistant
from app.env import threads
from app.generators import LlamaCppGenerator
from app.local_server import LocalModelServer
from app.packs import load_pack
from app.store import IndexStore
from ingest.starter import ensure_index

FINANCE = Path("/work/shared/data/finance/corpus")
QUESTIONS = [
    "What blood pressure defines stage 1 hypertension?",
    "What is the target INR range on warfarin?",
    "Which vasopressor is first choice in septic shock?",
    "How soon should antibiotics be given in sepsis?",
    "What HbA1c target is recommended for most adults with diabetes?",
    "What is the first-line treatment for anaphylaxis?",
    "When should a statin be started for primary prevention?",
    "What dose of aspirin is used after a heart attack?",
    "How is community-acquired pneumonia severity assessed?",
    "What lactate level suggests septic shock?",
    "Which drugs interact with warfarin?",
    "What is the initial fluid bolus in sepsis?",
    "What are the symptoms of hypoglycaemia?",
    "How is atrial fibrillation anticoagulation decided?",
    "What blood pressure target is used in older adults?",
    "What are the contraindications to thrombolysis?",
]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))], 3)


def start_ingest(folder: Path, index_dir: Path, nice: int | None, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if nice is not None:
        env["SLMRAG_INGEST_NICE"] = str(nice)
    cmd = [sys.executable, "-m", "app", "ingest", str(folder), "--pack", "medical", "--index-dir", str(index_dir),
           "--json"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


class Recorder:
    """Wraps the generator's ``stream``: what it received and wrote, kept per thread (one request each)."""

    def __init__(self, generator):
        self.local = threading.local()
        original = generator.stream

        def stream(messages, **kwargs):
            self.local.prompts.append(messages[-1]["content"])
            for piece in original(messages, **kwargs):
                self.local.pieces.append(piece)
                yield piece

        generator.stream = stream

    def begin(self) -> None:
        self.local.prompts, self.local.pieces = [], []

    def end(self) -> tuple[list[str], str]:
        return self.local.prompts, "".join(self.local.pieces)


def ask_one(assistant: Assistant, recorder: Recorder, question: str, max_tokens: int) -> dict:
    recorder.begin()
    t = time.perf_counter()
    try:
        # filter "none": every question is generated (an abstention skips the model and the queue)
        stream = assistant.ask(question, AskOptions(max_tokens=max_tokens, filter="none"))
        shown = "".join(stream)
        ans = stream.answer
    except Exception as exc:  # noqa: BLE001 - counted, the bench goes on
        return {"question": question, "error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - t
    prompts, raw = recorder.end()
    problems = []
    if shown != ans.answer:
        problems.append("the streamed text is not the final answer")
    if any(question not in p for p in prompts):
        problems.append("the generator received a prompt without this request's question")
    return {"question": question, "latency_s": round(wall, 3), "first_token_s": ans.timings.get("first_token_s"),
            "queue_s": ans.timings.get("queue_s", 0.0), "queue_ahead": ans.timings.get("queue_ahead", 0),
            "generation": ans.index_generation, "abstained": ans.abstained, "raw": raw, "problems": problems,
            "answer": ans}


def check_snapshot(rec: dict, snapshots: dict) -> None:
    ans = rec.pop("answer")
    snap = snapshots.get(ans.index_generation)
    if snap is None:
        rec["problems"].append(f"no snapshot of generation {ans.index_generation} was read")
        return
    for p in ans.passages:
        pos = snap.vid_to_pos.get(p.vid)
        if pos is None or snap.chunks[pos].text != p.text:
            rec["problems"].append(f"passage {p.vid} is not in generation {ans.index_generation}")
    if not {c["text"] for c in ans.citations} <= {p.text for p in ans.context}:
        rec["problems"].append("a citation is not one of the answer's own passages")


def run_level(assistant, recorder, n: int, per: int, max_tokens: int, snapshots: dict) -> tuple[list[dict], float]:
    records: list[dict] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def asker(i: int) -> None:
        barrier.wait(timeout=60)
        for j in range(per):
            assistant.refresh()  # what every UI rerun does
            rec = ask_one(assistant, recorder, QUESTIONS[(i * per + j) % len(QUESTIONS)], max_tokens)
            rec["asker"] = i
            with lock:
                records.append(rec)

    t = time.perf_counter()
    workers = [threading.Thread(target=asker, args=(i,), daemon=True) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=1800)
    wall = time.perf_counter() - t
    for rec in records:
        if "answer" in rec:
            check_snapshot(rec, snapshots)
    return records, wall


def summarise(records: list[dict], wall: float, **labels) -> dict:
    ok = [r for r in records if "error" not in r]
    lat = [r["latency_s"] for r in ok]
    return {**labels, "answers": len(ok), "errors": len(records) - len(ok),
            "problems": sum(len(r.get("problems", [])) for r in ok),
            "latency_p50_s": pct(lat, 0.5), "latency_p95_s": pct(lat, 0.95),
            "first_token_p50_s": pct([r["first_token_s"] for r in ok if r.get("first_token_s") is not None], 0.5),
            "queue_p50_s": pct([r["queue_s"] for r in ok], 0.5),
            "answers_per_min": round(len(ok) / wall * 60, 2) if wall else None, "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["embedded", "server"], default="embedded")
    ap.add_argument("--ingest", choices=["off", "on"], default="off")
    ap.add_argument("--ingest-nice", type=int, default=None,
                    help="SLMRAG_INGEST_NICE for the ingest process (default: slmrag's own default; 0 = not lowered)")
    ap.add_argument("--askers", default="1,2,4,8")
    ap.add_argument("--per-asker", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=None, help="generator.concurrency (default: the pack's)")
    ap.add_argument("--no-reference", action="store_true", help="skip the sequential reference pass")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    levels = [int(x) for x in args.askers.split(",")]
    if max(levels) * args.per_asker > len(QUESTIONS):
        raise SystemExit(f"at most {len(QUESTIONS)} distinct questions: lower --askers or --per-asker")

    tmp = Path(tempfile.mkdtemp(prefix="slmrag-concurrency-"))
    procs: list[subprocess.Popen] = []
    server: LocalModelServer | None = None
    result: dict = {"backend": args.backend, "ingest": args.ingest, "threads": threads(), "levels": [],
                    "max_tokens": args.max_tokens, "per_asker": args.per_asker, "command": " ".join(sys.argv)}
    try:
        index_dir = tmp / "indexes" / "medical"
        pack = load_pack("medical", index_dir)
        ensure_index(pack)
        gen = pack.config.generator
        if args.backend == "server":
            model, _ = LlamaCppGenerator(gen, pack.path).weights_file()
            # amx_workaround: the server loads the same Q4_0 file (the adapter merged in) the way the embedded backend always does
            # (on the AMX-reporting VMs here, llama.cpp's default crashes at the first batched decode), so the
            # two backends compare like for like. interrupt_requests=False: by default the server cuts a
            # streaming answer short when another request arrives, which would end every concurrent answer
            # but the last.
            server = LocalModelServer(model, alias="smollm2", threads=threads(), n_ctx=2048, log=tmp / "server.log",
                                      amx_workaround=True, interrupt_requests=False).start()
            pack.config.generator = gen.model_copy(update={"backend": "openai", "model": "smollm2",
                                                           "base_url": server.base_url})
        if args.concurrency:
            pack.config.generator = pack.config.generator.model_copy(update={"concurrency": args.concurrency})
        result["concurrency"] = pack.config.generator.concurrency

        snapshots: dict[int, object] = {}
        original = IndexStore.snapshot

        def recording(self, *a, **kw):  # keeps every snapshot the Assistant reads, by generation
            snap = original(self, *a, **kw)
            snapshots.setdefault(snap.generation, snap)
            return snap

        IndexStore.snapshot = recording
        assistant = Assistant(pack).load()
        recorder = Recorder(assistant.generator)
        # Warm-up (model load, ONNX session) on a question of no level, so no level starts with a cached prompt.
        ask_one(assistant, recorder, "What does this collection of guidelines cover?", 4)

        reference: dict[str, str] = {}
        if args.ingest == "off" and not args.no_reference:
            refs, wall = run_level(assistant, recorder, 1, max(levels) * args.per_asker, args.max_tokens, snapshots)
            reference = {r["question"]: r["raw"] for r in refs if "error" not in r}
            result["reference"] = summarise(refs, wall, askers="1 (reference, all questions)",
                                            backend=args.backend, ingest="off")

        ingest_proc = None
        if args.ingest == "on":
            folder = tmp / "finance"
            folder.mkdir()
            for pdf in sorted(FINANCE.glob("*.pdf")):
                shutil.copy(pdf, folder / pdf.name)
            before = IndexStore(index_dir).generation()
            ingest_proc = start_ingest(folder, index_dir, args.ingest_nice, tmp / "ingest.log")
            procs.append(ingest_proc)
            deadline = time.monotonic() + 300
            while IndexStore(index_dir).generation() == before:  # running for real: its first commit landed
                if ingest_proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the ingest did not commit:\n{(tmp / 'ingest.log').read_text()[-2000:]}")
                time.sleep(0.5)
            result["ingest_nice"] = args.ingest_nice

        all_records = []
        for n in levels:
            records, wall = run_level(assistant, recorder, n, args.per_asker, args.max_tokens, snapshots)
            for r in records:
                if reference and "raw" in r and reference.get(r["question"]) is not None \
                        and r["raw"] != reference[r["question"]]:
                    r["problems"].append("the generated text differs from the same question asked alone")
            row = summarise(records, wall, askers=n, backend=args.backend, ingest=args.ingest)
            if ingest_proc is not None:
                row["ingest_ran_throughout"] = ingest_proc.poll() is None
                row["generations_seen"] = sorted({r["generation"] for r in records if "generation" in r})
            result["levels"].append(row)
            all_records += [{k: v for k, v in r.items() if k != "raw"} | {"askers": n} for r in records]
            print(json.dumps(row), flush=True)
        result["records"] = all_records
    finally:
        if server is not None:
            server.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = ([result["reference"]] if "reference" in result else []) + result["levels"]
    print("\n| askers | backend | ingest | latency p50 | latency p95 | first token p50 | queue wait p50 | "
          "answers/min | errors | problems |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['askers']} | {r['backend']} | {r['ingest']} | {r['latency_p50_s']} s | {r['latency_p95_s']} s | "
              f"{r['first_token_p50_s']} s | {r['queue_p50_s']} s | {r['answers_per_min']} | {r['errors']} | "
              f"{r['problems']} |")
    problems = [(r["question"], p) for r in result.get("records", []) for p in r.get("problems", [])]
    for q, p in problems[:20]:
        print(f"problem: {q}: {p}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
