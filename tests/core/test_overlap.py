"""The pair-overlap check runs on the files as training loads them: each H&E and imzML is read once
(models/overlap.py, issue 14), and a pair that misses the tissue is still refused by name."""

import numpy as np
import pytest


def _count_reads(monkeypatch):
    from napari_msi2hist.io import histology, imzml
    from napari_msi2hist.models import datasets

    reads = {"he": [], "imzml": []}
    real_read, real_open = histology.read_histology, imzml.ImzMLFile

    def read(path, *a, **kw):
        reads["he"].append(str(path))
        return real_read(path, *a, **kw)

    class Counting(real_open):
        def __init__(self, path, *a, **kw):
            reads["imzml"].append(str(path))
            super().__init__(path, *a, **kw)

    monkeypatch.setattr(datasets, "read_histology", read)
    monkeypatch.setattr(histology, "read_histology", read)
    monkeypatch.setattr(datasets, "ImzMLFile", Counting)
    monkeypatch.setattr(imzml, "ImzMLFile", Counting)
    return reads


def test_loading_with_the_overlap_check_reads_each_file_once(phantom_entries, monkeypatch):
    from napari_msi2hist.models.datasets import contract_from_data, load_samples

    entries = phantom_entries
    contract, stacks = contract_from_data(entries, n_peaks=4)
    reads = _count_reads(monkeypatch)
    samples = load_samples(entries, contract, stacks, check_overlap=True)
    assert [s.name for s in samples] == [e["name"] for e in entries]
    assert sorted(reads["he"]) == sorted(e["he"] for e in entries)  # once each
    assert reads["imzml"] == []  # the ion images were already extracted
    # without stacks each imzML is opened once, for its ion images, and not again for the check
    reads["he"].clear()
    load_samples(entries, contract, check_overlap=True)
    assert sorted(reads["imzml"]) == sorted(e["imzml"] for e in entries)
    assert len(reads["he"]) == len(entries)


def test_a_pair_off_the_tissue_is_refused_naming_its_files(phantom_entries, tmp_path):
    from napari_msi2hist.io.histology import write_ome_tiff
    from napari_msi2hist.models.datasets import contract_from_data, load_samples
    from napari_msi2hist.models.overlap import PairOverlapError

    he = np.full((300, 300, 3), 245, np.uint8)
    he[220:290, 220:290] = (150, 60, 160)  # tissue, but far from where the MSI lands
    glass = tmp_path / "glass_he.ome.tif"
    write_ome_tiff(glass, he, (4.0, 4.0))
    entries = [{**phantom_entries[0], "he": str(glass), "align": "aligned"}]
    contract, stacks = contract_from_data(entries, n_peaks=4)
    with pytest.raises(PairOverlapError, match=r"outside the H&E tissue.*glass_he\.ome\.tif"):
        load_samples(entries, contract, stacks, check_overlap=True)
    assert len(load_samples(entries, contract, stacks)) == 1  # no check asked: loaded
