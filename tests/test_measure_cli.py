"""Measure.py end to end on real LOL-v1 pairs, checked against scikit-image, plus its file-matching errors."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

import Measure

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 3


def _rgb(path):
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.fixture()
def pairs(shared_dir, tmp_path):
    """gt/ (normal) and pred/ (low) folders with the first N_PAIRS shared pairs; returns (gt_dir, pred_dir, names)."""
    src = shared_dir / "data" / "LOL-v1-mini" / "our485"
    names = sorted(p.name for p in (src / "high").glob("*.png"))[:N_PAIRS]
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for n in names:
        shutil.copy(src / "high" / n, gt / n)
        shutil.copy(src / "low" / n, pred / n)
    return gt, pred, names


def _run(args, env_extra=None):
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, str(ROOT / "Measure.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=str(ROOT))


@pytest.mark.slow
def test_measure_end_to_end_matches_skimage(pairs, shared_dir, tmp_path):
    gt, pred, names = pairs
    out_csv, out_json = tmp_path / "m.csv", tmp_path / "m.json"
    backbone = shared_dir / "weights" / "alexnet_features.pth"
    p = _run(["--gt", str(gt), "--pred", str(pred), "--csv", str(out_csv), "--json", str(out_json),
              "--lpips-backbone", str(backbone), "--no-progress"])
    assert p.returncode == 0, p.stderr

    ps = {n: sk_psnr(_rgb(gt / n), _rgb(pred / n)) for n in names}
    ss = {n: sk_ssim(_rgb(pred / n), _rgb(gt / n), channel_axis=2, data_range=255) for n in names}
    res = json.loads(out_json.read_text())
    assert res["count"] == N_PAIRS
    assert res["psnr"] == pytest.approx(np.mean(list(ps.values())), abs=1e-9)
    assert res["ssim"] == pytest.approx(np.mean(list(ss.values())), abs=1e-9)
    assert 0.2 < res["lpips"] < 0.9
    assert res["protocol"]["ssim"] == "skimage_rgb" and res["protocol"]["gt_mean"] == "none"
    assert res["protocol"]["description"].startswith("PSNR uint8 RGB")

    lines = out_csv.read_text().splitlines()
    assert lines[0].startswith("# protocol: PSNR uint8 RGB") and "SSIM skimage_rgb" in lines[0]
    rows = list(csv.DictReader(lines[1:]))
    assert sorted(r["name"] for r in rows) == sorted(names)
    for r in rows:
        assert float(r["psnr"]) == pytest.approx(ps[r["name"]], abs=1e-9)
        assert float(r["ssim"]) == pytest.approx(ss[r["name"]], abs=1e-9)
        assert 0.0 < float(r["lpips"]) < 1.0
    # the printed means carry the protocol
    assert "PSNR" in p.stdout and "SSIM skimage_rgb" in p.stdout and f"{res['psnr']:.3f}" in p.stdout


def test_measure_other_protocol_flags(pairs, tmp_path, capsys):
    gt, pred, names = pairs
    out_json = tmp_path / "g.json"
    rc = Measure.main(["--gt", str(gt), "--pred", str(pred), "--ssim", "gray", "--json", str(out_json),
                       "--no-progress"])
    assert rc == 0
    res = json.loads(out_json.read_text())
    gray = lambda x: cv2.cvtColor(_rgb(x), cv2.COLOR_RGB2GRAY)  # noqa: E731
    want = np.mean([sk_ssim(gray(pred / n), gray(gt / n), data_range=255) for n in names])
    assert res["ssim"] == pytest.approx(want, abs=1e-9)
    assert res["lpips"] is None and res["lpips_unavailable_reason"]
    assert "SSIM gray" in capsys.readouterr().out


@pytest.mark.slow
def test_measure_missing_prediction_is_an_error(pairs):
    gt, pred, names = pairs
    (pred / names[1]).unlink()
    p = _run(["--gt", str(gt), "--pred", str(pred), "--no-progress"])
    assert p.returncode == 2
    assert names[1] in p.stderr and "without a prediction" in p.stderr


def test_measure_extra_prediction_is_a_warning(pairs, tmp_path, capsys):
    gt, pred, names = pairs
    shutil.copy(pred / names[0], pred / "extra_999.png")
    out_json = tmp_path / "e.json"
    rc = Measure.main(["--gt", str(gt), "--pred", str(pred), "--json", str(out_json), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" in err and "extra_999.png" in err
    res = json.loads(out_json.read_text())
    assert res["count"] == N_PAIRS and res["ignored_predictions"] == ["extra_999.png"]


def test_measure_matches_by_stem_not_by_order(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    imgs = {n: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for n in ("a", "b")}
    for n, im in imgs.items():
        cv2.imwrite(str(gt / f"{n}.png"), im[:, :, ::-1])
    # predictions identical to their references; "b" is named so that it sorts first by name
    cv2.imwrite(str(pred / "a.png"), imgs["a"][:, :, ::-1])
    cv2.imwrite(str(pred / "b.bmp"), imgs["b"][:, :, ::-1])
    out_json = tmp_path / "s.json"
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--json", str(out_json), "--no-progress"]) == 0
    res = json.loads(out_json.read_text())
    assert res["psnr"] == "inf" and res["ssim"] == pytest.approx(1.0)  # JSON has no inf: written as a string


def test_measure_size_mismatch_names_both_files(pairs, capsys):
    gt, pred, names = pairs
    small = _rgb(pred / names[0])[:200, :300]
    cv2.imwrite(str(pred / names[0]), small[:, :, ::-1])
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "size mismatch" in err and str(gt / names[0]) in err and str(pred / names[0]) in err


def test_measure_16bit_image_is_an_error(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    cv2.imwrite(str(gt / "x.png"), np.full((16, 16, 3), 100, np.uint8))
    cv2.imwrite(str(pred / "x.png"), np.full((16, 16, 3), 25600, np.uint16))
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "16-bit" in err and str(pred / "x.png") in err and len(err.strip().splitlines()) == 1


def test_measure_lpips_unavailable_still_measures(pairs, tmp_path, monkeypatch, capsys):
    gt, pred, names = pairs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("LPIPS_ALEXNET", raising=False)
    out_json = tmp_path / "l.json"
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--lpips", "--json", str(out_json),
                         "--no-progress"]) == 0
    res = json.loads(out_json.read_text())
    assert res["lpips"] is None and "no AlexNet backbone" in res["lpips_unavailable_reason"]
    assert res["psnr"] == pytest.approx(np.mean([sk_psnr(_rgb(gt / n), _rgb(pred / n)) for n in names]), abs=1e-9)
    cap = capsys.readouterr()
    assert "LPIPS unavailable" in cap.out and "LPIPS unavailable" in cap.err


# ------------------------------------------------------------------------------------------ --crop-border
def test_crop_border_matches_skimage_on_shaved_images(pairs, tmp_path):
    gt, pred, names = pairs
    out_csv, out_json = tmp_path / "c.csv", tmp_path / "c.json"
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--crop-border", "10", "--csv", str(out_csv),
                         "--json", str(out_json), "--no-progress"]) == 0
    shave = lambda x: x[10:-10, 10:-10]  # noqa: E731
    ps = {n: sk_psnr(shave(_rgb(gt / n)), shave(_rgb(pred / n))) for n in names}
    ss = {n: sk_ssim(shave(_rgb(pred / n)), shave(_rgb(gt / n)), channel_axis=2, data_range=255) for n in names}
    res = json.loads(out_json.read_text())
    assert res["protocol"]["crop_border"] == 10
    assert "crop border 10 px per side" in res["protocol"]["description"]
    assert res["psnr"] == pytest.approx(np.mean(list(ps.values())), abs=1e-9)
    assert res["ssim"] == pytest.approx(np.mean(list(ss.values())), abs=1e-9)
    lines = out_csv.read_text().splitlines()
    assert "crop border 10 px per side" in lines[0]
    for r in csv.DictReader(lines[1:]):
        assert float(r["psnr"]) == pytest.approx(ps[r["name"]], abs=1e-9)
        assert float(r["ssim"]) == pytest.approx(ss[r["name"]], abs=1e-9)
    # the whole-image numbers differ (so the flag did something), and the default protocol says nothing of a crop
    full = {n: sk_psnr(_rgb(gt / n), _rgb(pred / n)) for n in names}
    assert all(abs(full[n] - ps[n]) > 1e-6 for n in names)
    out2 = tmp_path / "d.json"
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--json", str(out2), "--no-progress"]) == 0
    d = json.loads(out2.read_text())["protocol"]
    assert d["crop_border"] == 0 and "crop" not in d["description"]


def test_crop_border_too_large_is_one_line_error(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for d in (gt, pred):
        d.mkdir()
        cv2.imwrite(str(d / "x.png"), np.full((20, 30, 3), 100, np.uint8))
    assert Measure.main(["--gt", str(gt), "--pred", str(pred), "--crop-border", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crop border 10" in err and "x.png" in err


# ------------------------------------------------------------------------------------------ --no-ref niqe
def test_no_reference_niqe_without_gt(tmp_path, capsys):
    import skimage.data
    from tests.test_niqe import BASICSR_VALUES
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in BASICSR_VALUES:
        cv2.imwrite(str(pred / f"{name}.png"), getattr(skimage.data, name)()[:, :, ::-1])
    out_csv, out_json = tmp_path / "n.csv", tmp_path / "n.json"
    assert Measure.main(["--pred", str(pred), "--no-ref", "niqe", "--csv", str(out_csv), "--json", str(out_json),
                         "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    assert res["count"] == 2 and res["gt_dir"] is None and "psnr" not in res
    assert res["niqe"] == pytest.approx(np.mean(list(BASICSR_VALUES.values())), abs=1e-3)
    assert res["protocol"]["description"].startswith("no reference; NIQE")
    lines = out_csv.read_text().splitlines()
    assert lines[1] == "name,niqe"
    got = {r["name"]: float(r["niqe"]) for r in csv.DictReader(lines[1:])}
    assert got == pytest.approx({f"{k}.png": v for k, v in BASICSR_VALUES.items()}, abs=1e-3)
    assert "NIQE" in stdout and "PSNR" not in stdout


def test_no_gt_without_no_ref_is_an_error(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    assert Measure.main(["--pred", str(tmp_path / "p"), "--no-progress"]) == 2
    assert "--gt is required" in capsys.readouterr().err


def test_niqe_undefined_for_a_flat_image_is_said_by_name_and_the_mean_counts(tmp_path, capsys, caplog, monkeypatch):
    """NIQE of a black image is NaN: it is 'undefined' for that image (CSV, JSON, a warning), never a silent NaN,
    and the mean says it was taken over the other images only."""
    import skimage.data
    from tests.test_niqe import BASICSR_VALUES
    pred = tmp_path / "pred"
    pred.mkdir()
    name = next(iter(BASICSR_VALUES))
    img = getattr(skimage.data, name)()[:, :, ::-1]
    cv2.imwrite(str(pred / f"{name}.png"), img)
    cv2.imwrite(str(pred / "black.png"), np.zeros_like(img))
    out_csv, out_json = tmp_path / "n.csv", tmp_path / "n.json"
    # CLIs run in-process earlier may have set up the project logger without propagation: let caplog see it.
    monkeypatch.setattr(logging.getLogger("lowlight_flow"), "propagate", True)
    # CLIs run in-process earlier may have set up the project logger without propagation: let caplog see it.
    monkeypatch.setattr(logging.getLogger("lowlight_flow"), "propagate", True)
    assert Measure.main(["--pred", str(pred), "--no-ref", "niqe", "--csv", str(out_csv), "--json", str(out_json),
                         "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert any("NIQE is undefined for black.png" in r.getMessage() for r in caplog.records)
    assert "RuntimeWarning" not in cap.err
    assert "over 1 of 2 images; undefined for black.png" in cap.out
    res = json.loads(out_json.read_text())
    assert res["count"] == 2 and res["counts"]["niqe"] == 1 and res["undefined"] == {"niqe": ["black.png"]}
    assert res["niqe"] == pytest.approx(BASICSR_VALUES[name], abs=1e-3)
    assert {r["name"]: r["niqe"] for r in res["per_image"]}["black.png"] is None
    rows = {r["name"]: r["niqe"] for r in csv.DictReader(out_csv.read_text().splitlines()[1:])}
    assert rows["black.png"] == "undefined" and float(rows[f"{name}.png"]) == pytest.approx(BASICSR_VALUES[name],
                                                                                             abs=1e-3)
