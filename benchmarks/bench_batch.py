"""Sections per hour of ``msi2hist batch`` with 1 worker vs N workers on this machine.

Generates a cohort of phantoms (procedural H&E, bundled demo model) in a temporary folder and runs
the same batch twice into fresh output folders, once per worker count, measured in the same run.
The wall time includes starting the LocalCluster and each worker's first imports (reported apart).

    python benchmarks/bench_batch.py --sections 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make_cohort(folder: Path, n: int, size: int) -> Path:
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    lines = ["defaults:", "  model: demo", "  n_peaks: 50", "sections:"]
    for i in range(n):
        make_phantom(folder / f"ph{i}", PhantomConfig(seed=i + 1, procedural_size=size))
        lines += [
            f"  - name: s{i}",
            f"    imzml: ph{i}/msi.imzML",
            f"    he: ph{i}/he.ome.tif",
            f"    landmarks_he: ph{i}/landmarks_he.csv",
            f"    landmarks_msi: ph{i}/landmarks_msi.csv",
        ]
    p = folder / "cohort.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def run(cohort: Path, out: Path, workers: int) -> dict:
    from napari_msi2hist.progress import run_to_end
    from napari_msi2hist.workflows.batch import BatchConfig, iter_batch

    t0 = time.perf_counter()
    firsts = []

    def cb(p):
        if p.info is not None:
            firsts.append(time.perf_counter() - t0)

    res = run_to_end(iter_batch(BatchConfig(str(cohort), str(out), workers=workers)), cb)
    wall = time.perf_counter() - t0
    ok = [r for r in res.rows if r["status"] == "done"]
    per = sum(float(r["seconds"]) for r in ok) / max(1, len(ok))
    return {
        "wall": wall,
        "n": len(ok),
        "first": firsts[0] if firsts else float("nan"),
        "per_section": per,
        "per_hour": 3600 * len(ok) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="compared against 1 worker")
    ap.add_argument("--size", type=int, default=256, help="phantom H&E size (px)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as d:
        d = Path(d)
        t = time.perf_counter()
        cohort = make_cohort(d, args.sections, args.size)
        print(
            f"cohort of {args.sections} phantoms ({args.size} px H&E) in {time.perf_counter() - t:.1f} s"
        )
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        rows = {}
        for w in (1, args.workers):
            r = run(cohort, d / f"out_{w}", w)
            rows[w] = r
            print(
                f"{w} worker(s): {r['n']} sections in {r['wall']:.1f} s = {r['per_hour']:.0f} sections/h "
                f"(first section after {r['first']:.1f} s incl. cluster start; "
                f"{r['per_section']:.1f} s per section inside its worker)"
            )
        ratio = rows[args.workers]["per_hour"] / rows[1]["per_hour"]
        print(f"ratio {args.workers} workers / 1 worker: {ratio:.2f}x sections per hour")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
