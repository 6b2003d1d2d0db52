"""The engine is model-agnostic: any registered model trains, validates and resumes through one loop, and validation
scores exactly what test.py scores (same padding, preprocessing, enhance call, metrics and report files)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from data.image_io import write_rgb
from engine.trainer import train
from models.methods.base_model import BaseModel
from models.build import model_class
from models.checkpoint import read_state_dict
from options.options import load_options
from utils.registry import MODEL_REGISTRY
from tests.cli_scripts import load_script

test_cli = load_script("test.py")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/LLFlow/demo_tiny.yml"
TINY_FLOW = ["network_G.nf=8", "network_G.nb=1", "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]",
             "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16",
             "use_tb_logger=false", "train.warmup_iter=2"]


def _pairs(folder: Path, n: int, h: int, w: int, seed: int = 0):
    """n paired images of an odd size: a smooth scene and a darker, noisy copy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = np.stack([np.sin(xx / (5 + i) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1) * 0.4 + 0.5
        gt = np.clip(base * 255, 0, 255).astype(np.uint8)
        low = np.clip(base * 60 + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        write_rgb(folder / "gt" / f"im{i}.png", gt)
        write_rgb(folder / "lq" / f"im{i}.png", low)


def _flow_opt(tmp_path, gt_size, niter, every):
    """The tiny LLFlow trained on _pairs() with 2 held-out validation pairs, validating and saving `every` steps."""
    data = ["datasets.train.dataset=PairedFolder", f"datasets.train.dataroot_LQ={tmp_path}/data/lq",
            f"datasets.train.dataroot_GT={tmp_path}/data/gt", f"datasets.train.GT_size={gt_size}",
            "datasets.train.batch_size=2", "datasets.val.dataset=PairedFolder", "datasets.val.holdout=2"]
    return load_options(CONF, TINY_FLOW + data + [f"path.experiments_root={tmp_path}/exp", f"train.niter={niter}",
                                                  f"train.val_freq={every}", f"logger.save_checkpoint_freq={every}"],
                        is_train=True)


def _rows(path: Path) -> dict:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return {r["name"]: (float(r["psnr"]), float(r["ssim"])) for r in csv.DictReader(lines)}


def test_validation_scores_what_test_py_scores(tmp_path):
    """Sizes that are not multiples of 8: validation used to pad after histogram equalisation, test.py before."""
    _pairs(tmp_path / "data", 6, 44, 60)
    opt = _flow_opt(tmp_path, 32, 3, 3)
    hist = train(opt, argv=["test"])
    run = tmp_path / "exp" / opt["name"]
    val_rows = _rows(run / "val_images/3/metrics.csv")
    assert sorted(val_rows) == ["im4", "im5"]
    assert hist["val"][-1][1]["psnr"] == pytest.approx(np.mean([r[0] for r in val_rows.values()]))
    # the held-out pairs through test.py with the weights validation used
    (tmp_path / "held").mkdir()
    for d in ("lq", "gt"):
        (tmp_path / "held" / d).mkdir()
        for n in ("im4", "im5"):
            (tmp_path / "held" / d / f"{n}.png").write_bytes((tmp_path / "data" / d / f"{n}.png").read_bytes())
    test_cli.main(["--opt", str(CONF), *sum((["--set", s] for s in TINY_FLOW), []),
                   "--model_path", str(run / "models/3_G.pth"), "--input", str(tmp_path / "held/lq"),
                   "--gt", str(tmp_path / "held/gt"), "--out", str(tmp_path / "out")])
    test_rows = _rows(tmp_path / "out/metrics.csv")
    assert test_rows == val_rows  # bit-identical numbers, not merely close


# -- a method that is not a flow, registered from outside the package ---------------------------------------------
class _GainNet(nn.Module):
    """out = conv(in) + in: a small enhancer with the engine's enhance protocol."""
    pad_multiple = 1
    aux_input = None

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def enhance(self, lq, aux=None, heat=0.0):
        return self.conv(lq) + lq


@MODEL_REGISTRY.register("ToyL1")
class _ToyL1(BaseModel):
    progress_keys = ("l1",)

    def __init__(self, opt, device, rank=0, world_size=1):
        super().__init__(opt, device, rank, world_size)
        torch.manual_seed(0)
        self.g = _GainNet().to(device)
        self.optimizers["G"] = torch.optim.Adam(self.g.parameters(), lr=float(opt["train"]["lr_G"]))
        self.schedulers["G"] = torch.optim.lr_scheduler.StepLR(self.optimizers["G"], 5, 0.5)

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        net = _GainNet()
        if checkpoint:
            net.load_state_dict(read_state_dict(checkpoint))
        return net, []

    def networks(self):
        return {"G": self.g}

    def optimize(self, batch):
        self.g.train()
        lq, gt = batch["LQ"].to(self.device), batch["GT"].to(self.device)
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss = F.l1_loss(self.g.enhance(lq), gt)
        logs = self.step_optimizer(loss, "G", self.g.parameters())
        self.schedulers["G"].step()
        return {"l1": loss.item(), **logs}


def _toy_opt(tmp_path, niter, extra=()):
    data = ["model=ToyL1", "datasets.train.dataset=PairedFolder", f"datasets.train.dataroot_LQ={tmp_path}/data/lq",
            f"datasets.train.dataroot_GT={tmp_path}/data/gt", "datasets.train.GT_size=16", "datasets.train.log_low=false",
            "datasets.train.concat_histeq=false", "concat_histeq=false", "datasets.train.batch_size=2",
            "datasets.val.dataset=PairedFolder", "datasets.val.holdout=2", "datasets.val.log_low=false",
            "use_tb_logger=false", "train.lr_G=0.01", f"train.niter={niter}", "train.val_freq=10",
            "logger.save_checkpoint_freq=5", "val.at_start=true"]
    return load_options(CONF, data + [f"path.experiments_root={tmp_path}/exp"] + list(extra), is_train=True)


def test_engine_trains_validates_and_resumes_any_registered_model(tmp_path):
    _pairs(tmp_path / "data", 6, 24, 28)
    assert model_class("ToyL1") is _ToyL1
    hist = train(_toy_opt(tmp_path, 20), argv=["test"])
    losses = [v for _, v in hist["loss"]]
    assert len(losses) == 20 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert hist["val"][-1][1]["psnr"] > hist["val"][0][1]["psnr"] + 1.0
    full = read_state_dict(tmp_path / "exp/demo_tiny_LLFlow/models/20_G.pth")
    # stop at 10, then resume to 20: the same weights bit for bit (optimiser, scheduler and RNG states restored)
    (tmp_path / "b").mkdir()
    (tmp_path / "b/data").symlink_to(tmp_path / "data")
    train(_toy_opt(tmp_path / "b", 10), argv=["test"])
    train(_toy_opt(tmp_path / "b", 20), resume=True, argv=["test"])
    resumed = read_state_dict(tmp_path / "b/exp/demo_tiny_LLFlow/models/20_G.pth")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_ema_is_saved_validated_and_resumed_bit_exactly(tmp_path):
    _pairs(tmp_path / "data", 6, 24, 28)
    decay = 0.8
    ema = ["train.ema_decay=0.8", "logger.save_checkpoint_freq=1", "logger.keep_checkpoints=0", "train.val_freq=6"]
    train(_toy_opt(tmp_path, 6, ema), argv=["test"])
    models = tmp_path / "exp/demo_tiny_LLFlow/models"
    # an independent EMA of the raw weights saved after every step: ema_1 = w_1, ema_k = d ema_(k-1) + (1-d) w_k
    ref = read_state_dict(models / "1_G.pth")
    for k in range(2, 7):
        w = read_state_dict(models / f"{k}_G.pth")
        ref = {n: decay * ref[n] + (1 - decay) * w[n] for n in ref}
    saved = read_state_dict(models / "6_G_ema.pth")
    assert all(torch.allclose(saved[n], ref[n], atol=1e-6) for n in ref)
    assert not all(torch.equal(saved[n], read_state_dict(models / "6_G.pth")[n]) for n in ref)
    # validation ran the EMA weights: the best model written at step 6 is the EMA, not the raw generator
    best = read_state_dict(models / "best_psnr_G.pth")
    assert all(torch.equal(best[n], saved[n]) for n in ref)
    # kill-free resume from step 3 reproduces the EMA bit for bit
    (tmp_path / "b").mkdir()
    (tmp_path / "b/data").symlink_to(tmp_path / "data")
    train(_toy_opt(tmp_path / "b", 3, ema), argv=["test"])
    train(_toy_opt(tmp_path / "b", 6, ema), resume=True, argv=["test"])
    resumed = read_state_dict(tmp_path / "b/exp/demo_tiny_LLFlow/models/6_G_ema.pth")
    assert all(torch.equal(saved[n], resumed[n]) for n in ref)


def test_self_ensemble_averages_the_eight_symmetries():
    """With a network that is not equivariant, self-ensemble equals the mean of the 8 transformed passes computed
    here by hand, and the protocol line says so."""
    opt = load_options(CONF, ["concat_histeq=false", "datasets.train.log_low=false", "datasets.val.log_low=false"])
    torch.manual_seed(0)
    net = _GainNet().eval()
    from engine.inference import Enhancer
    plain = Enhancer(net, opt, device="cpu")
    ens = Enhancer(net, opt, device="cpu", self_ensemble=True)
    low = (np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8)
    lq, aux = plain.prepare(low)
    manual = torch.zeros(1, 3, 16, 24)
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                x = torch.rot90(lq, k, (-2, -1))
                x = x.flip(-1) if flip else x
                y = net.enhance(x)
                y = y.flip(-1) if flip else y
                manual += torch.rot90(y, -k, (-2, -1))
    manual /= 8
    got = torch.from_numpy(ens(low)).permute(2, 0, 1)[None]
    assert torch.allclose(got, manual, atol=1e-5)
    assert not torch.allclose(got, torch.from_numpy(plain(low)).permute(2, 0, 1)[None], atol=1e-3)
    assert "self-ensemble x8" in ens.describe(0.0) and "no self-ensemble" in plain.describe(0.0)


def test_retest_scores_every_checkpoint_on_validation_and_names_the_best(tmp_path, capsys):
    from tools.retest import main as retest_main
    _pairs(tmp_path / "data", 6, 24, 32)
    opt = _flow_opt(tmp_path, 16, 4, 2)
    hist = train(opt, argv=["test"])
    run = tmp_path / "exp" / opt["name"]
    retest_main(["--run", str(run)])
    lines = (run / "retest/retest.csv").read_text().splitlines()
    assert lines[0].startswith("# validation split") and "PSNR uint8" in lines[0]
    rows = list(csv.DictReader(lines[1:]))
    assert [r["checkpoint"] for r in rows] == ["2_G.pth", "4_G.pth"]
    # the numbers training logged at those steps, recomputed from the saved files
    logged = {s: v["psnr"] for s, v in hist["val"]}
    assert [float(r["psnr"]) for r in rows] == [pytest.approx(logged[2], abs=1e-9), pytest.approx(logged[4], abs=1e-9)]
    best = max(rows, key=lambda r: float(r["psnr"]))
    assert f"best checkpoint: {run / 'models' / best['checkpoint']}" in capsys.readouterr().out
    assert (run / "retest/retest.png").stat().st_size > 1000


def test_retest_refuses_a_validation_split_that_is_the_test_split(tmp_path):
    from engine.retest import retest
    from utils.errors import OptionError
    from data.demo import ensure_demo_data
    root = ensure_demo_data()
    opt = load_options(CONF, TINY_FLOW + [f"path.experiments_root={tmp_path}/exp", "train.niter=1",
                                          "datasets.val.holdout=null", "datasets.val.root=" + str(root)],
                       is_train=True)
    train(opt, argv=["test"])
    with pytest.raises(OptionError, match="test split"):
        retest(tmp_path / "exp" / opt["name"])


def test_every_config_key_value_leads_to_its_class_in_one_hop(capsys):
    """`python tools/list_registries.py` lists every registered name with the repository file and line of its class."""
    from tools.list_registries import main as list_registries
    from utils.registry import ALL_REGISTRIES
    list_registries([])
    out = capsys.readouterr().out
    for reg in ALL_REGISTRIES:
        assert f"{reg.name}:" in out
        for name, where in reg.where():
            path, line = where.split(" ")[0].rsplit(":", 1)
            src = Path(path).read_text().splitlines()
            assert Path(path).resolve().is_relative_to(ROOT) or "tests" in path
            assert f"class {where.split('.')[-1]}" in src[int(line) - 1] or "register" in src[int(line) - 1], where


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    import os
    from utils.atomic import atomic_open
    with atomic_open(tmp_path / "x.txt", "w") as f:
        f.write("a")
    (tmp_path / "y.txt").write_text("a")
    assert os.stat(tmp_path / "x.txt").st_mode == os.stat(tmp_path / "y.txt").st_mode


class _InfNet(_GainNet):
    def enhance(self, lq, aux=None, heat=0.0):
        return super().enhance(lq) / 0.0


@MODEL_REGISTRY.register("ToyInf")
class _ToyInf(_ToyL1):
    """Trains like ToyL1 but its validation network decodes to inf (an untrained flow can)."""

    def eval_network(self):
        net = _InfNet()
        net.load_state_dict(self.g.state_dict())
        return net


def test_a_non_finite_validation_output_is_reported_and_training_goes_on(tmp_path):
    _pairs(tmp_path / "data", 6, 24, 28)
    hist = train(_toy_opt(tmp_path, 10, ["model=ToyInf"]), argv=["test"])
    assert len(hist["loss"]) == 10 and hist["val"] == []
    log_text = (tmp_path / "exp/demo_tiny_LLFlow/train.log").read_text()
    assert "val @10: no score" in log_text and "non-finite" in log_text
    assert not (tmp_path / "exp/demo_tiny_LLFlow/models/best_psnr_G.pth").exists()
    assert (tmp_path / "exp/demo_tiny_LLFlow/models/10_G.pth").is_file()
