"""Cohort files: the YAML that lists the sections of a batch, and the cohort report (CSV + HTML).

A cohort YAML::

    defaults:                 # optional; any section key except name/imzml/he
      model: demo             # checkpoint path (relative to this file) or "demo"
      route: synthesis        # synthesis | direct
      n_peaks: 50
      he_pixel_um: 0.5        # overrides the files' pixel sizes: a number or [y, x]
    sections:
      - name: s01             # the output folder name (letters, digits, . _ -)
        imzml: s01/msi.imzML
        he: s01/he.ome.tif
        landmarks_he: s01/landmarks_he.csv     # optional (both or neither): TRE in the report
        landmarks_msi: s01/landmarks_msi.csv
        he_mask: s01/tissue.png                # optional: Dice of this mask before/after
        apply_pixel_um: 2.0                    # optional: registered_msi grid (default: H&E's)
        zarr: true                             # optional: registered_msi.ome.zarr as well
        route: direct                          # any default, overridden for this section

Relative paths are taken from the cohort file's folder.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import fields
from pathlib import Path

from .section_config import SectionConfig

_PATH_KEYS = ("imzml", "he", "landmarks_he", "landmarks_msi", "he_mask")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CohortError(ValueError):
    """A cohort file that cannot be used; the message names the file and the problem."""


def _pair(v, where: str, key: str):
    if v is None:
        return None
    vals = v if isinstance(v, list | tuple) else [v, v]
    try:
        out = (float(vals[0]), float(vals[1]))
    except (TypeError, ValueError, IndexError):
        raise CohortError(f"{where}: {key} must be a number or [y, x] in um, not {v!r}") from None
    if len(vals) != 2 or not all(0 < x < 1e6 for x in out):
        raise CohortError(f"{where}: {key} must be positive um, not {v!r}")
    return out


def read_cohort(path: str | os.PathLike, out_dir: str | os.PathLike) -> list[SectionConfig]:
    """Read the sections of a cohort file as :class:`SectionConfig` objects writing under ``out_dir``.

    Parameters
    ----------
    path : path-like
        The cohort YAML (see the module docstring).
    out_dir : path-like
        The batch output folder; section ``NAME`` writes ``out_dir/NAME``.

    Returns
    -------
    list of SectionConfig
        In file order, with absolute paths.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise CohortError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise CohortError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("sections"), list)
        or not doc["sections"]
    ):
        raise CohortError(f"{path}: needs a non-empty 'sections:' list")
    unknown = set(doc) - {"defaults", "sections"}
    if unknown:
        raise CohortError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    known = {f.name for f in fields(SectionConfig)} - {"out_dir", "extra"}
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CohortError(f"{path}: 'defaults:' must be a mapping")
    base, out_dir = path.resolve().parent, Path(out_dir).resolve()
    sections, names = [], set()
    for i, entry in enumerate(doc["sections"]):
        where = f"{path}: section {i + 1}"
        if not isinstance(entry, dict):
            raise CohortError(f"{where}: must be a mapping")
        d = {**defaults, **entry}
        bad = set(d) - known
        if bad:
            raise CohortError(f"{where}: unknown key(s) {sorted(bad)}")
        for k in ("name", "imzml", "he"):
            if not d.get(k):
                raise CohortError(f"{where}: '{k}' is required")
        name = str(d["name"])
        where = f"{path}: section {name!r}"
        if not _NAME.match(name):
            raise CohortError(f"{where}: a name may hold letters, digits, '.', '_', '-' only")
        if name in names:
            raise CohortError(f"{where}: the name is used twice")
        names.add(name)
        for k in _PATH_KEYS:
            if d.get(k):
                d[k] = str((base / str(d[k])).resolve())
        if d.get("model", "demo") != "demo":
            d["model"] = str((base / str(d["model"])).resolve())
        for k in ("he_pixel_um", "msi_pixel_um"):
            d[k] = _pair(d.get(k), where, k)
        for k in ("apply_pixel_um", "registration_pixel_um"):
            if d.get(k) is not None:
                d[k] = _pair(d[k], where, k)[0]
        if d.get("route", "synthesis") not in ("synthesis", "direct"):
            raise CohortError(f"{where}: route must be synthesis or direct")
        if bool(d.get("landmarks_he")) != bool(d.get("landmarks_msi")):
            raise CohortError(f"{where}: give both landmarks_he and landmarks_msi, or neither")
        for k in ("mz", "stages"):
            if d.get(k) is not None:
                d[k] = tuple(d[k]) if isinstance(d[k], list) else tuple(str(d[k]).split(","))
        if d.get("mz") is not None:
            d["mz"] = tuple(float(m) for m in d["mz"])
        final = out_dir / name
        for k in _PATH_KEYS:
            if d.get(k) and Path(d[k]).is_relative_to(final):
                raise CohortError(f"{where}: input {d[k]} lies inside its output folder {final}")
        try:
            sections.append(SectionConfig(out_dir=str(final), **d))
        except TypeError as e:
            raise CohortError(f"{where}: {e}") from None
    return sections


# ------------------------------------------------------------------ the report
COLUMNS = (
    "name",
    "status",
    "verdict",
    "verdict_source",
    "route",
    "tre_median_um",
    "tre_median_msi_px",
    "mi_before",
    "mi_after",
    "dice_before",
    "dice_after",
    "mask_dice_before",
    "mask_dice_after",
    "seconds",
    "error",
)


def report_row(name: str, status: str, rec: dict) -> dict:
    """Build one report row from a section's completion record or failure record.

    Parameters
    ----------
    name : str
        The section's name.
    status : str
        ``done``, ``skipped`` or ``failed``.
    rec : dict
        The completion record (:func:`~.section.iter_section`) or the failure record of
        :func:`~.batch.run_section_task`; missing fields become empty cells.

    Returns
    -------
    dict
        One value per report column (``COLUMNS``): verdict, route, TRE, MI and Dice before and
        after, seconds, error.
    """
    m = rec.get("metrics") or {}
    lm = rec.get("landmarks") or {}
    md = m.get("mask_dice") or {}
    secs = rec.get("seconds")
    return {
        "name": name,
        "status": status,
        "verdict": rec.get("verdict", ""),
        "verdict_source": rec.get("verdict_source", ""),
        "route": (rec.get("config") or {}).get("route", ""),
        "tre_median_um": lm.get("tre_median_um", ""),
        "tre_median_msi_px": lm.get("tre_median_msi_px", ""),
        "mi_before": (m.get("before") or {}).get("mi", ""),
        "mi_after": (m.get("after") or {}).get("mi", ""),
        "dice_before": (m.get("before") or {}).get("dice", ""),
        "dice_after": (m.get("after") or {}).get("dice", ""),
        "mask_dice_before": md.get("before", ""),
        "mask_dice_after": md.get("after", ""),
        "seconds": secs.get("total", "") if isinstance(secs, dict) else (secs or ""),
        "error": rec.get("error", ""),
    }


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(out_dir: str | os.PathLike, rows: list[dict], title: str) -> tuple[Path, Path]:
    """Write ``cohort_report.csv`` and ``cohort_report.html`` in ``out_dir``, each atomically.

    Parameters
    ----------
    out_dir : path-like
        The cohort's output folder.
    rows : list of dict
        Report rows (:func:`report_row`), one per section.
    title : str
        The HTML page's title and heading.

    Returns
    -------
    csv_path, html_path : Path
        The two files written.
    """
    from .._files import rows_to_csv, write_text_atomic

    out = Path(out_dir)
    csv_path = write_text_atomic(
        out / "cohort_report.csv", rows_to_csv([{k: r.get(k, "") for k in COLUMNS} for r in rows])
    )
    n_bad = sum(r["status"] == "failed" for r in rows)
    body = "".join(
        "<tr class='{}'>{}</tr>".format(
            r["status"], "".join(f"<td>{html.escape(_fmt(r.get(k, '')))}</td>" for k in COLUMNS)
        )
        for r in rows
    )
    head = "".join(f"<th>{k}</th>" for k in COLUMNS)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:3px 8px;border:1px solid #ccc}}
table{{border-collapse:collapse}}tr.failed{{background:#fdd}}tr.skipped{{color:#666}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(rows)} sections, {n_bad} failed. Verdicts marked
<em>provisional</em> come from MI/Dice before vs after, not from the registration's own verdict.
TRE is against the cohort's landmarks (empty without them).</p>
<table><tr>{head}</tr>{body}</table></body></html>"""
    html_path = write_text_atomic(out / "cohort_report.html", page)
    return csv_path, html_path
