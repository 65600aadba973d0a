"""Carry moving data onto the fixed grid lazily.

Ion images straight from an imzML, and one
region of a large grid at a time (whole-slide outputs written tile by tile).
"""

from __future__ import annotations

import numpy as np

from .transforms import Transform


def lazy_resample_imzml(
    imz,
    transform: Transform,
    fixed_shape_yx,
    fixed_px,
    mz=None,
    tolerance=None,
    channels_per_chunk: int = 16,
):
    """Resample an imzML's ion images onto the fixed (H&E) grid as a lazy dask array.

    Each chunk of channels is extracted and resampled only when dask computes it.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML with a pixel size; it must stay open while the array is computed.
    transform : Transform
        Fixed world -> moving (MSI) world.
    fixed_shape_yx : tuple of int
        The H&E grid's size.
    fixed_px : tuple of float
        The H&E grid's pixel size (yx um).
    mz : array_like, optional
        The m/z to extract; default every value of a continuous file's axis (the full data cube).
    tolerance : Tolerance, optional
        Window half-width; default 0 Da (one axis bin each for continuous files).
    channels_per_chunk : int
        Channels per dask chunk.

    Returns
    -------
    dask.array.Array
        ``(C, Y, X)`` float32 on the H&E grid.

    Raises
    ------
    ValueError
        The imzML has no pixel size (it is never assumed).
    """
    import dask
    import dask.array as da

    from ..msi.ion_images import Tolerance, ion_images

    if mz is None:
        mz = imz.mz_axis().astype(np.float64)
    mz = np.asarray(mz, dtype=np.float64)
    tol = tolerance or Tolerance(0.0, "da")
    if imz.pixel_size_um is None:
        raise ValueError(f"{imz.path}: no pixel size in the imzML; set imz.pixel_size_um first")
    msi_px = imz.pixel_size_um
    ny, nx = fixed_shape_yx

    def block(sel):
        st = ion_images(imz, sel, tolerance=tol).stack
        return np.stack(
            [transform.resample_moving_to_fixed(c, msi_px, (ny, nx), fixed_px) for c in st]
        ).astype(np.float32)

    parts = [
        da.from_delayed(
            dask.delayed(block)(mz[i : i + channels_per_chunk]),
            shape=(len(mz[i : i + channels_per_chunk]), ny, nx),
            dtype=np.float32,
        )
        for i in range(0, len(mz), channels_per_chunk)
    ]
    return da.concatenate(parts, axis=0)


class RegionResampler:
    """Resample a moving image onto any rectangle of any fixed-frame grid, one region at a time.

    For whole slides: the moving image (MSI-derived, small) is converted to SimpleITK once; each call
    fills one tile of the fixed grid (pixel ``(i, j)`` of a grid with pixel ``fixed_px`` lies at world
    ``(i, j) * fixed_px`` um), so memory is one tile whatever the size of the fixed grid.

    Parameters
    ----------
    transform : Transform
        Fixed world -> moving world (ITK convention), linear or deformable.
    moving : ndarray
        ``(Y, X)`` scalar, or ``(Y, X, S)`` interleaved samples (RGB) resampled together.
    moving_px : tuple of float
        Moving pixel size, yx um.
    """

    def __init__(self, transform: Transform, moving: np.ndarray, moving_px, order: int = 1):
        import SimpleITK as sitk

        a = np.asarray(moving)
        self.vector = a.ndim == 3
        planes = [a[..., i] for i in range(a.shape[-1])] if self.vector else [a]
        # one scalar image per sample: SimpleITK resamples scalar images ~5x faster than vectors
        self.images = []
        for p in planes:
            img = sitk.GetImageFromArray(np.ascontiguousarray(p, dtype=np.float32))
            img.SetSpacing((float(moving_px[1]), float(moving_px[0])))
            img.SetOrigin((0.0, 0.0))
            self.images.append(img)
        self.transform = transform
        self.interp = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor

    def region(self, y0: int, x0: int, shape_yx, fixed_px, default: float = 0.0) -> np.ndarray:
        """Resample the moving image onto one rectangle of a fixed-frame grid.

        Parameters
        ----------
        y0, x0 : int
            The rectangle's first pixel (row, column) on the fixed grid.
        shape_yx : tuple of int
            Its size ``(h, w)``.
        fixed_px : tuple of float
            The fixed grid's pixel size (yx um); pixel ``(i, j)`` lies at world ``(i, j) * fixed_px``.
        default : float
            Value where the moving image does not reach.

        Returns
        -------
        ndarray
            ``(h, w)`` float32, or ``(h, w, S)`` for interleaved samples.
        """
        import SimpleITK as sitk

        h, w = int(shape_yx[0]), int(shape_yx[1])
        out = [
            sitk.GetArrayFromImage(
                sitk.Resample(
                    img,
                    [w, h],
                    self.transform.itk,
                    self.interp,
                    (x0 * float(fixed_px[1]), y0 * float(fixed_px[0])),
                    (float(fixed_px[1]), float(fixed_px[0])),
                    (1.0, 0.0, 0.0, 1.0),
                    float(default),
                    sitk.sitkFloat32,
                )
            )
            for img in self.images
        ]
        return np.stack(out, axis=-1) if self.vector else out[0]
