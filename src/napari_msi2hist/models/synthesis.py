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
from .inference import InferenceOptions, iter_infer, pick_device, to_rgb_uint8


@dataclass
class SynthResult:
    rgb: np.ndarray  # (Y, X, 3) uint8
    pixel_size_um: tuple[float, float]
    checkpoint: str
    source: str

    def metadata(self) -> dict:
        return {
            "kind": "synthetic_he",
            "checkpoint": self.checkpoint,
            "source": self.source,
            "pixel_size_um": list(self.pixel_size_um),
        }


def extract_for_contract(imz: ImzMLFile, ckpt: Checkpoint, cancel: CancelToken | None = None):
    """Ion images exactly as the checkpoint's contract wants them (m/z, tolerance, normalisation)."""
    c = ckpt.contract
    return (
        yield from iter_ion_images(
            imz, np.asarray(c.mz), tolerance=c.tolerance, norm=c.spectrum_norm, cancel=cancel
        )
    )


def iter_synthesize(
    ions: IonImages,
    ckpt: Checkpoint,
    opts: InferenceOptions = InferenceOptions(),
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, SynthResult]:
    x = prepare_input(ions, ckpt.contract)
    model = ckpt.build(pick_device(opts.device))
    out = yield from iter_infer(model, x, opts, pad_value=ckpt.contract.pad_value, cancel=cancel)
    wpx = float(ckpt.contract.working_pixel_um)
    return SynthResult(to_rgb_uint8(out), (wpx, wpx), ckpt.path, ions.source)


def iter_synthesize_imzml(
    path: str | os.PathLike,
    model: str | os.PathLike | Checkpoint,
    opts: InferenceOptions = InferenceOptions(),
    cancel: CancelToken | None = None,
    pixel_size_um: tuple[float, float] | None = None,
) -> Generator[Progress, None, SynthResult]:
    """Synthesize from an imzML; ``pixel_size_um`` overrides (or supplies) the file's pixel size."""
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    with ImzMLFile(path) as imz:
        if pixel_size_um is not None:
            imz.pixel_size_um = tuple(pixel_size_um)
        ions = yield from extract_for_contract(imz, ckpt, cancel)
    return (yield from iter_synthesize(ions, ckpt, opts, cancel))


def synthesize_imzml(path, model, opts: InferenceOptions = InferenceOptions()) -> SynthResult:
    return run_to_end(iter_synthesize_imzml(path, model, opts))
