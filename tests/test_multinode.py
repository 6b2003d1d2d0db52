"""DDP past one machine: two torchrun "nodes" (`--nnodes 2`, one process each, gloo, static rendezvous on
127.0.0.1) train the demo DRBN through train.py; every rank ends with the same weights, and they equal a
single-process run with the same global batch."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/DRBN/demo_tiny.yml"
STEPS = 4   # the demo's 12 pairs: 3 global batches of 4 per epoch, so the run crosses an epoch boundary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(root: Path, batch: int) -> list[str]:
    sets = [f"path.experiments_root={root}", f"train.niter={STEPS}", "train.val_freq=0", "datasets.val=null",
            "use_tb_logger=false", "logger.save_checkpoint_freq=1", f"datasets.train.batch_size={batch}",
            "train.lr_steps_rel=[0.5]"]   # a milestone inside the run: both sides must step the schedule alike
    return [str(ROOT / "train.py"), "--opt", str(CONF), *sum((["--set", s] for s in sets), [])]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_two_nodes_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    port = _free_port()
    nodes = []
    for node in (0, 1):   # each "node" has its own run folder, as separate machines would
        cmd = [torchrun, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}", "--master_addr=127.0.0.1",
               f"--master_port={port}", *_train_args(tmp_path / f"node{node}", 2), "--launcher", "pytorch"]
        nodes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()))
    outs = []
    for p in nodes:
        try:
            outs.append(p.communicate(timeout=600))
        except subprocess.TimeoutExpired:
            for q in nodes:
                q.kill()
            raise
    for p, (_, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
    single = subprocess.run([sys.executable, *_train_args(tmp_path / "single", 4)], capture_output=True, text=True,
                            env=_env(), timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    log = (tmp_path / "node0/demo_tiny_DRBN/train.log").read_text()
    assert "ranks in sync: the weights are identical on all 2 processes" in log, log[-2000:]
    assert f"training done at step {STEPS}" in log
    node1 = tmp_path / "node1/demo_tiny_DRBN/models"
    assert not node1.exists() or not any(node1.iterdir()), "only rank 0 writes checkpoints"
    multi = read_state_dict(tmp_path / f"node0/demo_tiny_DRBN/models/{STEPS}_G.pth")
    one = read_state_dict(tmp_path / f"single/demo_tiny_DRBN/models/{STEPS}_G.pth")
    assert multi.keys() == one.keys()
    # the same global batch of 4 (2 per node): gradients averaged by DDP equal the single process's up to rounding
    worst = max(((multi[k] - one[k]).abs().max() / one[k].abs().max().clamp_min(1e-12)).item() for k in one)
    assert worst < 1e-4, worst
    # and training moved the weights well beyond that tolerance after step 1 (not a comparison of idle copies)
    first = read_state_dict(tmp_path / "single/demo_tiny_DRBN/models/1_G.pth")
    moved = max(((one[k] - first[k]).abs().max() / one[k].abs().max().clamp_min(1e-12)).item() for k in one)
    assert moved > 100 * worst + 1e-3, (moved, worst)
