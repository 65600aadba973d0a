"""The sidecar index cache: used when intact and current, ignored and rebuilt otherwise."""

import os
import shutil
import time

import numpy as np
import pytest

from napari_msi2hist.io import _imzml_index
from napari_msi2hist.io.imzml import ImzMLFile

FIELDS = ("coords_xyz", "mz_offsets", "mz_lengths", "int_offsets", "int_lengths")


@pytest.fixture
def copy(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for ext in (".imzML", ".ibd"):
        shutil.copy(shared_data / "imzml" / f"Example_Processed{ext}", tmp_path / f"x{ext}")
    return tmp_path / "x.imzML"


def _same(a, b):
    for k in FIELDS:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert (a.mode, a.mz_dtype, a.int_dtype, a.shape_yx, a.pixel_size_um, a.uuid) == (
        b.mode,
        b.mz_dtype,
        b.int_dtype,
        b.shape_yx,
        b.pixel_size_um,
        b.uuid,
    )


def test_reopen_uses_the_cache_and_reads_the_same(copy):
    first = ImzMLFile(copy, index_cache=True)
    assert first.index_source == "fast"
    assert first.index_cache_path == copy.with_name(".x.imzML.msi2hist-index.npz")
    again = ImzMLFile(copy)
    assert again.index_source == "cache"
    _same(first, again)
    strict = ImzMLFile(copy, fast_parse=False)
    assert strict.index_source == "strict"
    _same(strict, again)
    assert ImzMLFile(copy, index_cache=False).index_source == "fast"


def test_small_files_get_no_cache_by_default(copy):
    assert ImzMLFile(copy).index_cache_path is None
    assert not copy.with_name(".x.imzML.msi2hist-index.npz").exists()


def test_a_changed_file_invalidates_the_cache(copy):
    ImzMLFile(copy, index_cache=True)
    txt = copy.read_bytes()
    # same size, same bytes in the header, different coordinate: the stat key changes
    import re

    i = list(re.finditer(rb'IMS:1000050"[^>]*value="(\d)"', txt))[-1].start(1)
    time.sleep(0.01)
    new = b"2" if txt[i : i + 1] != b"2" else b"1"
    copy.write_bytes(txt[:i] + new + txt[i + 1 :])
    with pytest.warns(UserWarning, match="share a pixel"):
        b = ImzMLFile(copy)
    assert b.index_source == "fast"
    assert b.coords_xyz[-1, 0] == int(new)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "pickle", "checksum"])
def test_a_corrupt_or_foreign_cache_is_ignored_and_rebuilt(copy, damage):
    ref = ImzMLFile(copy, index_cache=True)
    c = ref.index_cache_path
    data = c.read_bytes()
    if damage == "garbage":
        c.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        c.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":
        np.savez(c, cols=np.zeros((7, 9), np.int64))
    elif damage == "pickle":
        with open(c, "wb") as fh:
            np.savez(fh, key=np.array([{"a": 1}], dtype=object), meta=np.zeros(3), cols=np.zeros(3))
    else:  # valid npz with the right key but altered offsets: the checksum catches it
        with np.load(c, allow_pickle=False) as z:
            key, meta, cols = z["key"], z["meta"], z["cols"].copy()
        cols[3, 0] += 8
        with open(c, "wb") as fh:
            np.savez(fh, key=key, meta=meta, cols=cols)
    b = ImzMLFile(copy, index_cache=True)
    assert b.index_source == "fast"
    _same(ref, b)
    assert ImzMLFile(copy).index_source == "cache"  # rebuilt


def test_unwritable_folder_uses_the_user_cache(copy, tmp_path):
    # the sidecar path is taken by a folder: it cannot be written, so XDG_CACHE_HOME is used
    copy.with_name(".x.imzML.msi2hist-index.npz").mkdir()
    a = ImzMLFile(copy, index_cache=True)
    assert a.index_cache_path is not None
    assert a.index_cache_path.parent == tmp_path / "xdg" / "napari-msi2hist" / "imzml-index"
    assert ImzMLFile(copy).index_source == "cache"
    assert not list(a.index_cache_path.parent.glob(".tmp-*"))


def test_cache_can_be_switched_off(copy, monkeypatch):
    monkeypatch.setenv(_imzml_index.ENV_VAR, "0")
    assert ImzMLFile(copy, index_cache=True).index_cache_path is None
