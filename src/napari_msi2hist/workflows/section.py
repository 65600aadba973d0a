"""One cohort section end to end: peaks -> synthesise -> register -> apply -> export.

:func:`iter_section` is a progress generator taking a frozen :class:`SectionConfig`. It writes every
output into a hidden temporary sibling of the destination folder and renames it into place at the end,
so a section folder either holds a complete result (with ``section.json``, its completion record) or
does not exist. The completion record carries fingerprints of every input (:func:`fingerprint`), so a
rerun can tell a finished section from one whose inputs changed (:func:`is_complete`).

Outputs of a section folder:

- ``ion_images.ome.tif``: the picked peaks on the MSI grid, ``(C, Y, X)`` float32;
- ``synthetic_he.ome.tif``: the synthetic H&E (synthesis route), on the model's working grid;
- ``transform.json`` / ``transform.h5``: H&E world -> MSI world, micrometres;
- ``registered_msi.ome.tif``: the ion images resampled onto the full-resolution H&E grid, tile by
  tile, as a pyramidal OME-TIFF (``registered_msi.ome.zarr`` too with ``zarr=True``);
- ``section.json``: config, input fingerprints, metrics, verdict, runtime.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..msi.ion_images import Tolerance
from ..progress import CancelToken, Progress
from .section_config import SectionConfig, SectionError
from .section_record import (  # noqa: F401  (FULL_HASH_MAX, EDGE_BYTES, RECORD_VERSION re-exported)
    EDGE_BYTES,
    FULL_HASH_MAX,
    RECORD,
    RECORD_VERSION,
    config_key,
    fingerprint,
    fingerprints,
    is_complete,
    may_replace,
    publish_folder,
    read_record,
)


# ------------------------------------------------------------------ the job
def _pixel(found, override, path, what) -> tuple[float, float]:
    if override is not None:
        return (float(override[0]), float(override[1]))
    if found is None:
        raise SectionError(f"{path}: {what} has no pixel size; give {what}_pixel_um in the cohort")
    return (float(found[0]), float(found[1]))


def _mask_dice(mask_path, he_shape, reg_shape, moving, moving_px, reg_px, transform) -> dict:
    """Measure the Dice of a given H&E tissue mask against the moving tissue, before and after.

    Dice of a given H&E tissue mask (level-0 size) against the moving tissue (above 15% of its
    99th percentile, as in ``overlap_metrics``), both on the registration grid, before and after.
    """
    from skimage.transform import resize

    from ..io.histology import read_histology
    from ..registration.transforms import Transform

    m = read_histology(mask_path).levels[0]
    if tuple(m.shape[:2]) != tuple(he_shape):
        raise SectionError(f"{mask_path}: mask shape {m.shape[:2]} differs from the H&E {he_shape}")
    m = np.asarray(m[..., 0] if m.ndim == 3 else m) > 0
    m = resize(m.astype(np.float32), reg_shape, order=1, anti_aliasing=True) > 0.5
    out = {}
    identity = Transform.from_moving_to_fixed_matrix(np.eye(3))
    for when, tr in (("before", identity), ("after", transform)):
        w = tr.resample_moving_to_fixed(moving, moving_px, m.shape, reg_px, default=0.0)
        t = w > 0.15 * (np.percentile(w, 99) + 1e-9)
        out[when] = float(2 * (t & m).sum() / max(1, t.sum() + m.sum()))
    return out


def _verdict_text(v) -> str:
    """Return a registration verdict as text, whether it is a string, an enum or an object/dict with one."""
    if isinstance(v, dict):
        v = v.get("verdict", v.get("status", v))
    for attr in ("verdict", "status", "value", "name"):
        if not isinstance(v, str) and hasattr(v, attr):
            v = getattr(v, attr)
    return str(v)


TRE_LIMIT_MSI_PX = 2.0  # provisional verdict: median landmark TRE above this is a failure


def provisional_verdict(metrics: dict, landmarks: dict | None = None) -> str:
    """Return the registration's verdict, or a stand-in marked as provisional.

    ``metrics['verdict']`` when the registration provides one. Otherwise a stand-in, marked as such
    in the report: ``fail`` when landmarks exist and their median TRE exceeds ``TRE_LIMIT_MSI_PX``
    MSI pixels, ``worse`` when MI or Dice dropped after registration, else ``improved`` (``unknown``
    without before/after metrics).

    Parameters
    ----------
    metrics : dict
        The registration's metrics (``verdict``, or ``before``/``after`` with ``mi`` and ``dice``).
    landmarks : dict, optional
        Landmark errors (``tre_median_msi_px``).

    Returns
    -------
    str
        The verdict.
    """
    if "verdict" in metrics:
        return str(metrics["verdict"])
    if landmarks and landmarks.get("tre_median_msi_px", 0.0) > TRE_LIMIT_MSI_PX:
        return "fail"
    b, a = metrics.get("before", {}), metrics.get("after", {})
    if not b or not a:
        return "unknown"
    worse = a.get("mi", 0) < b.get("mi", 0) or a.get("dice", 0) < b.get("dice", 0) - 0.02
    return "worse" if worse else "improved"


def iter_section(
    cfg: SectionConfig,
    cancel: CancelToken | None = None,
    hashes: dict[str, str] | None = None,
    model_file: str | None = None,
) -> Generator[Progress, None, dict]:
    """Run one section and publish its folder; returns the completion record (a dict).

    Parameters
    ----------
    cfg : SectionConfig
        The section.
    cancel : CancelToken, optional
        Checked between stages; a cancelled section leaves no folder behind.
    hashes : dict, optional
        Input fingerprints already taken by the caller (a batch takes them where it checks for
        finished sections); computed here when None.
    model_file : str, optional
        Where to load the checkpoint from when it is not ``cfg.model`` (a copy the batch shipped to
        this worker); the record still names ``cfg.model``.

    Stages: peaks, synthesis, registration (on the H&E pyramid level matching the moving pixel),
    then the ion images applied to the full-resolution H&E grid tile by tile (pyramidal OME-TIFF).

    Yields
    ------
    Progress
        Progress of each stage (peaks, synthesis, registration, apply), then ``section done``.

    Returns
    -------
    dict
        The completion record written as ``section.json`` in the section's folder.
    """
    from ..io.histology import read_histology, write_ome_tiff
    from ..io.imzml import open_imzml
    from ..io.points import read_points_csv
    from ..msi.ion_images import iter_ion_images
    from ..msi.peaks import iter_top_peaks
    from ..registration.intensity import RegistrationOptions
    from ..registration.pipeline import iter_register_msi
    from .wholeslide import iter_apply, registration_level

    t0 = time.monotonic()
    final = Path(cfg.out_dir)
    may_replace(final)
    hashes = hashes if hashes is not None else fingerprints(cfg)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the published folder gets normal rights
    seconds: dict[str, float] = {}

    def sub(job, stage):
        t = time.monotonic()
        res = yield from job
        seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - t
        if cancel is not None:
            cancel.check()
        return res

    try:
        he = read_histology(cfg.he)  # lazy (dask) levels for large files
        he_px = _pixel(he.pixel_size_um, cfg.he_pixel_um, cfg.he, "he")
        he_shape = tuple(he.levels[0].shape[:2])
        with open_imzml(cfg.imzml) as imz:
            msi_px = _pixel(imz.pixel_size_um, cfg.msi_pixel_um, cfg.imzml, "msi")
            tol = Tolerance(cfg.tolerance_ppm, "ppm")
            mz = cfg.mz
            if mz is None:
                mz = yield from sub(iter_top_peaks(imz, cfg.n_peaks, cfg.norm, cancel), "peaks")
            ions = yield from sub(
                iter_ion_images(imz, np.asarray(mz), tol, cfg.norm, cancel=cancel), "peaks"
            )
            ions = replace(ions, pixel_size_um=msi_px)
            write_ome_tiff(
                tmp / "ion_images.ome.tif", ions.stack, msi_px, [f"mz={m:.4f}" for m in ions.mz]
            )
            synth = None
            if cfg.route == "synthesis":
                from ..models.checkpoint import load_checkpoint
                from ..models.inference import InferenceOptions
                from ..models.synthesis import extract_for_contract, iter_synthesize

                ckpt = load_checkpoint(model_file or cfg.inputs()["model"])
                model_ions = yield from sub(extract_for_contract(imz, ckpt, cancel), "synthesis")
                model_ions = replace(model_ions, pixel_size_um=msi_px)
                opts = InferenceOptions(tile=cfg.tile, overlap=cfg.overlap, device=cfg.device)
                synth = yield from sub(iter_synthesize(model_ions, ckpt, opts, cancel), "synthesis")
                write_ome_tiff(tmp / "synthetic_he.ome.tif", synth.rgb, synth.pixel_size_um)
        moving_px = synth.pixel_size_um if synth is not None else msi_px
        # register on the H&E pyramid level that matches the moving pixel, never on level 0
        he_rgb, reg_px = registration_level(he, he_px, float(max(moving_px)))
        lm_f = read_points_csv(cfg.landmarks_he) if cfg.landmarks_he else None
        lm_m = read_points_csv(cfg.landmarks_msi) if cfg.landmarks_msi else None
        if (lm_f is None) != (lm_m is None):
            raise SectionError(f"{cfg.name}: give both landmarks_he and landmarks_msi, or neither")
        reg = yield from sub(
            iter_register_msi(
                he_rgb,
                reg_px,
                cfg.route,
                moving_px,
                synth_rgb=None if synth is None else synth.rgb,
                msi_stack=ions.stack,
                msi_mask=ions.mask,
                msi_px=tuple(msi_px),
                opts=RegistrationOptions(
                    stages=tuple(cfg.stages),
                    rotation_search=cfg.rotation_search,
                    working_pixel_um=cfg.registration_pixel_um,
                ),
                landmarks_fixed=lm_f,
                landmarks_moving=lm_m,
                landmarks_use=cfg.landmarks_use,
                msi_pixel_um=float(np.mean(msi_px)),
                cancel=cancel,
            ),
            "register",
        )
        metrics = dict(reg.metrics)
        if "verdict" not in metrics and getattr(reg, "verdict", None) is not None:
            metrics["verdict"] = _verdict_text(reg.verdict)
        if cfg.he_mask:
            metrics["mask_dice"] = _mask_dice(
                cfg.he_mask,
                he_shape,
                he_rgb.shape[:2],
                reg.moving_image,
                reg.moving_px,
                reg_px,
                reg.transform,
            )
        reg.transform.meta.update(
            {"fixed": cfg.he, "moving": cfg.imzml, "route": cfg.route, "metrics": metrics}
        )
        reg.transform.save(tmp / "transform.json", tmp / "transform.h5")
        # apply: the ion images onto the full-resolution H&E grid, tile by tile, pyramidal
        out_px, out_shape = he_px, he_shape
        if cfg.apply_pixel_um is not None:
            out_px = (float(cfg.apply_pixel_um),) * 2
            out_shape = tuple(
                max(1, round(n * p / q)) for n, p, q in zip(he_shape, he_px, out_px, strict=True)
            )
        yield from sub(
            iter_apply(
                reg.transform,
                ions.stack,
                msi_px,
                out_shape,
                out_px,
                tmp / "registered_msi.ome.tif",
                tmp / "registered_msi.ome.zarr" if cfg.zarr else None,
                [f"mz={m:.4f}" for m in ions.mz],
                cancel=cancel,
            ),
            "apply",
        )
        record = {
            "record_version": RECORD_VERSION,
            "status": "done",
            "name": cfg.name,
            "config": config_key(cfg),
            "inputs": hashes,
            "he_pixel_um": list(he_px),
            "registration_pixel_um": list(reg_px),
            "registered_pixel_um": list(out_px),
            "msi_pixel_um": list(msi_px),
            "mz": [float(m) for m in ions.mz],
            "metrics": metrics,
            "verdict": provisional_verdict(metrics, reg.landmarks),
            "verdict_source": "registration" if "verdict" in metrics else "provisional",
            "landmarks": reg.landmarks,
            "seconds": {**seconds, "total": time.monotonic() - t0},
            "host": platform.node(),
            "pid": os.getpid(),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=1, default=float))
        publish_folder(tmp, final)
        yield Progress(1, 1, "section done")
        return record
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "SectionConfig",
    "SectionError",
    "fingerprint",
    "fingerprints",
    "is_complete",
    "iter_section",
    "may_replace",
    "provisional_verdict",
    "publish_folder",
    "read_record",
]
