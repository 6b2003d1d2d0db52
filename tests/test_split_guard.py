"""One test-split rule (data/split_guard.py) for checkpoint selection and unpaired training: declared split and the
well-known test folders of LOL-v1, LOL-v2, SDSD, SID and SMID."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.demo import ensure_demo_data
from data.loader import create_dataset
from data.semi_dataset import check_unpaired_sources
from data.split_guard import known_test_folder, reads_test_data
from engine.trainer import train
from models.methods.base_model import BaseModel
from options.options import load_options
from utils.errors import OptionError
from utils.registry import MODEL_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/LLFlow/demo_tiny.yml"
TINY_FLOW = ["network_G.nf=8", "network_G.nb=1", "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]",
             "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16"]


@pytest.mark.parametrize("folder,why", [
    ("LOL/eval15/low", "eval15"), ("LOL-v2/Real_captured/Test/Low", "Test"), ("x/Our_low_test", "Our_low_test"),
    ("bench/LIME", "LIME"),
    ("SDSD/indoor_static_np/input/pair11", "pair11"), ("SDSD/indoor_static_np/GT/pair11_2", "pair11_2"),
    ("SDSD/outdoor_static_np/input/MVI_1032", "MVI_1032"), ("SID/short_sid2/10034", "10034"),
])
def test_known_test_folders(tmp_path, folder, why):
    assert why in (known_test_folder(tmp_path / folder) or "")


@pytest.mark.parametrize("folder", ["LOL/our485/low", "LOL-v2/Real_captured/Train/Low", "SDSD/indoor/input/pair12",
                                    "SDSD/indoor/input/pair110", "SID/short_sid2/00001", "photos/pair11",
                                    "data/contest_photos"])
def test_training_folders_are_not_test_folders(tmp_path, folder):
    assert known_test_folder(tmp_path / folder) is None


def test_smid_test_list_next_to_the_video_folders(tmp_path):
    (tmp_path / "SMID").mkdir()
    (tmp_path / "SMID/test_list.txt").write_text("0001\n0004\n")
    assert "test_list.txt" in known_test_folder(tmp_path / "SMID/SMID_LQ_np/0004")
    assert known_test_folder(tmp_path / "SMID/SMID_Long_np/0002") is None


def test_a_declared_train_split_over_eval15_is_test_data():
    root = ensure_demo_data()
    as_train = create_dataset({"dataset": "PairedFolder", "dataroot_LQ": str(root / "eval15/low"),
                               "dataroot_GT": str(root / "eval15/high"), "split": "train"}, "val")
    assert "eval15" in reads_test_data(as_train)
    assert "declared" in reads_test_data(create_dataset({"dataset": "Demo", "root": str(root)}, "val"))
    assert reads_test_data(create_dataset({"dataset": "Demo", "root": str(root), "split": "train"}, "val")) is None


def test_stage2_refuses_a_published_sdsd_test_video(tmp_path):
    opt = load_options(ROOT / "confs/DRBN/DRBN_stage2.yml",
                       [f"datasets.train.dataroot_unpaired_LQ={tmp_path}/SDSD/outdoor_static_np/input/MVI_0898"])
    with pytest.raises(OptionError, match="dataroot_unpaired_LQ.*SDSD test video 'MVI_0898'"):
        check_unpaired_sources(opt)


def _run_with_val_on_eval15(tmp_path):
    root = ensure_demo_data()
    opt = load_options(CONF, TINY_FLOW + [
        f"path.experiments_root={tmp_path}/exp", "train.niter=1", "use_tb_logger=false", "val.save_images=false",
        "datasets.train.GT_size=32", "datasets.val.holdout=null", "datasets.val.dataset=PairedFolder",
        "datasets.val.split=train", f"datasets.val.dataroot_LQ={root}/eval15/low",
        f"datasets.val.dataroot_GT={root}/eval15/high"], is_train=True)
    train(opt, argv=["test"])
    return tmp_path / "exp" / opt["name"]


def test_retest_refuses_eval15_declared_as_train_and_training_says_so(tmp_path):
    from engine.retest import retest
    run = _run_with_val_on_eval15(tmp_path)
    log = (run / "train.log").read_text()
    assert "WARNING datasets.val is test data" in log and "eval15" in log
    with pytest.raises(OptionError, match="datasets.val is test data.*eval15"):
        retest(run)


class _Unpaired(torch.nn.Module):
    pad_multiple, aux_input = 1, None

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))

    def enhance(self, lq, aux=None, heat=0.0):
        return lq * self.gain


@MODEL_REGISTRY.register("ToyUnpairedSplitGuard")
class _ToyUnpaired(BaseModel):
    """A method that trains without references (none of the package's does yet)."""
    needs_pairs = False

    def __init__(self, opt, device, rank=0, world_size=1):
        super().__init__(opt, device, rank, world_size)
        self.g = _Unpaired()
        self.optimizers["G"] = torch.optim.SGD(self.g.parameters(), lr=0.1)

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        return _Unpaired(), []

    def networks(self):
        return {"G": self.g}

    def optimize(self, batch):
        loss = (self.g.enhance(batch["LQ"]).mean() - 0.5) ** 2
        return {"loss": loss.item(), **self.step_optimizer(loss, "G", self.g.parameters())}


def test_unpaired_training_data_from_a_test_folder_is_refused(tmp_path):
    root = ensure_demo_data()
    sets = ["model=ToyUnpairedSplitGuard", "datasets.train.dataset=UnpairedFolder", "datasets.val=null",
            "train.val_freq=0", "use_tb_logger=false", "train.niter=1", "datasets.train.GT_size=16",
            "datasets.train.batch_size=1", f"path.experiments_root={tmp_path}/exp"]
    bad = load_options(CONF, sets + [f"datasets.train.dataroot_LQ={root}/eval15/low"], is_train=True)
    with pytest.raises(OptionError, match="datasets.train is test data.*eval15"):
        train(bad, argv=["test"])
    train(load_options(CONF, sets + [f"datasets.train.dataroot_LQ={root}/our485/low"], is_train=True), argv=["test"])
