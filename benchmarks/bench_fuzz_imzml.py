"""Long run of the imzML hostile-input corpus (the CI test runs 520 cases; this runs thousands).

Same generator and checks as tests/core/test_imzml_fuzz.py (tests/core/imzml_corpus.py): every case
must end in a clean reader error naming the file, or in ion images equal to an independent
ElementTree reference; the fast scan must agree with the strict parse; no hang (20 s alarm), no
allocation over the memory budget (tracemalloc peak), inputs unchanged.

Usage: python benchmarks/bench_fuzz_imzml.py [--cases 5000] [--seed 1] [--budget 64M] [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core"))

from imzml_corpus import build_corpus, check_case, load_seeds  # noqa: E402

from napari_msi2hist._limits import parse_size  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", default="64M")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    budget = parse_size(a.budget)
    shared = ROOT.parent / "shared" / "data" / "imzml"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        seeds = load_seeds(shared if shared.is_dir() else None, d / "seeds")
        corpus = build_corpus(seeds, a.cases, a.seed)
        kinds, fast, per_op = collections.Counter(), collections.Counter(), {}
        errors = collections.Counter()
        fails, times, peaks = [], [], []
        t0 = time.perf_counter()
        for i, c in enumerate(corpus):
            t = time.perf_counter()
            out = check_case(c, d, budget)
            times.append(time.perf_counter() - t)
            peaks.append(out.peak_bytes)
            kinds[out.kind] += 1
            fast[str(out.fast_used)] += 1
            if out.kind == "refused":
                errors[out.detail.split(":", 1)[0]] += 1
            for op in c.ops:
                per_op.setdefault(op, collections.Counter())[out.kind] += 1
            if out.kind == "FAIL":
                fails.append(f"case {i} {c.seed_name} {c.ops}: {out.detail}")
        wall = time.perf_counter() - t0
    res = {
        "cases": a.cases,
        "seed": a.seed,
        "seeds": sorted(seeds),
        "outcomes": dict(kinds),
        "refusals_by_error": dict(errors),
        "opened_via_fast_scan": fast.get("True", 0),
        "opened_via_strict_parse": fast.get("False", 0),
        "failures": len(fails),
        "max_case_s": round(max(times), 3),
        "mean_case_ms": round(1000 * sum(times) / len(times), 1),
        "max_traced_peak_MiB": round(max(peaks) / 2**20, 1),
        "budget_MiB": round(budget / 2**20, 1),
        "wall_s": round(wall, 1),
        "per_mutation": {k: dict(v) for k, v in sorted(per_op.items())},
    }
    print(json.dumps({k: v for k, v in res.items() if k != "per_mutation"}, indent=1))
    for k, v in res["per_mutation"].items():
        print(f"  {k:16s} {dict(v)}")
    for f in fails[:30]:
        print("FAIL", f)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
