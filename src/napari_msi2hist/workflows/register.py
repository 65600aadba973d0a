"""The register job: inputs -> registration -> transform applied -> outputs.

One job, three steps, shared by ``msi2hist register`` and the Register widget:

* :func:`iter_read_inputs` turns files (an H&E, an imzML / synthetic H&E / MSI image, landmarks,
  masks) into :class:`RegisterInputs`; the widget builds the same object from its layers.
* :func:`iter_register_job` runs the registration on those inputs (both callers use it).
* :func:`write_outputs` writes transform.json/.h5, registered.ome.tif and report.json into a folder
  (the CLI passes the temporary folder of its all-or-nothing output plan).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RegisterConfig
from ..progress import CancelToken, Progress
from ..registration.intensity import RegistrationOptions
from ..registration.pipeline import RegistrationResult, iter_register_msi


def registration_options(cfg: RegisterConfig) -> RegistrationOptions:
    """Build the registration algorithm's options for a :class:`~napari_msi2hist.config.RegisterConfig`.

    Parameters
    ----------
    cfg : RegisterConfig
        The route, model, stages and options of the registration.

    Returns
    -------
    RegistrationOptions
    """
    return RegistrationOptions(
        stages=tuple(cfg.stages),
        rotation_search=cfg.rotation_search,
        seed=cfg.seed,
        scale_range=cfg.scale_range,
        scale_steps=cfg.scale_steps if cfg.scale_range > 1 else 1,
    )


@dataclass
class RegisterInputs:
    """Everything a registration needs, in memory, with physical pixel sizes (um, (y, x)).

    Exactly one of ``synth`` (a synthetic H&E, ``(Y, X, 3)`` uint8) and ``stack`` (MSI images,
    ``(C, Y, X)``) is the moving image; ``stack`` is kept with the synthesis route too, so that every
    ion image can be carried onto the H&E grid.
    """

    he_rgb: np.ndarray
    he_px: tuple[float, float]
    moving_px: tuple[float, float]
    synth: np.ndarray | None = None
    stack: np.ndarray | None = None
    msi_mask: np.ndarray | None = None  # measured pixels of the MSI raster
    msi_px: tuple[float, float] | None = None  # pixel of ``stack`` (may differ from ``moving_px``)
    mz: np.ndarray | None = None
    landmarks_fixed: np.ndarray | None = None  # points (y, x) in H&E world um
    landmarks_moving: np.ndarray | None = None
    fixed_mask: np.ndarray | None = None
    moving_mask: np.ndarray | None = None
    sources: dict = field(default_factory=dict)  # "fixed"/"moving": file paths when known
    warnings: list[str] = field(default_factory=list)
    # a whole slide: ((Y, X), (py, px)) of its level 0; ``he_rgb``/``he_px`` are then the pyramid
    # level that matches the moving pixel, and the outputs are written on level 0's grid
    he_full: tuple | None = None
    # the moving image is one exported image file (a vendor MALDI export), not ion images of an
    # imzML: registered by correlation and by MI, the better tissue overlap kept (see
    # registration.pipeline.iter_register_msi)
    moving_is_export: bool = False

    @property
    def moving_shape(self) -> tuple[int, int]:
        """Shape ``(Y, X)`` of the moving image's grid."""
        return tuple((self.synth if self.synth is not None else self.stack[0]).shape[:2])


def _read_mask(path, shape) -> np.ndarray | None:
    """Read a mask image (non-zero = inside) that must match ``shape``; None passes through."""
    if not path:
        return None
    from ..io.histology import read_histology

    a = np.asarray(read_histology(path).levels[0])
    if a.ndim == 3:
        a = a.max(-1)
    if a.shape[:2] != tuple(shape):
        raise ValueError(
            f"{path}: mask is {a.shape[0]}x{a.shape[1]} px, its image {shape[0]}x{shape[1]} px"
        )
    return a > 0


def iter_read_inputs(
    cfg: RegisterConfig,
    fixed: str,
    moving: str,
    *,
    fixed_pixel_um: float | None = None,
    moving_pixel_um: float | None = None,
    mz: list[float] | None = None,
    landmarks_fixed: str | None = None,
    landmarks_moving: str | None = None,
    fixed_mask: str | None = None,
    moving_mask: str | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, RegisterInputs]:
    """Read a registration's files into :class:`RegisterInputs` (synthesising H&E on that route).

    Parameters
    ----------
    cfg : RegisterConfig
        The route and model decide what is read.
    fixed, moving : str
        The H&E; an imzML, a synthetic H&E or an MSI image (a single-channel MALDI export, or a
        ``(C, Y, X)`` stack of at most 16 channels).
    fixed_pixel_um, moving_pixel_um : float, optional
        Pixel sizes in um; required when a file has none, and they override the file's.
    mz : list of float, optional
        Direct route with an imzML: ion images carried onto the H&E grid with the transform.
    landmarks_fixed, landmarks_moving : str, optional
        napari points CSVs (world um), same order; both or neither.
    fixed_mask, moving_mask : str, optional
        Tissue masks (non-zero = tissue) on the H&E grid / the moving image's grid.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Chunks of spectra read from an imzML (ion images, or the model's channels and then synthesis
        tiles on the synthesis route).

    Returns
    -------
    RegisterInputs
    """
    from ..io.histology import NO_PIXEL_SIZE, as_rgb_uint8, read_histology, to_uint8_rgb
    from ..io.imzml import is_imzml_path
    from ..io.points import read_points_csv
    from ..pixel_size import MissingPixelSize, resolve_pixel_size
    from ..registration.landmarks import check_landmark_pairs
    from .wholeslide import mask_on_level, open_slide, registration_level

    # what the moving image is decides the route it can take: said before anything else is asked
    moving_img = None if is_imzml_path(moving) else read_histology(moving)
    if moving_img is not None:
        _check_route(moving_img, cfg.route, moving)
    # a pyramidal or large H&E is registered on the level that matches the moving pixel (read once
    # the moving image is known), never read whole at level 0
    he, whole = open_slide(fixed)
    # "no pixel size in the file" is moot when the user gave one
    warnings = [w for w in he.warnings if not (fixed_pixel_um and NO_PIXEL_SIZE in w)]
    he_rgb = (
        np.zeros((0, 0, 3), np.uint8) if whole else as_rgb_uint8(np.asarray(he.levels[0]), fixed)
    )
    try:
        he_px = resolve_pixel_size(he.pixel_size_um, fixed_pixel_um, "fixed", fixed)
    except MissingPixelSize as e:
        _both_missing(e, fixed, moving, moving_pixel_um)
    lm_f = read_points_csv(landmarks_fixed) if landmarks_fixed else None
    lm_m = read_points_csv(landmarks_moving) if landmarks_moving else None
    if (lm_f is None) != (lm_m is None):
        raise ValueError("give both --landmarks-fixed and --landmarks-moving")
    if lm_f is not None:
        check_landmark_pairs(lm_m, lm_f, (landmarks_moving, landmarks_fixed))
    inp = RegisterInputs(he_rgb, he_px, he_px, landmarks_fixed=lm_f, landmarks_moving=lm_m)
    inp.sources = {"fixed": str(Path(fixed).resolve()), "moving": str(Path(moving).resolve())}
    inp.warnings = warnings
    if is_imzml_path(moving):
        yield from _read_imzml(inp, cfg, moving, moving_pixel_um, mz, cancel)
    else:
        img = moving_img
        arr = np.asarray(img.levels[0])
        inp.moving_px = inp.msi_px = resolve_pixel_size(
            img.pixel_size_um, moving_pixel_um, "moving", moving
        )
        if img.rgb:
            inp.synth = to_uint8_rgb(arr)
        else:
            stack = arr if arr.ndim == 3 else arr[None]
            inp.stack = stack
            inp.msi_mask = np.ones(stack.shape[-2:], bool)
            inp.moving_is_export = stack.shape[0] == 1
    if whole:
        inp.he_full = (tuple(int(n) for n in he.levels[0].shape[:2]), he_px)
        inp.he_rgb, inp.he_px = registration_level(he, he_px, float(max(inp.moving_px)))
        if fixed_mask:
            inp.fixed_mask = mask_on_level(fixed_mask, inp.he_full[0], inp.he_rgb.shape[:2])
    else:
        inp.fixed_mask = _read_mask(fixed_mask, he_rgb.shape[:2])
    inp.moving_mask = _read_mask(moving_mask, inp.moving_shape)
    return inp


def _check_route(img, route: str, moving) -> None:
    """Refuse a moving image the route cannot use, saying which route it can take."""
    if img.rgb:
        if route != "synthesis":
            raise ValueError(
                f"{moving}: an RGB moving image is a synthetic H&E: use --route synthesis"
            )
        return
    shape = img.levels[0].shape
    channels = shape[0] if len(shape) == 3 else 1
    if channels > 16:
        raise ValueError(f"{moving}: {channels} channels: expected an MSI image")
    if route == "synthesis":
        what = "a single-channel image (e.g. a vendor export)" if channels == 1 else "an image"
        raise ValueError(
            f"{moving}: {what} has no spectra to synthesise H&E from: use --route direct to "
            "register it as it is, or give the imzML"
        )


def _both_missing(fixed_error, fixed, moving, moving_pixel_um):
    """Raise ``fixed_error``, or one error naming both options when the moving image lacks one too.

    Only an image file is looked at (cheap); an imzML nearly always has a pixel size.
    """
    from ..io.histology import read_histology
    from ..io.imzml import is_imzml_path
    from ..pixel_size import OPTIONS, MissingPixelSize

    if moving_pixel_um is None and not is_imzml_path(moving):
        try:
            missing = read_histology(moving).pixel_size_um is None
        except Exception:  # noqa: BLE001 - its own error comes when it is read for real
            missing = False
        if missing:
            raise MissingPixelSize(
                f"{Path(fixed).name}, {Path(moving).name}: neither file "
                f"has a pixel size; give both: {OPTIONS['fixed']}; and {OPTIONS['moving']}"
            ) from None
    raise fixed_error


def _read_imzml(inp, cfg, moving, moving_pixel_um, mz, cancel):
    from ..io.imzml import open_imzml
    from ..msi.ion_images import iter_ion_images, total_ion_image
    from ..pixel_size import resolve_pixel_size

    with open_imzml(moving) as imz:
        inp.msi_px = resolve_pixel_size(imz.pixel_size_um, moving_pixel_um, "moving", moving)
        imz.pixel_size_um = inp.msi_px
        if cfg.route == "synthesis":
            from ..models.checkpoint import load_checkpoint
            from ..models.inference import InferenceOptions
            from ..models.synthesis import extract_for_contract, iter_synthesize

            ckpt = load_checkpoint(cfg.model)
            ions = yield from extract_for_contract(imz, ckpt)
            res = yield from iter_synthesize(ions, ckpt, InferenceOptions(device=cfg.device))
            inp.warnings.extend(res.domain.warnings if res.domain else ())
            inp.synth, inp.moving_px = res.rgb, res.pixel_size_um
            inp.stack, inp.msi_mask, inp.mz = ions.stack, ions.mask, ions.mz
        else:
            inp.stack = total_ion_image(imz)[None]
            inp.msi_mask, inp.moving_px = imz.measured_mask(), inp.msi_px
            if mz:
                ions = yield from iter_ion_images(imz, [float(v) for v in mz], cancel=cancel)
                inp.stack, inp.mz = ions.stack, ions.mz


def iter_register_job(
    inp: RegisterInputs, cfg: RegisterConfig, cancel: CancelToken | None = None
) -> Generator[Progress, None, RegistrationResult]:
    """Register the moving image of ``inp`` to its H&E and judge the result.

    Parameters
    ----------
    inp : RegisterInputs
        From :func:`iter_read_inputs` (CLI) or from the viewer's layers (Register widget).
    cfg : RegisterConfig
        The route, model, stages and options of the registration.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        The registration's stages (pose search, linear, deformable) and their iterations.

    Returns
    -------
    RegistrationResult
        The transform (fixed world -> moving world, ITK convention), before/after metrics, the
        verdict, and landmark TRE when landmarks were given. ``transform.meta`` records the
        sources, the pixel sizes and the metrics.
    """
    # the synthesis route also gets the ion images (when known): the search ranks its poses by
    # both views of the raster (registration.consensus)
    route_moving = (
        {
            "synth_rgb": inp.synth,
            "msi_stack": inp.stack,
            "msi_mask": inp.msi_mask,
            "msi_px": inp.msi_px,
        }
        if cfg.route == "synthesis"
        else {"msi_stack": inp.stack, "msi_mask": inp.msi_mask}
    )
    if cfg.route == "synthesis" and inp.synth is None:
        raise ValueError("the synthesis route needs a synthetic H&E (or an imzML and a model)")
    if cfg.route == "direct" and inp.stack is None:
        raise ValueError("the direct route needs an MSI image")
    reg = yield from iter_register_msi(
        inp.he_rgb,
        inp.he_px,
        cfg.route,
        inp.moving_px,
        opts=registration_options(cfg),
        landmarks_fixed=inp.landmarks_fixed,
        landmarks_moving=inp.landmarks_moving,
        landmarks_use=cfg.landmarks_use,
        msi_pixel_um=float(np.mean(inp.msi_px or inp.moving_px)),
        summary=cfg.summary,
        fixed_mask=inp.fixed_mask,
        moving_mask=inp.moving_mask,
        cancel=cancel,
        moving_is_export=inp.moving_is_export,
        **route_moving,
    )
    reg.transform.meta.update(
        {
            **inp.sources,
            "fixed_pixel_size_um": list(inp.he_full[1] if inp.he_full else inp.he_px),
            "registration_fixed_pixel_um": list(inp.he_px),
            "moving_pixel_size_um": list(inp.moving_px),
            "metrics": reg.metrics,
        }
    )
    return reg


def registered_layers(inp: RegisterInputs, reg: RegistrationResult):
    """Resample the moving data onto the H&E grid: every MSI image, else the synthetic H&E.

    Parameters
    ----------
    inp : RegisterInputs
        The registration's inputs (MSI stack or synthetic H&E, pixel sizes, H&E).
    reg : RegistrationResult
        Its result (the transform).

    Returns
    -------
    stack : ndarray
        ``(C, Y, X)`` float32 on the H&E grid, 0 outside the moved image.
    names : list of str
        ``mz=...`` per ion image, ``channel N`` for unnamed images, or ``R``, ``G``, ``B``.
    """
    shape = inp.he_rgb.shape[:2]
    data, px, names = _moving_layers(inp)
    layers = [
        reg.transform.resample_moving_to_fixed(data[c].astype(np.float32), px, shape, inp.he_px)
        for c in range(data.shape[0])
    ]
    return np.stack(layers).astype(np.float32), names


def _moving_layers(inp: RegisterInputs):
    """Return the moving data carried onto the H&E: ``(C, Y, X)`` images, pixel and names."""
    if inp.stack is not None:
        names = (
            [f"mz={m:.4f}" for m in inp.mz]
            if inp.mz is not None
            else [f"channel {c}" for c in range(inp.stack.shape[0])]
        )
        return inp.stack, inp.msi_px or inp.moving_px, names
    return np.moveaxis(inp.synth, -1, 0), inp.moving_px, ["R", "G", "B"]


def write_outputs(folder, cfg: RegisterConfig, inp: RegisterInputs, reg: RegistrationResult):
    """Write transform.json/.h5, registered.ome.tif and report.json into ``folder``.

    Parameters
    ----------
    folder : path-like
        An existing, empty folder (the CLI's temporary output folder).
    cfg : RegisterConfig
        The route, model, stages and options of the registration.
    inp : RegisterInputs
        The registration's inputs (from :func:`iter_read_inputs` or the viewer's layers).
    reg : RegistrationResult
        The registration's result.

    Returns
    -------
    dict
        The report written to report.json.
    """
    from .._limits import check_allocation
    from ..io.histology import write_ome_tiff

    folder = Path(folder)
    reg.transform.save(folder / "transform.json", folder / "transform.h5")
    if inp.he_full is not None:
        # a whole slide: level 0's grid, resampled and written tile by tile (pyramidal)
        from ..progress import run_to_end
        from .wholeslide import iter_apply

        data, px, names = _moving_layers(inp)
        shape, full_px = inp.he_full
        run_to_end(
            iter_apply(
                reg.transform,
                np.asarray(data, np.float32),
                px,
                shape,
                full_px,
                folder / "registered.ome.tif",
                channel_names=names,
            )
        )
    else:
        n = 3 if inp.stack is None else inp.stack.shape[0]
        h, w = inp.he_rgb.shape[:2]
        check_allocation(
            2.0 * n * h * w * 4,
            f"{n} registered float32 images of {h} x {w} px",
            inp.sources.get("fixed", "the H&E"),
        )
        stack, names = registered_layers(inp, reg)
        write_ome_tiff(folder / "registered.ome.tif", stack, inp.he_px, channel_names=names)
    from .. import __version__

    report = {
        "version": __version__,
        "inputs": dict(inp.sources),
        # the pixel sizes the registration used (um, y x): given on the command line or read
        "fixed_pixel_um": list(inp.he_full[1] if inp.he_full is not None else inp.he_px),
        "moving_pixel_um": list(inp.moving_px),
        "route": cfg.route,
        "stages": list(cfg.stages),
        "seconds": reg.seconds,
        "verdict": reg.verdict,
        "metrics": reg.metrics,
        "landmarks": reg.landmarks,
        "seed": cfg.seed,
        "whole_slide": None
        if inp.he_full is None
        else {
            "level0_shape": list(inp.he_full[0]),
            "level0_pixel_um": list(inp.he_full[1]),
            "registration_pixel_um": list(inp.he_px),
        },
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
    }
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    return report
