"""elastix TransformParameters files: write a registration result as a chain elastix/transformix,
wsireg and image2image-reg read, and read such a chain back into a :class:`Transform`.

File format facts (elastix manual, section "transform parameter file" and the transformix chapter):

- one ``(Key value ...)`` per line, strings quoted, ``//`` comments;
- a transform maps FIXED physical points to MOVING physical points (the ITK convention, the same as
  :class:`~napari_msi2hist.registration.transforms.Transform`'s ``itk``), in the physical units of
  the images' headers (``Spacing``/``Origin``/``Direction`` of the fixed image are stored, the
  moving image's are not);
- ``InitialTransformParametersFileName`` names the transform applied before this one; with
  ``HowToCombineTransforms "Compose"`` the result is ``T(x) = T_this(T_initial(x))``;
- EulerTransform (2-D): ``angle tx ty`` + ``CenterOfRotationPoint``; SimilarityTransform (2-D):
  ``scale angle tx ty`` + centre; AffineTransform: ``a00 a01 a10 a11 tx ty`` + centre, i.e.
  ``T(p) = A (p - c) + c + t``; TranslationTransform: ``tx ty``; BSplineTransform: every x coefficient
  then every y coefficient (displacements in physical units) on the control-point grid given by
  ``GridSize``/``GridIndex``/``GridSpacing``/``GridOrigin``/``GridDirection`` (the same numbers as
  the fixed parameters of an ITK ``BSplineTransform``), ``BSplineTransformSplineOrder 3``.

Our world frame is ``index * pixel size`` (um, origin 0, no rotation): files we write use
``Spacing`` = the H&E pixel size and ``Origin`` 0, so elastix's physical frame is ours.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..registration.transforms import Transform
from .elastix_format import (  # noqa: F401  (re-exported)
    ELASTIX_FILE,
    ElastixFormatError,
    _fmt,
    format_parameters,
    parse_parameters,
)


def _flat_parts(itk) -> list:
    """Parts of a (possibly nested) composite in the order they are APPLIED to a fixed point."""
    import SimpleITK as sitk

    if itk.GetName() == "CompositeTransform":
        c = sitk.CompositeTransform(itk)
        parts = [c.GetNthTransform(i) for i in range(c.GetNumberOfTransforms())]
        # a composite applies its last-added part first
        return [p for part in reversed(parts) for p in _flat_parts(part)]
    return [itk.Downcast() if hasattr(itk, "Downcast") else itk]


def _part_parameters(part) -> dict:
    name = part.GetName()
    p = list(part.GetParameters())
    if name == "TranslationTransform":
        return {
            "Transform": "TranslationTransform",
            "NumberOfParameters": 2,
            "TransformParameters": p,
        }
    if name == "BSplineTransform":
        fp = np.asarray(part.GetFixedParameters(), float)
        if len(fp) != 10:
            raise ValueError("only 2-D B-spline transforms can be written")
        order = int(part.GetOrder()) if hasattr(part, "GetOrder") else 3
        return {
            "Transform": "BSplineTransform",
            "NumberOfParameters": len(p),
            "TransformParameters": p,
            "GridSize": [int(round(v)) for v in fp[0:2]],
            "GridIndex": [0, 0],
            "GridSpacing": fp[4:6].tolist(),
            "GridOrigin": fp[2:4].tolist(),
            "GridDirection": fp[6:10].tolist(),
            "BSplineTransformSplineOrder": order,
            "UseCyclicTransform": "false",
        }
    centre = list(part.GetCenter()) if hasattr(part, "GetCenter") else [0.0, 0.0]
    if name == "Euler2DTransform":
        kind = "EulerTransform"
    elif name == "Similarity2DTransform":
        kind = "SimilarityTransform"
    elif hasattr(part, "GetMatrix") and hasattr(part, "GetTranslation"):
        # any other linear ITK transform: the general affine with the same matrix, centre, shift
        kind = "AffineTransform"
        p = list(part.GetMatrix()) + list(part.GetTranslation())
    else:
        raise ValueError(f"an ITK {name} has no elastix TransformParameters equivalent")
    return {
        "Transform": kind,
        "NumberOfParameters": len(p),
        "TransformParameters": p,
        "CenterOfRotationPoint": centre,
    }


def elastix_parameter_sets(transform: Transform, fixed_shape_yx, fixed_pixel_yx_um) -> list[dict]:
    """One elastix parameter dict per part of ``transform``, in the order elastix applies them.

    Parameters
    ----------
    transform : Transform
        A registration result (ITK convention: fixed (H&E) -> moving (MSI), um).
    fixed_shape_yx : tuple of int
        Shape of the fixed (H&E) image; stored as ``Size``.
    fixed_pixel_yx_um : tuple of float
        Its pixel size; stored as ``Spacing`` (``Origin`` 0, ``Direction`` identity, as our world frame).

    Returns
    -------
    list of dict
        File 0 first (applied first to a fixed point).
    """
    if not all(float(v) > 0 for v in fixed_pixel_yx_um):
        raise ValueError("the fixed image's pixel size must be known and positive")
    image = {
        "FixedImageDimension": 2,
        "MovingImageDimension": 2,
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "Size": [int(fixed_shape_yx[1]), int(fixed_shape_yx[0])],
        "Index": [0, 0],
        "Spacing": [float(fixed_pixel_yx_um[1]), float(fixed_pixel_yx_um[0])],
        "Origin": [0.0, 0.0],
        "Direction": [1.0, 0.0, 0.0, 1.0],
        "UseDirectionCosines": "true",
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "FinalBSplineInterpolationOrder": 1,
        "Resampler": "DefaultResampler",
        "DefaultPixelValue": 0.0,
        "ResultImageFormat": "tif",
        "ResultImagePixelType": "float",
        "CompressResultImage": "false",
    }
    sets = []
    for part in _flat_parts(transform.itk):
        d = _part_parameters(part)
        tp = d.pop("TransformParameters")
        n = d.pop("NumberOfParameters")
        head = {"Transform": d.pop("Transform"), "NumberOfParameters": n, "TransformParameters": tp}
        sets.append({**head, **d, "HowToCombineTransforms": "Compose", **image})
    return sets


def write_elastix(
    out_dir: str | os.PathLike,
    transform: Transform,
    fixed_shape_yx,
    fixed_pixel_yx_um,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``transform`` as a chain of elastix TransformParameters files, all or nothing.

    Parameters
    ----------
    out_dir : path-like
        Folder for ``TransformParameters.0.txt``, ``.1.txt``...
    transform : Transform
        The registration result.
    fixed_shape_yx, fixed_pixel_yx_um
        The fixed (H&E) image's shape and pixel size (um).
    overwrite : bool
        Replace existing files of the same names.

    Returns
    -------
    list of Path
        The files; the LAST is the one to give transformix (``-tp``). It names the previous file (absolute
        path) in ``InitialTransformParametersFileName``, and so on back to file 0.
    """
    from ._files import check_writable, write_texts_atomic

    out_dir = Path(out_dir)
    sets = elastix_parameter_sets(transform, fixed_shape_yx, fixed_pixel_yx_um)
    paths = [out_dir / ELASTIX_FILE.format(i) for i in range(len(sets))]
    for p in paths:
        check_writable(p, overwrite)
    texts = []
    for i, s in enumerate(sets):
        s = dict(s)
        s["InitialTransformParametersFileName"] = (
            "NoInitialTransform" if i == 0 else str(paths[i - 1].resolve())
        )
        texts.append(
            "// napari-msi2hist: maps FIXED (H&E) physical um to MOVING (MSI) physical um\n"
            + format_parameters(s)
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_texts_atomic(dict(zip(paths, texts)))
    return paths


# ----------------------------------------------------------------------------- reading
def _num(d: dict, key: str, n: int | None, path) -> np.ndarray:
    if key not in d:
        raise ElastixFormatError(f"{path}: missing ({key} ...)")
    try:
        v = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ElastixFormatError(f"{path}: ({key} ...) is not numeric") from None
    if n is not None and v.size != n:
        raise ElastixFormatError(f"{path}: ({key} ...) has {v.size} values, expected {n}")
    return v


def _sitk_part(d: dict, path):
    import SimpleITK as sitk

    kind = str(d.get("Transform", ["?"])[0])
    dim = int(_num(d, "FixedImageDimension", 1, path)[0]) if "FixedImageDimension" in d else 2
    if dim != 2:
        raise ElastixFormatError(f"{path}: a {dim}-D transform; only 2-D files are supported")
    how = str(d.get("HowToCombineTransforms", ["Compose"])[0])
    if how != "Compose":
        raise ElastixFormatError(
            f"{path}: HowToCombineTransforms {how!r}; only 'Compose' is supported"
        )
    p = _num(d, "TransformParameters", None, path)
    if kind in ("TranslationTransform",):
        return sitk.TranslationTransform(2, p[:2].tolist())
    if kind in ("BSplineTransform", "RecursiveBSplineTransform"):
        order = (
            int(_num(d, "BSplineTransformSplineOrder", 1, path)[0])
            if ("BSplineTransformSplineOrder" in d)
            else 3
        )
        size = _num(d, "GridSize", 2, path)
        if "GridIndex" in d and np.any(_num(d, "GridIndex", 2, path) != 0):
            raise ElastixFormatError(f"{path}: a non-zero GridIndex is not supported")
        gdir = (
            _num(d, "GridDirection", 4, path) if "GridDirection" in d else np.array([1, 0, 0, 1.0])
        )
        fixed = np.concatenate(
            [size, _num(d, "GridOrigin", 2, path), _num(d, "GridSpacing", 2, path), gdir]
        )
        if p.size != 2 * int(size.prod()):
            raise ElastixFormatError(
                f"{path}: {p.size} B-spline parameters for a {int(size[0])}x{int(size[1])} grid "
                f"(expected {2 * int(size.prod())})"
            )
        t = sitk.BSplineTransform(2, order)
        t.SetFixedParameters(fixed.tolist())
        t.SetParameters(p.tolist())
        return t
    centre = _num(d, "CenterOfRotationPoint", 2, path).tolist()
    if kind == "EulerTransform":
        t = sitk.Euler2DTransform()
        want = 3
    elif kind == "SimilarityTransform":
        t = sitk.Similarity2DTransform()
        want = 4
    elif kind == "AffineTransform":
        if p.size != 6:
            raise ElastixFormatError(f"{path}: AffineTransform needs 6 parameters, not {p.size}")
        t = sitk.AffineTransform(2)
        t.SetCenter(centre)
        t.SetMatrix(p[:4].tolist())
        t.SetTranslation(p[4:6].tolist())
        return t
    else:
        raise ElastixFormatError(f"{path}: Transform {kind!r} is not supported")
    if p.size != want:
        raise ElastixFormatError(f"{path}: {kind} needs {want} parameters, not {p.size}")
    t.SetCenter(centre)
    t.SetParameters(p.tolist())
    return t


def _resolve_initial(name: str, current: Path) -> Path:
    cand = [Path(name), current.parent / name, current.parent / Path(name).name]
    for c in cand:
        if c.is_file():
            return c
    raise ElastixFormatError(
        f"{current}: InitialTransformParametersFileName {name!r} not found (looked beside this file too)"
    )


def read_elastix_chain(path: str | os.PathLike, max_files: int = 64) -> list[tuple[Path, dict]]:
    """Files and entries of the chain ending at ``path``.

    Parameters
    ----------
    path : path-like
        The last TransformParameters file of a chain.
    max_files : int
        Longest chain accepted (a loop is refused).

    Returns
    -------
    list of (Path, dict)
        In the order elastix applies them to a fixed point (the ``NoInitialTransform`` file first).
    """
    chain: list[tuple[Path, dict]] = []
    cur = Path(path)
    seen = set()
    while True:
        try:
            text = cur.read_text(errors="strict")
        except (OSError, UnicodeDecodeError) as e:
            raise ElastixFormatError(f"{cur}: not a readable TransformParameters file ({e})") from e
        d = parse_parameters(text, str(cur))
        if "Transform" not in d:
            raise ElastixFormatError(
                f"{cur}: no (Transform ...) entry: not a TransformParameters file"
            )
        chain.append((cur, d))
        key = cur.resolve()
        if key in seen or len(chain) > max_files:
            raise ElastixFormatError(f"{path}: InitialTransformParametersFileName loops")
        seen.add(key)
        init = str(d.get("InitialTransformParametersFileName", ["NoInitialTransform"])[0])
        if init == "NoInitialTransform":
            break
        cur = _resolve_initial(init, cur)
    return chain[::-1]


def read_elastix(
    path: str | os.PathLike,
    fixed_um_per_unit=(1.0, 1.0),
    moving_um_per_unit=(1.0, 1.0),
    fixed_origin_xy=None,
    moving_origin_xy=(0.0, 0.0),
) -> Transform:
    """A :class:`Transform` from the TransformParameters chain ending at ``path``.

    elastix works in the physical frames of its two images; our world frames are micrometres with
    pixel (0, 0) at 0, so per image ``world_um = (physical - origin) * um_per_unit``.

    Parameters
    ----------
    path : path-like
        The last file of the chain (the one given to transformix).
    fixed_um_per_unit, moving_um_per_unit : tuple of float
        Micrometres per elastix physical unit (x, y): 1 when elastix ran with spacings in um (wsireg,
        image2image-reg), the pixel size when it ran on images of spacing 1.
    fixed_origin_xy : tuple of float, optional
        Physical origin of the fixed image; default: the file's ``Origin``.
    moving_origin_xy : tuple of float
        Physical origin of the moving image (not stored in the files; elastix uses 0 for arrays).

    Returns
    -------
    Transform
        Elastix FIXED world um -> MOVING world um (ITK convention); ``meta`` names the files.

    Raises
    ------
    ElastixFormatError
        A file that is not 2-D, combines by "Add", uses an unsupported transform, has the wrong number
        of parameters, or a missing initial file; the message names the file.
    """
    import SimpleITK as sitk

    chain = read_elastix_chain(path)
    first = chain[-1][1]
    if "Direction" in first and not np.allclose(_num(first, "Direction", 4, path), [1, 0, 0, 1]):
        raise ElastixFormatError(
            f"{path}: a fixed image Direction other than identity is not supported"
        )
    f_org = (
        np.asarray(fixed_origin_xy, float)
        if fixed_origin_xy is not None
        else (_num(first, "Origin", 2, path) if "Origin" in first else np.zeros(2))
    )
    f_s = np.asarray(fixed_um_per_unit, float) * np.ones(2)
    m_s = np.asarray(moving_um_per_unit, float) * np.ones(2)
    m_org = np.asarray(moving_origin_xy, float)
    if not (np.all(f_s > 0) and np.all(m_s > 0)):
        raise ValueError("um per elastix unit must be positive")
    parts = [_sitk_part(d, p) for p, d in chain]
    # world -> physical before the chain, physical -> world after it
    pre = sitk.AffineTransform(2)
    pre.SetMatrix(np.diag(1.0 / f_s).ravel().tolist())
    pre.SetTranslation(f_org.tolist())
    post = sitk.AffineTransform(2)
    post.SetMatrix(np.diag(m_s).ravel().tolist())
    post.SetTranslation((-m_org * m_s).tolist())
    seq = []
    if not (np.allclose(f_s, 1) and np.allclose(f_org, 0)):
        seq.append(pre)
    seq += parts
    if not (np.allclose(m_s, 1) and np.allclose(m_org, 0)):
        seq.append(post)
    comp = sitk.CompositeTransform(2)
    for t in reversed(seq):  # a composite applies its last-added part first
        comp.AddTransform(t)
    meta = {
        "route": "elastix",
        "elastix_files": [str(p.resolve()) for p, _ in chain],
        "elastix_transforms": [str(d["Transform"][0]) for _, d in chain],
    }
    return Transform(comp, meta)


def invert_linear(tr: Transform) -> Transform:
    """The inverse of a linear transform (for files where the MSI was elastix's FIXED image).

    Parameters
    ----------
    tr : Transform
        A linear result.

    Returns
    -------
    Transform
        Mapping the other way; ``meta["inverted"]`` is True.

    Raises
    ------
    ValueError
        When ``tr`` has a B-spline part (no exact inverse).
    """
    if not tr.is_linear:
        raise ValueError(
            "the elastix chain has a B-spline part: it cannot be inverted exactly; register with "
            "the H&E as elastix's fixed image instead"
        )
    return Transform.from_moving_to_fixed_matrix(
        np.linalg.inv(tr.linear_moving_to_fixed_yx()), dict(tr.meta, inverted=True)
    )
