"""Resume is bit-exact for every registered method: a run interrupted mid-epoch and resumed from its last training
state ends with the same weights, optimiser, scheduler, scaler and RNG states as the run that was never interrupted.

Each method trains from its demo config (confs/*/demo_tiny*.yml), shrunk to a few steps on small crops. The
interruption comes one step after a checkpoint, so the resumed run must redo a step the interrupted one had taken.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

import engine.trainer as trainer
from data.demo import ensure_demo_data
from models.build import MODEL_MODULES
from models.checkpoint import read_state_dict, safe_load
from options.options import load_options
from utils.registry import MODEL_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
for _m in MODEL_MODULES:
    importlib.import_module(_m)
DEMOS = sorted(ROOT.glob("confs/*/demo_tiny*.yml"))
N_STEPS, SAVED, LOST = 8, 3, 4   # the demo set gives 6 batches of 2 per epoch: step 3 is mid-epoch

COMMON = ["use_tb_logger=false", "train.val_freq=0", "val.at_start=false",
          "logger.save_checkpoint_freq=1", "logger.keep_checkpoints=100", "datasets.train.batch_size=2",
          "datasets.train.n_workers=0", f"train.niter={N_STEPS}", "path.pretrain_model_G=null"]
TINY_FLOW = ["network_G.nf=8", "network_G.nb=1", "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]",
             "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16"]
TINY_DRBN = {"width": 4, "growth": 2, "n_layers": 2, "recurrences": 2}
# per demo config: what makes a step take well under a second on a CPU
SHRINK = {
    "LLFlow/demo_tiny.yml": ["datasets.train.GT_size=32", *TINY_FLOW],
    "N2LDiff/demo_tiny.yml": ["train.n2ldiff.loss_type=l1", "network_G.n2ldiff.dim_mults=[1,2]"],
    "DRBN/demo_tiny.yml": ["datasets.train.GT_size=32", *[f"network_G.drbn.{k}={v}" for k, v in TINY_DRBN.items()]],
    "DRBN/demo_tiny_stage2.yml": ["datasets.train.GT_size=32",
                                  *[f"network_G.drbn.{k}={v}" for k, v in TINY_DRBN.items()]],
}


def _model_of(conf: Path) -> str:
    return (yaml.safe_load(conf.read_text()) or {}).get("model") or "LLFlow"


def _rel(conf: Path) -> str:
    return conf.relative_to(ROOT / "confs").as_posix()


def test_every_registered_method_has_a_demo_config():
    covered = {_model_of(c) for c in DEMOS}
    # the package's methods (other test files register toy models of their own)
    ours = [m for m in MODEL_REGISTRY.keys() if MODEL_REGISTRY.get(m).__module__ in MODEL_MODULES]
    assert {"DRBN", "DRBNRecompose", "LLFlow", "N2LDiff", "UPTFlow"} <= set(ours)
    missing = [m for m in ours if m not in covered]
    assert not missing, f"registered methods without a confs/*/demo_tiny*.yml (not covered by the resume test): {missing}"


def _differences(a, b, path="") -> list[str]:
    """Paths at which two nested training states (dicts, lists, tensors, numbers) are not identical."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if torch.is_tensor(a) and torch.is_tensor(b):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [f"{path}: max |diff| {(a.double() - b.double()).abs().max().item():.3g}"
                                if a.shape == b.shape else f"{path}: shape"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


@pytest.fixture(scope="module")
def method_files(tmp_path_factory):
    """Options every method needs besides its demo config: a stage-1 DRBN and a VGG16 trunk (random weights)."""
    from torchvision.models.vgg import cfgs, make_layers
    from models.networks.drbn import DRBN
    d = tmp_path_factory.mktemp("method_files")
    torch.manual_seed(1)
    torch.save(DRBN(**TINY_DRBN).state_dict(), d / "stage1.pth")
    # only the layers up to relu2_2 run (the perceptual loss); the rest just has to load
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, d / "vgg16.pth")
    return [f"path.pretrain_stage1={d / 'stage1.pth'}", f"path.vgg16_features={d / 'vgg16.pth'}"]


@pytest.mark.slow
@pytest.mark.parametrize("conf", DEMOS, ids=_rel)
def test_interrupted_and_resumed_run_equals_uninterrupted_run(conf, tmp_path, method_files, monkeypatch):
    extra = [*SHRINK.get(_rel(conf), []), *(method_files if _model_of(conf) == "DRBNRecompose" else [])]
    _check_resume(conf, extra, tmp_path, monkeypatch)


@pytest.mark.slow
def test_stage2_resume_with_the_official_stage1_weights_and_vgg16(shared_dir, tmp_path, monkeypatch):
    """The reported case: DRBN stage 2 on the official stage-1 DRBN and the real VGG16 trunk."""
    conf = ROOT / "confs/DRBN/demo_tiny_stage2.yml"
    _check_resume(conf, ["datasets.train.GT_size=32", "network_G.drbn=null",
                         f"path.pretrain_stage1={shared_dir / 'weights/drbn/model_s1_cpu.pt'}",
                         f"path.vgg16_features={shared_dir / 'weights/vgg16_features.pth'}"], tmp_path, monkeypatch)


def _check_resume(conf: Path, extra: list, tmp_path, monkeypatch):
    ensure_demo_data()
    model = _model_of(conf)
    extra = [*COMMON, *extra]

    def opt(root):
        return load_options(conf, [f"path.experiments_root={root}", *extra], is_train=True)

    o = opt(tmp_path / "a")
    trainer.train(o, argv=["test"])
    run_a, run_b = tmp_path / "a" / o["name"], tmp_path / "b" / o["name"]

    save = trainer.save_checkpoint

    def interrupt(model_, run, step, *args, **kw):
        if step == LOST:   # the step after the saved one has been taken, then the process dies (Ctrl-C)
            raise KeyboardInterrupt
        return save(model_, run, step, *args, **kw)

    monkeypatch.setattr(trainer, "save_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opt(tmp_path / "b"), argv=["test"])
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    saved = safe_load(run_b / f"training_states/{SAVED}.state", "training state")
    assert saved["batches_in_epoch"] not in (0, None), "the interruption must come mid-epoch"
    assert not (run_b / f"training_states/{LOST}.state").exists()

    trainer.train(opt(tmp_path / "b"), resume=True, argv=["test"])
    assert f"resumed from {run_b / 'training_states'}/{SAVED}.state" in (run_b / "train.log").read_text()

    weights = sorted(p.name for p in (run_a / "models").glob(f"{N_STEPS}_*.pth"))
    assert weights and weights == sorted(p.name for p in (run_b / "models").glob(f"{N_STEPS}_*.pth"))
    diffs = []
    for name in weights:
        diffs += _differences(read_state_dict(run_a / "models" / name), read_state_dict(run_b / "models" / name),
                              name)
    sa = safe_load(run_a / f"training_states/{N_STEPS}.state", "training state")
    sb = safe_load(run_b / f"training_states/{N_STEPS}.state", "training state")
    assert sa["optimizers"] and sa["schedulers"]
    diffs += _differences(sa, sb, "state")
    assert not diffs, f"{model} ({_rel(conf)}): {len(diffs)} differences after resume, e.g. {diffs[:5]}"
