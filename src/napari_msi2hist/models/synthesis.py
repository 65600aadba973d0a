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
    rgb: np.ndarray  # (Y, X, 3) uint8
    pixel_size_um: tuple[float, float]
    checkpoint: str
    source: str
    domain: DomainReport | None = None  # the input-domain check made before synthesis

    def metadata(self) -> dict:
        return {
            "kind": "synthetic_he",
            "checkpoint": self.checkpoint,
            "source": self.source,
            "pixel_size_um": list(self.pixel_size_um),
            "domain_warnings": list(self.domain.warnings) if self.domain else [],
        }


def extract_for_contract(imz: ImzMLFile, ckpt: Checkpoint, cancel: CancelToken | None = None):
    """Ion images exactly as the checkpoint's contract wants them (m/z, tolerance, normalisation)."""
    c = ckpt.contract
    ions = yield from iter_ion_images(
        imz, np.asarray(c.mz), tolerance=c.tolerance, norm=c.spectrum_norm, cancel=cancel
    )
    ions.meta.setdefault("mz_range", tuple(float(v) for v in imz.mz_range))
    return ions


def domain_of(ions: IonImages, ckpt: Checkpoint, strict: bool = False) -> DomainReport:
    """The input-domain check of ``ions`` against ``ckpt`` (see :mod:`.domain`); raises
    :class:`InputDomainError` with every warning when ``strict`` and the data look out of domain."""
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
    """Synthesise H&E from ion images; the input-domain check runs first (its report is in the
    result; under ``strict`` an out-of-domain input raises :class:`InputDomainError`)."""
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
    """Synthesize from an imzML; ``pixel_size_um`` overrides (or supplies) the file's pixel size."""
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    with ImzMLFile(path) as imz:
        if pixel_size_um is not None:
            imz.pixel_size_um = tuple(pixel_size_um)
        ions = yield from extract_for_contract(imz, ckpt, cancel)
    return (yield from iter_synthesize(ions, ckpt, opts, cancel, strict))


def synthesize_imzml(path, model, opts: InferenceOptions = InferenceOptions()) -> SynthResult:
    return run_to_end(iter_synthesize_imzml(path, model, opts))
