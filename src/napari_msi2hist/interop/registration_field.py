"""A registration result as SpatialData can hold it: an affine plus a displacement field.

SpatialData has no non-linear transformation, so a B-spline result (ITK convention: H&E -> MSI) is
inverted on a grid over the MSI frame, split into its least-squares affine (MSI um -> H&E um) and the
remainder ``D``; :func:`msi_to_global` applies both from a store. Linear results are exact affines.
"""

from __future__ import annotations

import numpy as np

from ..registration.transforms import Transform, yx_to_xy

FIELD = "msi_to_he_displacement_um"


def _linear_part_xy(itk) -> np.ndarray:
    """3x3 xy matrix of the linear parts of an ITK transform (B-spline parts left out)."""
    from .elastix import _flat_parts

    m = np.eye(3)
    for part in _flat_parts(itk):  # in the order they are applied
        if "BSpline" in part.GetName():
            continue
        h = np.eye(3)
        if hasattr(part, "GetMatrix"):
            a = np.asarray(part.GetMatrix(), float).reshape(2, 2)
            c = np.asarray(part.GetCenter(), float)
            h[:2, :2] = a
            h[:2, 2] = -a @ c + c + np.asarray(part.GetTranslation(), float)
        elif part.GetName() == "TranslationTransform":
            h[:2, 2] = part.GetOffset()
        else:
            raise ValueError(f"an ITK {part.GetName()} cannot be exported to SpatialData")
        m = h @ m
    return m


def invert_points(tr: Transform, points_yx_um, tol_um: float = 1e-7, max_iter: int = 60):
    """``tr.moving_to_fixed`` for many points at once, robust where a B-spline's domain ends.

    A fixed-point iteration ``q <- q + L^-1 (p - F(q))`` (``F = tr.fixed_to_moving``, ``L`` its linear
    parts), then damped Newton steps for the points where it does not contract.

    Parameters
    ----------
    tr : Transform
    points_yx_um : array_like, (N, 2)
        Moving (MSI) world points.
    tol_um : float
        Convergence on the residual ``|p - F(q)|``.
    max_iter : int

    Returns
    -------
    points : ndarray, (N, 2)
        Fixed (H&E) world points.
    converged : ndarray of bool
        False where no preimage was found (beyond the B-spline's domain, or a fold).
    """
    p = np.atleast_2d(np.asarray(points_yx_um, float))
    linv = np.linalg.inv(_linear_part_xy(tr.itk))
    li = np.eye(3)
    li[:2, :2] = yx_to_xy(linv[:2, :2])
    li[:2, 2] = yx_to_xy(linv[:2, 2])
    q = p @ li[:2, :2].T + li[:2, 2]
    for _ in range(max_iter):
        r = p - tr.fixed_to_moving(q)
        if (np.abs(r).max(1) < tol_um).all():
            break
        q = q + r @ li[:2, :2].T
    # where the B-spline is steep the iteration does not contract: damped Newton steps there
    bad = np.abs(p - tr.fixed_to_moving(q)).max(1) >= tol_um
    if bad.any():
        pb, qb = p[bad], q[bad]
        for _ in range(max_iter):
            r = pb - tr.fixed_to_moving(qb)
            if (np.abs(r).max(1) < tol_um).all():
                break
            h = 0.5
            jac = np.stack(
                [
                    (tr.fixed_to_moving(qb + [h, 0]) - tr.fixed_to_moving(qb - [h, 0])) / (2 * h),
                    (tr.fixed_to_moving(qb + [0, h]) - tr.fixed_to_moving(qb - [0, h])) / (2 * h),
                ],
                axis=-1,
            )
            det = np.linalg.det(jac)
            jac[np.abs(det) < 1e-9] = np.eye(2)
            step = np.einsum("nij,nj->ni", np.linalg.inv(jac), r)
            n = np.linalg.norm(step, axis=1, keepdims=True)
            qb = qb + step * np.minimum(1.0, 50.0 / np.maximum(n, 1e-12))  # at most 50 um a step
        q[bad] = qb
    return q, np.abs(p - tr.fixed_to_moving(q)).max(1) < max(tol_um, 1e-6)


def registration_parts(
    tr: Transform, msi_shape, msi_px, field_step: int = 1
) -> tuple[np.ndarray, dict | None]:
    """A registration as SpatialData can store it.

    Parameters
    ----------
    tr : Transform
        Fixed (H&E) -> moving (MSI), ITK convention.
    msi_shape : tuple of int
    msi_px : tuple of float
        MSI pixel size (um).
    field_step : int
        Field samples per MSI pixel.

    Returns
    -------
    matrix_yx : ndarray, (3, 3)
        MSI um -> H&E um: exact for a linear result, the least-squares affine otherwise.
    field : dict or None
        None for linear results, else ``values`` ((Y, X, 2) dy, dx um), ``valid`` ((Y, X) bool, False
        where there is no preimage; values there are the nearest valid ones), ``spacing_yx_um`` and
        ``origin_yx_um`` of the samples, covering the MSI grid and one pixel beyond.
    """
    if tr.is_linear:
        return tr.linear_moving_to_fixed_yx(), None
    step = np.asarray(msi_px, float) / field_step
    origin = -np.asarray(msi_px, float)
    n = [int(np.ceil((s + 1) * p / st)) + 1 for s, p, st in zip(msi_shape, msi_px, step)]
    from .._limits import check_allocation

    check_allocation(200.0 * n[0] * n[1], f"a {n[0]} x {n[1]} displacement field")
    gy, gx = np.meshgrid(
        *(o + np.arange(k) * st for o, k, st in zip(origin, n, step)), indexing="ij"
    )
    src = np.column_stack([gy.ravel(), gx.ravel()])
    dst, ok = invert_points(tr, src)
    if ok.sum() < 3:
        raise ValueError("the B-spline registration cannot be inverted on the MSI frame")
    a = np.column_stack([src, np.ones(len(src))])
    coef, *_ = np.linalg.lstsq(a[ok], dst[ok], rcond=None)  # (3, 2): dst = [y x 1] @ coef
    m = np.eye(3)
    m[:2, :2] = coef[:2].T
    m[:2, 2] = coef[2]
    resid = (dst - a @ coef).reshape(n[0], n[1], 2)
    valid = ok.reshape(n)
    if not valid.all():  # no preimage (beyond the B-spline's domain, or folds): nearest valid value
        from scipy.ndimage import distance_transform_edt

        idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
        resid = resid[idx[0], idx[1]]
    return m, {
        "values": resid,
        "valid": valid,
        "spacing_yx_um": step.tolist(),
        "origin_yx_um": origin.tolist(),
    }


def msi_to_global(sdata, points_yx_um) -> np.ndarray:
    """MSI world um -> H&E world um through a store's own transformations.

    Parameters
    ----------
    sdata : SpatialData
        A store of this package.
    points_yx_um : array_like, (N, 2)

    Returns
    -------
    ndarray, (N, 2)
        The ``global`` Affine of ``ion_images`` (its raster part undone) plus the displacement field,
        bilinear, when there is one; NaN where the field has no preimage.
    """
    from scipy.ndimage import map_coordinates
    from spatialdata.transformations import get_transformation

    p = np.atleast_2d(np.asarray(points_yx_um, float))
    img = sdata.images["ion_images"]
    to_msi = get_transformation(img, "msi").to_affine_matrix(("x", "y"), ("x", "y"))
    to_glob = get_transformation(img, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    m = to_glob @ np.linalg.inv(to_msi)  # msi um xy -> global um xy
    xy = np.column_stack([p[:, 1], p[:, 0], np.ones(len(p))]) @ m.T
    out = np.column_stack([xy[:, 1], xy[:, 0]])
    if FIELD in sdata.images:
        f = sdata.images[FIELD]
        fm = get_transformation(f, "msi").to_affine_matrix(("x", "y"), ("x", "y"))
        ij = np.column_stack([p[:, 1], p[:, 0], np.ones(len(p))]) @ np.linalg.inv(fm).T
        cr = ij[:, [1, 0]] - 0.5  # intrinsic -> array index (centres at +0.5)
        vals = np.asarray(f.data)
        d = np.stack([map_coordinates(vals[k], cr.T, order=1, mode="nearest") for k in (1, 0)], 1)
        ok = map_coordinates(vals[2], cr.T, order=0, mode="nearest") > 0.5
        out = out + d
        out[~ok] = np.nan  # no preimage there: refuse to guess
    return out
