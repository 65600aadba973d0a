"""Opening large processed imzML files: the XML index, its sidecar cache, and a 1M-spectrum scale test.

1. A processed imzML with ``--spectra`` (default 147,000) small centroid spectra (8 peaks each) is generated.
   Timed in the same run: our first open (no cache; this open writes the cache), our re-open (cache),
   pyimzml's ``ImzMLParser``, and imzy's ``IMZMLReader`` without and with its ``.icache`` when imzy is
   installed (``pip install imzy``). Targets: first open >= 10x faster than pyimzml and >= 5x than
   imzy's first open; re-open < 0.3 s; ion images (open from cache + extraction) >= 2x imzy warm.
2. ``--scale N`` (e.g. 1000000): a processed file of N spectra is generated in the work folder and
   opened in a fresh subprocess: index time, peak RSS (target < 500 MB), re-open time, and 20 ion
   images streamed chunk by chunk with their peak RSS.

Generated files live in a temporary folder (default under /tmp) and are removed unless --keep.

Usage: python benchmarks/bench_imzml_index.py [--spectra 147000] [--scale 1000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from napari_msi2hist.io.imzml import ImzMLFile
from napari_msi2hist.io.imzml_writer import ImzMLWriter
from napari_msi2hist.msi.ion_images import Tolerance, ion_images

N_IONS = 20


def make_sparse(path: Path, n: int, peaks: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    nx = int(np.ceil(np.sqrt(n)))
    with ImzMLWriter(
        path,
        mode="processed",
        mz_dtype=np.float32,
        pixel_size_um=(10.0, 10.0),
        spectrum_type="centroid",
    ) as w:
        for i in range(n):
            mz = np.sort(rng.uniform(200.0, 1200.0, peaks)).astype(np.float32)
            w.add_spectrum(i % nx + 1, i // nx + 1, rng.random(peaks, dtype=np.float32), mz=mz)


def best(fn, repeat=3):
    out, t_best = None, np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


def drop_caches(path: Path) -> None:
    for c in (path.with_suffix(".icache"), path.with_name(f".{path.name}.msi2hist-index.npz")):
        if c.exists():
            c.unlink()


def read_whole_file(path: Path) -> float:
    buf = bytearray(64 * 2**20)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    return time.perf_counter() - t


def scale_child(path: str) -> None:
    """In a fresh process: index (first open), RSS, re-open, streamed ion images."""

    def status_mb(key):
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith(key))

    def peak_mb():
        return status_mb("VmHWM")

    # ru_maxrss can carry the parent's peak over fork/exec: reset the high-water mark instead
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = peak_mb()
    t = time.perf_counter()
    imz = ImzMLFile(path)
    t_index = time.perf_counter() - t
    rss_index = peak_mb()
    src = imz.index_source
    imz.close()
    t = time.perf_counter()
    imz = ImzMLFile(path)
    t_reopen = time.perf_counter() - t
    mzs = np.linspace(300.0, 1100.0, N_IONS)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    rss_before_ion = peak_mb()
    t = time.perf_counter()
    res = ion_images(imz, mzs, tolerance=Tolerance(0.5, "da"), chunk_bytes=16 * 2**20)
    t_ion = time.perf_counter() - t
    print(
        json.dumps(
            {
                "n_spectra": imz.n_spectra,
                "index_source": src,
                "index_s": t_index,
                "index_peak_rss_mb": rss_index,
                "startup_rss_mb": base,
                "reopen_s": t_reopen,
                "reopen_source": imz.index_source,
                "ion_images_s": t_ion,
                "rss_before_ion_images_mb": rss_before_ion,
                "ion_images_peak_rss_mb": peak_mb(),
                "stack_mb": res.stack.nbytes / 2**20,
            }
        )
    )


def bench_open(a, work: Path, out: dict) -> None:
    """Part 1: first open, re-open, pyimzml and imzy on ``a.spectra`` spectra."""
    p = work / f"sparse_{a.spectra}.imzML"
    if not p.exists():
        t = time.perf_counter()
        make_sparse(p, a.spectra)
        print(f"generated {a.spectra} spectra in {time.perf_counter() - t:.0f} s")
    xml_mb = p.stat().st_size / 1e6
    drop_caches(p)
    t = time.perf_counter()
    imz = ImzMLFile(p, index_cache=True)  # the default for >= 5,000 spectra
    t_first = time.perf_counter() - t
    assert imz.index_source == "fast" and imz.index_cache_path is not None
    t_reopen, imz2 = best(lambda: ImzMLFile(p))
    assert imz2.index_source == "cache"
    mzs = np.linspace(300.0, 1100.0, N_IONS)
    tol = Tolerance(0.5, "da")
    t_ion, res = best(lambda: ion_images(imz2, mzs, tolerance=tol))
    t_read = min(read_whole_file(p.with_suffix(".ibd")) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyimzml.ImzMLParser import ImzMLParser

        t = time.perf_counter()
        ImzMLParser(str(p))
        t_py = time.perf_counter() - t
    r = {
        "n_spectra": a.spectra,
        "imzml_mb": xml_mb,
        "ours_first_open_s": t_first,
        "ours_reopen_s": t_reopen,
        "pyimzml_open_s": t_py,
        "first_open_vs_pyimzml": t_py / t_first,
        "ours_ion_images_s": t_ion,
        "ours_reopen_plus_ion_s": t_reopen + t_ion,
        "ibd_read_s": t_read,
        "vs_plain_read_incl_index": t_read / (t_reopen + t_ion),
    }
    try:
        import imzy

        drop_caches(p)
        t = time.perf_counter()
        rd = imzy.IMZMLReader(p)
        r["imzy_first_open_s"] = time.perf_counter() - t
        r["imzy_warm_open_s"], rd = best(lambda: imzy.IMZMLReader(p))
        r["imzy_ion_images_s"], ref = best(lambda: rd.get_ion_images(mzs, tol=0.5, silent=True))
        r["first_open_vs_imzy"] = r["imzy_first_open_s"] / t_first
        r["warm_vs_imzy"] = (r["imzy_warm_open_s"] + r["imzy_ion_images_s"]) / (t_reopen + t_ion)
        ref = np.nan_to_num(np.asarray(ref, np.float64))
        ours = res.stack.astype(np.float64)
        r["same_as_imzy"] = bool(ref.shape == ours.shape and np.allclose(ref, ours, rtol=1e-4))
    except ImportError:
        r["imzy"] = "not installed"
    out["open"] = r
    for k, v in r.items():
        print(f"  {k:28s} {v:.4g}" if isinstance(v, float) else f"  {k:28s} {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spectra", type=int, default=147000)
    ap.add_argument("--scale", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--scale-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.scale_child:
        scale_child(a.scale_child)
        return 0
    work = Path(a.workdir or tempfile.mkdtemp(prefix="msi2hist-index-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    try:
        if a.spectra > 0:
            bench_open(a, work, out)
        if a.scale:
            q = work / f"sparse_{a.scale}.imzML"
            if not q.exists():
                t = time.perf_counter()
                make_sparse(q, a.scale, seed=1)
                print(f"generated {a.scale} spectra in {time.perf_counter() - t:.0f} s")
            drop_caches(q)
            cp = subprocess.run(
                [sys.executable, __file__, "--scale-child", str(q)],
                capture_output=True,
                text=True,
                check=True,
            )
            s = json.loads(cp.stdout.strip().splitlines()[-1])
            s["imzml_mb"] = q.stat().st_size / 1e6
            out["scale"] = s
            for k, v in s.items():
                print(
                    f"  scale {k:24s} {v:.4g}" if isinstance(v, float) else f"  scale {k:24s} {v}"
                )
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
