"""The training loop behind train.py: run folder, data, resume, validation, checkpoints, TensorBoard, tqdm."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from torch.utils.data import Subset
from tqdm import tqdm

from data.loader import create_dataset, create_train_loader
from data.split_guard import reads_test_data
from models.checkpoint import atomic_save, read_state_dict, safe_load, save_generator
from models.methods.base_model import BaseModel
from models.build import model_class
from options.options import dump_options
from utils import metrics
from utils.atomic import atomic_open
from utils.errors import CheckpointError, ImageError, NonFiniteError, OptionError
from utils.devices import pick_device
from utils.paths import prepare_dir
from utils import threads
from utils.threads import set_threads
from utils.logging_setup import setup_cli_logging
from .evaluate import EvalItem, evaluate, make_scorer
from .grid import save_strip
from .inference import Enhancer, to_uint8
from .settings import RunSettings, resolve_settings

log = logging.getLogger("lowlight_flow")


# -- distributed ---------------------------------------------------------------------------------------------------
def init_distributed(launcher: str):
    """(rank, world_size, device). `pytorch` = torchrun environment; NCCL on CUDA, gloo on CPU."""
    if launcher == "none":
        return 0, 1, pick_device("auto")
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


def _check_ranks_in_sync(model: BaseModel, rank: int, world: int) -> None:
    """Log (rank 0) whether every process ended with rank 0's weights; collective, so every rank calls it."""
    drift = ranks_max_difference(model, world)
    if rank == 0 and world > 1:
        if drift == 0:
            log.info("ranks in sync: the weights are identical on all %d processes", world)
        else:
            log.warning("ranks out of sync: weights differ from rank 0's by up to %.3g over %d processes", drift,
                        world)


def ranks_max_difference(model: BaseModel, world: int) -> float:
    """Largest |difference| between any rank's weights and rank 0's (every network a checkpoint saves); 0.0 for one
    process. DDP applies the same averaged gradients everywhere, so anything but 0 means the ranks drifted apart.
    Every rank must call it (collective)."""
    if world <= 1:
        return 0.0
    import torch.distributed as dist
    flat = [t.detach().reshape(-1).float() for net in model.all_networks().values()
            for t in net.state_dict().values() if t.is_floating_point()]
    mine = torch.cat(flat) if flat else torch.zeros(1, device=model.device)
    ref = mine.clone()
    dist.broadcast(ref, 0)
    diff = (mine - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


# -- run folder ----------------------------------------------------------------------------------------------------
class RunDir:
    """experiments/<name>/{models, training_states, val_images, tb} plus config.yml, cmd.txt and train.log."""

    def __init__(self, opt):
        self.root = Path(opt["path"]["experiments_root"]) / opt["name"]
        self.models = self.root / "models"
        self.states = self.root / "training_states"
        self.val_images = self.root / "val_images"
        self.tb = self.root / "tb"

    def states_newest_first(self) -> list[Path]:
        """Training states with their weights next to them (weights are written first), newest first."""
        if not self.states.is_dir():
            return []
        files = natsorted(self.states.glob("*.state"), reverse=True)
        return [f for f in files if (self.models / f"{f.stem}_G.pth").is_file()]

    def newest_state(self):
        files = self.states_newest_first()
        return files[0] if files else None

    def partial_files(self) -> list[Path]:
        """Temp files of atomic writes that a killed process left behind (never a complete file)."""
        return [p for d in (self.models, self.states) if d.is_dir() for p in d.glob(".*.tmp")]

    def archive(self):
        """Never delete an earlier run: move it aside with a timestamp (and a counter if that name is taken)."""
        if self.root.exists() and any(self.root.iterdir()):
            base = f"{self.root.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
            dst, n = self.root.with_name(base), 1
            while dst.exists():
                n += 1
                dst = self.root.with_name(f"{base}_{n}")
            self.root.rename(dst)
            return dst
        return None

    def make(self):
        for d in (self.models, self.states, self.val_images):
            prepare_dir(d, "path.experiments_root")


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


def validate(model: BaseModel, val_set, opt, step, run: RunDir, writer=None,
             settings: RunSettings | None = None) -> dict | None:
    """PSNR/SSIM on the validation split, without and with the (LLFlow) GT-mean correction, through the test scripts'
    enhance path (engine/evaluate.py); reports go to val_images/<step>/, with previews of the first 4 images.
    None (with a warning) when the model's output is not finite at this step. `settings`: those of
    :func:`validation_settings`, resolved once per run (default: resolved now)."""
    vopt = opt["val"]
    heat = float(vopt.get("heat") or 0.0)
    net = model.eval_network()
    was_training = net.training
    enhancer = Enhancer(net, opt, settings=settings or validation_settings(opt, model))
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
    except NonFiniteError as e:
        # A model early in training can decode to inf; that is a fact about this step, not a reason to stop.
        log.warning("val @%d: no score (%s); training goes on, this step is not a best-model candidate", step, e)
        return None
    finally:
        # The Enhancer runs NHWC in eval mode; training goes on with its own layout and mode (bit-exact resume).
        layout = torch.channels_last if opt["train"].get("channels_last") else torch.contiguous_format
        net.to(memory_format=layout).train(was_training)
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


def validation_settings(opt: dict, model: BaseModel) -> RunSettings:
    """How validation runs the training network: on its device, in fp32 (the Enhancer must not cast the training
    network's weights; inference.dtype is for the test scripts), the rest from the config's `inference`."""
    return resolve_settings(opt, device=str(model.device), dtype="fp32")


# -- main loop -----------------------------------------------------------------------------------------------------
def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(opt: dict, launcher: str = "none", resume: bool = False, argv=None) -> dict:
    """Train until `train.niter`. Returns the history on rank 0: {'loss': [(step, first progress log)],
    'val': [(step, result)]} (for the flows the progress log is the NLL)."""
    tr = opt["train"]
    if not tr.get("niter"):  # checked before anything is created or moved
        raise OptionError("option 'train.niter' is required for training (a positive number of steps)")
    rank, world, device = init_distributed(launcher)
    run = RunDir(opt)
    resume_from = open_run(opt, run, resume, rank, world, argv)
    set_threads(tr.get("threads"), "train.threads")
    if rank == 0:
        log.info("CPU: %s", threads.describe())
    seed = int(tr.get("manual_seed") or 0)
    seed_everything(seed + rank)
    model = model_class(opt.get("model"))(opt, device, rank, world)
    if tr.get("ema_decay"):
        model.enable_ema(float(tr["ema_decay"]))
    if tr.get("channels_last"):
        for net in model.all_networks().values():  # in place: the optimizers keep the same parameter objects
            net.to(memory_format=torch.channels_last)
    data = build_training_data(opt, model, seed, rank, world)
    start = restore(model, run, resume_from, tr["niter"]) if resume_from else (0, 0, 0)
    # a fresh run (no state, no pretrained weights) runs model.setup() on its first batch
    fresh = resume_from is None and not opt["path"].get("pretrain_model_G")
    return TrainingLoop(opt, run, model, data, start, rank, world, fresh).run()


# -- set-up --------------------------------------------------------------------------------------------------------
def open_run(opt: dict, run: RunDir, resume: bool, rank: int, world: int, argv) -> tuple | None:
    """Choose the run folder's state to resume from (or archive an earlier run), create the folders, start the log
    and record the config and command. Returns :func:`_read_resume`'s tuple, or None for a new run."""
    if rank == 0:
        prepare_dir(run.root.parent, "path.experiments_root")
    want_resume = resume or opt["path"].get("resume_state") not in (None, "", False)
    candidates, explicit = [], False
    if want_resume:
        rs = opt["path"].get("resume_state")
        explicit = isinstance(rs, str) and rs not in ("", "auto")
        if explicit and not Path(rs).is_file():
            raise OptionError(f"option 'path.resume_state': training state '{rs}' not found")
        candidates = [Path(rs)] if explicit else run.states_newest_first()
    resume_from = _read_resume(run, candidates, explicit) if candidates else None
    archived = None
    if rank == 0:
        if resume_from is None:
            archived = run.archive()
        run.make()
    barrier(world)
    setup_cli_logging(run.root / "train.log", rank=rank)
    if rank == 0:
        _say_how_run_starts(run, resume_from, want_resume, archived)
        _record_run(opt, run, argv)
    return resume_from


def _say_how_run_starts(run: RunDir, resume_from, want_resume: bool, archived) -> None:
    """Log the resume notes and the archived run; remove temp files an interrupted checkpoint write left."""
    for note in (resume_from[3] if resume_from else []):
        log.warning(note)
    if want_resume and resume_from is None:
        log.info("no training state to resume from in %s: starting a new run", run.states)
    if archived:
        log.info("earlier run moved to %s", archived)
    partial = run.partial_files()
    for p in partial:  # our own temp files from a write that a kill interrupted: never a complete checkpoint
        p.unlink()
    if partial:
        log.info("removed %d partial file(s) left by an interrupted checkpoint write (e.g. %s)", len(partial),
                 partial[0].name)


def _record_run(opt: dict, run: RunDir, argv) -> None:
    """config.yml (resolved), config_original.yml (as given) and the command line appended to cmd.txt."""
    dump_options(opt, run.root / "config.yml")
    if opt.get("opt_path"):
        shutil.copy(opt["opt_path"], run.root / "config_original.yml")
    with open(run.root / "cmd.txt", "a") as f:
        f.write(" ".join([sys.executable] + list(argv if argv is not None else sys.argv)) + "\n")


@dataclass
class TrainingData:
    """The training set with its loader and sampler, and the validation set (validated on rank 0 only)."""
    train_set: object
    val_set: object
    loader: object
    sampler: object
    batch: int
    seed: int
    rank: int

    @property
    def val_data(self):
        """The validation set where this process validates (rank 0), else None."""
        return self.val_set if self.rank == 0 else None


def build_training_data(opt: dict, model: BaseModel, seed: int, rank: int, world: int) -> TrainingData:
    """Datasets and loader for `model`, refusing what it cannot train on (unpaired data for a paired model, test
    data as unpaired training images, crops the network cannot take); test data as validation is a warning."""
    train_set, val_set = build_datasets(opt, getattr(model.eval_network(), "aux_input", None))
    if model.needs_pairs and not getattr(unwrap_subset(train_set), "paired", True):
        raise OptionError(f"datasets.train.dataset {opt['datasets']['train'].get('dataset')} has no reference "
                          f"images, but {type(model).__name__} trains on low/reference pairs")
    unpaired_why = None if getattr(unwrap_subset(train_set), "paired", True) else reads_test_data(train_set)
    if unpaired_why:
        raise OptionError(f"datasets.train is test data ({unpaired_why}): unpaired training images must not come "
                          f"from a test split")
    why = reads_test_data(val_set) if val_set is not None and rank == 0 else None
    if why:  # official configs validate on the test set: said, not refused (tools/retest.py refuses it)
        log.warning("datasets.val is test data (%s): best_psnr_G.pth is then chosen on the test set, which inflates "
                    "reported numbers; datasets.val.holdout: N validates on held-out training pairs instead", why)
    topt = opt["datasets"]["train"]
    _check_crop_sizes(topt, model.eval_network())
    loader, sampler = create_train_loader(train_set, topt, seed, rank, world)
    return TrainingData(train_set, val_set, loader, sampler, int(topt.get("batch_size") or 1), seed, rank)


def restore(model: BaseModel, run: RunDir, resume_from: tuple, niter) -> tuple[int, int, int]:
    """Load the weights and training state of `resume_from`; returns (step, epoch, batches done in the epoch)."""
    state_file, state, weights, _ = resume_from
    for key in model.all_networks():
        if key not in weights:
            raise CheckpointError(f"training state '{state_file}' has no {state_file.stem}_{key}.pth next to it "
                                  f"in {run.models}")
        model.load_network_state(key, weights[key], source=str(run.models / f"{state_file.stem}_{key}.pth"))
    try:
        model.restore_training_state(state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"training state '{state_file}' does not fit this model/config "
                              f"({type(e).__name__}: {e})") from None
    step, epoch, done_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batches_in_epoch"])
    log.info("resumed from %s at step %d (epoch %d, batch %d)", state_file, step, epoch, done_in_epoch)
    if step >= niter:
        log.warning("the run is already at step %d >= train.niter=%d: nothing to train (raise train.niter to "
                    "continue it)", step, niter)
    return step, epoch, done_in_epoch


# -- the loop ------------------------------------------------------------------------------------------------------
class TrainingLoop:
    """Steps until `train.niter`: progress logs (tqdm, TensorBoard, train.log), validation with best-model tracking
    and checkpoints, from (step, epoch, batches done in the epoch) = `start`."""

    def __init__(self, opt: dict, run: RunDir, model: BaseModel, data: TrainingData, start: tuple, rank: int,
                 world: int, fresh: bool):
        self.opt, self.run_dir, self.model, self.data, self.rank, self.world = opt, run, model, data, rank, world
        self.step, self.epoch, self.done_in_epoch = start
        tr, lg = opt["train"], opt["logger"]
        self.niter = tr["niter"]
        self.val_settings = validation_settings(opt, model) if data.val_data is not None else None
        self.writer = None
        if rank == 0 and opt.get("use_tb_logger", True):
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run.tb), purge_step=self.step + 1 if self.step else None)
        log.info("%s; %d train pairs, %s val pairs; %d steps", model.describe(), len(data.train_set),
                 len(data.val_set) if data.val_set is not None else 0, self.niter)
        self.val_freq = int(tr.get("val_freq") or 0)
        self.print_freq = int(lg.get("print_freq") or 100)
        self.save_freq = int(lg.get("save_checkpoint_freq") or 0)
        self.keep = int(lg.get("keep_checkpoints") or 2)
        self.channels_last = bool(tr.get("channels_last"))
        # train.max_minutes: this process's wall-clock budget, counted from here (set-up and data loading excluded)
        self.deadline = time.monotonic() + 60.0 * float(tr["max_minutes"]) if tr.get("max_minutes") else None
        self.best = _read_best(run)
        self.history = {"loss": [], "val": []}
        self._timing = None  # (time, step) after the first step of this process: its set-up cost is not a step's
        self.need_init = fresh
        self.pbar = tqdm(total=self.niter, initial=self.step, desc=f"train {opt['name']}", unit="it",
                         disable=rank != 0, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)

    def run(self) -> dict:
        """Train to `train.niter`; returns the history (see :func:`train`)."""
        stop = self.step >= self.niter
        while not stop:
            self._start_epoch()
            for batch in self.data.loader:
                self._train_step(batch)
                if self._after_step():
                    stop = True
                    break
            else:
                self.epoch += 1
                self.done_in_epoch = 0
        self.pbar.close()
        if self.writer is not None:
            self.writer.close()
        _check_ranks_in_sync(self.model, self.rank, self.world)
        if self.rank == 0:
            log.info("training done at step %d (%d steps skipped as non-finite)%s", self.step,
                     self.model.skipped_steps, self._speed())
        return self.history

    def _speed(self) -> str:
        """'; S s/step over steps A..B' for this process (validation and checkpoints included), '' if too short."""
        if self._timing is None or self.step <= self._timing[1]:
            return ""
        t0, s0 = self._timing
        per_step = (time.monotonic() - t0) / (self.step - s0)
        self.history["seconds_per_step"] = per_step
        return f"; {per_step:.3f} s/step over steps {s0 + 1}..{self.step} (first step of the process excluded)"

    def _start_epoch(self) -> None:
        """Position the sampler (mid-epoch after a resume) and reseed the dataset's per-epoch randomness."""
        self.data.sampler.set_epoch(self.epoch, self.done_in_epoch * self.data.batch)
        base = unwrap_subset(self.data.train_set)
        if hasattr(base, "set_epoch"):
            base.set_epoch(self.data.seed + 1000003 * self.epoch)

    def _train_step(self, batch: dict) -> None:
        _check_batch(batch, self.model.eval_network())
        if self.need_init:
            self.model.setup(batch)
            self.need_init = False
            if self.opt["val"].get("at_start") and self.rank == 0 and self.data.val_data is not None:
                first_val = self._validate(0)
                if first_val is not None:
                    self.history["val"].append((0, first_val))
        self.model.wrap_ddp()
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
                     for k, v in batch.items()}
        logs = self.model.optimize(batch)
        self.model.update_ema()
        self.step += 1
        self.done_in_epoch += 1
        if self._timing is None:
            self._timing = (time.monotonic(), self.step)
        self._log_step(logs)

    def _log_step(self, logs: dict) -> None:
        """The step's logs to the progress bar, the history, TensorBoard and (every print_freq) train.log."""
        self.pbar.update(1)
        shown = {k: logs[k] for k in self.model.progress_keys if isinstance(logs.get(k), float)}
        self.pbar.set_postfix({**{k: f"{v:.4g}" for k, v in shown.items()},
                               **({"lr": f"{logs['lr']:.2e}"} if "lr" in logs else {})}, refresh=False)
        if shown:
            self.history["loss"].append((self.step, next(iter(shown.values()))))
        if self.writer is not None:
            for k, v in logs.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"train/{k}", v, self.step)
        if self.step % self.print_freq == 0:
            log.info("step %d epoch %d: %s", self.step, self.epoch,
                     " ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float)))

    def _after_step(self) -> bool:
        """Validation and checkpoints due at this step; True when `train.niter` or `train.max_minutes` is reached."""
        out_of_time = self._out_of_time()
        if self.val_freq and self.step % self.val_freq == 0:
            if self.rank == 0 and self.data.val_data is not None:
                self._validate_and_keep_best()
            barrier(self.world)
        if (self.save_freq and self.step % self.save_freq == 0) or self.step >= self.niter or out_of_time:
            if self.rank == 0:
                save_checkpoint(self.model, self.run_dir, self.step, self.epoch, self.done_in_epoch, self.keep)
            barrier(self.world)
        if out_of_time and self.step < self.niter and self.rank == 0:
            log.info("train.max_minutes=%g reached at step %d of %d: checkpoint saved; --resume continues",
                     float(self.opt["train"]["max_minutes"]), self.step, self.niter)
        return self.step >= self.niter or out_of_time

    def _out_of_time(self) -> bool:
        """Whether the wall-clock budget is spent; with several ranks, rank 0's clock decides for all."""
        if self.deadline is None:
            return False
        late = torch.tensor([float(time.monotonic() >= self.deadline)], device=self.model.device)
        if self.world > 1:
            torch.distributed.broadcast(late, 0)
        return bool(late.item())

    def _validate(self, step: int) -> dict | None:
        return validate(self.model, self.data.val_data, self.opt, step, self.run_dir, self.writer,
                        settings=self.val_settings)

    def _validate_and_keep_best(self) -> None:
        """Validate; a better PSNR than the best so far writes best_psnr_G.pth and best_psnr.json."""
        res = self._validate(self.step)
        if res is None:
            return
        self.history["val"].append((self.step, res))
        if self.best.get("psnr") is None or res["psnr"] > self.best["psnr"]:
            self.best = {"psnr": res["psnr"], "step": self.step, "protocol": res["protocol"]}
            save_generator(self.model.eval_network(), self.run_dir.models / "best_psnr_G.pth")
            _write_json(self.run_dir.root / "best_psnr.json", self.best)


def _check_crop_sizes(topt: dict, net) -> None:
    """Training crops must be multiples of the network's pad multiple and at least its minimum input size."""
    multiple, least = int(getattr(net, "pad_multiple", 1)), int(getattr(net, "min_size", 1))
    for key in ("GT_size", "center_crop_hr_size"):
        size = topt.get(key)
        if key == "GT_size" and not topt.get("use_crop"):
            continue
        if size and (size % multiple or size < least):
            fit = max(-(-least // multiple) * multiple, multiple * max(1, round(size / multiple)))
            raise OptionError(f"option 'datasets.train.{key}' is {size}: this model trains on crops that are a "
                              f"multiple of {multiple}" + (f" and at least {least}" if least > 1 else "")
                              + f" pixels (e.g. {fit})")


def _check_batch(batch: dict, net) -> None:
    """Training images the network cannot take whole (no crop configured) are an error naming the first file."""
    h, w = batch["LQ"].shape[-2:]
    multiple, least = int(getattr(net, "pad_multiple", 1)), int(getattr(net, "min_size", 1))
    if h % multiple or w % multiple or min(h, w) < least:
        path = (batch.get("LQ_path") or ["?"])[0]
        raise ImageError(f"{path}: training image of {h}x{w} (HxW) is not a multiple of {multiple}"
                         + (f" or is smaller than {least}" if least > 1 else "")
                         + ": set datasets.train.use_crop with a GT_size that is, or resize_to")


def _read_resume(run: RunDir, candidates: list[Path], explicit: bool):
    """(state file, state dict, {network key: weights}, notes) of the newest candidate that reads completely.

    A state or weights file that cannot be read (truncated, corrupt) is skipped with a note naming it and the next
    older one is tried; with an explicitly named state (`explicit`) it is an error instead. None when no candidate
    reads.
    """
    notes, first_error = [], None
    for f in candidates:
        try:
            state = safe_load(f, "training state")
            if not isinstance(state, dict) or not all(k in state for k in ("step", "epoch", "batches_in_epoch")):
                raise CheckpointError(f"'{f}' is not a training state of this framework")
            weights = {}
            for w in sorted(run.models.glob(f"{f.stem}_*.pth")):
                weights[w.stem[len(f.stem) + 1:]] = read_state_dict(w)
        except CheckpointError as e:
            if explicit:
                raise
            first_error = first_error or e
            notes.append(f"{e}; trying the previous training state")
            continue
        if notes:
            notes.append(f"resuming from the newest training state that reads completely: {f}")
        return f, state, weights, notes
    raise CheckpointError(f"no training state in {run.states} can be read (newest: {first_error}); start a new run "
                          f"without --resume / path.resume_state, or restore the files")


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
    if not p.is_file():
        return {}
    try:
        best = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p} is not valid JSON ({e}); fix it or move it away to restart best-model "
                              f"tracking") from None
    if not isinstance(best, dict):
        raise CheckpointError(f"{p} does not hold a JSON object; fix it or move it away")
    return best


def _write_json(path, obj):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1)
