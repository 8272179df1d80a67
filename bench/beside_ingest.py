"""`slmrag ask` alone and beside `slmrag ingest` of a large folder, each a separate process as a user runs them.

    python bench/beside_ingest.py --nice 0,10 --out bench/results/beside-ingest.json

The medical starter pack is indexed into a temporary SLMRAG_INDEX_DIR; the ingest indexes copies of the
FinanceBench PDFs (59 files, 13 MB; /work/shared/data/finance/corpus, copied to a temporary folder outside
the repo) into another temporary index. For each ``--nice`` value (SLMRAG_INGEST_NICE of the ingest
process; 0 = the priority is not lowered, as before app/pacing.py) the same questions are asked with
``python -m app ask --json`` while the ingest runs. Reports each ask's wall time (process start to exit,
model loading included) and the answer's own first-token and total times. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINANCE = Path("/work/shared/data/finance/corpus")
QUESTIONS = ["What is the target INR range on warfarin?", "Which vasopressor is first choice in septic shock?",
             "What blood pressure defines stage 1 hypertension?"]


def ask(question: str, env: dict, timeout: float) -> dict:
    t = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "app", "ask", question, "--pack", "medical", "--json",
                              "--filter", "none"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"question": question, "wall_s": None, "error": f"no answer within {timeout:g} s"}
    wall = round(time.perf_counter() - t, 2)
    if out.returncode != 0:
        return {"question": question, "wall_s": wall, "error": out.stderr[-500:]}
    t = json.loads(out.stdout)["timings"]
    return {"question": question, "wall_s": wall, "first_token_s": t.get("first_token_s"), "total_s": t.get("total_s"),
            "load_s": t.get("load_s"), "tokens": t.get("tokens")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nice", default="0,10", help="SLMRAG_INGEST_NICE values to try, comma-separated")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds before one ask counts as no answer")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slmrag-beside-"))
    env = dict(os.environ, SLMRAG_INDEX_DIR=str(tmp / "indexes"))
    result: dict = {"command": " ".join(sys.argv), "threads": os.environ.get("SLMRAG_THREADS", str(os.cpu_count())),
                    "runs": []}
    ingest = None
    try:
        subprocess.run([sys.executable, "-m", "app", "ingest", str(REPO / "domains" / "medical" / "corpus"),
                        "--pack", "medical", "--json"], cwd=REPO, env=env, capture_output=True, check=True)
        ask("warm up", env, args.timeout)  # fills the model caches (requantized GGUF, ONNX export)
        folder = tmp / "finance"
        folder.mkdir()
        for pdf in sorted(FINANCE.glob("*.pdf")):
            shutil.copy(pdf, folder / pdf.name)
        runs = [("alone", None)] + [("beside ingest", int(n)) for n in args.nice.split(",")]
        for label, nice in runs:
            if nice is not None:
                ingest_env = dict(env, SLMRAG_INGEST_NICE=str(nice))
                shutil.rmtree(tmp / "ingest-index", ignore_errors=True)
                ingest = subprocess.Popen([sys.executable, "-m", "app", "ingest", str(folder), "--pack", "finance",
                                           "--index-dir", str(tmp / "ingest-index"), "--json"], cwd=REPO,
                                          env=ingest_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 120
                while not (tmp / "ingest-index").exists() and time.monotonic() < deadline:  # it has started
                    time.sleep(0.2)
            asks = [ask(q, env, args.timeout) for q in QUESTIONS]
            run = {"run": label, "ingest_nice": nice, "asks": asks,
                   "ingest_ran_throughout": None if ingest is None else ingest.poll() is None}
            walls = [a["wall_s"] for a in asks if a.get("wall_s") is not None and "error" not in a]
            run["wall_median_s"] = statistics.median(walls) if walls else None
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
            if ingest is not None:
                ingest.terminate()
                ingest.wait(timeout=30)
                ingest = None
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| run | ingest nice | ask wall (each) | first token (each) | answer total (each) |\n|---|---|---|---|---|")
    for r in result["runs"]:
        fmt = lambda key: ", ".join("-" if a.get(key) is None else f"{a[key]:.1f} s" for a in r["asks"])
        print(f"| {r['run']} | {r['ingest_nice'] if r['ingest_nice'] is not None else '-'} | {fmt('wall_s')} | "
              f"{fmt('first_token_s')} | {fmt('total_s')} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
