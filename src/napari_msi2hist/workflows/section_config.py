"""The configuration of one cohort section (:class:`SectionConfig`) and its error.

:func:`~napari_msi2hist.workflows.section.iter_section` runs a section; the cohort reader
(:mod:`~napari_msi2hist.workflows.cohort`) builds these configs from a cohort file, and the batch
(:mod:`~napari_msi2hist.workflows.batch`) hands them to workers. Both names are re-exported by
:mod:`napari_msi2hist.workflows.section`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..msi.ion_images import DEFAULT_TOLERANCE


@dataclass(frozen=True)
class SectionConfig:
    """Everything one section needs; paths are absolute (workers read them from a shared filesystem).

    ``he_pixel_um`` / ``msi_pixel_um`` override the files' own pixel sizes; a file without one and
    no override is refused (no silent default for a physical quantity).
    """

    name: str
    imzml: str
    he: str
    out_dir: str  # the final section folder
    model: str = "demo"
    route: str = "synthesis"  # synthesis | direct
    n_peaks: int = 50
    mz: tuple[float, ...] | None = None  # explicit m/z list instead of top-N
    tolerance_ppm: float = DEFAULT_TOLERANCE.value  # ppm
    norm: str = "tic"
    he_pixel_um: tuple[float, float] | None = None
    msi_pixel_um: tuple[float, float] | None = None
    landmarks_he: str | None = None
    landmarks_msi: str | None = None
    landmarks_use: str = "eval"
    he_mask: str | None = None  # optional H&E tissue mask (non-zero = tissue) for a mask Dice
    stages: tuple[str, ...] = ("rigid", "affine")
    rotation_search: int = 12
    # intensity registration grid (um); None: the coarser of the two pixels. A coarser grid bounds
    # the registration time of very large MSI (1000 x 1000 px and up)
    registration_pixel_um: float | None = None
    device: str = "cpu"
    tile: int = 512
    overlap: int = 64
    zarr: bool = False  # also write registered_msi.ome.zarr
    apply_pixel_um: float | None = None  # registered_msi grid pixel; None: the H&E's own (level 0)
    extra: dict = field(default_factory=dict)

    def inputs(self) -> dict[str, str]:
        """Return the files this section reads, by role (the model included).

        Returns
        -------
        dict
            Role (``imzml``, ``ibd``, ``he``, landmarks, mask, ``model``) to path.
        """
        from ..models.checkpoint import resolve_model_path

        d = {"imzml": self.imzml, "ibd": str(Path(self.imzml).with_suffix(".ibd")), "he": self.he}
        for k in ("landmarks_he", "landmarks_msi", "he_mask"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.route == "synthesis":
            d["model"] = str(resolve_model_path(self.model))
        return d

    def as_dict(self) -> dict:
        """Return the section as JSON-able values (written in its completion record).

        Returns
        -------
        dict
            Field name to value, tuples as lists.
        """
        return json.loads(json.dumps(asdict(self)))


class SectionError(ValueError):
    """A section that cannot run; the message names the file and the problem."""


__all__ = ["SectionConfig", "SectionError"]
