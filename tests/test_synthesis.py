"""Low-light synthesis: the physics model's statistics against its configuration, the fitting script, the
``Synthetic`` dataset (reproducibility, workers, mixing) and the ``python tools/synthesize.py`` CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import data  # noqa: F401  (registers the datasets)
from data.image_io import read_rgb, write_rgb
from data.loader import create_dataset
from data.synthesis import fit_physics
from data.synthesis.physics import PhysicsConfig, PhysicsParams, load_physics_config, synthesize
from tools import fit_physics as fit_physics_cli
from tools.synthesize import main as synth_main
from utils.cli import run_cli
from utils.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


def srgb_decode(u8: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve written out here (IEC 61966-2-1), independent of data/synthesis/srgb.py."""
    x = u8.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def srgb_code(lin: float) -> int:
    """The 8-bit sRGB code nearest to a linear value."""
    v = 12.92 * lin if lin <= 0.0031308 else 1.055 * lin ** (1 / 2.4) - 0.055
    return int(round(v * 255))


def cfg(exposure=(0.05, 0.05), shot=(0.0, 0.0), read=(0.0, 0.0), **gains) -> PhysicsConfig:
    d = {"exposure": list(exposure), "shot_noise": list(shot), "read_noise": list(read)}
    if gains:
        d["colour_gain"] = {k: list(v) for k, v in gains.items()}
    return PhysicsConfig.from_dict(d)


def natural_like(h=96, w=128, seed=0) -> np.ndarray:
    """Smooth colour gradients plus texture: every 8-bit value occurs in every channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, (xx + yy) / 2], axis=2) * 255
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ physics model

def test_mean_brightness_scales_with_exposure_and_colour_gain():
    normal = np.full((128, 128, 3), 200, np.uint8)
    x = srgb_decode(np.uint8(200))
    for e in (0.01, 0.05, 0.2):
        c = cfg((e, e), shot=(1e-3, 1e-3), read=(1e-3, 1e-3), r=(1.3, 1.3), b=(0.7, 0.7))
        rng = np.random.default_rng(1)
        low = synthesize(normal, c.sample(rng), rng)
        means = srgb_decode(low).mean(axis=(0, 1))
        np.testing.assert_allclose(means, e * x * np.array([1.3, 1.0, 0.7]), rtol=0.02)
    # Without noise the output is exactly the 8-bit code of exposure * value.
    low = synthesize(normal, cfg((0.05, 0.05)).sample(np.random.default_rng(0)), np.random.default_rng(0))
    assert np.all(low == srgb_code(0.05 * x))


def test_variance_against_intensity_follows_shot_and_read_noise():
    shot, read = 1e-3, 4e-3
    levels = np.linspace(110, 255, 12).astype(np.uint8)  # linear 0.16 .. 1 -> signal 0.03 .. 0.2
    normal = np.repeat(np.repeat(levels[None, :, None], 96, axis=0), 64, axis=1)
    normal = np.repeat(normal, 3, axis=2)
    c = cfg((0.2, 0.2), shot=(shot, shot), read=(read, read))
    rng = np.random.default_rng(7)
    lin = srgb_decode(synthesize(normal, c.sample(rng), rng))
    means, variances = [], []
    for i in range(len(levels)):
        patch = lin[:, i * 64:(i + 1) * 64]
        means.append(patch.mean())
        variances.append(patch.var())
    slope, intercept = np.polyfit(means, variances, 1)
    assert slope == pytest.approx(shot, rel=0.06)
    assert np.sqrt(intercept) == pytest.approx(read, rel=0.08)


def test_same_seed_same_image_other_seed_differs():
    c = load_physics_config(ROOT / "confs" / "synthesis" / "physics_LOL.yml")
    img = natural_like()

    def make(seed):
        rng = np.random.default_rng(seed)
        return synthesize(img, c.sample(rng), rng)
    assert np.array_equal(make(3), make(3))
    assert not np.array_equal(make(3), make(4))
    # Parameters are drawn log-uniformly inside the configured ranges.
    draws = [c.sample(np.random.default_rng(s)) for s in range(200)]
    ex = np.array([d.exposure for d in draws])
    assert c.exposure[0] <= ex.min() and ex.max() <= c.exposure[1]
    mid = np.sqrt(c.exposure[0] * c.exposure[1])  # log-uniform: half the draws below the geometric mean
    assert 0.4 < np.mean(ex < mid) < 0.6


@pytest.mark.parametrize("conf", sorted((ROOT / "confs" / "synthesis").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_synthesis_configs_load(conf):
    c = load_physics_config(conf)
    assert 0 < c.exposure[0] <= c.exposure[1] < 1
    assert "python tools/fit_physics.py" in conf.read_text()  # says how it was made


def test_config_is_validated_strictly(tmp_path):
    good = {"exposure": [0.01, 0.1], "shot_noise": [1e-4, 1e-3], "read_noise": [0, 0]}
    PhysicsConfig.from_dict(good)
    bad = [({**good, "exposur": [0.1, 0.2]}, "exposur"),
           ({**good, "colour_gain": {"x": [1, 1]}}, "colour_gain.x"),
           ({**good, "exposure": [0.2, 0.1]}, "exposure"),
           ({**good, "exposure": [0.0, 0.1]}, "exposure"),
           ({**good, "read_noise": [0, 0.01]}, "read_noise"),  # log-uniform needs lo > 0
           ({**good, "shot_noise": [1e-4, 5.0]}, "shot_noise"),
           ({k: v for k, v in good.items() if k != "read_noise"}, "read_noise")]
    for d, key in bad:
        with pytest.raises(OptionError, match=key):
            PhysicsConfig.from_dict(d)
    f = tmp_path / "s.yml"
    f.write_text(yaml.safe_dump({**good, "bogus": 1}))
    with pytest.raises(OptionError, match=r"s\.yml.*bogus"):
        load_physics_config(f)


# ------------------------------------------------------------------------------------------------ fitting

@pytest.mark.parametrize("p", [PhysicsParams(0.05, 1e-3, 2e-3, 1.2, 1.0, 0.8),
                               PhysicsParams(0.015, 2e-4, 5e-4, 0.9, 1.0, 1.1)])
def test_fit_recovers_known_parameters(p):
    high = natural_like(192, 256, seed=2)
    rng = np.random.default_rng(5)
    f = fit_physics.fit_pair("x", synthesize(high, p, rng), high)
    assert f.exposure == pytest.approx(p.exposure, rel=0.01)
    assert (f.gain_r, f.gain_b) == pytest.approx((p.gain_r, p.gain_b), rel=0.01)
    assert f.shot_noise == pytest.approx(p.shot_noise, rel=0.1)
    assert f.read_noise == pytest.approx(p.read_noise, rel=0.15)


def test_fit_script_writes_a_loadable_config_spanning_the_pairs(tmp_path):
    exposures = [0.02, 0.04, 0.08]
    for i, e in enumerate(exposures):
        high = natural_like(96, 128, seed=10 + i)
        rng = np.random.default_rng(i)
        write_rgb(tmp_path / "high" / f"{i}.png", high)
        write_rgb(tmp_path / "low" / f"{i}.png", synthesize(high, PhysicsParams(e, 5e-4, 1e-3), rng))
    write_rgb(tmp_path / "high" / "9.png", natural_like(96, 128))  # beyond --first: must not be used
    write_rgb(tmp_path / "low" / "9.png", np.zeros((96, 128, 3), np.uint8))
    out = tmp_path / "fit.yml"
    argv = ["--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--first", "3",
            "--quantiles", "0", "1", "--out", str(out)]
    fit_physics_cli.main(argv)
    c = load_physics_config(out)
    assert c.exposure[0] == pytest.approx(0.02, rel=0.02) and c.exposure[1] == pytest.approx(0.08, rel=0.02)
    assert c.shot_noise[0] <= 5e-4 * 1.15 and c.shot_noise[1] >= 5e-4 * 0.85
    assert "python tools/fit_physics.py --low" in out.read_text().splitlines()[1]


# ------------------------------------------------------------------------------------------------ dataset

PHYS = {"exposure": [0.02, 0.1], "shot_noise": [1e-4, 1e-3], "read_noise": [1e-4, 1e-3],
        "colour_gain": {"r": [0.9, 1.1], "b": [0.9, 1.1]}}


def _normals(folder, n=3, h=24, w=32):
    for i in range(n):
        write_rgb(folder / f"n{i}.png", natural_like(h, w, seed=i))
    return folder


def test_synthetic_items_shapes_ranges_and_epoch_reproducibility(tmp_path):
    opt = {"dataset": "Synthetic", "dataroot_GT": str(_normals(tmp_path / "normal")), "synthesis": PHYS,
           "use_crop": True, "GT_size": 16, "use_flip": True, "concat_histeq": True}
    ds = create_dataset(opt, "train")
    assert len(ds) == 3
    ds.set_epoch(11)
    a = [ds[i] for i in range(3)]
    for it in a:
        assert it["LQ"].shape == (6, 16, 16) and it["GT"].shape == (3, 16, 16)
        assert 0 <= float(it["LQ"].min()) and float(it["LQ"].max()) <= 1 and it["LQ_path"] == ""
        assert float(it["LQ"][:3].mean()) < 0.5 * float(it["GT"].mean())  # darker than its normal image
    b = [ds[i] for i in (2, 0, 1)]  # any order: draws depend on (epoch seed, index) only
    assert all(torch.equal(a[i]["LQ"], b[j]["LQ"]) for i, j in ((2, 0), (0, 1), (1, 2)))
    ds.set_epoch(12)
    assert not torch.equal(a[0]["LQ"], ds[0]["LQ"])  # a new draw next epoch
    # Validation: no augmentation, the same low image every time, fixed by `seed`.
    val = create_dataset({**opt, "seed": 3}, "val")
    assert torch.equal(val[1]["LQ"], val[1]["LQ"]) and val[1]["GT"].shape == (3, 24, 32)
    assert not torch.equal(val[1]["LQ"], create_dataset({**opt, "seed": 4}, "val")[1]["LQ"])


def test_synthetic_same_items_with_and_without_workers(tmp_path):
    opt = {"dataset": "Synthetic", "dataroot_GT": str(_normals(tmp_path / "normal", n=4)), "synthesis": PHYS,
           "use_crop": True, "GT_size": 16, "use_rot": True}
    ds = create_dataset(opt, "train")
    ds.set_epoch(5)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers)
        batches[workers] = torch.cat([b["LQ"] for b in loader])
    assert torch.equal(batches[0], batches[2])


def test_mixing_ratio_is_honoured_and_deterministic(tmp_path):
    normal = _normals(tmp_path / "normal", n=4, h=8, w=8)
    for i in range(4):
        write_rgb(tmp_path / "real_low" / f"r{i}.png", natural_like(8, 8, seed=50 + i) // 8)
        write_rgb(tmp_path / "real_high" / f"r{i}.png", natural_like(8, 8, seed=50 + i))
    real = {"dataset": "PairedFolder", "dataroot_LQ": str(tmp_path / "real_low"),
            "dataroot_GT": str(tmp_path / "real_high")}
    ds = create_dataset({"dataset": "Synthetic", "dataroot_GT": str(normal), "synthesis": PHYS, "real": real,
                         "synthetic_ratio": 0.3}, "train")

    def sources(epoch):
        ds.set_epoch(epoch)
        return [ds[i]["LQ_path"] == "" for i in range(len(ds))]
    made = [s for e in range(500) for s in sources(e)]
    assert abs(np.mean(made) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(made))
    assert sources(17) == sources(17)
    ds.set_epoch(1)
    it = next(ds[i] for i in range(4) if ds[i]["LQ_path"] != "")
    assert Path(it["LQ_path"]).parent.name == "real_low" and Path(it["GT_path"]).parent.name == "real_high"


def test_synthetic_from_a_made_folder_pairs_by_stem_and_options_are_checked(tmp_path):
    normal = _normals(tmp_path / "normal", n=2)
    for i in (1, 0):
        write_rgb(tmp_path / "made" / f"n{i}.png", natural_like(24, 32, seed=i) // 10)
    base = {"dataset": "Synthetic", "dataroot_GT": str(normal)}
    ds = create_dataset({**base, "dataroot_LQ": str(tmp_path / "made")}, "val")
    it = ds[1]
    assert it["LQ_path"].endswith("made/n1.png") and it["GT_path"].endswith("normal/n1.png")
    assert torch.equal(it["LQ"], torch.from_numpy(natural_like(24, 32, seed=1) // 10).permute(2, 0, 1) / 255)
    errors = [({**base}, "synthesis"),
              ({**base, "synthesis": PHYS, "dataroot_LQ": str(tmp_path / "made")}, "exactly one"),
              ({**base, "synthesis": PHYS, "synthetic_ratio": 0.5}, "synthetic_ratio"),
              ({**base, "synthesis": {**PHYS, "gain": 1}}, "datasets.train.synthesis.gain"),
              ({**base, "synthesis": PHYS, "swap_roles": True}, "swap_roles"),
              ({**base, "synthesis": PHYS, "real": {"dataset": "LoL", "use_crop": True}, "synthetic_ratio": 0.5},
               "real.use_crop")]
    for opt, msg in errors:
        with pytest.raises(OptionError, match=msg):
            create_dataset(opt, "train")


# ------------------------------------------------------------------------------------------------ CLI

def _cli(argv, capsys):
    """Run the CLI in-process; returns (exit code, stderr)."""
    try:
        run_cli(synth_main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_cli_writes_reproducible_images_per_stem(tmp_path, capsys):
    for i in range(2):
        write_rgb(tmp_path / "in" / f"a{i}.png", natural_like(24, 32, seed=i))
    write_rgb(tmp_path / "one" / "a1.png", natural_like(24, 32, seed=1))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    gray = natural_like(24, 32, seed=9)[:, :, 0]
    cv2.imwrite(str(tmp_path / "in" / "g.png"), gray)
    write_rgb(tmp_path / "rgb" / "g.png", np.repeat(gray[:, :, None], 3, axis=2))
    code, err = _cli(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o1"), "--seed", "4"], capsys)
    assert code == 0 and "skipping 1 non-image file(s)" in err and "notes.txt" in err
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["a0.png", "a1.png", "g.png"]
    _cli(["--input", str(tmp_path / "one"), "--out", str(tmp_path / "o2"), "--seed", "4"], capsys)
    assert np.array_equal(read_rgb(tmp_path / "o1/a1.png"), read_rgb(tmp_path / "o2/a1.png"))
    # Grayscale is read as three equal channels: the same output as the RGB copy of that image.
    _cli(["--input", str(tmp_path / "rgb"), "--out", str(tmp_path / "o3"), "--seed", "4"], capsys)
    assert np.array_equal(read_rgb(tmp_path / "o1/g.png"), read_rgb(tmp_path / "o3/g.png"))
    # An existing output is never replaced silently.
    code, err = _cli(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o1"), "--seed", "5"], capsys)
    assert code == 2 and "already holds 3 of the 3 files" in err and "--overwrite" in err
    code, err = _cli(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o1"), "--seed", "5",
                      "--overwrite"], capsys)
    assert code == 0 and "3 existing file(s)" in err and "replaced 3 existing file(s)" in err


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    cases = {}
    d = tmp_path / "bit16"
    d.mkdir()
    write_rgb(d / "fine.png", natural_like(8, 8))
    cv2.imwrite(str(d / "deep.png"), np.full((8, 8, 3), 30000, np.uint16))
    cases[d] = ("deep.png", "16-bit")
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "broken.png").write_bytes(b"this is not a png")
    cases[d] = ("broken.png", "cannot decode")
    d = tmp_path / "only_text"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    cases[d] = ("only_text", "no images")
    cases[tmp_path / "missing"] = ("missing", "not found")
    for folder, (name, what) in cases.items():
        code, err = _cli(["--input", str(folder), "--out", str(tmp_path / "out")], capsys)
        last = err.strip().splitlines()[-1]
        assert code == 2 and last.startswith("error:") and name in last and what in last, err
        assert not (tmp_path / "out").exists()  # checked before anything is written
    code, err = _cli(["--input", str(tmp_path / "bit16"), "--out", str(tmp_path / "o"), "--steps", "4"], capsys)
    assert code == 2 and "--steps" in err


@pytest.mark.slow
def test_cli_error_has_no_traceback_in_a_real_process(tmp_path):
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((8, 8, 3), 30000, np.uint16))
    r = subprocess.run([sys.executable, "tools/synthesize.py", "--input", str(tmp_path), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'deep.png'}: 16-bit image; convert it to 8-bit "
                                             "first (values are never rescaled silently)"]


def test_cli_n2ldiff_passes_its_flags_through(tmp_path, capsys, golden):
    # The official full 100-step sample with the saved noise (../shared/golden/N2LDiff) through this CLI.
    gold = golden("N2LDiff")
    (tmp_path / "in").mkdir()
    shutil.copy(gold / "normal.png", tmp_path / "in" / "113.png")
    code, err = _cli(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--opt", str(gold / "config.yaml"),
                      "--model_path", str(gold / "weights.ckpt"), "--replay-noise", str(gold / "sample_noise.npy"),
                      "--device", "cpu"], capsys)
    assert code == 0, err
    ours, ref = read_rgb(tmp_path / "o" / "113.png").astype(int), read_rgb(gold / "sample.png").astype(int)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1
    code, err = _cli(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--method", "n2ldiff",
                      "--opt", str(gold / "config.yaml")], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --method n2ldiff needs --model_path")


def test_trainer_holdout_validates_on_fixed_synthetic_pairs(tmp_path):
    from engine.trainer import build_datasets
    normal = _normals(tmp_path / "normal", n=5)
    opt = {"datasets": {"train": {"dataset": "Synthetic", "dataroot_GT": str(normal), "synthesis": PHYS,
                                  "use_crop": True, "GT_size": 16, "batch_size": 2},
                        "val": {"holdout": 2}}}
    train, val = build_datasets(opt, None)
    assert len(train) == 3 and len(val) == 2
    a, b = val[1], val[1]
    assert a["name"] == "n4" and a["LQ"].shape == (3, 24, 32)  # the last normal image, uncropped
    assert np.array_equal(a["LQ_raw"], b["LQ_raw"]) and np.array_equal(a["GT_raw"], natural_like(24, 32, seed=4))
