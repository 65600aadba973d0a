"""``msi2hist batch``: sections as Dask tasks on a LocalCluster and on a scheduler address, resume
after a kill, failure records, completion fingerprints and the cohort report."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from napari_msi2hist.cli import main  # noqa: E402
from napari_msi2hist.models.checkpoint import demo_checkpoint_path  # noqa: E402
from napari_msi2hist.workflows.batch import BatchConfig, iter_batch  # noqa: E402
from napari_msi2hist.workflows.cohort import CohortError, read_cohort  # noqa: E402
from napari_msi2hist.workflows.section import (  # noqa: E402
    FULL_HASH_MAX,
    fingerprint,
    is_complete,
    provisional_verdict,
)

SRC = Path(__file__).resolve().parents[2] / "src"
SEEDS = (1, 2, 3)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small phantoms and a cohort YAML over them (the bundled demo model, by its path)."""
    from napari_msi2hist.phantom import PhantomConfig, make_phantom

    d = tmp_path_factory.mktemp("cohort")
    phantoms = {}
    lines = [
        "defaults:",
        f"  model: {demo_checkpoint_path()}",
        "  n_peaks: 10",
        "  route: synthesis",
        "sections:",
    ]
    for s in SEEDS:
        phantoms[f"s{s}"] = make_phantom(d / f"ph{s}", PhantomConfig(seed=s, procedural_size=128))
        lines += [
            f"  - name: s{s}",
            f"    imzml: ph{s}/msi.imzML",
            f"    he: ph{s}/he.ome.tif",
            f"    landmarks_he: ph{s}/landmarks_he.csv",
            f"    landmarks_msi: ph{s}/landmarks_msi.csv",
        ]
    (d / "cohort.yaml").write_text("\n".join(lines) + "\n")
    return d / "cohort.yaml", phantoms


def _with_bad_section(cohort_yaml: Path) -> Path:
    """The cohort plus a section whose imzML is not XML: it fails on the worker."""
    d = cohort_yaml.parent
    (d / "bad.imzML").write_text("this is not an imzML file\n")
    (d / "bad.ibd").write_bytes(b"\0" * 64)
    p = d / "cohort_bad.yaml"
    p.write_text(
        cohort_yaml.read_text() + "  - {name: bad, imzml: bad.imzML, he: ph1/he.ome.tif}\n"
    )
    return p


def _check_section(folder: Path, ph) -> dict:
    """The section's outputs against independent references: the landmarks mapped through the
    saved transform (TRE recomputed here) and the H&E grid read back with tifffile."""
    import tifffile

    from napari_msi2hist.registration.transforms import Transform

    rec = json.loads((folder / "section.json").read_text())
    assert rec["status"] == "done"
    tr = Transform.load(folder / "transform.json")
    # TRE in the MSI frame (metrics.landmark_tre_um), recomputed here from the saved transform
    err = np.linalg.norm(tr.fixed_to_moving(ph.landmarks_he_um) - ph.landmarks_msi_um, axis=1)
    tre_px = float(np.median(err)) / ph.config.msi_pixel_um
    assert rec["landmarks"]["tre_median_msi_px"] == pytest.approx(tre_px, rel=1e-6)
    assert tre_px < 2.0  # the synthesis route registers these phantoms to well under 2 MSI px
    with tifffile.TiffFile(folder / "registered_msi.ome.tif") as tf:
        reg = tf.asarray()
        assert 'PhysicalSizeX="4.0"' in tf.ome_metadata
    assert reg.shape == (len(rec["mz"]), *ph.he_rgb.shape[:2]) == (10, *ph.he_rgb.shape[:2])
    return rec


def test_local_cluster_two_workers_and_a_failing_section(cohort, tmp_path):
    cohort_yaml, phantoms = cohort
    out = tmp_path / "out"
    cfg = BatchConfig(str(_with_bad_section(cohort_yaml)), str(out), workers=2)
    seen = []
    job = iter_batch(cfg)
    while True:
        try:
            seen.append(next(job))
        except StopIteration as stop:
            res = stop.value
            break
    assert [p.done for p in seen] == [0, 1, 2, 3, 4] and seen[-1].total == 4
    status = {r["name"]: r for r in res.rows}
    assert res.failed == ["bad"] and not res.bad_verdicts
    assert "bad.imzML" in status["bad"]["error"] and "\n" not in status["bad"]["error"]
    assert not (out / "bad").exists()  # a failed section leaves no folder, only its record
    failed = json.loads((out / "_failed" / "bad.json").read_text())
    assert failed["verdict"] == "error" and "Traceback" in failed["traceback"]
    pids = set()
    for name, ph in phantoms.items():
        rec = _check_section(out / name, ph)
        assert status[name]["status"] == "done" and status[name]["verdict"] in ("ok", "doubtful")
        pids.add(rec["pid"])
    assert os.getpid() not in pids and len(pids) == 2  # ran in both worker processes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with open(out / "cohort_report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["s1", "s2", "s3", "bad"]
    assert all(float(r["dice_after"]) > float(r["dice_before"]) for r in rows[:3])
    assert all(float(r["tre_median_msi_px"]) < 2 for r in rows[:3])
    assert "<td>bad</td>" in (out / "cohort_report.html").read_text()


def _descendants(procs) -> list:
    out = []
    for p in procs:
        try:
            pp = psutil.Process(p.pid)
            out += [pp, *pp.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


def _stop(procs, sig=signal.SIGTERM) -> None:
    """Stop the process groups we started (each Popen leads its own session), then make sure
    every process of them is gone."""
    family = _descendants(procs)
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    _, alive = psutil.wait_procs(alive, timeout=5)
    for p in procs:
        p.wait(timeout=5)
    assert not alive, f"processes left running: {alive}"


def test_scheduler_address_with_two_dask_workers(cohort, tmp_path):
    cohort_yaml, phantoms = cohort
    sched_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    common = dict(env=_env(), start_new_session=True, cwd=tmp_path)
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    *dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                **common,
            )
        )
        t0 = time.monotonic()
        while not sched_file.is_file() and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        *dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--local-directory",
                        str(tmp_path),
                    ],
                    **common,
                )
            )
        from distributed import Client

        with Client(address, timeout="60s") as c:
            c.wait_for_workers(2, timeout=60)
        out = tmp_path / "out"
        rc = main(["batch", str(cohort_yaml), "--out", str(out), "--scheduler", address, "--quiet"])
        assert rc == 0
        worker_pids = {p.pid for p in _descendants(procs[1:])}
        for name, ph in phantoms.items():
            rec = _check_section(out / name, ph)
            assert rec["pid"] in worker_pids
    finally:
        _stop(procs)


def test_resume_after_kill_skips_finished_sections(cohort, tmp_path):
    cohort_yaml, phantoms = cohort
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_msi2hist.cli", "batch", str(cohort_yaml), "--out",
           str(out), "--workers", "1", "--quiet"]  # fmt: skip
    log = open(tmp_path / "batch.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=log, stderr=log)
    try:
        t0 = time.monotonic()
        # generous: on a loaded 2-core machine the first section can take minutes
        while time.monotonic() - t0 < 900 and proc.poll() is None:
            if list(out.glob("s*/section.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "batch.log").read_text()[-2000:]
    finally:
        _stop([proc], signal.SIGKILL)
        log.close()
    done_first = sorted(p.parent.name for p in out.glob("s*/section.json"))
    assert 1 <= len(done_first) < len(SEEDS), (done_first, (tmp_path / "batch.log").read_text())
    before = {n: (out / n / "section.json").read_bytes() for n in done_first}
    # the kill can land while the report is being written: plant that case so it is always tested
    (out / ".cohort_report.csv.k1ll3d.tmp").write_text("name,status\ns1,d")
    (out / ".cohort_report.html.k1ll3d.tmp").write_text("<html><body><tab")
    (out / ".cohort_report.csv.notes").write_text("a user's file, not ours")

    res = iter_batch_to_end(BatchConfig(str(cohort_yaml), str(out), workers=1))
    status = {r["name"]: r["status"] for r in res.rows}
    for name in phantoms:
        assert status[name] == ("skipped" if name in done_first else "done")
        _check_section(out / name, phantoms[name])
    for n in done_first:  # untouched: not rerun
        assert (out / n / "section.json").read_bytes() == before[n]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".cohort_report.csv.notes"]


def iter_batch_to_end(cfg):
    from napari_msi2hist.progress import run_to_end

    return run_to_end(iter_batch(cfg))


def test_completion_record_tracks_inputs_and_config(cohort, tmp_path):
    """A finished section is complete only for the same config and the same input contents."""
    from dataclasses import replace

    from napari_msi2hist.progress import run_to_end
    from napari_msi2hist.workflows.section import iter_section

    cohort_yaml, _ = cohort
    s = read_cohort(cohort_yaml, tmp_path / "out")[0]
    assert not is_complete(s)
    run_to_end(iter_section(s))
    assert is_complete(s)
    assert not is_complete(replace(s, n_peaks=11))
    lm = Path(s.landmarks_he)
    text = lm.read_text()
    try:
        lm.write_text(text.replace("\n", "\r\n"))  # same points, other bytes
        assert not is_complete(s)
    finally:
        lm.write_text(text)
    assert is_complete(s)


def test_section_on_a_coarser_output_grid_with_zarr(cohort, tmp_path):
    """apply_pixel_um: the ion images land on an 8 um grid (H&E at 4 um), equal to a whole-image
    resample of ion_images.ome.tif through transform.json; the OME-Zarr holds the same values."""
    from dataclasses import replace

    import tifffile
    import zarr

    from napari_msi2hist.progress import run_to_end
    from napari_msi2hist.registration.transforms import Transform
    from napari_msi2hist.workflows.section import iter_section

    cohort_yaml, phantoms = cohort
    s = replace(read_cohort(cohort_yaml, tmp_path)[1], apply_pixel_um=8.0, zarr=True, n_peaks=4)
    rec = run_to_end(iter_section(s))
    d = Path(s.out_dir)
    assert rec["registered_pixel_um"] == [8.0, 8.0]
    ions = tifffile.imread(d / "ion_images.ome.tif")
    reg = tifffile.imread(d / "registered_msi.ome.tif")
    ny, nx = phantoms["s2"].he_rgb.shape[:2]
    assert reg.shape == (4, round(ny / 2), round(nx / 2))
    tr = Transform.load(d / "transform.json")
    for c in range(4):
        ref = tr.resample_moving_to_fixed(ions[c], (20.0, 20.0), reg.shape[1:], (8.0, 8.0))
        np.testing.assert_allclose(reg[c], ref, rtol=1e-5, atol=1e-5 * ref.max())
    z = zarr.open_group(str(d / "registered_msi.ome.zarr"), mode="r")
    np.testing.assert_array_equal(z["0"][:], reg)


def test_fingerprint_small_is_sha256_large_is_edges(tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc" * 1000)
    assert fingerprint(small) == "sha256:" + hashlib.sha256(b"abc" * 1000).hexdigest()
    big = tmp_path / "big.bin"
    data = bytearray(os.urandom(FULL_HASH_MAX + 3 * 2**20))
    big.write_bytes(data)
    st = big.stat()
    a = fingerprint(big)
    assert a.startswith("edge:") and fingerprint(big) == a
    data[-1] ^= 0xFF  # the last MiB changed, mtime restored: still detected
    big.write_bytes(data)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(big) != a


def test_provisional_verdict_picks_up_a_registration_verdict():
    m = {"before": {"mi": 0.1, "dice": 0.5}, "after": {"mi": 0.4, "dice": 0.8}}
    assert provisional_verdict(m) == "improved"
    assert provisional_verdict(m, {"tre_median_msi_px": 5.0}) == "fail"
    assert provisional_verdict({**m, "after": {"mi": 0.05, "dice": 0.8}}) == "worse"
    assert provisional_verdict({**m, "verdict": "accept"}, {"tre_median_msi_px": 5.0}) == "accept"


@pytest.mark.parametrize(
    "text, message",
    [
        ("sections: []\n", "non-empty 'sections:'"),
        ("sections:\n  - {name: a, imzml: x.imzML, he: y.tif, colour: red}\n", "unknown key"),
        (
            "sections:\n  - {name: a, imzml: x.imzML, he: y.tif}\n  - {name: a, imzml: x.imzML, he: y.tif}\n",
            "used twice",
        ),
        ("sections:\n  - {name: ../a, imzml: x.imzML, he: y.tif}\n", "letters, digits"),
        ("sections:\n  - {name: a, imzml: x.imzML, he: y.tif, he_pixel_um: -1}\n", "positive"),
        ("sections:\n  - {name: a, imzml: x.imzML, he: y.tif, apply_pixel_um: 0}\n", "positive"),
    ],
)
def test_bad_cohort_files_are_one_line_errors(tmp_path, capsys, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(CohortError, match=message):
        read_cohort(p, tmp_path / "out")
    assert main(["batch", str(p), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("msi2hist batch: error:") and str(p) in err and "\n" not in err
