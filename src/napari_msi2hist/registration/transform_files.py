"""A registration transform's files: ``transform.json`` and the ITK ``.tfm``/``.h5`` it names.

:class:`~napari_msi2hist.registration.transforms.Transform` reads and writes itself through this
module (``Transform.to_json``, ``.save``, ``.load``). The JSON carries the moving -> fixed matrix in
(y, x) and (x, y) micrometres for a linear transform and names the ITK file, which holds the exact
transform in the ITK convention (fixed -> moving). Every reader here refuses a bad file with a
``ValueError`` that names it: malformed JSON, a matrix that is not an invertible affine, an ITK file
outside the JSON's folder, or one that crashes SimpleITK's reader (read first in a child process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..axes import yx_to_xy
from .transforms import Transform

FORMAT = "napari-msi2hist transform v1"


def transform_to_json(t: Transform) -> dict:
    """Describe a transform as JSON-able values.

    Parameters
    ----------
    t : Transform
        The transform.

    Returns
    -------
    dict
        Format, package version, the direction convention, ``linear``, the ``meta``, and for a
        linear transform ``matrix_yx_um`` and ``matrix_xy_um`` (moving to fixed).
    """
    from .. import __version__

    d = {
        "format": FORMAT,
        "package_version": __version__,
        "direction": "matrix_*_um maps MOVING world um to FIXED world um (homogeneous 3x3); the ITK "
        "file maps FIXED to MOVING (ITK convention)",
        "linear": t.is_linear,
        **t.meta,
    }
    if t.is_linear:
        m = t.linear_moving_to_fixed_yx()
        mxy = np.eye(3)
        mxy[:2, :2] = yx_to_xy(m[:2, :2])
        mxy[:2, 2] = m[:2, 2][::-1]
        d["matrix_yx_um"] = m.tolist()
        d["matrix_xy_um"] = mxy.tolist()
    return d


def save_transform(t: Transform, json_path, itk_path=None) -> None:
    """Write ``transform.json`` and the ITK file it names, each atomically.

    Parameters
    ----------
    t : Transform
        The transform.
    json_path : path-like
        The JSON file.
    itk_path : path-like, optional
        The ITK file (default: ``json_path`` with ``.h5``).
    """
    import SimpleITK as sitk

    json_path = Path(json_path)
    itk_path = Path(itk_path) if itk_path else json_path.with_suffix(".h5")
    d = transform_to_json(t)
    d["itk_file"] = itk_path.name
    tmp = itk_path.with_name(f".tmp-{os.getpid()}-{itk_path.name}")
    sitk.WriteTransform(t.itk, str(tmp))
    os.replace(tmp, itk_path)
    tmpj = json_path.with_name(f".tmp-{os.getpid()}-{json_path.name}")
    tmpj.write_text(json.dumps(d, indent=1, default=float))
    os.replace(tmpj, json_path)


def load_transform(path) -> Transform:
    """Read a transform from our JSON, an ITK ``.tfm``/``.h5``, or a JSON with ``matrix_yx_um`` only.

    When the JSON has both, the ITK file is used (it is exact, and may be deformable) and the two
    must agree; a disagreement is refused.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    Transform
        The transform, checked (:meth:`Transform.checked`).

    Raises
    ------
    ValueError
        Unreadable, inconsistent, missing its ITK file, singular or non-finite (the message names
        the file).
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        return Transform(read_itk_checked(path)).checked(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a transform (a JSON object is expected)")
    meta = {k: v for k, v in d.items() if k not in ("matrix_yx_um", "matrix_xy_um")}
    m = matrix_from_json(d, path) if "matrix_yx_um" in d else None
    itk_path = itk_file_of(d, path)
    if itk_path is not None and itk_path.is_file():
        t = Transform(read_itk_checked(itk_path), meta).checked(itk_path)
        if m is not None:
            if not t.is_linear:
                raise ValueError(
                    f"{path}: has matrix_yx_um but {itk_path.name} is deformable; remove one"
                )
            mine = t.linear_moving_to_fixed_yx()
            tol = 1e-6 * max(1.0, float(np.abs(m).max()))
            if not np.allclose(mine, m, rtol=1e-6, atol=tol):
                raise ValueError(
                    f"{path}: matrix_yx_um disagrees with {itk_path.name} (max difference "
                    f"{float(np.abs(mine - m).max()):.3g}); remove or fix one of them"
                )
        return t
    if m is not None:
        return Transform.from_moving_to_fixed_matrix(m, meta)
    if itk_path is not None:
        raise ValueError(f"{path}: its ITK file {itk_path} is missing and it has no matrix_yx_um")
    raise ValueError(f"{path}: neither an ITK file nor matrix_yx_um")


def matrix_from_json(d: dict, path) -> np.ndarray:
    """Read and check the ``matrix_yx_um`` of a transform JSON.

    Parameters
    ----------
    d : dict
        The parsed JSON (it has ``matrix_yx_um``).
    path : path-like
        The file, named in errors.

    Returns
    -------
    ndarray
        3x3 homogeneous (y, x) matrix, moving world um to fixed world um.

    Raises
    ------
    ValueError
        Not 3x3 numbers, non-finite, not an affine (last row), or singular.
    """
    try:
        m = np.asarray(d["matrix_yx_um"], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: matrix_yx_um is not a 3x3 list of numbers") from None
    if m.shape != (3, 3):
        raise ValueError(f"{path}: matrix_yx_um has shape {m.shape}, not 3x3")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: matrix_yx_um holds NaN or infinite values")
    if not np.allclose(m[2], [0, 0, 1]):
        raise ValueError(f"{path}: matrix_yx_um's last row is not 0, 0, 1 (not an affine)")
    det = float(np.linalg.det(m[:2, :2]))
    if abs(det) < 1e-12 * max(1.0, float(np.abs(m[:2, :2]).max())) ** 2:
        raise ValueError(f"{path}: matrix_yx_um is singular (not invertible)")
    return m


def itk_file_of(d: dict, path: Path) -> Path | None:
    """Find the ITK file a transform JSON names: a file name inside the JSON's folder, nothing else.

    Parameters
    ----------
    d : dict
        The parsed JSON.
    path : Path
        The JSON file.

    Returns
    -------
    Path or None
        The ITK file's path (it may not exist), or None when the JSON names none.

    Raises
    ------
    ValueError
        ``itk_file`` is not a string, or points outside the JSON's folder.
    """
    name = d.get("itk_file")
    if not name:
        return None
    if not isinstance(name, str):
        raise ValueError(f"{path}: itk_file is not a file name")
    p = Path(name)
    folder = path.parent.resolve()
    if p.is_absolute() or ".." in p.parts or (folder / p).resolve().parent != folder:
        raise ValueError(f"{path}: itk_file {name!r} points outside the JSON's folder; refused")
    return path.parent / p


_ITK_OK: dict = {}


def read_itk_checked(path):
    """Read an ITK transform file after a child process has read it without crashing.

    A corrupted HDF5 file can crash SimpleITK's reader, which must not take this process down. A
    file that read well once (same size, time and inode) is not checked again.

    Parameters
    ----------
    path : path-like
        The ``.tfm``/``.h5`` file.

    Returns
    -------
    SimpleITK.Transform
        The transform as read.

    Raises
    ------
    ValueError
        Missing, unreadable, crashing the reader, or taking more than two minutes to read.
    """
    import SimpleITK as sitk

    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _ITK_OK:
        code = "import sys, SimpleITK as s; s.ReadTransform(sys.argv[1])"
        try:
            r = subprocess.run(
                [sys.executable, "-c", code, str(path)], capture_output=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            raise ValueError(f"{path}: reading the ITK transform did not finish") from None
        if r.returncode != 0:
            why = "crashed the reader" if r.returncode < 0 else "unreadable"
            raise ValueError(f"{path}: not a readable ITK transform file ({why})")
        _ITK_OK[key] = True
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1][:160] if str(e).strip() else "unreadable"
        raise ValueError(f"{path}: not a readable ITK transform file ({msg})") from None
