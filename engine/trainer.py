"""The training loop behind train.py: run folder, data, resume, validation, checkpoints, TensorBoard, tqdm."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from torch.utils.data import Subset
from tqdm import tqdm

from data.loader import create_dataset, create_train_loader
from models.checkpoint import atomic_save, read_state_dict, save_generator
from models.base_model import BaseModel
from models.build import model_class
from options.options import OptionError, dump_options
from utils import metrics
from utils.atomic import atomic_open
from utils.logging_setup import setup_cli_logging
from .evaluate import EvalItem, evaluate, make_scorer
from .grid import save_strip
from .inference import Enhancer, to_uint8

log = logging.getLogger("lowlight_flow")


# -- distributed ---------------------------------------------------------------------------------------------------
def init_distributed(launcher: str):
    """(rank, world_size, device). `pytorch` = torchrun environment; NCCL on CUDA, gloo on CPU."""
    if launcher == "none":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return 0, 1, dev
    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        dist.init_process_group("nccl")
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
    return rank, world, dev


def barrier(world):
    if world > 1:
        torch.distributed.barrier()


# -- run folder ----------------------------------------------------------------------------------------------------
class RunDir:
    """experiments/<name>/{models, training_states, val_images, tb} plus config.yml, cmd.txt and train.log."""

    def __init__(self, opt):
        self.root = Path(opt["path"]["experiments_root"]) / opt["name"]
        self.models = self.root / "models"
        self.states = self.root / "training_states"
        self.val_images = self.root / "val_images"
        self.tb = self.root / "tb"

    def newest_state(self):
        if not self.states.is_dir():
            return None
        files = natsorted(self.states.glob("*.state"))
        # A state is usable only with its weights next to it (weights are written first).
        files = [f for f in files if (self.models / f"{f.stem}_G.pth").is_file()]
        return files[-1] if files else None

    def archive(self):
        """Never delete an earlier run: move it aside with a timestamp."""
        if self.root.exists() and any(self.root.iterdir()):
            dst = self.root.with_name(f"{self.root.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}")
            self.root.rename(dst)
            return dst
        return None

    def make(self):
        for d in (self.models, self.states, self.val_images):
            d.mkdir(parents=True, exist_ok=True)


# -- data ----------------------------------------------------------------------------------------------------------
def build_datasets(opt, aux_kind):
    """Train set and a validation set that is not the test set.

    `datasets.val.holdout: N` takes the last N training pairs (in listing order, without augmentation) as the
    validation split and removes them from training; otherwise `datasets.val` is built as configured.
    """
    dsets = opt["datasets"]
    if "train" not in dsets:
        raise OptionError("option 'datasets.train' is required for training")
    topt = dict(dsets["train"], aux_input=aux_kind)
    train = create_dataset(topt, "train")
    val = None
    vopt = dsets.get("val")
    if vopt is not None:
        n = vopt.get("holdout")
        if n:
            n = int(n)
            if n >= len(train):
                raise OptionError(f"datasets.val.holdout={n} leaves no training data ({len(train)} pairs)")
            vbase = dict(topt, split="train", cache=False, zero_map=vopt.get("zero_map", topt.get("zero_map")))
            full_val = create_dataset(vbase, "val")  # the training split's files, read without augmentation
            idx = list(range(len(train)))
            val = Subset(full_val, idx[-n:])
            train = Subset(train, idx[:-n])
        else:
            val = create_dataset(dict(vopt, aux_input=aux_kind), "val")
    return train, val


def unwrap_subset(ds):
    return ds.dataset if isinstance(ds, Subset) else ds


# -- validation ----------------------------------------------------------------------------------------------------
def val_items(val_set, max_images):
    n = len(val_set) if not max_images else min(len(val_set), int(max_images))
    for i in range(n):
        item = val_set[i]
        yield EvalItem(item["name"], item["LQ_raw"], item.get("GT_raw"), item.get("AUX_mask"))


def validate(model: BaseModel, val_set, opt, step, run: RunDir, writer=None) -> dict:
    """PSNR/SSIM on the validation split, without and with the (LLFlow) GT-mean correction, through the test scripts'
    enhance path (engine/evaluate.py); reports go to val_images/<step>/, with previews of the first 4 images."""
    vopt = opt["val"]
    heat = float(vopt.get("heat") or 0.0)
    net = model.eval_network()
    was_training = net.training
    enhancer = Enhancer(net, opt, device=str(model.device))
    scorers = [make_scorer(metrics.Protocol(psnr=vopt["psnr"], ssim=vopt["ssim"], gt_mean=g, quantisation="round",
                                            inference=enhancer.describe(heat)))
               for g in ("none", "llflow")]
    folder = run.val_images / str(step)

    def preview(i, item, pred):
        if vopt.get("save_images", True) and i < 4 and item.gt is not None:
            save_strip(folder / f"{item.name}.png", [item.low, to_uint8(pred), item.gt])

    try:
        summaries = evaluate(enhancer, val_items(val_set, vopt.get("max_images")), scorers, heat=heat,
                             report_dir=folder, desc=f"val @{step}", on_image=preview)
    finally:
        # The Enhancer runs NHWC in eval mode; training goes on with the layout and mode it had (bit-exact resume).
        net.to(memory_format=torch.contiguous_format).train(was_training)
    if not summaries:
        raise OptionError("the validation set has no reference images (datasets.val must be paired)")
    plain, gtm = summaries
    res = {"psnr": plain["psnr"], "ssim": plain["ssim"], "psnr_gtmean": gtm["psnr"], "ssim_gtmean": gtm["ssim"],
           "count": plain["count"], "protocol": plain["protocol"]["description"],
           "protocol_gtmean": gtm["protocol"]["description"]}
    log.info("val @%d: PSNR %.3f SSIM %.4f | with GT-mean: PSNR %.3f SSIM %.4f (n=%d; %s)", step, res["psnr"],
             res["ssim"], res["psnr_gtmean"], res["ssim_gtmean"], res["count"], res["protocol"])
    if writer is not None:
        for k in ("psnr", "ssim", "psnr_gtmean", "ssim_gtmean"):
            writer.add_scalar(f"val/{k}", res[k], step)
    return res


# -- main loop -----------------------------------------------------------------------------------------------------
def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(opt: dict, launcher: str = "none", resume: bool = False, argv=None) -> dict:
    """Train until `train.niter`. Returns the history on rank 0: {'loss': [(step, first progress log)],
    'val': [(step, result)]} (for the flows the progress log is the NLL)."""
    rank, world, device = init_distributed(launcher)
    run = RunDir(opt)
    want_resume = resume or opt["path"].get("resume_state") not in (None, "", False)
    state_file = None
    if want_resume:
        rs = opt["path"].get("resume_state")
        state_file = Path(rs) if rs and rs != "auto" and Path(rs).is_file() else run.newest_state()
    if rank == 0:
        if state_file is None:
            archived = run.archive()
        run.make()
    barrier(world)
    setup_cli_logging(run.root / "train.log", rank=rank)
    if rank == 0 and state_file is None and archived:
        log.info("earlier run moved to %s", archived)
    if rank == 0:
        dump_options(opt, run.root / "config.yml")
        if opt.get("opt_path"):
            shutil.copy(opt["opt_path"], run.root / "config_original.yml")
        with open(run.root / "cmd.txt", "a") as f:
            f.write(" ".join([sys.executable] + list(argv if argv is not None else sys.argv)) + "\n")

    tr = opt["train"]
    seed = int(tr.get("manual_seed") or 0)
    seed_everything(seed + rank)
    model = model_class(opt.get("model"))(opt, device, rank, world)
    if tr.get("ema_decay"):
        model.enable_ema(float(tr["ema_decay"]))
    train_set, val_set = build_datasets(opt, getattr(model.eval_network(), "aux_input", None))
    niter = tr.get("niter")
    if not niter:
        raise OptionError("option 'train.niter' is required for training")
    topt = opt["datasets"]["train"]
    batch = int(topt.get("batch_size") or 1)
    loader, sampler = create_train_loader(train_set, topt, seed, rank, world)
    val_data = val_set if rank == 0 else None

    step, epoch, done_in_epoch = 0, 0, 0
    if state_file is not None:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        for key in model.all_networks():
            weights = run.models / f"{state_file.stem}_{key}.pth"
            model.load_network_state(key, read_state_dict(weights), source=str(weights))
        model.restore_training_state(state)
        step, epoch, done_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batches_in_epoch"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", state_file, step, epoch, done_in_epoch)
    writer = None
    if rank == 0 and opt.get("use_tb_logger", True):
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run.tb), purge_step=step + 1 if step else None)
    log.info("%s; %d train pairs, %s val pairs; %d steps", model.describe(), len(train_set),
             len(val_set) if val_set is not None else 0, niter)

    val_freq = int(tr.get("val_freq") or 0)
    print_freq = int(opt["logger"].get("print_freq") or 100)
    save_freq = int(opt["logger"].get("save_checkpoint_freq") or 0)
    keep = int(opt["logger"].get("keep_checkpoints") or 2)
    best = _read_best(run)
    history = {"loss": [], "val": []}
    need_init = state_file is None and not opt["path"].get("pretrain_model_G")  # fresh run: model.setup()
    pbar = tqdm(total=niter, initial=step, desc=f"train {opt['name']}", unit="it", disable=rank != 0,
                dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    stop = step >= niter
    while not stop:
        sampler.set_epoch(epoch, done_in_epoch * batch)
        base = unwrap_subset(train_set)
        if hasattr(base, "set_epoch"):
            base.set_epoch(seed + 1000003 * epoch)
        for data in loader:
            if need_init:
                model.setup(data)
                need_init = False
                if opt["val"].get("at_start") and rank == 0 and val_data is not None:
                    history["val"].append((0, validate(model, val_data, opt, 0, run, writer)))
            model.wrap_ddp()
            logs = model.optimize(data)
            model.update_ema()
            step += 1
            done_in_epoch += 1
            pbar.update(1)
            shown = {k: logs[k] for k in model.progress_keys if isinstance(logs.get(k), float)}
            pbar.set_postfix({**{k: f"{v:.4g}" for k, v in shown.items()},
                              **({"lr": f"{logs['lr']:.2e}"} if "lr" in logs else {})}, refresh=False)
            if shown:
                history["loss"].append((step, next(iter(shown.values()))))
            if writer is not None:
                for k, v in logs.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        writer.add_scalar(f"train/{k}", v, step)
            if step % print_freq == 0:
                log.info("step %d epoch %d: %s", step, epoch,
                         " ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float)))
            if val_freq and step % val_freq == 0:
                if rank == 0 and val_data is not None:
                    last_val = validate(model, val_data, opt, step, run, writer)
                    history["val"].append((step, last_val))
                    if best.get("psnr") is None or last_val["psnr"] > best["psnr"]:
                        best = {"psnr": last_val["psnr"], "step": step, "protocol": last_val["protocol"]}
                        save_generator(model.eval_network(), run.models / "best_psnr_G.pth")
                        _write_json(run.root / "best_psnr.json", best)
                barrier(world)
            if (save_freq and step % save_freq == 0) or step >= niter:
                if rank == 0:
                    save_checkpoint(model, run, step, epoch, done_in_epoch, keep)
                barrier(world)
            if step >= niter:
                stop = True
                break
        else:
            epoch += 1
            done_in_epoch = 0
    pbar.close()
    if writer is not None:
        writer.close()
    if rank == 0:
        log.info("training done at step %d (%d steps skipped as non-finite)", step, model.skipped_steps)
    return history


def save_checkpoint(model: BaseModel, run: RunDir, step, epoch, done_in_epoch, keep: int):
    """Weights first, then the training state (so every state has its weights); old states pruned, weights kept."""
    for key, net in model.all_networks().items():
        save_generator(net, run.models / f"{step}_{key}.pth")
    atomic_save(model.training_state(step, epoch, done_in_epoch), run.states / f"{step}.state")
    states = natsorted(run.states.glob("*.state"))
    for old in states[:-keep] if keep > 0 else []:
        old.unlink()


def _read_best(run):
    p = run.root / "best_psnr.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_json(path, obj):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1)
