"""The peaks job: pick peaks and extract their ion images.

Pick peaks (top-N of the mean spectrum, or an explicit list) and extract their ion images. Shared by
``msi2hist peaks``, the cross-modal commands and the Peaks widget's path.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from ..msi.ion_images import IonImages, Tolerance, iter_ion_images
from ..msi.peaks import pick_peaks
from ..msi.spectra import MeanSpectrum, iter_mean_spectrum
from ..progress import CancelToken, Progress


def iter_pick(
    imz, n_peaks: int | None, norm: str, mz_list=None, cancel: CancelToken | None = None
) -> Generator[Progress, None, tuple[MeanSpectrum, np.ndarray]]:
    """Compute the mean spectrum and pick its peaks: the top N, or ``mz_list``.

    The top-N selection is seed 000's.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    n_peaks : int or None
        How many peaks to pick (ignored when ``mz_list`` is given).
    norm : str
        Per-spectrum normalisation before averaging.
    mz_list : sequence of float, optional
        Explicit m/z values.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Chunks of spectra read for the mean spectrum.

    Returns
    -------
    mean_spectrum : MeanSpectrum
    mz : ndarray
        The picked m/z.
    """
    ms = yield from iter_mean_spectrum(imz, norm=norm, cancel=cancel)
    if mz_list is not None:
        return ms, np.asarray(mz_list, float)
    return ms, pick_peaks(ms.mz, ms.intensity, n_peaks=n_peaks).mz


def iter_peaks(
    imz,
    n_peaks: int | None,
    mz_list: Sequence[float] | None,
    tolerance: Tolerance,
    norm: str,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, IonImages]:
    """Peaks and their ion images, as one job.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file (its pixel size already resolved by the caller).
    n_peaks : int or None
        Top-N peaks of the mean spectrum; ignored when ``mz_list`` is given.
    mz_list : sequence of float or None
        Explicit m/z values.
    tolerance : Tolerance
        Half-width of each m/z window.
    norm : str
        Per-spectrum normalisation (``none``, ``tic``, ``rms``, ``median``).
    cancel : CancelToken, optional
        Stops the job between chunks.

    Yields
    ------
    Progress
        Chunks of spectra read: the mean spectrum (when picking), then the ion images.

    Returns
    -------
    IonImages
        The ion-image stack with its m/z, tolerance and normalisation.
    """
    if mz_list is None:
        _, mz_list = yield from iter_pick(imz, n_peaks, norm, cancel=cancel)
    return (yield from iter_ion_images(imz, mz_list, tolerance=tolerance, norm=norm, cancel=cancel))


def pick_and_extract(imz, n_peaks, mz_list, tol, norm, progress=None) -> IonImages:
    """Run :func:`iter_peaks` to the end, reporting to ``progress``.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    n_peaks : int or None
        Top-N peaks; ignored when ``mz_list`` is given.
    mz_list : sequence of float or None
        Explicit m/z values.
    tol : Tolerance
        Half-width of each m/z window.
    norm : str
        Per-spectrum normalisation.
    progress : callable, optional
        Called with each :class:`Progress`.

    Returns
    -------
    IonImages
        The ion-image stack.
    """
    from ..progress import run_to_end

    return run_to_end(iter_peaks(imz, n_peaks, mz_list, tol, norm), progress)
