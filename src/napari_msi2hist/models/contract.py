"""The MSI channel contract of a model, and input preparation shared by training and inference.

A model is trained on ion images of particular m/z values, extracted with a particular tolerance and
spectrum normalisation, scaled per channel with statistics measured on the training data, resampled to
a working pixel size, and padded with a particular value. All of that is the :class:`ChannelContract`
stored in the checkpoint; :func:`prepare_input` applies it (the same function in training and
inference) and :func:`output_grid` says where the output lies in physical coordinates.

Per-channel scaling: ``v = log1p(max(x, 0) / scale_c)``, then ``2 * (v - lo_c) / (hi_c - lo_c) - 1`` with
``lo_c, hi_c`` the 1st and 99th percentiles of ``v`` over measured training pixels. Values outside the
training range are not clipped (nothing is silently saturated); 16-bit integer and float stacks are
converted to float64 before any arithmetic, so nothing wraps around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..msi.ion_images import IonImages, Tolerance

PAD_VALUES = {"black": -1.0, "white": 1.0}


class ContractMismatchError(ValueError):
    """The MSI input does not meet the model's channel contract."""


class ChannelMismatchError(ContractMismatchError):
    """The MSI does not provide the m/z channels a model needs."""

    def __init__(self, missing: list[float], tolerance: Tolerance, source: str = ""):
        self.missing = missing
        shown = ", ".join(f"{m:.4f}" for m in missing[:20]) + (" ..." if len(missing) > 20 else "")
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}the model needs {len(missing)} m/z channel(s) that the MSI layer does not have "
            f"(within {tolerance}): {shown}. Re-extract them from the imzML."
        )


@dataclass(frozen=True)
class ChannelContract:
    mz: tuple[float, ...]
    tolerance_value: float = 10.0
    tolerance_unit: str = "ppm"
    spectrum_norm: str = "tic"
    scale: tuple[float, ...] = ()
    lo: tuple[float, ...] = ()
    hi: tuple[float, ...] = ()
    working_pixel_um: float = 10.0
    padding: str = "white"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.padding not in PAD_VALUES:
            raise ValueError(f"padding must be one of {sorted(PAD_VALUES)}, not {self.padding!r}")

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.tolerance_value, self.tolerance_unit)

    @property
    def n_channels(self) -> int:
        return len(self.mz)

    @property
    def pad_value(self) -> float:
        return PAD_VALUES[self.padding]

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("mz", "scale", "lo", "hi"):
            d[k] = [float(v) for v in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ChannelContract:
        d = dict(d)
        for k in ("mz", "scale", "lo", "hi"):
            d[k] = tuple(float(v) for v in d.get(k, ()))
        return cls(**d)

    def with_stats(self, stacks: list[np.ndarray], masks: list[np.ndarray]) -> ChannelContract:
        """Measure the per-channel statistics on training stacks ``(C, Y, X)`` (measured pixels only)."""
        vals = [s[:, m] for s, m in zip(stacks, masks, strict=True)]
        allv = np.concatenate(vals, axis=1).astype(np.float64)
        scale = []
        for row in allv:
            pos = row[row > 0]
            scale.append(float(np.median(pos)) if pos.size else 1.0)
        scale_a = np.asarray(scale)
        v = np.log1p(np.maximum(allv, 0) / scale_a[:, None])
        lo = np.percentile(v, 1, axis=1)
        hi = np.percentile(v, 99, axis=1)
        hi = np.where(hi > lo, hi, lo + 1.0)
        return ChannelContract(
            **{
                **asdict(self),
                "scale": tuple(scale),
                "lo": tuple(lo.tolist()),
                "hi": tuple(hi.tolist()),
            }
        )


def match_channels(contract: ChannelContract, available_mz, source: str = "") -> np.ndarray:
    """Index into ``available_mz`` for every contract m/z (nearest within the contract's tolerance);
    raises :class:`ChannelMismatchError` listing the missing m/z."""
    avail = np.asarray(available_mz, dtype=np.float64)
    need = np.asarray(contract.mz, dtype=np.float64)
    tol = contract.tolerance.half_width(need)
    if len(avail) == 0:
        raise ChannelMismatchError(need.tolist(), contract.tolerance, source)
    d = np.abs(need[:, None] - avail[None, :])
    idx = d.argmin(axis=1)
    missing = need[d[np.arange(len(need)), idx] > tol]
    if len(missing):
        raise ChannelMismatchError(missing.tolist(), contract.tolerance, source)
    return idx


def normalise_channels(stack: np.ndarray, contract: ChannelContract) -> np.ndarray:
    """Apply the per-channel scaling of the contract to a ``(C, Y, X)`` stack (any numeric dtype)."""
    if not contract.scale:
        raise ValueError("the contract has no channel statistics yet (with_stats)")
    x = np.asarray(stack).astype(np.float64)
    sc = np.asarray(contract.scale)[:, None, None]
    lo = np.asarray(contract.lo)[:, None, None]
    hi = np.asarray(contract.hi)[:, None, None]
    v = np.log1p(np.maximum(x, 0) / sc)
    return (2.0 * (v - lo) / (hi - lo) - 1.0).astype(np.float32)


def output_grid(shape_yx, msi_pixel_um, working_pixel_um) -> tuple[int, int]:
    """Shape of the working grid that spans the MSI pixel centres: pixel ``i`` of the working grid is at
    world ``i * working_pixel_um`` (the MSI's pixel ``k`` is at ``k * msi_pixel_um``), so layers with
    these scales overlay exactly in napari."""
    return tuple(
        int(round((n - 1) * p / working_pixel_um)) + 1
        for n, p in zip(shape_yx, msi_pixel_um, strict=True)
    )


def resample_to_working(
    img: np.ndarray, msi_pixel_um, working_pixel_um, order: int = 1
) -> np.ndarray:
    """Resample ``(C, Y, X)`` from the MSI grid to the working grid (same world origin)."""
    from scipy import ndimage as ndi

    ny, nx = output_grid(img.shape[-2:], msi_pixel_um, working_pixel_um)
    fy = working_pixel_um / msi_pixel_um[0]
    fx = working_pixel_um / msi_pixel_um[1]
    if abs(fy - 1) < 1e-9 and abs(fx - 1) < 1e-9:
        return img.astype(np.float32, copy=False)
    out = np.empty((img.shape[0], ny, nx), dtype=np.float32)
    for c in range(img.shape[0]):
        out[c] = ndi.affine_transform(
            img[c].astype(np.float32), (fy, fx), output_shape=(ny, nx), order=order, mode="nearest"
        )
    return out


def prepare_input(ions: IonImages, contract: ChannelContract) -> np.ndarray:
    """Model input ``(C, Y, X)`` float32 on the working grid: channels picked and ordered by the
    contract, scaled, resampled; unmeasured pixels get the padding value."""
    idx = match_channels(contract, ions.mz, ions.source)
    if ions.norm != contract.spectrum_norm or ions.tolerance != contract.tolerance:
        raise ContractMismatchError(
            f"{ions.source or 'MSI'}: ion images were extracted with {ions.tolerance} and normalisation "
            f"'{ions.norm}', the model expects {contract.tolerance} and '{contract.spectrum_norm}'. "
            "Re-extract them from the imzML."
        )
    x = normalise_channels(ions.stack[idx], contract)
    x = np.where(ions.mask[None], x, np.float32(contract.pad_value))
    from ..pixel_size import resolve_pixel_size

    px = resolve_pixel_size(ions.pixel_size_um, None, "moving", ions.source or "MSI")
    from .._limits import check_allocation

    ny, nx = output_grid(x.shape[-2:], px, contract.working_pixel_um)
    check_allocation(
        2.0 * x.shape[0] * ny * nx * 4,
        f"the model input: {x.shape[0]} channels on a {ny} x {nx} working grid "
        f"({px[0]:g} um MSI pixels at {contract.working_pixel_um:g} um)",
        ions.source or None,
    )
    return resample_to_working(x, px, contract.working_pixel_um)
