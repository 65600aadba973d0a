"""Hostile-input suite for the imzML reader: a seeded mutation corpus (>= 500 cases per run).

For every case: either a clean reader error (an ``ImzMLError`` subclass, or the memory budget's
``ResourceLimitError``, one line naming the file) or ion images equal to an independent reference
(ElementTree walk + plain reads, tests/core/imzml_corpus.py); the fast spectrum-list scan and the
strict expat parse give the same answer (same spectra, or the same error); no hang (20 s alarm); no
allocation above the memory budget (tracemalloc peak); input files unchanged (SHA-256). Mutations
that keep the file valid (comments, PIs, CDATA, userParams with fake offsets, unsorted m/z, swapped
or duplicate coordinates, single quotes) must open. The longer run is benchmarks/bench_fuzz_imzml.py.
"""

import collections

import pytest
from imzml_corpus import build_corpus, check_case, load_seeds

N_CASES = 520
BUDGET = 64 * 2**20


@pytest.fixture(scope="module")
def seeds(shared_data, tmp_path_factory):
    return load_seeds(shared_data / "imzml", tmp_path_factory.mktemp("seeds"))


def test_mutation_corpus(seeds, tmp_path):
    corpus = build_corpus(seeds, N_CASES, seed=20261123)
    fails, kinds, ops = [], collections.Counter(), collections.Counter()
    for i, case in enumerate(corpus):
        out = check_case(case, tmp_path, BUDGET)
        kinds[out.kind] += 1
        ops.update(case.ops)
        if out.kind == "FAIL":
            fails.append(f"case {i} {case.seed_name} {case.ops}: {out.detail}")
    assert not fails, f"{len(fails)} of {len(corpus)} cases failed:\n" + "\n".join(fails[:20])
    # the corpus exercises both outcomes and every mutation kind
    assert kinds["opened"] > 50 and kinds["refused"] > 50, kinds
    assert len(ops) >= 25, ops
