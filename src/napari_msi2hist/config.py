"""Typed configurations with one default each, shared by the CLI, the widgets and the workflows.

Each job's options are a frozen dataclass here: the CLI's argparse groups take their defaults from
these fields, the widgets start from the same values, and every run writes its configuration next
to its outputs. This module sits at the bottom of the layers (no import of the package's other
modules at import time), so every layer can use it.

* :class:`Tolerance` and :data:`DEFAULT_TOLERANCE`: the m/z window of ion images.
* :class:`ExtractionConfig`: which ion images (top-N peaks or an m/z list), tolerance, normalisation.
* :class:`PairEntry`: one entry of a pairs YAML file (an MSI, its H&E, their alignment).
* :class:`TrainConfig`: training and fine-tuning.
* :class:`RegisterConfig`: registration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

DEFAULT_N_PEAKS = 50  # seed 000: the top-50 peaks of the mean spectrum
NORMALISATIONS = ("none", "tic", "rms", "median")
DEFAULT_NORM = "tic"  # the bundled model's, and the usual choice for MALDI


@dataclass(frozen=True)
class Tolerance:
    """m/z tolerance: ``value`` in ``unit`` ("ppm" or "da")."""

    value: float
    unit: str = "ppm"

    def __post_init__(self):
        if self.unit not in ("ppm", "da"):
            raise ValueError(f"tolerance unit must be 'ppm' or 'da', not {self.unit!r}")
        if not self.value >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.value}")

    def half_width(self, mz: np.ndarray) -> np.ndarray:
        """Half-width of the window around each m/z (in m/z units)."""
        mz = np.asarray(mz, dtype=np.float64)
        return mz * self.value * 1e-6 if self.unit == "ppm" else np.full_like(mz, self.value)

    def windows(self, mz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper window edges around each m/z."""
        mz = np.asarray(mz, dtype=np.float64)
        h = self.half_width(mz)
        return mz - h, mz + h

    def as_dict(self) -> dict:
        """The tolerance as ``{"value", "unit"}``."""
        return {"value": float(self.value), "unit": self.unit}

    def __str__(self) -> str:
        return f"{self.value:g} {'ppm' if self.unit == 'ppm' else 'Da'}"

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """The inverse of ``str()``: ``"10 ppm"`` or ``"0.01 Da"``."""
        try:
            value, unit = str(text).split()
            return cls(float(value), unit.lower())
        except ValueError as e:
            raise ValueError(f"m/z tolerance {text!r}: expected e.g. '10 ppm' or '0.01 Da'") from e

    @classmethod
    def coerce(cls, t) -> Tolerance:
        """A Tolerance from a Tolerance, a ``(value, unit)`` pair, a dict or ``"10 ppm"``."""
        if isinstance(t, Tolerance):
            return t
        if isinstance(t, dict):
            return cls.from_dict(t)
        if isinstance(t, str):
            return cls.parse(t)
        value, unit = t
        return cls(float(value), str(unit).lower())

    @classmethod
    def from_dict(cls, d: dict | None) -> Tolerance:
        """The inverse of :meth:`as_dict`; None gives the default tolerance."""
        return DEFAULT_TOLERANCE if d is None else cls(float(d["value"]), str(d["unit"]).lower())


DEFAULT_TOLERANCE = Tolerance(10.0, "ppm")  # the one default window half-width (ppm)


@dataclass(frozen=True)
class ExtractionConfig:
    """Which ion images to extract, and how.

    Parameters
    ----------
    n_peaks : int
        Top-N peaks of the mean spectrum (ignored when ``mz`` is given).
    mz : tuple of float, optional
        Explicit m/z list.
    tolerance : Tolerance
        Half-width of each m/z window.
    norm : str
        Per-spectrum normalisation (``none``, ``tic``, ``rms``, ``median``).
    """

    n_peaks: int = DEFAULT_N_PEAKS
    mz: tuple[float, ...] | None = None
    tolerance: Tolerance = DEFAULT_TOLERANCE
    norm: str = DEFAULT_NORM

    def __post_init__(self):
        if self.norm not in NORMALISATIONS:
            raise ValueError(
                f"normalisation {self.norm!r}: choose from {', '.join(NORMALISATIONS)}"
            )
        if self.mz is None and not self.n_peaks >= 1:
            raise ValueError(f"n_peaks {self.n_peaks}: give at least 1")

    def as_dict(self) -> dict:
        """A JSON-able form (written next to a run's outputs)."""
        return {
            "n_peaks": self.n_peaks,
            "mz": None if self.mz is None else [float(m) for m in self.mz],
            "tolerance": str(self.tolerance),
            "normalisation": self.norm,
        }


@dataclass
class PairEntry:
    """One entry of a pairs YAML file: an MSI, the H&E of the same section, their alignment.

    Paths are absolute (resolved against the pairs file's folder). ``align`` is ``"aligned"``
    (the files are co-registered), or a mapping naming a transform file or two landmark files.
    Pixel sizes (um) fill in for files that carry none, or override them. Entries also read like
    the mappings they replace (``entry["imzml"]``), so older code keeps working.
    """

    name: str
    imzml: str
    he: str
    align: str | dict | None = "aligned"
    split: str = "train"
    base: str = ""
    label: str | None = None
    fixed_pixel_um: float | None = None
    moving_pixel_um: float | None = None

    def __post_init__(self):
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"{self.name}: split {self.split!r}; use train, val or test")

    # mapping access, for the code that treats entries as dicts
    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        if key not in {f.name for f in fields(self)}:
            raise KeyError(f"a pairs entry has no field {key!r}")
        setattr(self, key, value)

    def __contains__(self, key) -> bool:
        names = {f.name for f in fields(self)}
        return key in names and not (key == "label" and self.label is None)

    def get(self, key: str, default=None):
        """The field ``key``, or ``default`` when it is not set."""
        return self[key] if key in self else default

    def keys(self):
        """Names of the fields that are set (``label`` only when given)."""
        return [f.name for f in fields(self) if f.name in self]

    def items(self):
        """``(name, value)`` of the fields that are set."""
        return [(k, getattr(self, k)) for k in self.keys()]

    def __iter__(self):
        return iter(self.keys())

    def as_dict(self) -> dict:
        """The entry as a plain mapping (``label`` only when given)."""
        d = asdict(self)
        if d["label"] is None:
            del d["label"]
        return d


@dataclass(frozen=True)
class TrainConfig:
    """Training and fine-tuning: model, losses, optimiser, steps, architecture (seed 000 defaults: L1 weight 200, lr 2e-5)."""

    model: str = "pix2pix"  # or "unet" (baseline, MSE)
    gan_mode: str = "vanilla"  # vanilla | lsgan | wgangp
    lambda_l1: float = 200.0
    lr: float = 2e-5
    beta1: float = 0.5
    max_steps: int = 1000
    decay_start: int | None = None
    batch_size: int = 4
    patch: int = 128  # 0: whole images
    # one default architecture for CLI and widget: the bundled demo model's (ngf 16, depth 6, ndf 32),
    # so a model from scratch has the shape of the re-headed/fine-tuned demo and trains on a CPU at
    # ~0.45 s/step; wider models (--ngf 64 --depth 7) are for GPUs and many pairs (docs/own_data.md)
    ngf: int = 16
    depth: int = 6
    norm: str = "batch"
    dropout: float = 0.5
    ndf: int = 32
    d_layers: int = 3
    gp_weight: float = 10.0
    baseline_base: int = 32
    baseline_patch: int = 32
    checkpoint_every: int = 100
    val_every: int = 100
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self):
        if self.model not in ("pix2pix", "unet"):
            raise ValueError(f"model must be pix2pix or unet, not {self.model!r}")
        if self.gan_mode not in ("vanilla", "lsgan", "wgangp"):
            raise ValueError(f"gan_mode must be vanilla, lsgan or wgangp, not {self.gan_mode!r}")

    def to_yaml(self) -> str:
        """The config as YAML (written as ``config.yaml`` next to a run)."""
        import yaml

        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a mapping, ignoring unknown keys (older checkpoints)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


ROUTES = ("synthesis", "direct")
STAGES = ("rigid", "affine", "bspline")


@dataclass(frozen=True)
class RegisterConfig:
    """How to register: one default for each choice, shared by the CLI options and the widget.

    Parameters
    ----------
    route : {"synthesis", "direct"}
        Register the synthetic H&E (unimodal) or an MSI summary image (multimodal).
    model : str
        Checkpoint of the synthesis route (``demo``: the bundled model).
    stages : tuple of str
        Registration stages, from ``rigid``, ``affine``, ``bspline``.
    rotation_search : int
        Start angles of the global pose search (0: moments start only).
    landmarks_use : {"eval", "fit", "hybrid"}
        What landmarks do: only evaluate, fit the transform, or start the intensity registration.
    summary : {"tic", "pca"}
        Direct route: the MSI image registered.
    scale_range, scale_steps : float, int
        Scales searched in ``[1/R, R]`` around the pixel-size ratio.
    seed : int
        Seed of the metric sampling (same seed, same transform).
    device : str
        Torch device of the synthesis route.
    """

    route: str = "synthesis"
    model: str = "demo"
    stages: tuple[str, ...] = ("rigid", "affine")
    rotation_search: int = 12
    landmarks_use: str = "eval"
    summary: str = "tic"
    scale_range: float = 1.25
    scale_steps: int = 5
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.route not in ROUTES:
            raise ValueError(f"route {self.route!r}: choose from {', '.join(ROUTES)}")
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages {','.join(self.stages)!r}: choose from {', '.join(STAGES)}")
