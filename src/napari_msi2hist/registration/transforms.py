"""Coordinate conventions and point transforms. The ONLY module that converts xy<->yx and px<->um.

Conventions (also in docs/conventions.md):

- napari and numpy index images as ``(row, col)`` = ``yx``. SimpleITK and ITK files use ``xy``.
- World coordinates are micrometres: ``world_yx_um = index_yx_px * pixel_size_yx_um`` (pixel centres at
  integer indices, napari's ``scale`` with zero ``translate``).
- A transform named ``moving_to_fixed`` maps points given in the moving image's world frame to the
  fixed image's world frame.
"""

from __future__ import annotations

import numpy as np

from ..axes import px_to_um, um_to_px, xy_to_yx, yx_to_xy  # noqa: F401  (re-exported)
from .truth import DisplacementField, PhantomTransform  # noqa: F401  (re-exported)


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

    # ----------------------------------------------------------------- files (transform_files.py)
    def to_json(self) -> dict:
        """Describe the transform as JSON-able values (:func:`.transform_files.transform_to_json`).

        Returns
        -------
        dict
            Format, package version, the direction convention, ``linear``, the ``meta``, and for a
            linear transform ``matrix_yx_um`` and ``matrix_xy_um`` (moving to fixed).
        """
        from .transform_files import transform_to_json

        return transform_to_json(self)

    def save(self, json_path, itk_path=None) -> None:
        """Write ``transform.json`` and the ITK file it names, each atomically.

        See :func:`.transform_files.save_transform`.

        Parameters
        ----------
        json_path : path-like
            The JSON file.
        itk_path : path-like, optional
            The ITK file (default: ``json_path`` with ``.h5``).
        """
        from .transform_files import save_transform

        save_transform(self, json_path, itk_path)

    @classmethod
    def load(cls, path) -> Transform:
        """Read a transform from our JSON, an ITK ``.tfm``/``.h5``, or a JSON with ``matrix_yx_um`` only.

        When the JSON has both, the ITK file is used and the two must agree
        (:func:`.transform_files.load_transform`).

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
        from .transform_files import load_transform

        return load_transform(path)

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
