"""Hand-made hostile inputs to every command (issue 12, outside the imzML reader).

Each case must fail the CLI contract's way: exit code != 0, exactly one stderr line that names the
offending file, no traceback, and every input file byte-identical afterwards. The imzML mutation
corpus lives with the reader's tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_msi2hist._files import MANIFEST
from napari_msi2hist.cli import main


def _digest(paths) -> dict:
    out = {}
    for p in paths:
        p = Path(p)
        if p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _tree(folder: Path) -> dict:
    return _digest(sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()))


def _refused(capsys, argv, names, root: Path, rc_min: int = 1) -> str:
    """Run ``msi2hist ARGV``; assert the contract and that no file under ``root`` changed."""
    before = _tree(root)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc >= rc_min, (rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    names = [names] if isinstance(names, str) else names
    assert any(n in lines[0] for n in names), lines[0]
    if os.environ.get("HOSTILE_LOG"):
        open(os.environ["HOSTILE_LOG"], "a").write(lines[0] + "\n")
    assert _tree(root) == before, "an input or earlier output changed"
    leftovers = [p.name for p in root.rglob(".*tmp*")]
    assert not leftovers, leftovers
    return lines[0]


@pytest.fixture
def ws(tmp_path, small_phantom, trained_checkpoint):
    """A private copy of the small phantom and a trained checkpoint (tests try to destroy them)."""
    src = Path(small_phantom.paths["imzml"]).parent
    d = tmp_path / "ws"
    shutil.copytree(src, d)
    shutil.copy(trained_checkpoint, d / "model.pt")
    return d


def _ckpt_dict(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- data loss
def test_synthesize_refuses_to_write_over_its_inputs(ws, capsys):
    for out in ("msi.ibd", "msi.imzML", "model.pt"):
        args = ["synthesize", str(ws / "msi.imzML"), "--model", str(ws / "model.pt")]
        _refused(capsys, [*args, "--out", str(ws / out), "--quiet"], out, ws)


def test_links_to_inputs_are_inputs(ws, capsys):
    os.symlink(ws / "msi.imzML", ws / "sym.ome.tif")
    os.link(ws / "msi.ibd", ws / "hard.ome.tif")
    for link in ("sym.ome.tif", "hard.ome.tif"):
        argv = ["peaks", str(ws / "msi.imzML"), "--mz", "500", "--out", str(ws / link)]
        _refused(capsys, [*argv, "--overwrite", "--quiet"], link, ws)


def test_earlier_output_needs_overwrite(ws, tmp_path, capsys):
    out = tmp_path / "ions.ome.tif"
    argv = ["peaks", str(ws / "msi.imzML"), "--mz", "500", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    _refused(capsys, argv, "ions.ome.tif", tmp_path)
    assert main([*argv, "--overwrite"]) == 0


def test_transform_points_refuses_its_transform(ws, capsys):
    m = np.eye(3)
    (ws / "t.json").write_text(json.dumps({"matrix_yx_um": m.tolist()}))
    argv = ["transform-points", "--transform", str(ws / "t.json"), "--points"]
    _refused(
        capsys,
        [*argv, str(ws / "landmarks_msi.csv"), "--out", str(ws / "t.json"), "--overwrite"],
        "t.json",
        ws,
    )


def _pairs(ws: Path, path: Path, name="s1", extra: dict | None = None) -> Path:
    d = {
        "samples": [
            {
                "name": name,
                "imzml": str(ws / "msi.imzML"),
                "he": str(ws / "he.ome.tif"),
                "align": {"truth": str(ws / "truth.json")},
                **(extra or {}),
            },
            {
                "name": "s2",
                "imzml": str(ws / "msi.imzML"),
                "he": str(ws / "he.ome.tif"),
                "align": {"truth": str(ws / "truth.json")},
                "split": "val",
            },
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d))
    return path


def test_train_refuses_inputs_inside_its_run_folder(ws, tmp_path, capsys):
    run = tmp_path / "run"
    pairs = _pairs(ws, run / "config.yaml")
    argv = ["train", "--pairs", str(pairs), "--out", str(run), "--max-steps", "1", "--quiet"]
    _refused(capsys, argv, "config.yaml", tmp_path)
    pairs2 = _pairs(ws, tmp_path / "pairs.yaml")
    shutil.copy(ws / "model.pt", run / "model.pt")
    argv = ["train", "--pairs", str(pairs2), "--out", str(run), "--base", str(run / "model.pt")]
    _refused(capsys, [*argv, "--max-steps", "1", "--quiet"], "model.pt", tmp_path)
    argv = ["train", "--pairs", str(pairs2), "--out", str(tmp_path / "new"), "--resume"]
    _refused(capsys, [*argv, "--quiet"], "last.pt", tmp_path)


def test_register_keeps_earlier_output_whole(ws, tmp_path, capsys):
    out = tmp_path / "reg"
    argv = ["register", "--fixed", str(ws / "he.ome.tif"), "--moving", str(ws / "msi.imzML")]
    argv += ["--out", str(out), "--route", "direct", "--quiet"]
    out.mkdir()
    (out / "report.json").write_text("{}")  # earlier output: its manifest lists it
    (out / MANIFEST).write_text('{"files": ["report.json"]}')
    _refused(capsys, argv, "reg", tmp_path)
    # a failing run with --overwrite (bad landmarks) leaves the old folder as it was
    (ws / "bad.csv").write_text("index,axis-0,axis-1\n0,1,1\n1,1,1\n2,5,5\n")
    bad = [*argv, "--landmarks-fixed", str(ws / "bad.csv"), "--landmarks-moving"]
    _refused(capsys, [*bad, str(ws / "landmarks_msi.csv"), "--overwrite"], "bad.csv", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_never_deletes_files_the_tool_did_not_write(tmp_path, capsys):
    """--overwrite replaces a folder whole, so it may only hold this tool's earlier output: a
    user's notes dropped into it, or a folder of the user's own files, are refused and kept."""
    out = tmp_path / "ph"
    argv = ["phantom", str(out), "--seed", "4", "--quiet"]
    assert main(argv) == 0
    _refused(capsys, argv, "earlier output", tmp_path)  # ours, and no --overwrite
    (out / "my_notes.txt").write_text("mine")
    line = _refused(capsys, [*argv, "--overwrite"], "my_notes.txt", tmp_path)
    assert "did not write" in line
    (out / "my_notes.txt").unlink()
    (out / ".DS_Store").write_bytes(b"\0")  # a file browser's, not the user's
    assert main([*argv, "--overwrite"]) == 0
    own = tmp_path / "userdir"  # nothing of ours at all
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    (own / "sub").mkdir()
    (own / "sub" / "other_he.tif").write_bytes(b"II*\0")
    for extra in ([], ["--overwrite"]):
        line = _refused(capsys, ["phantom", str(own), "--quiet", *extra], "notes.txt", tmp_path)
        assert "sub/other_he.tif" in line and "earlier output" not in line
    empty = tmp_path / "emptydir"  # a folder of the user's, holding only an empty folder
    (empty / "keep_me").mkdir(parents=True)
    _refused(capsys, ["phantom", str(empty), "--quiet", "--overwrite"], "keep_me/", tmp_path)
    assert (empty / "keep_me").is_dir()
    # a manifest that does not list a file does not vouch for it
    (own / MANIFEST).write_text('{"files": ["notes.txt"]}')
    _refused(capsys, ["phantom", str(own), "--quiet", "--overwrite"], "other_he.tif", tmp_path)


def test_output_folder_holding_an_input(ws, capsys):
    _refused(capsys, ["phantom", str(ws), "--he", str(ws / "he.ome.tif"), "--overwrite"], "ws", ws)
    _refused(capsys, ["demo", str(ws), "--model", str(ws / "model.pt"), "--overwrite"], "ws", ws)


@pytest.mark.parametrize("name", ["../..", "/etc", "a/b", "..", ".hidden"])
def test_predict_msi_sample_names_cannot_escape(ws, tmp_path, capsys, name):
    pairs = _pairs(ws, tmp_path / "p" / "pairs.yaml", name=name)
    argv = ["predict-msi", "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--quiet"]
    _refused(capsys, argv, "pairs.yaml", tmp_path)
    assert not (tmp_path / "o").exists()


def test_pairs_yaml_aliases_and_binary(ws, tmp_path, capsys):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nsamples: [*c, *c, *c]\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    for f in ("bomb.yaml", "bin.yaml"):
        argv = ["train", "--pairs", str(tmp_path / f), "--out", str(tmp_path / "r"), "--quiet"]
        _refused(capsys, argv, f, tmp_path)


# ----------------------------------------------------------------------------- checkpoints
def _save_raw(d: dict, path: Path) -> Path:
    torch.save(d, path)
    return path


def test_hostile_checkpoints(ws, tmp_path, capsys):
    d = _ckpt_dict(ws / "model.pt")
    k = next(k for k, v in d["state_dict"].items() if v.is_floating_point())
    nan = {**d, "state_dict": {**d["state_dict"], k: d["state_dict"][k] * float("nan")}}
    cases = {
        "nan.pt": _save_raw(nan, ws / "nan.pt"),
        "wide.pt": _save_raw({**d, "arch": {**d["arch"], "ngf": 4096}}, ws / "wide.pt"),
        "deep.pt": _save_raw({**d, "arch": {**d["arch"], "depth": 400}}, ws / "deep.pt"),
        "misfit.pt": _save_raw({**d, "arch": {**d["arch"], "ngf": 16}}, ws / "misfit.pt"),
        "nocontract.pt": _save_raw({k: v for k, v in d.items() if k != "contract"}, ws / "nc.pt"),
    }
    cases["nocontract.pt"] = ws / "nc.pt"
    # a DEFLATE-compressed archive (torch never writes one): a compression bomb's shape
    with zipfile.ZipFile(ws / "model.pt") as src, zipfile.ZipFile(ws / "zip.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    cases["zip.pt"] = ws / "zip.pt"
    (ws / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    shutil.copy(ws / "he.ome.tif", ws / "tiff.pt")
    cases["random.pt"], cases["tiff.pt"] = ws / "random.pt", ws / "tiff.pt"
    for name, p in cases.items():
        argv = ["synthesize", str(ws / "msi.imzML"), "--model", str(p)]
        line = _refused(
            capsys, [*argv, "--out", str(tmp_path / "o.ome.tif"), "--quiet"], p.name, ws
        )
        if name in ("random.pt", "tiff.pt", "zip.pt"):
            assert "not a napari-msi2hist checkpoint" in line
        if name == "nan.pt":
            assert "NaN" in line
    # the budget: --max-memory bounds what a checkpoint may ask for
    argv = ["--max-memory", "64K", "synthesize", str(ws / "msi.imzML"), "--model"]
    line = _refused(
        capsys,
        [*argv, str(ws / "model.pt"), "--out", str(tmp_path / "o.ome.tif"), "--quiet"],
        "model.pt",
        ws,
    )
    assert "memory budget" in line


# ----------------------------------------------------------------------------- transforms
def test_hostile_transforms(ws, tmp_path, capsys):
    import SimpleITK as sitk

    from napari_msi2hist.registration.transforms import Transform

    good = np.array([[1.0, 0.1, 5.0], [-0.1, 1.0, 3.0], [0.0, 0.0, 1.0]])
    Transform.from_moving_to_fixed_matrix(good).save(ws / "t.json", ws / "t.h5")
    base = json.loads((ws / "t.json").read_text())
    files = {
        "nan.json": {"matrix_yx_um": [[float("nan"), 0, 0], [0, 1, 0], [0, 0, 1]]},
        "singular.json": {"matrix_yx_um": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]},
        "disagree.json": {**base, "matrix_yx_um": (good * [[2], [1], [1]]).tolist()},
        "escape.json": {**base, "itk_file": "../t.h5"},
        "absolute.json": {**base, "itk_file": str(ws / "t.h5")},
        "corrupt.json": {**base, "itk_file": "corrupt.h5"},
        "list.json": [1, 2, 3],
    }
    for name, d in files.items():
        (ws / name).write_text(json.dumps(d))
    raw = (ws / "t.h5").read_bytes()
    (ws / "corrupt.h5").write_bytes(raw[:200] + bytes(200) + raw[400 : len(raw) // 2])
    # 64 zero bytes here made SimpleITK 2.x's HDF5 reader segfault (found by mutation)
    (ws / "crash.h5").write_bytes(raw[:6204] + bytes(64) + raw[6268:])
    (ws / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (ws / "junk.tfm").write_text("#Insight Transform File V1.0\nTransform: Nonsense\n")
    names = [*files, "binary.json", "junk.tfm", "corrupt.h5", "crash.h5"]
    for name in names:
        argv = ["transform-points", "--transform", str(ws / name), "--points"]
        argv += [str(ws / "landmarks_msi.csv"), "--out", str(tmp_path / "o.csv"), "--quiet"]
        expect = "corrupt.h5" if name == "corrupt.json" else name
        _refused(capsys, argv, expect, ws)
    assert sitk.ReadTransform(str(ws / "t.h5")) is not None
    # consistent JSON + ITK file: the ITK file is used, and it maps the points
    argv = ["transform-points", "--transform", str(ws / "t.json"), "--points"]
    argv += [str(ws / "landmarks_msi.csv"), "--out", str(tmp_path / "ok.csv"), "--quiet"]
    assert main(argv) == 0


# ----------------------------------------------------------------------------- landmarks
@pytest.mark.parametrize(
    "rows, why",
    [
        ([(1, 1), (1, 1), (1, 1)], "same point"),
        ([(0, 0), (10, 10), (20, 20), (30, 30)], "one line"),
        ([(0, 0), (10, "nan"), (0, 20)], "NaN"),
        ([(0, 0), ("inf", 10), (0, 20)], "NaN or infinite"),
        ([(0, 0), (1e300, 10), (0, 20)], "beyond"),
    ],
)
def test_degenerate_landmarks(ws, tmp_path, capsys, rows, why):
    text = "index,axis-0,axis-1\n" + "".join(f"{i},{y},{x}\n" for i, (y, x) in enumerate(rows))
    (ws / "lm.csv").write_text(text)
    argv = ["register", "--fixed", str(ws / "he.ome.tif"), "--moving", str(ws / "msi.imzML")]
    argv += ["--out", str(tmp_path / "r"), "--route", "direct", "--landmarks-use", "fit"]
    argv += ["--landmarks-fixed", str(ws / "lm.csv"), "--landmarks-moving", str(ws / "lm.csv")]
    line = _refused(capsys, [*argv, "--quiet"], "lm.csv", ws)
    assert why in line
    assert not (tmp_path / "r").exists()


def test_every_command_declares_its_inputs_and_output():
    from napari_msi2hist.cli import build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        d = p.parse_known_args([])[0] if False else p._defaults
        assert "_inputs" in d and "_output_kind" in d, name
        if d["_output_kind"] != "none":
            assert any("--overwrite" in a.option_strings for a in p._actions), name


# ----------------------------------------------------------------------------- signals
def _train_argv(pairs: Path, out: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "napari_msi2hist.cli", "train", "--pairs", str(pairs),
        "--out", str(out), "--max-steps", str(steps), "--ngf", "4", "--depth", "4", "--ndf", "4",
        "--patch", "32", "--batch-size", "1", "--n-peaks", "4", "--checkpoint-every", "100000",
        "--val-every", "100000", "--device", "cpu", "--quiet",
    ]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_training_saves_a_resumable_checkpoint(ws, tmp_path, sig):
    from napari_msi2hist.models.checkpoint import load_checkpoint

    pairs = _pairs(ws, tmp_path / "pairs.yaml")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        _train_argv(pairs, out, 100000), env=env, stderr=subprocess.PIPE, text=True
    )
    log = out / "metrics.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    step = ck.training["steps"]
    assert step >= 3
    assert not list(out.rglob(".*.tmp"))
    # resume continues from the saved step; metrics hold every step exactly once
    r = subprocess.run(
        [*_train_argv(pairs, out, step + 2), "--resume"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "model.pt").training["steps"] == step + 2
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, step + 3))


def test_register_interrupted_while_writing_keeps_the_old_folder(ws, tmp_path, monkeypatch):
    import napari_msi2hist.io.histology as histology

    out = tmp_path / "reg"
    argv = ["register", "--fixed", str(ws / "he.ome.tif"), "--moving", str(ws / "msi.imzML")]
    argv += [
        "--out",
        str(out),
        "--route",
        "direct",
        "--rotation-search",
        "0",
        "--quiet",
        "--allow-failed",
    ]
    assert main(argv) == 0
    before = _tree(out)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(histology, "write_ome_tiff", interrupted)
    assert main([*argv, "--overwrite"]) == 130  # transform.json/.h5 were written, then Ctrl-C
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg", "ws"]  # no .reg.tmp-*/.old-*


def test_fine_tuned_run_records_the_architecture_it_built(ws, tmp_path):
    from napari_msi2hist.models.checkpoint import load_checkpoint

    pairs = _pairs(ws, tmp_path / "pairs.yaml")
    out = tmp_path / "ft"
    argv = ["train", "--pairs", str(pairs), "--out", str(out), "--base", "demo", "--max-steps"]
    argv += ["1", "--patch", "64", "--batch-size", "1", "--val-every", "100", "--quiet"]
    assert main(argv) == 0
    demo = load_checkpoint("demo").arch
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["ngf"], cfg["depth"]) == (demo["ngf"], demo["depth"]) != (64, 7)
    assert load_checkpoint(out / "model.pt").training["config"]["ngf"] == demo["ngf"]
    # and the run resumes with that architecture although the CLI defaults say ngf 64
    argv[argv.index("1")] = "2"
    argv.remove("--base")
    argv.remove("demo")
    assert main([*argv, "--resume"]) == 0
    assert load_checkpoint(out / "model.pt").arch == demo


def test_resume_after_kill_9_drops_logged_steps_past_the_checkpoint(ws, tmp_path):
    from napari_msi2hist.models.checkpoint import load_checkpoint

    pairs = _pairs(ws, tmp_path / "pairs.yaml")
    out = tmp_path / "run"
    argv = _train_argv(pairs, out, 100000)
    argv[argv.index("--checkpoint-every") + 1] = "2"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    log = out / "metrics.jsonl"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240 and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    step = load_checkpoint(out / "checkpoints" / "last.pt").training["steps"]
    (out / "checkpoints" / ".last.pt.orphan1.tmp").write_bytes(b"half a checkpoint")
    argv[argv.index("--max-steps") + 1] = str(step + 3)
    r = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, step + 4))
    assert not list(out.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- every file argument
def _bad_file(ws: Path, kind: str, suffix: str) -> Path:
    p = ws / f"bad_{kind}{suffix}"
    if kind == "random":
        p.write_bytes(np.random.default_rng(7).bytes(3000))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "folder":
        p.mkdir()
    elif kind == "truncated":  # the first third of a real file of that kind
        real = {".tif": "he.ome.tif", ".csv": "landmarks_msi.csv", ".json": "truth.json"}
        src = ws / real.get(suffix, "model.pt")
        p.write_bytes(src.read_bytes()[: max(1, src.stat().st_size // 3)])
    return p  # "missing": never created


def _good_args(ws: Path, tmp: Path) -> dict:
    pairs = _pairs(ws, tmp / "good_pairs.yaml")
    he, msi, lm_m, lm_h = (str(ws / n) for n in ("he.ome.tif", "msi.imzML", "landmarks_msi.csv", "landmarks_he.csv"))  # fmt: skip
    o = str(tmp / "out")
    return {
        "train": ["train", "--pairs", str(pairs), "--out", o, "--max-steps", "1", "--quiet"],
        "compare": ["compare", "--pairs", str(pairs), "--out", o, "--max-steps", "1", "--quiet"],
        "evaluate": ["evaluate", "--pred", he, "--truth", he],
        "register": ["register", "--fixed", he, "--moving", msi, "--out", o, "--route", "direct",
                     "--landmarks-fixed", lm_h, "--landmarks-moving", lm_m, "--quiet"],
        "transform-points": ["transform-points", "--transform", str(tmp / "t.json"), "--points",
                             lm_m, "--out", str(tmp / "o.csv"), "--quiet"],
        "predict-msi": ["predict-msi", "--pairs", str(pairs), "--out", o, "--quiet"],
        "superres": ["superres", "--imzml", msi, "--he", he, "--out", o, "--quiet"],
        "phantom": ["phantom", o, "--he", he, "--quiet"],
        "demo": ["demo", o, "--model", "demo", "--quiet"],
    }  # fmt: skip


FILE_ARGS = [
    ("train", "--pairs", ".yaml"),
    ("train", "--base", ".pt"),
    ("compare", "--pairs", ".yaml"),
    ("evaluate", "--pred", ".tif"),
    ("evaluate", "--truth", ".tif"),
    ("evaluate", "--mask", ".tif"),
    ("evaluate", "--features", ".pth"),
    ("register", "--fixed", ".tif"),
    ("register", "--moving", ".tif"),
    ("register", "--landmarks-fixed", ".csv"),
    ("register", "--landmarks-moving", ".csv"),
    ("transform-points", "--transform", ".json"),
    ("transform-points", "--transform", ".h5"),
    ("transform-points", "--points", ".csv"),
    ("predict-msi", "--pairs", ".yaml"),
    ("predict-msi", "--apply-he", ".tif"),
    ("superres", "--he", ".tif"),
    ("superres", "--transform", ".json"),
    ("superres", "--model", ".pt"),
    ("phantom", "--he", ".tif"),
    ("demo", "--model", ".pt"),
]


@pytest.mark.parametrize("kind", ["random", "empty", "folder", "missing", "truncated"])
@pytest.mark.parametrize("cmd, opt, suffix", FILE_ARGS, ids=[f"{c}{o}{s}" for c, o, s in FILE_ARGS])
def test_every_file_argument_fails_cleanly(ws, tmp_path, capsys, cmd, opt, suffix, kind):
    from napari_msi2hist.registration.transforms import Transform

    if (cmd, opt, kind) == ("transform-points", "--points", "truncated"):
        pytest.skip("a points CSV cut after a whole line is a valid, shorter CSV")
    Transform.from_moving_to_fixed_matrix(np.eye(3)).save(tmp_path / "t.json", tmp_path / "t.h5")
    bad = _bad_file(ws, kind, suffix)
    argv = list(_good_args(ws, tmp_path)[cmd])
    if opt in argv:
        argv[argv.index(opt) + 1] = str(bad)
    else:
        argv += [opt, str(bad)]
    _refused(capsys, argv, bad.name, ws)


@pytest.mark.parametrize("field", ["imzml", "he", "truth", "transform", "landmarks", "label"])
@pytest.mark.parametrize("cmd", ["train", "classify"])
def test_pairs_naming_bad_files(ws, tmp_path, capsys, field, cmd):
    if (cmd, field) == ("train", "label"):
        pytest.skip("train does not read labels")
    bad = _bad_file(
        ws, "random", {"imzml": ".imzML", "he": ".tif", "label": ".tif"}.get(field, ".json")
    )
    extra: dict = {"label": str(ws / "he.ome.tif")} if cmd == "classify" else {}
    if field in ("imzml", "he", "label"):
        extra[field] = str(bad)
    elif field == "landmarks":
        bad = _bad_file(ws, "random", ".csv")
        extra["align"] = {"landmarks_msi": str(bad), "landmarks_he": str(ws / "landmarks_he.csv")}
    else:
        extra["align"] = {field: str(bad)}
    pairs = _pairs(ws, tmp_path / "pairs.yaml", extra=extra)
    if cmd == "classify":  # every sample needs a label
        d = yaml.safe_load(pairs.read_text())
        d["samples"][1]["label"] = str(ws / "he.ome.tif")
        pairs.write_text(yaml.safe_dump(d))
    argv = [cmd, "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--quiet"]
    if cmd == "train":
        argv += ["--max-steps", "1", "--n-peaks", "4"]
    else:
        argv += ["--n-peaks", "4"]
    _refused(capsys, argv, bad.name, ws)


def test_classify_names_binary(ws, tmp_path, capsys):
    pairs = _pairs(ws, tmp_path / "pairs.yaml", extra={"label": str(ws / "he.ome.tif")})
    d = yaml.safe_load(pairs.read_text())
    d["samples"][1]["label"] = str(ws / "he.ome.tif")
    pairs.write_text(yaml.safe_dump(d))
    bad = _bad_file(ws, "random", ".csv")
    argv = ["classify", "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--names", str(bad)]
    _refused(capsys, [*argv, "--n-peaks", "4", "--quiet"], bad.name, ws)


@pytest.mark.parametrize("px", [1e-6, 1e6])
def test_register_absurd_pixel_sizes_stay_within_the_budget(ws, tmp_path, capsys, px):
    from napari_msi2hist.io.histology import read_histology, write_ome_tiff

    he = np.asarray(read_histology(ws / "he.ome.tif").levels[0])
    write_ome_tiff(ws / "odd.ome.tif", he, (px, px))
    argv = ["--max-memory", "2G", "register", "--fixed", str(ws / "odd.ome.tif"), "--moving"]
    argv += [str(ws / "msi.imzML"), "--out", str(tmp_path / "r"), "--route", "direct", "--quiet"]
    line = _refused(capsys, argv, ["odd.ome.tif", "msi.imzML"], ws)
    assert "memory budget" in line


# ----------------------------------------------------------------------------- the mechanism itself
def test_output_plan_folder_is_all_or_nothing(tmp_path):
    from napari_msi2hist._files import OutputPlan, OutputRefused

    src = tmp_path / "in.txt"
    src.write_text("input")
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(RuntimeError), OutputPlan([src]).folder(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("fails half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no out, no parents, no tmp
    with OutputPlan([src]).folder(out) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(OutputRefused, match="earlier output"), OutputPlan([src]).folder(out):
        pass
    with pytest.raises(KeyboardInterrupt), OutputPlan([src], overwrite=True).folder(out) as tmp:
        (tmp / "b.txt").write_text("two")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "a.txt"]
    with OutputPlan([src], overwrite=True).folder(out) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "b.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    # a hard link to an input inside the output folder: replacing the folder is refused
    os.link(src, out / "link.txt")
    with pytest.raises(OutputRefused, match="in.txt"):
        OutputPlan([src], overwrite=True).check_folder(out)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from napari_msi2hist._files import OutputPlan

    stale = tmp_path / ".o.ome.tif.tmp-99999999-abcd"
    stale.mkdir()
    (stale / "o.ome.tif").write_text("half")
    with OutputPlan().file(tmp_path / "o.ome.tif") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.tif"]


def test_a_truncated_tiff_is_one_line_and_a_given_pixel_size_silences_the_warning(tmp_path, capsys):
    """A cut TIFF as --fixed: one stderr line naming it (tifffile's own log lines used to come
    first), exit 1. A readable TIFF without a pixel size, with --fixed-pixel-um given: no
    'no pixel size in the file' warning (it used to print although the size was given)."""
    import tifffile

    rng = np.random.default_rng(0)
    good = tmp_path / "he.tif"
    tifffile.imwrite(good, rng.integers(0, 255, (300, 280, 3), dtype=np.uint8))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:20000])
    mov = tmp_path / "maldi.tif"
    tifffile.imwrite(mov, rng.integers(0, 255, (40, 36), dtype=np.uint8))
    common = ["--moving", str(mov), "--route", "direct", "--moving-pixel-um", "20"]
    rc = main(["register", "--fixed", str(cut), *common, "--fixed-pixel-um", "2",
               "--out", str(tmp_path / "o1")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "cut.tif" in err[0], err
    assert not (tmp_path / "o1").exists()
    main(["register", "--fixed", str(good), *common, "--fixed-pixel-um", "2", "--rotation-search",
          "0", "--stages", "rigid", "--allow-failed", "--out", str(tmp_path / "o2"), "--quiet"])  # fmt: skip
    out = capsys.readouterr()
    assert "no pixel size in the file" not in out.err + out.out
