"""The pixel-size check against tissue areas: a warning that names what the pixel sizes say and
what the tissue areas say, in the same units; silent when they agree."""

import warnings

import numpy as np
import pytest

from napari_msi2hist.pixel_size import check_against_tissue_area


def _disc(n, r):
    yy, xx = np.mgrid[0:n, 0:n]
    return (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < r**2


def test_right_pixel_sizes_are_silent_and_wrong_ones_name_both_ratios():
    fixed = _disc(400, 150)  # a 300 um wide section at 1 um
    moving = _disc(120, 50)  # the same section at 3 um per pixel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = check_against_tissue_area(fixed, (1.0, 1.0), moving, (3.0, 3.0))
    assert ok["warning"] is None
    assert ok["area_scale"] == pytest.approx(1.0, rel=0.03)
    # claimed 1.5 um (the nominal size a user might type): the areas say about 3
    with pytest.warns(UserWarning) as rec:
        bad = check_against_tissue_area(fixed, (1.0, 1.0), moving, (1.5, 1.5))
    msg = str(rec[0].message)
    assert "moving 1.5 um, fixed 1 um" in msg
    assert "one moving pixel 1.50 fixed pixels" in msg
    implied = float(msg.split("suggest ")[1].split(":")[0])
    assert implied == pytest.approx(3.0, rel=0.03)
    assert bad["warning"] == msg
    # report.json carries the warning's two numbers, not only ratios relative to the claim
    assert bad["moving_px_in_fixed_px"]["pixel_sizes"] == pytest.approx(1.5)
    assert bad["moving_px_in_fixed_px"]["tissue_areas"] == pytest.approx(implied, abs=0.005)


def test_a_section_mostly_missing_from_one_slide_is_named():
    """Real pair A1: the MALDI image shows a whole section, the H&E only fragments of it. No pixel
    size explains a 1/16 area ratio, so the warning asks whether tissue is missing, naming which."""
    moving = _disc(120, 50)  # the whole section at 3 um per pixel
    fixed = np.zeros((400, 400), bool)
    fixed[190:200, 150:170] = fixed[220:226, 240:250] = True  # fragments left on the H&E slide
    with pytest.warns(UserWarning, match="the fixed image shows under 1/16"):
        check_against_tissue_area(fixed, (1.0, 1.0), moving, (3.0, 3.0))
    with pytest.warns(UserWarning) as rec:  # off by 2x only: a pixel-size question, not this one
        check_against_tissue_area(_disc(400, 150), (1.0, 1.0), moving, (1.5, 1.5))
    assert "missing" not in str(rec[0].message)
