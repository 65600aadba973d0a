"""The pairs YAML: its entries and their MSI -> H&E alignments.

A pairs file lists MSI / H&E samples for training and evaluation (format in
:mod:`napari_msi2hist.models.datasets`). :func:`read_pairs_yaml` reads and validates it into
:class:`~napari_msi2hist.config.PairEntry` items; :func:`alignment_of_entry` turns an entry's
``align`` into an :class:`~napari_msi2hist.registration.alignment.Alignment` (a phantom's truth, a
registration result, or an affine fitted to landmarks, with the one landmark fitter). Code that
samples through it takes the alignment object (:mod:`napari_msi2hist.registration.grid`).
:mod:`napari_msi2hist.models.datasets` re-exports them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import PairEntry


def alignment_of_entry(align, base: Path):
    """Build the MSI -> H&E alignment of a pairs entry's ``align``.

    Parameters
    ----------
    align : str, dict or None
        ``"aligned"`` or None (identity), or a mapping naming ``truth`` (a phantom's
        ``truth.json``), ``transform`` (a registration result whose moving image is the MSI), or
        ``landmarks_msi`` and ``landmarks_he`` (napari points CSVs, world um; an affine is fitted).
    base : Path
        The folder the alignment's file paths are relative to.

    Returns
    -------
    Alignment
        A :class:`~napari_msi2hist.registration.alignment.LinearAlignment`, a phantom's
        ``PhantomTransform`` or a registration's ``Transform``: each has ``moving_to_fixed`` and
        ``fixed_to_moving``.

    Raises
    ------
    ValueError
        An unknown alignment, or unreadable or unpaired landmarks.
    """
    from ..registration.alignment import LinearAlignment

    if align in (None, "aligned"):
        return LinearAlignment.identity()
    if "truth" in align:
        from ..registration.truth import load_truth

        return load_truth(base / align["truth"])
    if "transform" in align:  # a registration result: its moving frame is the MSI
        from ..registration.transforms import Transform

        return Transform.load(base / align["transform"])
    if "landmarks_msi" in align:
        from ..io.points import read_points_csv
        from ..registration.landmarks import check_landmark_pairs

        f_msi, f_he = base / align["landmarks_msi"], base / align["landmarks_he"]
        p_msi, p_he = read_points_csv(f_msi), read_points_csv(f_he)
        check_landmark_pairs(p_msi, p_he, (str(f_msi), str(f_he)))
        return LinearAlignment.from_landmarks(p_msi, p_he)
    raise ValueError(
        f"unknown alignment {align!r} (use truth, landmarks_msi/landmarks_he, or aligned)"
    )


def _load_yaml_no_aliases(path: Path):
    """Load a small YAML file with ``yaml.safe_load``, refusing anchors and aliases.

    Aliases are refused because a 1 KB file of nested aliases expands to gigabytes) and names the file in every error.
    """
    import yaml

    try:
        if path.stat().st_size > 16 * 2**20:
            raise ValueError(f"{path}: {path.stat().st_size} bytes is too large for a pairs file")
        text = path.read_text(encoding="utf-8")
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
                raise ValueError(f"{path}: YAML anchors and aliases (&, *) are not accepted")
        return yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) YAML file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None


def read_pairs_yaml(path: str | os.PathLike) -> list[PairEntry]:
    """Read the entries of a pairs YAML file, validated, with paths resolved against its folder.

    YAML aliases are refused (no alias expansion); every sample needs ``imzml`` and ``he``, a known
    ``split`` and a valid alignment (``aligned``, or a mapping of file paths: ``truth``,
    ``transform``, landmarks); names must not repeat.

    Parameters
    ----------
    path : path-like
        The pairs file.

    Returns
    -------
    list of PairEntry
        One per sample.

    Raises
    ------
    ValueError
        A malformed file or sample (the message names the file and the sample).
    """
    from .._files import validate_name

    path = Path(path)
    d = _load_yaml_no_aliases(path)
    if not isinstance(d, dict) or not isinstance(d.get("samples"), list) or not d["samples"]:
        raise ValueError(f"{path}: a pairs file needs a non-empty 'samples' list")
    out = []
    for i, s in enumerate(d["samples"]):
        if not isinstance(s, dict):
            raise ValueError(f"{path}: sample {i} is not a mapping of imzml, he, ...")
        for k in ("imzml", "he"):
            if k not in s:
                raise ValueError(f"{path}: sample {i} has no '{k}'")
            if not isinstance(s[k], str) or not s[k]:
                raise ValueError(f"{path}: sample {i}: '{k}' must be a file path")
        if s.get("label") is not None and not isinstance(s["label"], str):
            raise ValueError(f"{path}: sample {i}: 'label' must be a file path")
        if s.get("split", "train") not in ("train", "val", "test"):
            raise ValueError(f"{path}: sample {i} has split {s['split']!r}; use train, val or test")
        align = s.get("align", "aligned")
        if not (
            align in (None, "aligned")
            or (isinstance(align, dict) and all(isinstance(v, str) for v in align.values()))
        ):
            raise ValueError(f"{path}: sample {i} has alignment {align!r}")
        name = validate_name(s.get("name", f"sample{i}"), path)
        out.append(
            PairEntry(
                name=name,
                imzml=str(path.parent / s["imzml"]),
                he=str(path.parent / s["he"]),
                align=align,
                split=s.get("split", "train"),
                base=str(path.parent),
                label=str(path.parent / s["label"]) if s.get("label") else None,
                # pixel sizes (um) for files that carry none, or to override them
                fixed_pixel_um=_opt_px(s, "fixed_pixel_um", path, i),
                moving_pixel_um=_opt_px(s, "moving_pixel_um", path, i),
            )
        )
    dup = {e["name"] for e in out if [f["name"] for f in out].count(e["name"]) > 1}
    if dup:
        raise ValueError(f"{path}: sample names repeat ({', '.join(sorted(dup))})")
    return out


def _opt_px(s: dict, key: str, path, i: int) -> float | None:
    v = s.get(key)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: sample {i} has {key} {v!r}; give a number in um") from None
    if not v > 0:
        raise ValueError(f"{path}: sample {i} has {key} {v}; give a positive number in um")
    return v
