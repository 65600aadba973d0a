"""Whole-slide H&E: peak memory and time of register + apply + write on a generated pyramidal slide.

1. Generates a SIZE x SIZE px pyramidal RGB OME-TIFF H&E at 0.5 um (default 40,000 px = 20 mm; tiles
   of a procedural H&E texture under a tissue-shaped mask, JPEG tiles) in a temporary folder under
   /tmp (deleted at the end unless --keep). Generation is not measured.
2. Makes an MSI-side image: a synthetic-H&E-like RGB at 20 um, seen through a known affine
   (rotation, scale, shift), from the slide's coarse pyramid level.
3. In a child process (its peak RSS is read from the kernel's rusage): opens the slide lazily,
   registers on the pyramid level that matches the moving pixel, applies the transform to the
   moving layer onto the FULL-resolution H&E grid tile by tile and writes a pyramidal OME-TIFF
   (``--zarr`` adds an OME-Zarr).
4. The reference, in the same run on a REF_SIZE slide: the naive path (level 0 read into memory,
   registration on it, one whole-grid resample, ``write_ome_tiff``), and ours on that same slide.

    python benchmarks/bench_wholeslide.py                      # 40,000 px, ref 8,000 px
    python benchmarks/bench_wholeslide.py --size 12000 --ref-size 6000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HE_PX = 0.5
MSI_PX = 20.0
TRUTH = {"angle": 12.0, "scale": 1.05, "shift_um": (310.0, -240.0)}


def _truth_matrix():
    """moving (MSI) world um -> fixed (H&E) world um, yx homogeneous, about the slide's centre."""
    from napari_msi2hist.registration.transforms import rotation_scale_matrix_yx

    m = np.eye(3)
    m[:2, :2] = rotation_scale_matrix_yx(TRUTH["angle"], TRUTH["scale"])
    m[:2, 2] = TRUTH["shift_um"]
    return m


def slide(size: int):
    """The synthetic slide: ``(n_levels, tiles)`` where ``tiles(level)`` yields its 512 px RGB tiles
    row by row (memory: the texture and one tile). Procedural H&E texture in 2048 px blocks with
    random flips, under a lobed tissue mask with holes and a slowly varying stain density, so that
    the slide has structure at the registration scale (tens of um) as well as at 0.5 um."""
    from scipy import ndimage as ndi

    from napari_msi2hist.phantom import procedural_he

    rng = np.random.default_rng(0)
    block = 2048
    tex = procedural_he(block, rng).astype(np.float32)
    g = 256  # coarse grid of the mask and the stain density
    yy, xx = np.mgrid[0:g, 0:g] / g - 0.5
    lobes = ndi.gaussian_filter(rng.standard_normal((g, g)), 16)
    blob = lobes / lobes.std() * 1.2 + (0.40 - np.hypot(yy * 1.2, xx)) * 6
    for _ in range(6):  # lumens / tears
        cy, cx, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.02, 0.06)
        blob = np.where(np.hypot(yy - cy, (xx - cx) * 0.7) < r, -1.0, blob)
    mask = ndi.gaussian_filter((blob > 0).astype(np.float32), 0.7)
    dens = ndi.gaussian_filter(rng.standard_normal((g, g)), 6)
    dens = np.clip(0.8 + 0.35 * dens / dens.std(), 0.3, 1.4).astype(np.float32)
    flips = rng.integers(0, 4, size=(size // block + 2, size // block + 2))
    glass = np.array([242.0, 240.0, 244.0], np.float32)
    n_levels = 1
    while size >> n_levels >= 1024 and block >> n_levels >= 64:
        n_levels += 1
    levels_tex = [tex]
    for _ in range(1, n_levels):
        t = levels_tex[-1]
        levels_tex.append((t[0::2, 0::2] + t[1::2, 0::2] + t[0::2, 1::2] + t[1::2, 1::2]) / 4)
    # four flipped copies of every level's texture
    flipped = [[t, t[::-1], t[:, ::-1], t[::-1, ::-1]] for t in levels_tex]

    def coarse(field, y0, x0, h, w, n):
        """A coarse-grid field at the tile's pixels (sampled every 16 px, repeated)."""
        cy = (np.arange(y0, y0 + h, 16) + 8) * g / n
        cx = (np.arange(x0, x0 + w, 16) + 8) * g / n
        f = ndi.map_coordinates(field, np.meshgrid(cy, cx, indexing="ij"), order=1)
        return np.repeat(np.repeat(f, 16, 0), 16, 1)[:h, :w, None]

    def texture(level, y0, x0, h, w):
        """The level's texture over a region, assembled from the flipped blocks it covers."""
        b = block >> level
        out = np.empty((h, w, 3), np.float32)
        for by in range(y0 // b, (y0 + h - 1) // b + 1):
            for bx in range(x0 // b, (x0 + w - 1) // b + 1):
                ya, yb = max(y0, by * b), min(y0 + h, (by + 1) * b)
                xa, xb = max(x0, bx * b), min(x0 + w, (bx + 1) * b)
                t = flipped[level][flips[by, bx]]
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = t[
                    ya - by * b : yb - by * b, xa - bx * b : xb - bx * b
                ]
        return out

    def tiles(level):
        # every level is written in 512 px tiles (the writer's tile shape), also where the
        # level's block is smaller than a tile
        n = -(-size // 2**level)
        for y0 in range(0, n, 512):
            for x0 in range(0, n, 512):
                h, w = min(512, n - y0), min(512, n - x0)
                rgb = texture(level, y0, x0, h, w)
                m = coarse(mask, y0, x0, h, w, n) * coarse(dens, y0, x0, h, w, n)
                yield np.clip(glass - (glass - rgb) * m, 0, 255).astype(np.uint8)

    return n_levels, tiles


def generate(path: Path, size: int) -> None:
    """A pyramidal RGB OME-TIFF of :func:`slide`, written tile by tile (JPEG tiles)."""
    import tifffile

    n_levels, tiles = slide(size)
    meta = {
        "axes": "YXS",
        "PhysicalSizeX": HE_PX,
        "PhysicalSizeY": HE_PX,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    opts = dict(
        dtype=np.uint8,
        tile=(512, 512),
        photometric="rgb",
        compression="jpeg",
        maxworkers=os.cpu_count(),
    )
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for level in range(n_levels):
            n = -(-size // 2**level)
            kw = dict(shape=(n, n, 3), **opts)
            if level == 0:
                tw.write(tiles(0), subifds=n_levels - 1, metadata=meta, **kw)
            else:
                tw.write(tiles(level), subfiletype=1, metadata=None, **kw)
    # a level written with tiles of the wrong size comes back mostly black (the writer pads them):
    # check the small levels, which the registration and the moving image are made from
    with tifffile.TiffFile(path) as tf:
        for i, lv in enumerate(tf.series[0].levels):
            if max(lv.shape[:2]) <= 6000:
                black = float((lv.asarray().max(-1) < 8).mean())
                if black > 0.001:
                    raise RuntimeError(f"{path}: level {i} is {black:.0%} black")


def make_moving(he_path: Path, out: Path) -> None:
    """The MSI-side RGB at 20 um: the slide's coarse level seen through the known transform."""
    from napari_msi2hist.io.histology import read_histology
    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.workflows.wholeslide import registration_level

    he = read_histology(he_path, lazy=True)
    rgb, px = registration_level(he, (HE_PX, HE_PX), 2 * MSI_PX)  # ~MSI pixel
    tr = Transform.from_moving_to_fixed_matrix(_truth_matrix())
    ny = int(rgb.shape[0] * px[0] / MSI_PX)
    nx = int(rgb.shape[1] * px[1] / MSI_PX)
    chans = [
        tr.resample_fixed_to_moving(
            rgb[..., c].astype(float), px, (ny, nx), (MSI_PX, MSI_PX), default=242
        )
        for c in range(3)
    ]
    mov = np.clip(np.stack(chans, -1) + np.random.default_rng(1).normal(0, 4, (ny, nx, 3)), 0, 255)
    np.save(out, mov.astype(np.uint8))


def run_child(
    he_path: str, moving_path: str, out_dir: str, mode: str, zarr: bool, reg_px: float
) -> dict:
    """Register + apply + write (ours: lazy + tiles; naive: level 0 in memory). Returns timings."""
    from napari_msi2hist.io.histology import read_histology, to_uint8_rgb, write_ome_tiff
    from napari_msi2hist.metrics import landmark_tre_um
    from napari_msi2hist.progress import run_to_end
    from napari_msi2hist.registration.intensity import RegistrationOptions
    from napari_msi2hist.registration.pipeline import iter_register_msi
    from napari_msi2hist.workflows.wholeslide import iter_apply, registration_level

    t0 = time.perf_counter()
    moving = np.load(moving_path)
    mpx = (MSI_PX, MSI_PX)
    opts = RegistrationOptions(stages=("rigid", "affine"), working_pixel_um=reg_px)
    if mode == "ours":
        he = read_histology(he_path, lazy=True)
        shape = he.levels[0].shape[:2]
        fixed, fpx = registration_level(he, (HE_PX, HE_PX), MSI_PX)
    else:
        he = read_histology(he_path, lazy=False)
        fixed = to_uint8_rgb(np.asarray(he.levels[0]))
        shape, fpx = fixed.shape[:2], (HE_PX, HE_PX)
    t_open = time.perf_counter() - t0
    t = time.perf_counter()
    reg = run_to_end(iter_register_msi(fixed, fpx, "synthesis", mpx, synth_rgb=moving, opts=opts))
    t_reg = time.perf_counter() - t
    t = time.perf_counter()
    out = Path(out_dir)
    if mode == "ours":
        run_to_end(
            iter_apply(
                reg.transform,
                moving,
                mpx,
                shape,
                (HE_PX, HE_PX),
                out / "registered.ome.tif",
                out / "registered.ome.zarr" if zarr else None,
            )
        )
    else:
        chans = [
            reg.transform.resample_moving_to_fixed(
                moving[..., c].astype(np.float32), mpx, shape, fpx
            )
            for c in range(3)
        ]
        write_ome_tiff(
            out / "registered.ome.tif",
            np.clip(np.round(np.stack(chans, -1)), 0, 255).astype(np.uint8),
            fpx,
            pyramid=True,
        )
    t_apply = time.perf_counter() - t
    # registration error against the known transform, at points spread over the slide
    ys, xs = np.meshgrid(np.linspace(0.2, 0.8, 5), np.linspace(0.2, 0.8, 5))
    pts = np.column_stack([ys.ravel() * shape[0], xs.ravel() * shape[1]]) * HE_PX
    truth_moving = (np.linalg.inv(_truth_matrix()) @ np.c_[pts, np.ones(len(pts))].T).T[:, :2]
    err = landmark_tre_um(reg.transform, truth_moving, pts)
    return {
        "open_s": t_open,
        "register_s": t_reg,
        "apply_write_s": t_apply,
        "total_s": time.perf_counter() - t0,
        "fixed_px": list(fpx),
        "error_median_um": float(np.median(err)),
        "output_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20,
    }


def measure(he: Path, moving: Path, work: Path, mode: str, zarr: bool, reg_px: float) -> dict:
    out = work / f"out_{mode}_{he.stem}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmd = [sys.executable, __file__, "--child", mode, str(he), str(moving), str(out), str(reg_px)]
    if zarr:
        cmd.append("--zarr")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    text = p.stdout.read()
    p.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} child failed:\n{text}")
    res = json.loads(text.strip().splitlines()[-1])
    res["peak_rss_mb"] = ru.ru_maxrss / 1024  # KiB on Linux
    res["cpu_s"] = ru.ru_utime + ru.ru_stime  # the child's CPU time: comparable on a shared machine
    return res


def _row(name, r):
    return (
        f"{name:28s} peak RSS {r['peak_rss_mb']:7.0f} MB, total {r['total_s']:6.1f} s "
        f"(CPU {r['cpu_s']:.0f} s) "
        f"(open {r['open_s']:.1f}, register {r['register_s']:.1f}, apply+write {r['apply_write_s']:.1f}), "
        f"registration error {r['error_median_um']:.1f} um (fixed grid {r['fixed_px'][0]:g} um), "
        f"output {r['output_mb']:.0f} MB"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, he, moving, out, reg_px = sys.argv[2:7]
        print(json.dumps(run_child(he, moving, out, mode, "--zarr" in sys.argv, float(reg_px))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=40000, help="slide side in px (0.5 um pixels)")
    ap.add_argument("--ref-size", type=int, default=8000, help="slide for the naive reference")
    ap.add_argument("--zarr", action="store_true", help="also write OME-Zarr (ours)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument(
        "--reg-pixel", type=float, default=40.0, help="intensity registration grid (um), both paths"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_wholeslide_", dir="/tmp"))
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; files in {work}"
    )
    try:
        rows = []
        for size, modes in ((args.ref_size, ("naive", "ours")), (args.size, ("ours",))):
            he = work / f"he_{size}.ome.tif"
            t = time.perf_counter()
            generate(he, size)
            mov = work / f"moving_{size}.npy"
            make_moving(he, mov)
            print(
                f"generated {size} x {size} px pyramidal H&E ({he.stat().st_size / 2**20:.0f} MB, "
                f"JPEG tiles) + moving image in {time.perf_counter() - t:.0f} s"
            )
            for mode in modes:
                r = measure(he, mov, work, mode, args.zarr and mode == "ours", args.reg_pixel)
                rows.append((size, mode, r))
                print(_row(f"{mode} {size} px", r), flush=True)
        ref = {m: r for s, m, r in rows if s == args.ref_size}
        big = rows[-1][2]
        print(
            f"at {args.ref_size} px: ours / naive peak RSS "
            f"{ref['ours']['peak_rss_mb'] / ref['naive']['peak_rss_mb']:.2f}x, time "
            f"{ref['ours']['total_s'] / ref['naive']['total_s']:.2f}x"
        )
        print(
            f"at {args.size} px: ours peak RSS {big['peak_rss_mb']:.0f} MB "
            f"({'under' if big['peak_rss_mb'] < 2048 else 'OVER'} the 2 GB goal), {big['total_s']:.0f} s"
        )
        bad = [f"{m} {s} px" for s, m, r in rows if r["error_median_um"] > MSI_PX]
        if bad:
            print(f"WARNING: registration missed the known transform by > 1 MSI pixel: {bad}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
