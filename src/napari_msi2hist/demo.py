"""``msi2hist demo``: the whole workflow on an embedded phantom, measured against its ground truth.

Phantom (procedural H&E, no download) -> top-50 peaks -> synthetic H&E with the bundled model ->
registration of the MSI to the H&E by the synthesis route and by the direct route -> OUT_DIR with the
synthetic H&E, the registered MSI stack (OME-TIFF on the H&E grid), transform files, report.json
(synthesis MI/SSIM against the truth; TRE of both routes against the truth) and report.html with
figures (H&E, synthetic H&E, checkerboards before/after, TRE per landmark).
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .progress import Progress, run_to_end

_OUTPUTS = {
    "phantom/": "the phantom: msi.imzML/.ibd, he.ome.tif, truth.json, landmarks CSV",
    "synthetic_he.ome.tif": "synthetic H&E in the MSI frame (RGB, model's working pixel size)",
    "registered_msi.ome.tif": "every ion image resampled onto the H&E grid (synthesis route)",
    "transform_synthesis.json/.h5": "MSI -> H&E transform of the synthesis route (um)",
    "transform_direct.json/.h5": "MSI -> H&E transform of the direct route (um)",
    "report.json": "every number of this page, machine-readable",
    "report.html": "this page",
    "fig_synthesis.png, fig_checkerboards.png, fig_tre.png": "the figures",
}


def _figures(out: Path, ph, syn_rgb, truth_rgb, od_fixed, warped: dict, tre: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .registration.pipeline import checkerboard

    files = []
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained")
    ax[0].imshow(ph.he_rgb)
    ax[0].set_title("real H&E\n(phantom truth, H&E frame)", fontsize=10)
    ax[1].imshow(truth_rgb)
    ax[1].set_title("true H&E in the MSI frame\n(the synthesis target)", fontsize=10)
    ax[2].imshow(syn_rgb)
    ax[2].set_title("synthetic H&E\n(model output from the MSI)", fontsize=10)
    for a in ax:
        a.set_axis_off()
    fig.savefig(out / "fig_synthesis.png", dpi=80)
    plt.close(fig)
    files.append("fig_synthesis.png")

    fig, ax = plt.subplots(1, len(warped), figsize=(4 * len(warped), 4.6), layout="constrained")
    for a, (name, w) in zip(np.atleast_1d(ax), warped.items(), strict=True):
        a.imshow(checkerboard(od_fixed, w), cmap="gray", vmin=0, vmax=1)
        moving = "MSI (direct route)" if name == "direct" else "synthetic H&E"
        a.set_title(f"real H&E vs {moving}\n{name}", fontsize=10)
        a.set_axis_off()
    fig.savefig(out / "fig_checkerboards.png", dpi=80)
    plt.close(fig)
    files.append("fig_checkerboards.png")

    fig, a = plt.subplots(figsize=(7, 3.5), layout="constrained")
    n = len(next(iter(tre.values())))
    width = 0.8 / len(tre)
    for i, (name, v) in enumerate(tre.items()):
        a.bar(np.arange(n) + i * width, v, width, label=name)
    a.set_xlabel("landmark")
    a.set_ylabel("TRE (MSI pixels)")
    a.set_title("registration error at each landmark (lower is better)", fontsize=10)
    a.legend()
    fig.savefig(out / "fig_tre.png", dpi=80)
    plt.close(fig)
    files.append("fig_tre.png")
    return files


def _step(progress, name: str):
    """``progress`` with each stage prefixed by the demo's step, so the bars say what they are."""
    if progress is None:
        return None
    return lambda p: progress(replace(p, stage=f"{name}: {p.stage}" if p.stage else name))


def run_demo(
    out_dir,
    seed: int = 0,
    n_peaks: int = 50,
    model: str = "demo",
    progress: Callable[[Progress], None] | None = None,
) -> dict:
    from .io.histology import write_ome_tiff
    from .io.imzml import open_imzml
    from .metrics import mutual_information, ssim
    from .models.checkpoint import load_checkpoint
    from .models.inference import InferenceOptions
    from .msi.ion_images import DEFAULT_TOLERANCE
    from .phantom import PhantomConfig, iter_make_phantom
    from .registration.grid import he_on_msi_grid
    from .registration.preprocess import od_image
    from .workflows.peaks import iter_peaks
    from .workflows.register import (
        RegisterConfig,
        RegisterInputs,
        iter_register_job,
        registered_layers,
    )
    from .workflows.synthesize import iter_synthesize_job

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings = {}
    cfg = PhantomConfig(seed=seed, procedural_size=320)
    ph = run_to_end(
        iter_make_phantom(out / "phantom", cfg, overwrite=True), _step(progress, "1/4 phantom")
    )
    timings["phantom"] = time.monotonic() - t0
    ckpt = load_checkpoint(model)
    with open_imzml(ph.paths["imzml"]) as imz:
        t = time.monotonic()
        ions = run_to_end(
            iter_peaks(imz, n_peaks, None, DEFAULT_TOLERANCE, "tic"), _step(progress, "2/4 peaks")
        )
        peaks = ions.mz
        timings["peaks"] = time.monotonic() - t
    t = time.monotonic()
    syn = run_to_end(
        iter_synthesize_job(
            ckpt, imzml=ph.paths["imzml"], opts=InferenceOptions(tile=256, overlap=32)
        ),
        _step(progress, "3/4 synthetic H&E"),
    )
    timings["synthesis"] = time.monotonic() - t
    write_ome_tiff(out / "synthetic_he.ome.tif", syn.rgb, syn.pixel_size_um)
    # synthesis quality against the truth (the real H&E seen through the true transform)
    truth_rgb, valid = he_on_msi_grid(
        ph.he_rgb,
        (cfg.he_pixel_um,) * 2,
        ph.transform,
        syn.rgb.shape[:2],
        syn.pixel_size_um[0],
    )
    synth_metrics = {
        "mi": mutual_information(syn.rgb, truth_rgb, valid),
        "ssim": ssim(syn.rgb, truth_rgb, valid),
    }

    he_px = (cfg.he_pixel_um,) * 2
    msi_px = (cfg.msi_pixel_um,) * 2
    lm_he, lm_msi = ph.landmarks_he_um, ph.landmarks_msi_um
    routes, warped, tre_px, results = {}, {}, {}, {}
    fixed_od = od_image(ph.he_rgb)
    for route in ("synthesis", "direct"):
        t = time.monotonic()
        inp = RegisterInputs(  # the register workflow, as `msi2hist register` runs it
            ph.he_rgb,
            he_px,
            syn.pixel_size_um if route == "synthesis" else msi_px,
            synth=syn.rgb if route == "synthesis" else None,
            stack=ions.stack,
            msi_mask=ions.mask,
            msi_px=msi_px,
            mz=ions.mz,
            landmarks_fixed=lm_he,
            landmarks_moving=lm_msi,
        )
        res = run_to_end(
            iter_register_job(inp, RegisterConfig(route=route)),
            _step(progress, f"4/4 registration, {route} route"),
        )
        err = np.asarray(res.landmarks["tre_um"])  # TRE as the registration reports it
        res.transform.meta.update(
            {  # relative to the folder: the demo is written elsewhere, then moved into place
                "fixed": os.path.relpath(ph.paths["he"], out),
                "moving": os.path.relpath(ph.paths["imzml"], out),
                "route": route,
            }
        )
        res.transform.save(out / f"transform_{route}.json", out / f"transform_{route}.h5")
        routes[route] = {
            "tre_median_um": float(np.median(err)),
            "tre_median_msi_px": float(np.median(err) / msi_px[0]),
            "tre_p90_msi_px": float(np.percentile(err, 90) / msi_px[0]),
            "seconds": time.monotonic() - t,
            "metrics": res.metrics,
            "verdict": res.verdict["verdict"],
            "verdict_reasons": res.verdict["reasons"],
            # the tissue Dice the verdict judged: of the route's own image, or of the second view
            # when that overlaps better (a user saw 0.74 beside "ok" for a verdict on 0.97)
            "verdict_dice": {
                k: res.verdict["evidence"].get(f"dice_{k}") for k in ("before", "after", "image")
            },
        }
        results[route] = res
        tre_px[route] = err / msi_px[0]
        warped[route] = res.transform.resample_moving_to_fixed(
            res.moving_image, res.moving_px, fixed_od.shape, he_px
        )
        if route == "synthesis":
            best, best_inputs = res, inp
    # the two routes check each other: far apart means one of them is wrong
    from .registration.verdict import cross_check_routes, judge

    tissue_pts = np.argwhere(ph.he_classes[0] < 0.3)[::25] * cfg.he_pixel_um
    cc = cross_check_routes(fixed_od, he_px, results, tissue_pts, msi_px[0])
    dis = cc["disagreement_msi_px"]
    for route, res in results.items():
        ev = dict(
            res.verdict["evidence"],
            route_disagreement_msi_px=dis,
            route_fits_worse=cc["fits_worse"][route],
        )
        v = judge(ev)
        routes[route]["verdict"], routes[route]["verdict_reasons"] = v["verdict"], v["reasons"]
        routes[route]["route_disagreement_msi_px"] = dis
    warped = {
        "before (no transform)": best.transform.__class__.from_moving_to_fixed_matrix(
            np.eye(3)
        ).resample_moving_to_fixed(best.moving_image, best.moving_px, fixed_od.shape, he_px),
        **warped,
    }
    # the registered MSI: every ion image on the H&E grid, via the synthesis route
    stack, names = registered_layers(best_inputs, best)
    write_ome_tiff(
        out / "registered_msi.ome.tif",
        stack,
        he_px,
        channel_names=names,
        annotations=ions.annotations(),
    )
    figs = _figures(out, ph, syn.rgb, truth_rgb, fixed_od, warped, tre_px)
    report = {
        "phantom": {
            **{k: os.path.relpath(v, out) for k, v in ph.paths.items()},
            "rotation_deg": ph.transform.angle_deg,
            "scale": ph.transform.scale,
            "deform_rms_msi_px": cfg.deform_rms_px,
        },
        "model": {"checkpoint": ckpt.path, "steps": ckpt.training.get("steps")},
        "peaks": {"n": len(peaks), "mz": [round(float(m), 4) for m in peaks]},
        "synthesis_vs_truth": synth_metrics,
        "registration": routes,
        "seconds": {**timings, "total": time.monotonic() - t0},
        "figures": figs,
    }
    c = ckpt.contract
    data = ckpt.training.get("data") or {}
    knows = (
        f"{c.n_channels} m/z from {min(c.mz):.1f} to {max(c.mz):.1f}, '{c.spectrum_norm}' "
        f"normalisation, {c.tolerance}, {c.working_pixel_um:g} um working grid; trained "
        f"{ckpt.training.get('steps', '?')} steps on {', '.join(data.get('train', [])) or 'unrecorded data'}"
    )
    report["model"]["knows"] = knows
    report["model"]["domain_warnings"] = list(syn.domain.warnings) if syn.domain else []
    report["outputs"] = _OUTPUTS
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    rows = "".join(
        f"<tr><td>{r}</td><td>{v['tre_median_msi_px']:.2f}</td><td>{v['tre_p90_msi_px']:.2f}</td>"
        f"<td>{v['tre_median_um']:.1f}</td>"
        f"<td>{v['verdict_dice']['before']:.3f} &rarr; {v['verdict_dice']['after']:.3f}"
        f"<br><small>{html.escape(str(v['verdict_dice']['image'] or ''))}</small></td>"
        f"<td>{v['seconds']:.1f}</td>"
        f"<td>{html.escape(v.get('verdict', ''))}<br><small>"
        + "<br>".join(html.escape(x) for x in v.get("verdict_reasons", []))
        + "</small></td></tr>"
        for r, v in routes.items()
    )
    outputs = "".join(f"<li><code>{k}</code>: {v}</li>" for k, v in _OUTPUTS.items())
    dom = report["model"]["domain_warnings"]
    dom_html = (
        "<p class=warn>" + "<br>".join(dom) + "</p>"
        if dom
        else "<p>The phantom lies inside the model's input domain (m/z coverage and intensity "
        "statistics match its training data).</p>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>msi2hist demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
td,th{{padding:4px 10px}} table{{border-collapse:collapse;margin:1em 0 2em}}
figure{{margin:1.5em 0;clear:both}} figure img{{display:block;max-width:100%}}
figcaption{{font-size:90%;color:#444}} .warn{{background:#fde3c0;padding:6px}}
dt{{font-weight:bold}} dd{{margin:0 0 .6em 1.5em}}</style></head><body>
<h1>napari-msi2hist demo</h1>
<p>Phantom MSI ({ph.msi_shape_yx[0]}x{ph.msi_shape_yx[1]} px at {cfg.msi_pixel_um} um) and H&amp;E
({ph.he_rgb.shape[0]}x{ph.he_rgb.shape[1]} px at {cfg.he_pixel_um} um), rotated {ph.transform.angle_deg:.1f} degrees,
scaled {ph.transform.scale:.3f}, deformed {cfg.deform_rms_px} MSI px rms. Total {report["seconds"]["total"]:.0f} s.</p>
<h2>What the model knows</h2>
<p>Checkpoint <code>{ckpt.path}</code>: {knows}. It can only be trusted on MSI of that chemistry;
for your own data re-head it (docs/own_data.md).</p>{dom_html}
<h2>How to read the numbers</h2><dl>
<dt>MI (mutual information, bits)</dt><dd>How much the synthetic H&amp;E tells about the true one, pixel
by pixel; 0 = unrelated. It has no fixed maximum (it grows with image contrast): compare runs on the
same data. On this phantom the bundled model reaches about 0.5-0.8.</dd>
<dt>SSIM (structural similarity, -1..1)</dt><dd>Agreement of local brightness, contrast and
structure; 1 = identical, about 0 = unrelated. Above 0.5 is good for synthetic H&amp;E at MSI
resolution.</dd>
<dt>TRE (target registration error)</dt><dd>Distance between where the registration puts each
landmark and where it truly is, in MSI pixels (and um). Below 1 MSI pixel is as good as the MSI can
show; 1-2 px is usable; above 3 px the overlay is visibly wrong.</dd></dl>
<h2>Synthesis</h2><p>Synthetic vs true H&amp;E (inside the H&amp;E footprint): MI {synth_metrics["mi"]:.3f},
SSIM {synth_metrics["ssim"]:.3f}</p>
<figure><img src="fig_synthesis.png"><figcaption>Left: the real H&amp;E. Middle: that H&amp;E
seen in the MSI frame through the true transform (what the model should produce). Right: what the
model produced from the MSI.</figcaption></figure>
<h2>Registration (TRE at {len(lm_he)} landmarks against the truth)</h2>
<table border="1"><tr><th>route</th><th>median TRE (MSI px)</th><th>p90 (MSI px)</th><th>median (um)</th><th>tissue Dice before &rarr; after (the verdict's, and of which image)</th><th>seconds</th><th>verdict and reasons</th></tr>{rows}</table>
<figure><img src="fig_checkerboards.png"><figcaption>Checkerboards of the real H&amp;E (fixed, optical
density) and the moving image resampled onto it: alternate squares come from each. Left: no
transform; then the synthesis route (synthetic H&amp;E registered to the H&amp;E) and the direct
route (MSI ion images registered to the H&amp;E). Where the registration is right, structures run
straight across square borders.</figcaption></figure>
<figure><img src="fig_tre.png"><figcaption>TRE per landmark for each route, in MSI
pixels.</figcaption></figure>
<h2>Files written</h2><ul>{outputs}</ul>
</body></html>"""
    (out / "report.html").write_text(page)
    return report
