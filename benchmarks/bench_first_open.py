"""First open of a large imzML (building the spectrum index from the XML): ours against pyimzml.

A processed centroid imzML of ``--spectra`` (default 30,000) spectra is generated with the same
generator as bench_imzml_index.py. Each round times, in this process and interleaved so that both see
the same machine load: our first open (``ImzMLFile(path, index_cache=True)``, the default for files
of >= 5,000 spectra: no index cache present, the compiled-pattern cache of ``re`` purged, the sidecar
cache written), the same with the template scan switched off (the token scan, the default path
before the template scan), our first open with the strict parse only (``fast_parse=False``), and
pyimzml's ``ImzMLParser(path)``. Prints the median and best of ``--rounds`` rounds and the ratio of medians.
Target: ours >= 10x faster than pyimzml.

Usage: python benchmarks/bench_first_open.py [--spectra 30000] [--rounds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import napari_msi2hist.io.imzml as imzml_mod  # noqa: E402
from bench_imzml_index import drop_caches, make_sparse  # noqa: E402
from napari_msi2hist.io.imzml import ImzMLFile  # noqa: E402


def ours(path: Path, **kw) -> tuple[float, str]:
    drop_caches(path)
    re.purge()
    t = time.perf_counter()
    imz = ImzMLFile(path, **kw)
    dt = time.perf_counter() - t
    src = f"{imz.index_source}/{imz.scan_kind}"
    imz.close()
    return dt, src


def ours_tokens(path: Path) -> float:
    """Our first open with the template scan off: the token scan reads the list."""
    keep = imzml_mod.scan_template
    imzml_mod.scan_template = lambda *_a, **_k: None
    try:
        dt, src = ours(path, index_cache=True)
    finally:
        imzml_mod.scan_template = keep
    assert src == "fast/tokens", src
    return dt


def theirs(path: Path) -> float:
    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        p = ImzMLParser(str(path))
        dt = time.perf_counter() - t
    p.__exit__(None, None, None)  # closes its .ibd handle
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spectra", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="msi2hist-open-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        p = work / f"sparse_{a.spectra}.imzML"
        if not p.exists():
            make_sparse(p, a.spectra)
        # one untimed pass of each: imports and the page cache
        ours(p, index_cache=True)
        theirs(p)
        t_ours, t_tokens, t_strict, t_py, srcs = [], [], [], [], set()
        for _ in range(a.rounds):
            dt, src = ours(p, index_cache=True)
            t_ours.append(dt)
            srcs.add(src)
            t_py.append(theirs(p))
            t_tokens.append(ours_tokens(p))
            t_strict.append(ours(p, fast_parse=False)[0])
        drop_caches(p)
        med = {
            k: float(np.median(v))
            for k, v in (
                ("ours", t_ours),
                ("tokens", t_tokens),
                ("strict", t_strict),
                ("pyimzml", t_py),
            )
        }
        r = {
            "n_spectra": a.spectra,
            "imzml_mb": p.stat().st_size / 1e6,
            "index_source": sorted(srcs),
            "rounds": a.rounds,
            "ours_first_open_median_s": med["ours"],
            "ours_first_open_best_s": min(t_ours),
            "ours_token_scan_median_s": med["tokens"],
            "ours_strict_parse_median_s": med["strict"],
            "pyimzml_open_median_s": med["pyimzml"],
            "pyimzml_open_best_s": min(t_py),
            "ratio_pyimzml_over_ours_median": med["pyimzml"] / med["ours"],
            "ratio_pyimzml_over_ours_best": min(t_py) / min(t_ours),
            "ratio_pyimzml_over_token_scan_median": med["pyimzml"] / med["tokens"],
            "load_average_1min": os.getloadavg()[0],
            "cpus": os.cpu_count(),
        }
        for k, v in r.items():
            print(f"  {k:34s} {v:.4g}" if isinstance(v, float) else f"  {k:34s} {v}")
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
