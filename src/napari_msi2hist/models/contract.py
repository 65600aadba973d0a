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
    """What a model expects of its MSI input: m/z channels, extraction, scaling, grid and padding.

    Stored in every checkpoint; an input that does not satisfy it is refused
    (:func:`prepare_input`).
    """

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
        """The m/z window of the extraction, as a :class:`~napari_msi2hist.config.Tolerance`."""
        return Tolerance(self.tolerance_value, self.tolerance_unit)

    @property
    def n_channels(self) -> int:
        """The number of m/z channels."""
        return len(self.mz)

    @property
    def pad_value(self) -> float:
        """The input value beyond the measured tissue (-1 black, +1 white)."""
        return PAD_VALUES[self.padding]

    def as_dict(self) -> dict:
        """Return the contract as JSON-able values (stored in checkpoints).

        Returns
        -------
        dict
            Field name to value, tuples as lists of float.
        """
        d = asdict(self)
        for k in ("mz", "scale", "lo", "hi"):
            d[k] = [float(v) for v in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ChannelContract:
        """Rebuild a contract from :meth:`as_dict`'s values.

        Parameters
        ----------
        d : dict
            The stored contract.

        Returns
        -------
        ChannelContract
            The contract.
        """
        d = dict(d)
        for k in ("mz", "scale", "lo", "hi"):
            d[k] = tuple(float(v) for v in d.get(k, ()))
        return cls(**d)

    def with_stats(self, stacks: list[np.ndarray], masks: list[np.ndarray]) -> ChannelContract:
        """Measure the per-channel scaling on training stacks (measured pixels only).

        ``scale`` is each channel's median positive intensity; ``lo``/``hi`` are the 1st and 99th
        percentiles of ``log1p(x / scale)``.

        Parameters
        ----------
        stacks : list of ndarray
            ``(C, Y, X)`` ion images, one per training sample.
        masks : list of ndarray
            ``(Y, X)`` measured pixels of each.

        Returns
        -------
        ChannelContract
            A copy with ``scale``, ``lo`` and ``hi`` set.
        """
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
    """Find every contract m/z among the available ones.

    Parameters
    ----------
    contract : ChannelContract
        Its m/z and tolerance.
    available_mz : array_like
        The m/z of the ion images at hand.
    source : str
        Named in the error.

    Returns
    -------
    ndarray of int
        Index into ``available_mz`` of the nearest m/z within tolerance, per contract m/z.

    Raises
    ------
    ChannelMismatchError
        Some contract m/z have none within tolerance (all of them are listed).
    """
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
    """Apply the contract's per-channel scaling to a stack.

    ``2 (log1p(max(x, 0) / scale) - lo) / (hi - lo) - 1``: the training data's 1st..99th percentiles
    map to [-1, 1].

    Parameters
    ----------
    stack : ndarray
        ``(C, Y, X)`` in the contract's channel order, any numeric dtype.
    contract : ChannelContract
        With statistics (:meth:`ChannelContract.with_stats`).

    Returns
    -------
    ndarray
        ``(C, Y, X)`` float32 model input.

    Raises
    ------
    ValueError
        The contract has no statistics yet.
    """
    if not contract.scale:
        raise ValueError("the contract has no channel statistics yet (with_stats)")
    x = np.asarray(stack).astype(np.float64)
    sc = np.asarray(contract.scale)[:, None, None]
    lo = np.asarray(contract.lo)[:, None, None]
    hi = np.asarray(contract.hi)[:, None, None]
    v = np.log1p(np.maximum(x, 0) / sc)
    return (2.0 * (v - lo) / (hi - lo) - 1.0).astype(np.float32)


def output_grid(shape_yx, msi_pixel_um, working_pixel_um) -> tuple[int, int]:
    """Compute the working grid that spans the MSI pixel centres.

    Pixel ``i`` of the working grid is at world ``i * working_pixel_um`` (the MSI's pixel ``k`` is
    at ``k * msi_pixel_um``), so layers with these scales overlay exactly in napari.

    Parameters
    ----------
    shape_yx : tuple of int
        The MSI grid's size.
    msi_pixel_um : tuple of float
        Its pixel size (yx um).
    working_pixel_um : float
        The working pixel.

    Returns
    -------
    tuple of int
        The working grid's size.
    """
    return tuple(
        int(round((n - 1) * p / working_pixel_um)) + 1
        for n, p in zip(shape_yx, msi_pixel_um, strict=True)
    )


def resample_to_working(
    img: np.ndarray, msi_pixel_um, working_pixel_um, order: int = 1
) -> np.ndarray:
    """Resample a stack from the MSI grid to the working grid (same world origin).

    Parameters
    ----------
    img : ndarray
        ``(C, Y, X)`` on the MSI grid.
    msi_pixel_um : tuple of float
        The MSI pixel size (yx um).
    working_pixel_um : float
        The working pixel.
    order : int
        Spline order (0 for masks).

    Returns
    -------
    ndarray
        ``(C, y, x)`` float32 on :func:`output_grid`; ``img`` itself when the pixels are equal.
    """
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
    """Build a model's input from ion images.

    Channels picked and ordered by the contract, scaled, resampled to the working grid; unmeasured
    pixels get the padding value.

    Parameters
    ----------
    ions : IonImages
        Ion images with a pixel size.
    contract : ChannelContract
        The model's contract.

    Returns
    -------
    ndarray
        ``(C, Y, X)`` float32 on the working grid.

    Raises
    ------
    ChannelMismatchError
        Contract m/z missing from the ion images.
    ContractMismatchError
        Ion images extracted with another tolerance or normalisation.
    MissingPixelSize
        The ion images have no pixel size.
    """
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
