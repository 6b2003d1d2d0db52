"""Training: NLL falls and val PSNR rises on the demo data, kill + resume equals an uninterrupted run,
non-finite steps are skipped, and DDP runs on CPU with gloo."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import read_state_dict
from models.methods.flow_model import FlowModel
from options.options import load_options
from engine.trainer import train
from utils.errors import NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/LLFlow/demo_tiny.yml"
SMALL = ["datasets.train.GT_size=32", "datasets.train.batch_size=2", "network_G.nf=8", "network_G.nb=1",
         "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]", "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16",
         "use_tb_logger=false", "val.save_images=false", "train.warmup_iter=2"]


def _opt(tmp_path, extra=()):
    return load_options(CONF, SMALL + [f"path.experiments_root={tmp_path}"] + list(extra), is_train=True)


@pytest.mark.slow
def test_demo_training_learns(tmp_path):
    opt = _opt(tmp_path, ["train.niter=80", "train.val_freq=80", "val.at_start=true", "train.lr_G=2e-3",
                          "datasets.train.GT_size=48", "datasets.train.batch_size=4", "logger.save_checkpoint_freq=80"])
    hist = train(opt, argv=["test"])
    nll = [v for _, v in hist["loss"]]
    assert np.mean(nll[-10:]) < np.mean(nll[:10]) - 1.0, (nll[:10], nll[-10:])
    (s0, v0), (s1, v1) = hist["val"][0], hist["val"][-1]
    assert s0 == 0 and s1 == 80
    assert v1["psnr"] > v0["psnr"] + 1.0, (v0, v1)
    run = tmp_path / "demo_tiny_LLFlow"
    for p in ("models/80_G.pth", "models/best_psnr_G.pth", "training_states/80.state", "config.yml", "cmd.txt",
              "train.log", "best_psnr.json"):
        assert (run / p).is_file(), p
    # the saved generator is a plain official-style state dict
    assert all(not k.startswith("module.") for k in read_state_dict(run / "models/80_G.pth"))


def _train_cmd(root, niter, extra=()):
    return [sys.executable, str(ROOT / "train.py"), "--opt", str(CONF), *sum((["--set", s] for s in SMALL), []),
            "--set", f"path.experiments_root={root}", "--set", f"train.niter={niter}", "--set", "train.val_freq=0",
            "--set", "logger.save_checkpoint_freq=1", "--set", "datasets.val=null", *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    n = 12
    a = subprocess.run(_train_cmd(tmp_path / "a", n), capture_output=True, text=True, env=_env(), timeout=600)
    assert a.returncode == 0, a.stderr[-3000:]
    proc = subprocess.Popen(_train_cmd(tmp_path / "b", n), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_env())
    states = tmp_path / "b/demo_tiny_LLFlow/training_states"
    deadline = time.time() + 300
    while time.time() < deadline and not (states / "5.state").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b/demo_tiny_LLFlow/models" / f"{n}_G.pth").exists(), "run finished before the kill"
    b = subprocess.run(_train_cmd(tmp_path / "b", n, ["--resume"]), capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert b.returncode == 0, b.stderr[-3000:]
    assert "resumed from" in (tmp_path / "b/demo_tiny_LLFlow/train.log").read_text()
    wa = read_state_dict(tmp_path / f"a/demo_tiny_LLFlow/models/{n}_G.pth")
    wb = read_state_dict(tmp_path / f"b/demo_tiny_LLFlow/models/{n}_G.pth")
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) == 0.0


def test_fresh_start_never_deletes_an_earlier_run(tmp_path):
    run = tmp_path / "demo_tiny_LLFlow"
    (run / "models").mkdir(parents=True)
    (run / "models/precious_G.pth").write_bytes(b"x")
    train(_opt(tmp_path, ["train.niter=1", "train.val_freq=0", "datasets.val=null", "path.resume_state=null"]),
          argv=["test"])
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("demo_tiny_LLFlow_archived_")]
    assert len(archived) == 1 and (archived[0] / "models/precious_G.pth").read_bytes() == b"x"


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    opt = _opt(tmp_path, ["train.max_nonfinite=2", "train.official_loop=false"])   # every call updates
    model = FlowModel(opt, torch.device("cpu"))
    batch = {"GT": torch.rand(2, 3, 32, 32), "LQ": torch.log(torch.rand(2, 6, 32, 32) + 1e-3)}
    batch["LQ"][:, 3:] = torch.rand(2, 3, 32, 32)
    model.setup(batch)
    good = model.optimize(batch)
    assert not good["skipped"]
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    bad = dict(batch, GT=batch["GT"].clone())
    bad["GT"][0, 0, 0, 0] = float("nan")
    logs = model.optimize(bad)
    assert logs["skipped"] and model.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    model.optimize(bad)
    with pytest.raises(NonFiniteError, match="max_nonfinite"):
        model.optimize(bad)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("train_gt_ratio=1.0", "train.invertible_backprop=true",
                                           "train.activation_checkpointing=true")])
def test_ddp_two_cpu_processes_with_gloo(tmp_path, extra):
    """DDP runs without find_unused_parameters: every built parameter is used, also when LLFlow's prior mean comes
    from the GT (colour head idle) and with the memory-saving backward passes."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2",
           *_train_cmd(tmp_path, 3, sum((["--set", s] for s in extra), []))[1:], "--launcher", "pytorch"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "demo_tiny_LLFlow"
    assert (run / "models/3_G.pth").is_file() and (run / "training_states/3.state").is_file()
    log = (run / "train.log").read_text()
    assert "training done at step 3" in log


@pytest.mark.parametrize("mode", ["full", "selective"])
@pytest.mark.parametrize("family", ["LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow"])
def test_activation_checkpointing_gives_the_same_gradients(family, mode):
    from models.activation_checkpointing import enable_activation_checkpointing
    from tests.golden_models import demo_generator
    opt, net = demo_generator(family, ["network_G.msformer.drop_path_rate=0"] if family == "UPT-Flow" else [])
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    lq = torch.rand(2, 6 if opt["concat_histeq"] else 3, 32, 32, generator=g)
    aux = {"gltg_mask": torch.rand(2, 3, 32, 32, generator=g) > 0.7, "zmar_mask": torch.rand(2, 1, 32, 32) > 0.7,
           "upt_zero_map": torch.rand(2, 1, 32, 32) > 0.3}.get(net.aux_input)
    aux = aux.float() if aux is not None else None

    def grads():
        net.zero_grad()
        net.nll(gt, lq, aux, add_gt_noise=False)["nll"].mean().backward()
        return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    plain = grads()
    assert enable_activation_checkpointing(net.RRDB, mode) > 0
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    assert max((plain[k] - ckpt[k]).abs().max().item() for k in plain) < 1e-5


@pytest.mark.slow
def test_loader_workers_give_the_same_training_as_the_main_process(tmp_path):
    """Per-sample randomness depends on (seed, epoch, index) only, so worker processes change nothing."""
    for workers in (0, 2):
        r = subprocess.run(_train_cmd(tmp_path / f"w{workers}", 4, ["--set", f"datasets.train.n_workers={workers}"]),
                           capture_output=True, text=True, env=_env(), timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    w0 = read_state_dict(tmp_path / "w0/demo_tiny_LLFlow/models/4_G.pth")
    w2 = read_state_dict(tmp_path / "w2/demo_tiny_LLFlow/models/4_G.pth")
    assert max((w0[k] - w2[k]).abs().max().item() for k in w0) == 0.0


def test_activation_checkpointing_mode_is_validated(tmp_path):
    from utils.errors import OptionError
    with pytest.raises(OptionError, match=r"train.activation_checkpointing.*sometimes"):
        FlowModel(_opt(tmp_path, ["train.activation_checkpointing=sometimes"]), torch.device("cpu"))


@pytest.mark.parametrize("conf", ["LLFlow/demo_tiny.yml", "DRBN/demo_tiny.yml"])
def test_channels_last_training_matches_nchw(tmp_path, conf):
    """train.channels_last changes the memory layout only: the same weights after a few steps, within float error."""
    weights = {}
    for cl in (False, True):
        extra = SMALL if conf.startswith("LLFlow") else ["use_tb_logger=false", "val.save_images=false"]
        opt = load_options(ROOT / "confs" / conf, extra + [f"path.experiments_root={tmp_path / str(cl)}",
                                                          "train.niter=3", "train.val_freq=0", "datasets.val=null",
                                                          f"train.channels_last={str(cl).lower()}"], is_train=True)
        train(opt, argv=["test"])
        weights[cl] = read_state_dict(next((tmp_path / str(cl)).glob("*/models/3_G.pth")))
    convs = [k for k, v in weights[True].items() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] > 1]
    assert convs and all(weights[True][k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    assert not all(weights[False][k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    for k, v in weights[False].items():
        if v.is_floating_point():
            assert torch.allclose(weights[True][k], v, rtol=1e-4, atol=1e-5), k


def test_max_minutes_stops_with_a_checkpoint_and_resume_continues(tmp_path):
    cmd = _train_cmd(tmp_path, 5, ["--set", "logger.save_checkpoint_freq=0", "--set", "train.max_minutes=1e-9"])
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train.max_minutes=1e-09 reached at step 1 of 5" in r.stderr
    run = tmp_path / "demo_tiny_LLFlow"
    assert (run / "models/1_G.pth").is_file() and (run / "training_states/1.state").is_file()
    r = subprocess.run(_train_cmd(tmp_path, 5, ["--set", "logger.save_checkpoint_freq=0", "--resume"]),
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "models/5_G.pth").is_file() and not (run / "models/2_G.pth").exists()
    assert "s/step over steps 3..5 (first step of the process excluded)" in r.stderr
