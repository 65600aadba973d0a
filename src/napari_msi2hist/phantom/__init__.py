"""Paired MSI + H&E phantoms with a known transform, for measuring synthesis and registration.

The H&E ground truth is a real texture (``he_image``) or, with none given, a procedural H&E drawn
with the Beer-Lambert model and skimage's H&E stain vectors. Tissue classes (background, nuclei-rich,
stroma, other tissue) come from colour deconvolution (``skimage.color.rgb2hed``), or, with
``msi_classes="latent"`` and the procedural H&E, from the hidden tissue maps the H&E was drawn from
(so that H&E features do not contain the MSI's source exactly). Each MSI pixel is a
spectrum: class-specific Gaussian peaks mixed by the class fractions under the pixel's footprint,
plus matrix peaks (everywhere, strongest off tissue), a baseline and Poisson + Gaussian noise.

Realism effects, each switchable in :class:`PhantomConfig`: matrix peaks off tissue, acquisition
drift (gradient along the scan, line-to-line jitter), ion suppression where nuclei are dense, hot
pixels, missing pixels. The MSI-to-H&E transform is rotation + scale + shift + a smooth displacement
(``deform_rms_px`` MSI pixels rms) and is written to ``truth.json`` (read back by :func:`napari_msi2hist.registration.truth.load_truth`).
Everything is deterministic from ``seed``; the peak table (the "chemistry": which m/z belong to
which tissue class) comes from ``chemistry_seed`` instead, so that phantoms of different seeds share
their m/z channels as samples from one lab and protocol do, and one model applies to all of them.
"""

from __future__ import annotations

import os
import uuid as uuid_mod
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..crossmodal.features import tissue_classes
from ..io.points import read_points_csv, write_points_csv  # noqa: F401  (re-exported)
from ..progress import Progress, run_to_end
from ..registration.transforms import px_to_um, rotation_scale_matrix_yx, um_to_px
from ..registration.truth import DisplacementField, PhantomTransform
from ._difficulty import _add_marks, _crop_raster, _glass, _inside_raster, _split_pieces
from .truth import (  # noqa: F401  (re-exported)
    CLASSES,
    PHANTOM_VERSION,
    TRUTH_FORMAT,
    _write_json_atomic,
    load_truth,
    truth_dict,
)

# bump whenever the same config would generate different data (caches of sample phantoms check it)


@dataclass(frozen=True)
class PhantomConfig:
    seed: int = 0
    he_image: str | None = None  # None: procedural H&E
    he_pixel_um: float = 4.0
    he_max_size: int = 512  # real textures larger than this are downsampled (area)
    procedural_size: int = 256
    msi_pixel_um: float = 20.0
    mode: str = "continuous"
    mz_min: float = 300.0
    mz_max: float = 1100.0
    n_mz: int = 1000
    peak_sigma_da: float = 0.6
    rotation_deg: float | None = None  # None: random in [-180, 180)
    scale: float | None = None  # None: random in [0.9, 1.1]
    max_shift_msi_px: float = 3.0
    deform_rms_px: float = 1.5
    deform_smooth_px: float = 6.0
    matrix_peaks: bool = True
    drift: bool = True
    ion_suppression: bool = True
    hot_pixels: float = 0.002
    missing_pixels: float = 0.005
    noise: bool = True
    counts_scale: float = 200.0
    n_landmarks: int = 12
    chemistry_seed: int = 0  # the peak table (which m/z belong to which class); shared across seeds
    # difficulties of real slides, all off by default (the defaults reproduce PHANTOM_VERSION 2 data)
    msi_coverage: float = 1.0  # fraction of the raster kept along one axis (< 1: cuts the tissue)
    n_pieces: int = 1  # tissue pieces on the H&E (1-3), separated by glass
    marks: bool = False  # printed label text, pen marks and debris on the glass beside the tissue
    flip: bool = False  # the MSI is the mirror image of the H&E section
    # where the MSI's class fractions come from: "colour" (PHANTOM_VERSION 2 data): colour
    # deconvolution of the H&E (crossmodal.features.tissue_classes, the same maps the colour features
    # contain); "latent" (procedural H&E only): the hidden tissue structure the H&E was drawn from
    # (nuclear density, fibres, lumens, glass), which the H&E shows only through stain, blur and noise
    msi_classes: str = "colour"

    def replace(self, **kw) -> PhantomConfig:
        d = asdict(self)
        d.update(kw)
        return PhantomConfig(**d)


@dataclass
class Phantom:
    config: PhantomConfig
    he_rgb: np.ndarray
    he_classes: np.ndarray  # (4, Yh, Xh) soft class maps the MSI was made from, sum 1
    msi_fractions: np.ndarray  # (4, Ym, Xm) class fractions under each MSI pixel
    transform: PhantomTransform  # msi world um -> he world um
    peaks: dict[str, list[float]]
    msi_shape_yx: tuple[int, int]
    landmarks_he_um: np.ndarray
    landmarks_msi_um: np.ndarray
    missing: np.ndarray  # (Ym, Xm) bool
    paths: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------- H&E texture
_OD_H = np.array([0.65, 0.70, 0.29])
_OD_E = np.array([0.07, 0.99, 0.11])


def procedural_he(size: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural H&E-like RGB image: cell nests with dense nuclei, eosin-rich stroma, lumens."""
    return _procedural_he_and_latent(size, rng)[0]


def _procedural_he_and_latent(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`procedural_he` (same draws, same image) and the hidden tissue maps it was drawn from:
    ``(4, size, size)`` fractions (lumen, nuclei, stroma, other), sum 1. Nuclei are ``1 - exp(-d)``
    of the nuclear density ``d``; the rest of the tissue is stroma in proportion to the fibre
    signal outside cell nests and "other" elsewhere (nests, fibre-poor tissue)."""
    from scipy import ndimage as ndi

    n = size
    nest = ndi.gaussian_filter(rng.standard_normal((n, n)), n / 18)
    nest = nest > np.quantile(nest, 0.55)
    fib = ndi.gaussian_filter(rng.standard_normal((n, n)), (1.0, 6.0))
    fib = ndi.rotate(fib, rng.uniform(0, 180), reshape=False, mode="reflect")
    lumen = (
        ndi.gaussian_filter(rng.standard_normal((n, n)), n / 60)
        > 2.2 * ndi.gaussian_filter(rng.standard_normal((n, n)), n / 60).std()
    )
    nuc_pts = np.zeros((n, n))
    k = int(n * n * 0.012)
    ys, xs = rng.integers(0, n, k), rng.integers(0, n, k)
    keep = nest[ys, xs] | (rng.random(k) < 0.15)
    nuc_pts[ys[keep], xs[keep]] = rng.uniform(0.6, 1.4, keep.sum())
    density = ndi.gaussian_filter(nuc_pts, 1.6) * 18.0
    fibre = np.tanh(2 * fib / fib.std())
    h = density + 0.08 * nest
    e = 0.35 + 0.35 * fibre * (~nest) + 0.15 * nest
    h[lumen], e[lumen] = 0.0, 0.02
    od = h[..., None] * _OD_H + e[..., None] * _OD_E
    rgb = 255.0 * np.exp(-od) * (1 + 0.02 * rng.standard_normal((n, n, 1)))
    nuc = 1.0 - np.exp(-density)
    strm = (1.0 - nuc) * 0.5 * (1.0 + fibre) * (~nest)
    latent = np.stack([np.zeros((n, n)), nuc, strm, 1.0 - nuc - strm])
    latent[:, lumen] = np.array([1.0, 0.0, 0.0, 0.0])[:, None]
    return np.clip(rgb, 0, 255).astype(np.uint8), latent


def load_texture(cfg: PhantomConfig) -> np.ndarray:
    from skimage.transform import resize

    from ..io.histology import read_histology, to_uint8_rgb

    img = np.asarray(read_histology(cfg.he_image).levels[0])
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = to_uint8_rgb(img[..., :3])
    big = max(img.shape[:2])
    if big > cfg.he_max_size:
        f = cfg.he_max_size / big
        shape = (round(img.shape[0] * f), round(img.shape[1] * f))
        img = (resize(img, shape, anti_aliasing=True, preserve_range=True)).round().astype(np.uint8)
    return img


def _cut_tissue(rgb: np.ndarray, rng: np.random.Generator, glass_mask: bool = False):
    """Give the texture a tissue outline on glass: texture that fills the frame gets a random smooth
    blob cut out of it; near-black non-stain pixels (labels, pen text) become glass. With
    ``glass_mask``, returns ``(rgb, mask of the pixels made glass)``."""
    from scipy import ndimage as ndi

    ny, nx = rgb.shape[:2]
    f = rgb.astype(np.float64)
    od = -np.log(np.clip(f, 1, 255) / 255.0)
    bright = od.sum(-1) < 0.25
    out = f.copy()
    # labels and pen text: grey (little chroma) and not bright; stained tissue is purple or pink
    dark_grey = ((f.max(-1) - f.min(-1)) < 22) & (f.mean(-1) < 190)
    dark_grey = ndi.binary_dilation(dark_grey, iterations=1)
    if bright.mean() < 0.3:  # texture fills the frame: cut a blob
        yy, xx = np.mgrid[0:ny, 0:nx]
        cy, cx = ny / 2 + rng.uniform(-0.05, 0.05) * ny, nx / 2 + rng.uniform(-0.05, 0.05) * nx
        ang = np.arctan2(yy - cy, xx - cx)
        r = np.hypot((yy - cy) / (ny / 2), (xx - cx) / (nx / 2))
        wobble = sum(
            rng.uniform(0.03, 0.08) * np.cos(k * ang + rng.uniform(0, 6.3)) for k in (2, 3, 5)
        )
        blob = r < 0.78 + wobble
        blob = ndi.binary_opening(blob, iterations=2)
        out[~blob] = _glass((int((~blob).sum()),), rng)
        glass = ~blob | dark_grey
    else:
        glass = dark_grey
    out[dark_grey] = _glass((int(dark_grey.sum()),), rng)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return (out, glass) if glass_mask else out


# ------------------------------------------------------------------- geometry
def _make_transform(cfg: PhantomConfig, he_shape, rng) -> tuple[PhantomTransform, tuple[int, int]]:
    from scipy import ndimage as ndi

    ang = rng.uniform(-180, 180) if cfg.rotation_deg is None else cfg.rotation_deg
    sc = rng.uniform(0.9, 1.1) if cfg.scale is None else cfg.scale
    a = rotation_scale_matrix_yx(ang, sc)
    if cfg.flip:  # mirror the MSI x axis
        a = a @ np.diag([1.0, -1.0])
    ainv = np.linalg.inv(a)
    hy, hx = (np.asarray(he_shape[:2]) - 1) * cfg.he_pixel_um
    corners = np.array([[0, 0], [0, hx], [hy, 0], [hy, hx]], dtype=np.float64)
    pad = 3 * cfg.msi_pixel_um
    cm = corners @ ainv.T  # he corners in an msi frame up to translation
    lo = cm.min(0) - pad
    shape = tuple(int(v) for v in np.ceil((cm.max(0) - lo + pad) / cfg.msi_pixel_um) + 1)
    shift = rng.uniform(-1, 1, 2) * cfg.max_shift_msi_px * cfg.msi_pixel_um
    # msi point p: he = A (p + lo + shift)
    t = a @ (lo + shift)
    disp = None
    if cfg.deform_rms_px > 0:
        raw = rng.standard_normal((*shape, 2))
        sm = np.stack(
            [
                ndi.gaussian_filter(raw[..., k], cfg.deform_smooth_px, mode="reflect")
                for k in range(2)
            ],
            -1,
        )
        sm -= sm.mean((0, 1))
        sm *= cfg.deform_rms_px * cfg.msi_pixel_um / np.sqrt((sm**2).sum(-1).mean())
        disp = DisplacementField(sm, (cfg.msi_pixel_um, cfg.msi_pixel_um))
    tr = PhantomTransform(a, t, disp)
    tr.angle_deg, tr.scale = float(ang), float(sc)  # informational
    return tr, shape


def _msi_fractions(cls: np.ndarray, tr: PhantomTransform, shape, cfg: PhantomConfig) -> np.ndarray:
    """Class fractions under each MSI pixel footprint (box filter of one MSI pixel, then sampling)."""
    from scipy import ndimage as ndi

    k = max(1, int(round(cfg.msi_pixel_um / cfg.he_pixel_um)))
    sm = np.stack([ndi.uniform_filter(c, size=k, mode="nearest") for c in cls])
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    p_msi = px_to_um(np.column_stack([rr.ravel(), cc.ravel()]), (cfg.msi_pixel_um,) * 2)
    p_he = um_to_px(tr.forward(p_msi), (cfg.he_pixel_um,) * 2)
    out = np.empty((len(cls), *shape))
    for i, c in enumerate(sm):
        fill = 1.0 if i == 0 else 0.0
        out[i] = ndi.map_coordinates(c, p_he.T, order=1, mode="constant", cval=fill).reshape(shape)
    return out / out.sum(0, keepdims=True)


def _peak_table(cfg: PhantomConfig, rng) -> dict[str, list[float]]:
    span = cfg.mz_max - cfg.mz_min
    cands = cfg.mz_min + span * (0.04 + 0.92 * rng.permutation(np.linspace(0, 1, 60)))
    names = ["matrix", "tissue", "nuclei", "stroma", "other"]
    counts = [4, 3, 5, 5, 4]
    out, i = {}, 0
    for nm, c in zip(names, counts, strict=True):
        out[nm] = sorted(float(round(v, 3)) for v in cands[i : i + c])
        i += c
    return out


def _amplitudes(fr: np.ndarray, peaks: dict, cfg: PhantomConfig, rng) -> np.ndarray:
    """Peak amplitudes (N_pixels, P) before noise, in the order of the flattened peak table."""
    bg, nuc, strm, oth = (f.ravel() for f in fr)
    tis = 1 - bg
    supp = (1 - 0.6 * nuc) if cfg.ion_suppression else np.ones_like(nuc)
    cols = []
    for nm, mzs in peaks.items():
        for _ in mzs:
            base = rng.uniform(0.5, 1.5)
            if nm == "matrix":
                v = (1.5 * bg + 0.35 * tis) if cfg.matrix_peaks else 0.2 * tis
            elif nm == "tissue":
                v = tis * supp
            elif nm == "nuclei":
                v = nuc * 2.0
            elif nm == "stroma":
                v = strm * supp * 1.5
            else:
                v = oth * supp * 1.5
            cols.append(base * v)
    amp = np.stack(cols, 1)
    # biological variability per pixel and peak
    amp *= np.exp(0.15 * rng.standard_normal(amp.shape))
    return amp


def _drift(shape, cfg: PhantomConfig, rng) -> np.ndarray:
    ny, nx = shape
    if not cfg.drift:
        return np.ones(shape)
    order = (np.arange(ny)[:, None] * nx + np.arange(nx)[None, :]) / (ny * nx)
    line = np.exp(0.2 * rng.standard_normal((ny, 1)))
    grad = 1.0 + 0.35 * (np.arange(nx)[None, :] / max(1, nx - 1) - 0.5)
    return (1.0 - 0.4 * order) * line * grad


def iter_make_phantom(
    out_dir: str | os.PathLike | None, cfg: PhantomConfig = PhantomConfig(), overwrite: bool = False
) -> Generator[Progress, None, Phantom]:
    """Build a phantom; with ``out_dir`` write msi.imzML/.ibd, he.ome.tif, truth.json, landmark CSVs."""
    from ..io.histology import write_ome_tiff
    from ..io.imzml_writer import ImzMLWriter

    if cfg.mode not in ("continuous", "processed"):
        raise ValueError(f"mode must be continuous or processed, not {cfg.mode!r}")
    if cfg.msi_classes not in ("colour", "latent"):
        raise ValueError(f"msi_classes must be colour or latent, not {cfg.msi_classes!r}")
    if cfg.msi_classes == "latent" and (cfg.he_image or cfg.n_pieces > 1):
        raise ValueError("msi_classes='latent' needs the procedural H&E in one piece")
    rng = np.random.default_rng(cfg.seed)
    latent = None
    if cfg.he_image:
        he = _cut_tissue(load_texture(cfg), rng)
    else:
        he, latent = _procedural_he_and_latent(cfg.procedural_size, rng)
        he, glass = _cut_tissue(he, rng, glass_mask=True)
        latent[:, glass] = np.array([1.0, 0.0, 0.0, 0.0])[:, None]
    extra = np.random.default_rng([cfg.seed, 17])  # draws of the optional difficulties only
    if cfg.n_pieces > 1:
        he = _split_pieces(he, cfg.n_pieces, extra)
    yield Progress(1, 5, "H&E texture")
    cls = latent if cfg.msi_classes == "latent" else tissue_classes(he)
    tr, shape = _make_transform(cfg, he.shape, rng)
    if cfg.msi_coverage < 1.0:
        tr, shape = _crop_raster(tr, shape, cfg, extra)
    if cfg.marks:
        he, cls = _add_marks(he, cls, extra)
    fr = _msi_fractions(cls, tr, shape, cfg)
    peaks = _peak_table(cfg, np.random.default_rng(cfg.chemistry_seed))
    yield Progress(2, 5, "geometry")

    ny, nx = shape
    missing = rng.random(shape) < cfg.missing_pixels
    hot = rng.random(shape) < cfg.hot_pixels
    amp = _amplitudes(fr, peaks, cfg, rng)
    scale = (_drift(shape, cfg, rng) * np.where(hot, rng.uniform(15, 40, shape), 1.0)).ravel()
    amp *= scale[:, None]
    mz_axis = np.linspace(cfg.mz_min, cfg.mz_max, cfg.n_mz)
    all_mz = np.array([m for v in peaks.values() for m in v])
    shapes = np.exp(-0.5 * ((mz_axis[None, :] - all_mz[:, None]) / cfg.peak_sigma_da) ** 2)
    baseline = 0.05 * np.exp(-(mz_axis - cfg.mz_min) / (0.3 * (cfg.mz_max - cfg.mz_min)))

    # landmarks: well spread tissue points in the H&E frame, mapped into the MSI frame
    tissue = cls[0] < 0.5
    cand = np.argwhere(tissue)
    if cfg.msi_coverage < 1.0:  # landmarks only where the MSI raster exists
        inside = _inside_raster(tr, px_to_um(cand, (cfg.he_pixel_um,) * 2), shape, cfg)
        cand = cand[inside] if inside.any() else cand
    if len(cand) == 0:
        cand = np.argwhere(np.ones_like(tissue))
    pick = [cand[rng.integers(len(cand))]]
    for _ in range(cfg.n_landmarks - 1):
        sub = cand[rng.choice(len(cand), size=min(len(cand), 400), replace=False)]
        d = np.min(np.linalg.norm(sub[:, None, :] - np.array(pick)[None], axis=-1), axis=1)
        pick.append(sub[int(np.argmax(d))])
    lm_he = px_to_um(np.array(pick, dtype=np.float64), (cfg.he_pixel_um,) * 2)
    lm_msi = tr.inverse(lm_he)

    ph = Phantom(cfg, he, cls, fr, tr, peaks, shape, lm_he, lm_msi, missing)
    if out_dir is None:
        yield Progress(5, 5, "done")
        return ph
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file_uuid = uuid_mod.UUID(bytes=rng.bytes(16), version=4)
    w = ImzMLWriter(
        out / "msi.imzML",
        mode=cfg.mode,
        mz_axis=mz_axis if cfg.mode == "continuous" else None,
        pixel_size_um=(cfg.msi_pixel_um, cfg.msi_pixel_um),
        shape_yx=shape,
        file_uuid=file_uuid,
        overwrite=overwrite,
    )
    try:
        rows_per = max(1, 20000 // nx)
        for r0 in range(0, ny, rows_per):
            r1 = min(ny, r0 + rows_per)
            sl = slice(r0 * nx, r1 * nx)
            spec = amp[sl] @ shapes + baseline[None, :] * scale[sl, None]
            if cfg.noise:
                spec = rng.poisson(spec * cfg.counts_scale) / cfg.counts_scale
                spec += 0.01 * np.abs(rng.standard_normal(spec.shape))
            spec = (spec * 1000.0).astype(np.float32)
            rr, cc = np.divmod(np.arange(sl.start, sl.stop), nx)
            keep = ~missing[rr, cc]
            if cfg.mode == "continuous":
                w.add_block(cc[keep] + 1, rr[keep] + 1, spec[keep])
            else:
                for j in np.flatnonzero(keep):
                    # each spectrum has its own m/z axis: a small calibration shift, zeros dropped
                    shift = 1 + 2e-6 * rng.standard_normal()
                    nz = spec[j] > 0
                    w.add_spectrum(cc[j] + 1, rr[j] + 1, spec[j][nz], mz=mz_axis[nz] * shift)
            yield Progress(2 + (r1 / ny), 5, "spectra")
        w.close()
    except BaseException:
        w.abort()
        raise
    he_path = write_ome_tiff(out / "he.ome.tif", he, (cfg.he_pixel_um,) * 2, overwrite=overwrite)
    truth = truth_dict(ph)
    _write_json_atomic(out / "truth.json", truth)
    write_points_csv(out / "landmarks_he.csv", lm_he)
    write_points_csv(out / "landmarks_msi.csv", lm_msi)
    ph.paths = {
        "imzml": str(out / "msi.imzML"),
        "he": str(he_path),
        "truth": str(out / "truth.json"),
        "landmarks_he": str(out / "landmarks_he.csv"),
        "landmarks_msi": str(out / "landmarks_msi.csv"),
    }
    yield Progress(5, 5, "done")
    return ph


def make_phantom(
    out_dir=None, cfg: PhantomConfig = PhantomConfig(), overwrite: bool = False
) -> Phantom:
    return run_to_end(iter_make_phantom(out_dir, cfg, overwrite))
