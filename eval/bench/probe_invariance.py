"""Benchmark: tier changes when a question arrives behind a system prompt or after unrelated turns.

For ``--n`` GSM8K test questions and ``--n`` RouterBench test prompts, the router of ``--policy``
(default ``policies/examples/local.yaml`` with the default probe) decides each query bare, behind a
~300-word system prompt and after three unrelated prior exchanges
(:mod:`triage.eval.probe_invariance`); the share of queries whose tier changed is reported per
dataset and context. Decisions only: no model is called. Goal (issue #14): <= 5%.

    python eval/bench/probe_invariance.py [--json] [--n 150] [--policy FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _questions(n: int) -> dict[str, list[str]]:
    from triage.eval.importers import import_source
    from triage.settings import get_settings
    from triage.token_router.gsm8k import load_problems

    data = Path(get_settings().data_dir)
    gsm8k = [p.question for p in load_problems(data / "gsm8k" / "test.jsonl", 0, n)]
    records = import_source("routerbench", data / "routerbench-subset")
    test = [r for r in records if "test" in r.id][: n] or records[:n]
    return {"gsm8k": gsm8k, "routerbench": [r.prompt_text() for r in test]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150, help="queries per dataset")
    ap.add_argument("--policy", default=None, help="policy file (default: policies/examples/local.yaml)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from triage.eval.probe_invariance import tier_invariance
    from triage.router.core import Router

    router = Router.from_file(args.policy)
    t0 = time.perf_counter()
    out: dict[str, object] = {"policy": str(router.policy_path), "probe_reads": "the last user turn"}
    for name, questions in _questions(args.n).items():
        out[name] = tier_invariance(router, questions).summary()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["goal"] = {"max_change_rate": 0.05,
                   "met": all(r <= 0.05 for k in ("gsm8k", "routerbench") for r in out[k]["change_rate"].values())}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name in ("gsm8k", "routerbench"):
            print(name, out[name]["change_rate"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
