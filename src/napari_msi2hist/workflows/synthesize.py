"""The synthesise job: MSI (an imzML, or ion images already extracted) -> synthetic H&E.

Shared by ``msi2hist synthesize`` and the Synthesise widget. The model's channel contract decides
which ion images are needed; ion images that do not satisfy it are re-extracted from the imzML.
"""

from __future__ import annotations

import os
from collections.abc import Generator

from ..models.checkpoint import Checkpoint, load_checkpoint
from ..models.contract import ContractMismatchError
from ..models.inference import InferenceOptions
from ..models.synthesis import SynthResult, extract_for_contract, iter_synthesize
from ..msi.ion_images import IonImages
from ..progress import CancelToken, Progress


def iter_synthesize_job(
    model: str | os.PathLike | Checkpoint,
    *,
    imzml: str | os.PathLike | None = None,
    ions: IonImages | None = None,
    opts: InferenceOptions = InferenceOptions(),
    strict: bool = False,
    pixel_size_um: tuple[float, float] | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, SynthResult]:
    """Synthesise H&E from ion images, or from an imzML through the model's channel contract.

    Parameters
    ----------
    model : str, path or Checkpoint
        A checkpoint file, ``demo`` for the bundled model, or a loaded checkpoint.
    imzml : path, optional
        The imzML; needed when ``ions`` is None or does not satisfy the model's contract.
    ions : IonImages, optional
        Ion images already extracted (e.g. a layer in the viewer).
    opts : InferenceOptions
        Tiling, device, precision.
    strict : bool
        Refuse MSI outside the model's input domain instead of warning.
    pixel_size_um : tuple of float, optional
        Overrides (or supplies) the imzML's pixel size.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Chunks of spectra read (when extracting from the imzML), then tiles synthesised.

    Returns
    -------
    SynthResult
        The synthetic H&E with its pixel size and input-domain warnings.
    """
    from ..io.imzml import open_imzml

    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    if ions is not None:
        try:
            return (yield from iter_synthesize(ions, ckpt, opts, cancel, strict))
        except ContractMismatchError:
            if imzml is None:
                raise
    if imzml is None:
        raise ValueError("no imzML to extract the model's m/z channels from")
    with open_imzml(imzml) as imz:
        if pixel_size_um is not None:
            imz.pixel_size_um = tuple(pixel_size_um)
        ions = yield from extract_for_contract(imz, ckpt, cancel)
    return (yield from iter_synthesize(ions, ckpt, opts, cancel, strict))
