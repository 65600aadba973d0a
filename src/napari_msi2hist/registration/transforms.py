"""Coordinate conventions and point transforms. The ONLY module that converts xy<->yx and px<->um.

Conventions (also in docs/conventions.md):

- napari and numpy index images as ``(row, col)`` = ``yx``. SimpleITK and ITK files use ``xy``.
- World coordinates are micrometres: ``world_yx_um = index_yx_px * pixel_size_yx_um`` (pixel centres at
  integer indices, napari's ``scale`` with zero ``translate``).
- A transform named ``moving_to_fixed`` maps points given in the moving image's world frame to the
  fixed image's world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..axes import px_to_um, um_to_px, xy_to_yx, yx_to_xy  # noqa: F401  (re-exported)


def rotation_scale_matrix_yx(angle_deg: float, scale: float = 1.0) -> np.ndarray:
    """Build a 2x2 rotation-and-scale matrix acting on (y, x) column vectors.

    The rotation is counter-clockwise as seen in napari (y down); the scale is isotropic.

    Parameters
    ----------
    angle_deg : float
        Rotation angle in degrees.
    scale : float
        Isotropic scale factor.

    Returns
    -------
    ndarray
        ``(2, 2)`` matrix in (y, x) order.
    """
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # in xy with y down, [[c, s], [-s, c]] rotates visually anticlockwise; swap to yx
    m_xy = np.array([[c, s], [-s, c]])
    return scale * yx_to_xy(m_xy)


@dataclass
class DisplacementField:
    """A smooth displacement sampled on a regular grid of the source frame (yx, um).

    ``values[r, c]`` is the (dy, dx) displacement in um at source point
    ``origin_yx_um + (r, c) * spacing_yx_um``; between samples it is interpolated bilinearly,
    beyond the grid the nearest edge value holds.
    """

    values: np.ndarray  # (ny, nx, 2)
    spacing_yx_um: tuple[float, float]
    origin_yx_um: tuple[float, float] = (0.0, 0.0)

    def __call__(self, points_yx_um: np.ndarray) -> np.ndarray:
        """Interpolate the displacement at points (bilinear, nearest edge value outside the grid).

        Parameters
        ----------
        points_yx_um : ndarray
            ``(N, 2)`` points, yx um.

        Returns
        -------
        ndarray
            ``(N, 2)`` displacements, yx um.
        """
        from scipy.ndimage import map_coordinates

        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        g = (p - np.asarray(self.origin_yx_um)) / np.asarray(self.spacing_yx_um)
        out = np.empty_like(p)
        for k in range(2):
            out[:, k] = map_coordinates(self.values[..., k], g.T, order=1, mode="nearest")
        return out

    def rms(self) -> float:
        """Return the root-mean-square displacement.

        Returns
        -------
        float
            RMS length of the sampled displacement vectors, in um.
        """
        return float(np.sqrt((self.values**2).sum(-1).mean()))


@dataclass
class PhantomTransform:
    """``fixed = A @ moving + t + D(moving)`` with (y, x) points in um; invertible numerically."""

    matrix_yx: np.ndarray
    offset_yx_um: np.ndarray
    displacement: DisplacementField | None = None

    def forward(self, points_yx_um) -> np.ndarray:
        """Map moving (MSI) world points to fixed (H&E) world points.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` ``A @ p + t + D(p)``, yx um.
        """
        p = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        q = p @ self.matrix_yx.T + self.offset_yx_um
        if self.displacement is not None:
            q = q + self.displacement(p)
        return q

    def inverse(self, points_yx_um, tol_um: float = 1e-7, max_iter: int = 200) -> np.ndarray:
        """Map fixed (H&E) world points back to moving (MSI) world points.

        Exact for a linear transform; with a displacement, by fixed-point iteration from the linear
        inverse.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.
        tol_um : float
            Stop when an iteration moves no point by more than this.
        max_iter : int
            Iteration limit (the last iterate is returned).

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
        q = np.atleast_2d(np.asarray(points_yx_um, dtype=np.float64))
        ainv = np.linalg.inv(self.matrix_yx)
        base = (q - self.offset_yx_um) @ ainv.T
        if self.displacement is None:
            return base
        p = base.copy()
        for _ in range(max_iter):
            p_new = base - self.displacement(p) @ ainv.T
            if np.abs(p_new - p).max() < tol_um:
                return p_new
            p = p_new
        return p


# --------------------------------------------------------------------------- registration transforms
def sitk_image(array_yx: np.ndarray, pixel_size_yx_um):
    """Wrap a 2-D numpy image as a SimpleITK image in world micrometres.

    Spacing (x, y) in um and origin 0, so that world = index * pixel size, as in napari.

    Parameters
    ----------
    array_yx : ndarray
        ``(Y, X)`` image (stored as float32).
    pixel_size_yx_um : tuple of float
        Pixel size (y, x) in um.

    Returns
    -------
    SimpleITK.Image
        The image.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array_yx, dtype=np.float32))
    img.SetSpacing((float(pixel_size_yx_um[1]), float(pixel_size_yx_um[0])))
    img.SetOrigin((0.0, 0.0))
    return img


def _affine_xy_from_yx(m_yx: np.ndarray):
    """Build a SimpleITK AffineTransform from a 3x3 homogeneous yx matrix."""
    import SimpleITK as sitk

    m_xy = np.eye(3)
    m_xy[:2, :2] = yx_to_xy(m_yx[:2, :2])
    m_xy[:2, 2] = m_yx[:2, 2][::-1]
    t = sitk.AffineTransform(2)
    t.SetMatrix(m_xy[:2, :2].ravel().tolist())
    t.SetTranslation(m_xy[:2, 2].tolist())
    return t


class Transform:
    """A registration result, with the ITK convention inside and yx micrometres outside.

    A registration result: ``itk`` maps FIXED world points to MOVING world points (xy, um), the ITK
    convention that SimpleITK and elastix users expect from a .tfm/.h5 file. Methods named
    ``moving_to_fixed`` / ``fixed_to_moving`` take and return (N, 2) yx micrometres.
    """

    def __init__(self, itk, meta: dict | None = None):
        self.itk = itk
        self.meta = dict(meta or {})

    # ----------------------------------------------------------------- structure
    @property
    def is_linear(self) -> bool:
        """Tell whether the transform is one affine map (no deformable part)."""
        return self._linear_matrix_fixed_to_moving_yx() is not None

    def _flat(self):
        import SimpleITK as sitk

        t = self.itk
        if isinstance(t, sitk.CompositeTransform) or t.GetName() == "CompositeTransform":
            t = sitk.CompositeTransform(t)
            return [t.GetNthTransform(i) for i in range(t.GetNumberOfTransforms())]
        return [t]

    def _linear_matrix_fixed_to_moving_yx(self) -> np.ndarray | None:
        """3x3 yx homogeneous matrix of the whole transform if every part is linear, else None."""
        m = np.eye(3)
        for part in self._flat():  # a composite applies its last-added transform first
            name = part.GetName()
            if "BSpline" in name or "Displacement" in name:
                return None
            a = (
                np.asarray(
                    part.GetMatrix() if hasattr(part, "GetMatrix") else [1, 0, 0, 1], float
                ).reshape(2, 2)
                if name != "TranslationTransform"
                else np.eye(2)
            )
            c = np.asarray(part.GetCenter(), float) if hasattr(part, "GetCenter") else np.zeros(2)
            t = np.asarray(
                part.GetTranslation() if hasattr(part, "GetTranslation") else part.GetOffset(),
                float,
            )
            # ITK: T(p) = A (p - c) + c + t
            off = -a @ c + c + t
            h = np.eye(3)
            h[:2, :2] = yx_to_xy(a)
            h[:2, 2] = off[::-1]
            m = m @ h  # parts listed first are applied last
        return m

    def linear_moving_to_fixed_yx(self) -> np.ndarray:
        """Return the linear transform as one moving -> fixed matrix.

        Returns
        -------
        ndarray
            3x3 homogeneous (y, x) matrix, moving world um to fixed world um.

        Raises
        ------
        ValueError
            The transform has a deformable part.
        """
        m = self._linear_matrix_fixed_to_moving_yx()
        if m is None:
            raise ValueError("the transform has a deformable part; it has no single affine matrix")
        return np.linalg.inv(m)

    def napari_affine(self) -> np.ndarray:
        """Return the matrix to set as the MOVING layer's ``affine`` to overlay the fixed layer.

        napari applies the affine to ``data * scale``, i.e. to moving world um.

        Returns
        -------
        ndarray
            3x3 homogeneous (y, x) matrix (:meth:`linear_moving_to_fixed_yx`).
        """
        return self.linear_moving_to_fixed_yx()

    # ----------------------------------------------------------------- points
    def fixed_to_moving(self, points_yx_um) -> np.ndarray:
        """Map fixed world points to moving world points (the ITK direction, exact).

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.

        Returns
        -------
        ndarray
            ``(N, 2)`` moving points, yx um.
        """
        p = np.atleast_2d(np.asarray(points_yx_um, float))
        return np.array(
            [self.itk.TransformPoint(tuple(map(float, q[::-1])))[::-1] for q in p]
        ).reshape(-1, 2)

    def moving_to_fixed(
        self, points_yx_um, tol_um: float = 1e-6, max_iter: int = 100
    ) -> np.ndarray:
        """Map moving world points to fixed world points.

        Exact for a linear transform; a deformable one is inverted numerically by Newton iterations with
        a finite-difference Jacobian.

        Parameters
        ----------
        points_yx_um : array_like
            ``(N, 2)`` or ``(2,)`` points, (y, x) in um.
        tol_um : float
            Residual at which the iteration stops (deformable only).
        max_iter : int
            Iteration limit (deformable only).

        Returns
        -------
        ndarray
            ``(N, 2)`` fixed points, yx um.
        """
        p = np.atleast_2d(np.asarray(points_yx_um, float))
        m = self._linear_matrix_fixed_to_moving_yx()
        if m is not None:
            inv = np.linalg.inv(m)
            return p @ inv[:2, :2].T + inv[:2, 2]
        # numeric inverse of a deformable transform: Newton-like iteration with the linear part's
        # (or a finite-difference) Jacobian
        q = p.copy()
        for _ in range(max_iter):
            r = p - self.fixed_to_moving(q)
            if np.abs(r).max() < tol_um:
                break
            h = 1.0
            j = np.stack(
                [
                    (self.fixed_to_moving(q + [h, 0]) - self.fixed_to_moving(q - [h, 0])) / (2 * h),
                    (self.fixed_to_moving(q + [0, h]) - self.fixed_to_moving(q - [0, h])) / (2 * h),
                ],
                axis=-1,
            )
            q = q + np.einsum("nij,nj->ni", np.linalg.inv(j), r)
        return q

    # ----------------------------------------------------------------- images
    def resample_moving_to_fixed(
        self,
        moving_yx: np.ndarray,
        moving_px,
        fixed_shape_yx,
        fixed_px,
        order: int = 1,
        default: float = 0.0,
    ) -> np.ndarray:
        """Resample a moving image onto the fixed grid.

        Parameters
        ----------
        moving_yx : ndarray
            ``(y, x)`` moving image.
        moving_px : tuple of float
            Its pixel size (yx um).
        fixed_shape_yx : tuple of int
            The fixed grid's size.
        fixed_px : tuple of float
            The fixed grid's pixel size (yx um).
        order : int
            1: linear interpolation, else nearest neighbour (labels).
        default : float
            Value outside the moving image.

        Returns
        -------
        ndarray
            ``fixed_shape_yx`` float32.
        """
        import SimpleITK as sitk

        mov = sitk_image(moving_yx, moving_px)
        ref = sitk_image(np.zeros(fixed_shape_yx, np.float32), fixed_px)
        interp = sitk.sitkLinear if order == 1 else sitk.sitkNearestNeighbor
        return sitk.GetArrayFromImage(sitk.Resample(mov, ref, self.itk, interp, float(default)))

    def resample_fixed_to_moving(
        self,
        fixed_yx: np.ndarray,
        fixed_px,
        moving_shape_yx,
        moving_px,
        order: int = 1,
        default: float = 0.0,
    ) -> np.ndarray:
        """Resample a fixed image onto the moving grid.

        Parameters
        ----------
        fixed_yx : ndarray
            ``(Y, X)`` fixed image.
        fixed_px : tuple of float
            Its pixel size (yx um).
        moving_shape_yx : tuple of int
            The moving grid's size.
        moving_px : tuple of float
            The moving grid's pixel size (yx um).
        order : int
            Spline order of the interpolation (0 nearest, 1 linear).
        default : float
            Value outside the fixed image.

        Returns
        -------
        ndarray
            ``moving_shape_yx`` float64.
        """
        from scipy import ndimage as ndi

        ny, nx = moving_shape_yx
        rr, cc = np.mgrid[0:ny, 0:nx]
        pts = np.column_stack([rr.ravel(), cc.ravel()]) * np.asarray(moving_px, float)
        src = self.moving_to_fixed(pts) / np.asarray(fixed_px, float)
        return ndi.map_coordinates(
            np.asarray(fixed_yx, float), src.T, order=order, cval=default
        ).reshape(ny, nx)

    # ----------------------------------------------------------------- files
    def to_json(self) -> dict:
        """Describe the transform as JSON-able values.

        Returns
        -------
        dict
            Format, package version, the direction convention, ``linear``, the ``meta``, and for a
            linear transform ``matrix_yx_um`` and ``matrix_xy_um`` (moving to fixed).
        """
        from .. import __version__

        d = {
            "format": "napari-msi2hist transform v1",
            "package_version": __version__,
            "direction": "matrix_*_um maps MOVING world um to FIXED world um (homogeneous 3x3); the ITK "
            "file maps FIXED to MOVING (ITK convention)",
            "linear": self.is_linear,
            **self.meta,
        }
        if self.is_linear:
            m = self.linear_moving_to_fixed_yx()
            mxy = np.eye(3)
            mxy[:2, :2] = yx_to_xy(m[:2, :2])
            mxy[:2, 2] = m[:2, 2][::-1]
            d["matrix_yx_um"] = m.tolist()
            d["matrix_xy_um"] = mxy.tolist()
        return d

    def save(self, json_path, itk_path=None) -> None:
        """Write ``transform.json`` and the ITK file it names, each atomically.

        Parameters
        ----------
        json_path : path-like
            The JSON file.
        itk_path : path-like, optional
            The ITK file (default: ``json_path`` with ``.h5``).
        """
        import json
        import os
        from pathlib import Path

        import SimpleITK as sitk

        json_path = Path(json_path)
        itk_path = Path(itk_path) if itk_path else json_path.with_suffix(".h5")
        d = self.to_json()
        d["itk_file"] = itk_path.name
        tmp = itk_path.with_name(f".tmp-{os.getpid()}-{itk_path.name}")
        sitk.WriteTransform(self.itk, str(tmp))
        os.replace(tmp, itk_path)
        tmpj = json_path.with_name(f".tmp-{os.getpid()}-{json_path.name}")
        tmpj.write_text(json.dumps(d, indent=1, default=float))
        os.replace(tmpj, json_path)

    @classmethod
    def load(cls, path) -> Transform:
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
            The transform, checked (:meth:`checked`).

        Raises
        ------
        ValueError
            Unreadable, inconsistent, missing its ITK file, singular or non-finite (the message names
            the file).
        """
        import json
        from pathlib import Path

        path = Path(path)
        if path.suffix.lower() != ".json":
            return cls(_read_itk_checked(path)).checked(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text (UTF-8) JSON file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a transform (a JSON object is expected)")
        meta = {k: v for k, v in d.items() if k not in ("matrix_yx_um", "matrix_xy_um")}
        m = _matrix_from_json(d, path) if "matrix_yx_um" in d else None
        itk_path = _itk_file_of(d, path)
        if itk_path is not None and itk_path.is_file():
            t = cls(_read_itk_checked(itk_path), meta).checked(itk_path)
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
            return cls.from_moving_to_fixed_matrix(m, meta)
        if itk_path is not None:
            raise ValueError(
                f"{path}: its ITK file {itk_path} is missing and it has no matrix_yx_um"
            )
        raise ValueError(f"{path}: neither an ITK file nor matrix_yx_um")

    def checked(self, source) -> Transform:
        """Check that the linear part is finite and invertible.

        Parameters
        ----------
        source : str or path-like
            Named in the error.

        Returns
        -------
        Transform
            This transform.

        Raises
        ------
        ValueError
            NaN or infinite parameters, or a singular matrix.
        """
        if self.is_linear:
            m = self._linear_matrix_fixed_to_moving_yx()
            if m is None or not np.isfinite(m).all():
                raise ValueError(f"{source}: the transform holds NaN or infinite parameters")
            det = float(np.linalg.det(m[:2, :2]))
            if (
                not np.isfinite(det)
                or abs(det) < 1e-12 * max(1.0, float(np.abs(m[:2, :2]).max())) ** 2
            ):
                raise ValueError(f"{source}: the transform is singular (not invertible)")
        return self

    @classmethod
    def from_moving_to_fixed_matrix(cls, m_yx: np.ndarray, meta: dict | None = None) -> Transform:
        """Build a linear transform from a moving -> fixed (y, x) matrix.

        Parameters
        ----------
        m_yx : ndarray
            3x3 homogeneous (y, x) matrix, moving world um to fixed world um.
        meta : dict, optional
            Recorded in ``meta``.

        Returns
        -------
        Transform
            Its inverse stored as an ITK affine (the ITK convention).
        """
        return cls(_affine_xy_from_yx(np.linalg.inv(np.asarray(m_yx, float))), meta)


def _matrix_from_json(d: dict, path) -> np.ndarray:
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


def _itk_file_of(d: dict, path):
    """Find the ITK file a transform JSON names: a file name inside the JSON's folder, nothing else."""
    from pathlib import Path

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


def _read_itk_checked(path):
    """Read an ITK transform file after a child process has read it without crashing.

    A corrupted HDF5 file can crash SimpleITK's reader, which must not take this process down.
    """
    import os
    import subprocess
    import sys

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
