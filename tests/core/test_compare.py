"""The pix2pix-vs-baseline comparison and the peak-count ablation (``msi2hist compare``)."""

import json

import pytest
import yaml

from napari_msi2hist.cli import main
from napari_msi2hist.models.checkpoint import load_checkpoint


@pytest.fixture
def pairs_with_test(tmp_path, phantom_entries):
    splits = {"p21": "train", "p22": "val", "p23": "test"}
    samples = [
        {
            "name": e["name"],
            "imzml": e["imzml"],
            "he": e["he"],
            "align": e["align"],
            "split": splits[e["name"]],
        }
        for e in phantom_entries
    ]
    p = tmp_path / "pairs.yaml"
    p.write_text(yaml.safe_dump({"samples": samples}))
    return p


def _args(pairs, out):
    return [
        "compare",
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--peaks",
        "4,8",
        "--max-steps",
        "3",
        "--ngf",
        "4",
        "--depth",
        "4",
        "--ndf",
        "4",
        "--patch",
        "32",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "3",
        "--val-every",
        "3",
        "--json",
        "--quiet",
    ]


def test_compare_table_ablation_and_resume(tmp_path, pairs_with_test, capsys):
    out = tmp_path / "cmp"
    assert main(_args(pairs_with_test, out)) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["n_peaks"] for r in table] == [4, 8]
    for r in table:
        assert r["delta_mi"] == pytest.approx(r["pix2pix_mi"] - r["unet_mi"])
        assert r["delta_ssim"] == pytest.approx(r["pix2pix_ssim"] - r["unet_ssim"])
    res = json.loads((out / "compare.json").read_text())
    assert res["held_out"] == "test"
    for n in (4, 8):
        for model in ("pix2pix", "unet"):
            run = res["runs"][f"{n}:{model}"]
            # evaluated only on the held-out sample, with all four metrics
            assert set(run["test"]) == {"p23", "mean"}
            assert set(run["test"]["p23"]) == {"mi", "nmi", "ssim", "psnr"}
            assert run["test"]["mean"]["mi"] == pytest.approx(run["test"]["p23"]["mi"])
            ck = load_checkpoint(out / f"p{n}-{model}" / "model.pt")
            assert ck.contract.n_channels == n  # the ablation really changes the input
            assert ck.training["data"]["train"] == ["p21"]
            assert ck.training["data"]["val"] == ["p22"]  # the test sample never trains
    csv_lines = (out / "compare.csv").read_text().splitlines()
    assert csv_lines[0].startswith("n_peaks,") and len(csv_lines) == 3

    # a second call over the same folder resumes: nothing is retrained, the figures are the same
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("p*/model.pt")}
    assert main(_args(pairs_with_test, out)) == 0
    assert json.loads(capsys.readouterr().out) == table
    assert {p: p.stat().st_mtime_ns for p in out.glob("p*/model.pt")} == stamps


def test_compare_needs_held_out_samples(tmp_path, phantom_entries, capsys):
    p = tmp_path / "pairs.yaml"
    samples = [{"imzml": e["imzml"], "he": e["he"], "split": "train"} for e in phantom_entries]
    p.write_text(yaml.safe_dump({"samples": samples}))
    assert main(["compare", "--pairs", str(p), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "split: test" in capsys.readouterr().err
    p.write_text(yaml.safe_dump({"samples": [{**samples[0], "split": "holdout"}]}))
    assert main(["compare", "--pairs", str(p), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert str(p) in err and "use train, val or test" in err
