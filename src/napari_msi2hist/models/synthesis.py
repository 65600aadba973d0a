"""MSI -> synthetic H&E: the checkpoint's channel contract, input preparation and tiled inference.

The output lies on the model's working grid in the MSI's own frame: pixel ``i`` is at world
``i * working_pixel_um`` micrometres, exactly like the MSI's pixel ``k`` at ``k * msi_pixel_um``, so the
synthetic H&E layer overlays the MSI layers in napari with no further transform.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ..io.imzml import ImzMLFile
from ..msi.ion_images import IonImages, iter_ion_images
from ..progress import CancelToken, Progress, run_to_end
from .checkpoint import Checkpoint, load_checkpoint
from .contract import prepare_input
from .domain import DomainReport, InputDomainError, check_input_domain
from .inference import InferenceOptions, iter_infer, pick_device, to_rgb_uint8


@dataclass
class SynthResult:
    """A synthetic H&E with its pixel size, the checkpoint and source it came from, and the input-domain check."""

    rgb: np.ndarray  # (Y, X, 3) uint8
    pixel_size_um: tuple[float, float]
    checkpoint: str
    source: str
    domain: DomainReport | None = None  # the input-domain check made before synthesis

    def metadata(self) -> dict:
        """Return the result as layer metadata.

        Returns
        -------
        dict
            ``kind`` (``synthetic_he``), checkpoint, source, pixel size and the input-domain warnings.
        """
        return {
            "kind": "synthetic_he",
            "checkpoint": self.checkpoint,
            "source": self.source,
            "pixel_size_um": list(self.pixel_size_um),
            "domain_warnings": list(self.domain.warnings) if self.domain else [],
        }


def extract_for_contract(imz: ImzMLFile, ckpt: Checkpoint, cancel: CancelToken | None = None):
    """Extract ion images exactly as a checkpoint's contract wants them.

    Parameters
    ----------
    imz : ImzMLFile
        An open imzML file.
    ckpt : Checkpoint
        Its contract gives the m/z, tolerance and normalisation.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.

    Yields
    ------
    Progress
        Spectra done so far (stage ``ion images``).

    Returns
    -------
    IonImages
        The ion images, with the file's m/z range in ``meta``.
    """
    c = ckpt.contract
    ions = yield from iter_ion_images(
        imz, np.asarray(c.mz), tolerance=c.tolerance, norm=c.spectrum_norm, cancel=cancel
    )
    ions.meta.setdefault("mz_range", tuple(float(v) for v in imz.mz_range))
    return ions


def domain_of(ions: IonImages, ckpt: Checkpoint, strict: bool = False) -> DomainReport:
    """Check whether ion images are inside a model's input domain (:mod:`.domain`).

    Parameters
    ----------
    ions : IonImages
        The input.
    ckpt : Checkpoint
        The model (its contract's training statistics).
    strict : bool
        Raise instead of reporting.

    Returns
    -------
    DomainReport
        The check, with its warnings.

    Raises
    ------
    InputDomainError
        With ``strict``, when the data look out of domain (every warning in the message).
    """
    rep = check_input_domain(
        ions.stack, ions.mask, ions.mz, ckpt.contract, ions.meta.get("mz_range"), ions.source
    )
    if strict and not rep.ok:
        raise InputDomainError("; ".join(rep.warnings) + " (refused: strict)")
    return rep


def iter_synthesize(
    ions: IonImages,
    ckpt: Checkpoint,
    opts: InferenceOptions = InferenceOptions(),
    cancel: CancelToken | None = None,
    strict: bool = False,
) -> Generator[Progress, None, SynthResult]:
    """Synthesise H&E from ion images.

    The input-domain check runs first; its report is in the result.

    Parameters
    ----------
    ions : IonImages
        Ion images matching the checkpoint's contract.
    ckpt : Checkpoint
        The model.
    opts : InferenceOptions
        Tiling, device, precision.
    cancel : CancelToken, optional
        Checked between tiles; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.
    strict : bool
        Refuse out-of-domain input (:class:`InputDomainError`).

    Yields
    ------
    Progress
        Tiles synthesised (stage ``synthesis``).

    Returns
    -------
    SynthResult
        The synthetic H&E on the contract's working grid, with its pixel size and the domain report.

    Raises
    ------
    ContractMismatchError
        The ion images do not match the contract.
    """
    x = prepare_input(ions, ckpt.contract)
    domain = domain_of(ions, ckpt, strict)
    model = ckpt.build(pick_device(opts.device))
    out = yield from iter_infer(model, x, opts, pad_value=ckpt.contract.pad_value, cancel=cancel)
    wpx = float(ckpt.contract.working_pixel_um)
    return SynthResult(to_rgb_uint8(out), (wpx, wpx), ckpt.path, ions.source, domain)


def iter_synthesize_imzml(
    path: str | os.PathLike,
    model: str | os.PathLike | Checkpoint,
    opts: InferenceOptions = InferenceOptions(),
    cancel: CancelToken | None = None,
    strict: bool = False,
    pixel_size_um: tuple[float, float] | None = None,
) -> Generator[Progress, None, SynthResult]:
    """Synthesise H&E from an imzML.

    Parameters
    ----------
    path : path-like
        The imzML.
    model : path-like, str or Checkpoint
        A checkpoint file, ``demo`` for the bundled model, or a loaded checkpoint.
    opts : InferenceOptions
        Tiling, device, precision.
    cancel : CancelToken, optional
        Checked between steps; when set, the job stops by raising
        :class:`~napari_msi2hist.progress.Cancelled`.
    strict : bool
        Refuse out-of-domain input.
    pixel_size_um : tuple of float, optional
        Overrides (or supplies) the file's pixel size.

    Yields
    ------
    Progress
        Spectra extracted, then tiles synthesised.

    Returns
    -------
    SynthResult
        The synthetic H&E.
    """
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    with ImzMLFile(path) as imz:
        if pixel_size_um is not None:
            imz.pixel_size_um = tuple(pixel_size_um)
        ions = yield from extract_for_contract(imz, ckpt, cancel)
    return (yield from iter_synthesize(ions, ckpt, opts, cancel, strict))


def synthesize_imzml(path, model, opts: InferenceOptions = InferenceOptions()) -> SynthResult:
    """Synthesise H&E from an imzML: :func:`iter_synthesize_imzml` run to the end.

    Parameters
    ----------
    path : path-like
        The imzML.
    model : path-like, str or Checkpoint
        The model.
    opts : InferenceOptions
        Tiling, device, precision.

    Returns
    -------
    SynthResult
        The synthetic H&E.
    """
    return run_to_end(iter_synthesize_imzml(path, model, opts))
