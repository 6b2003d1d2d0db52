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
from data.split_guard import reads_test_data
from models.checkpoint import atomic_save, read_state_dict, safe_load, save_generator
from models.base_model import BaseModel
from models.build import model_class
from options.options import dump_options
from utils import metrics
from utils.atomic import atomic_open
from utils.errors import CheckpointError, ImageError, NonFiniteError, OptionError
from utils.paths import prepare_dir
from utils import threads
from utils.threads import set_threads
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


def validate(model: BaseModel, val_set, opt, step, run: RunDir, writer=None) -> dict | None:
    """PSNR/SSIM on the validation split, without and with the (LLFlow) GT-mean correction, through the test scripts'
    enhance path (engine/evaluate.py); reports go to val_images/<step>/, with previews of the first 4 images.
    None (with a warning) when the model's output is not finite at this step."""
    vopt = opt["val"]
    heat = float(vopt.get("heat") or 0.0)
    net = model.eval_network()
    was_training = net.training
    # fp32: the Enhancer must not cast the training network's weights (inference.dtype is for the test scripts)
    enhancer = Enhancer(net, opt, device=str(model.device), dtype="fp32")
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
    tr = opt["train"]
    niter = tr.get("niter")
    if not niter:  # checked before anything is created or moved
        raise OptionError("option 'train.niter' is required for training (a positive number of steps)")
    rank, world, device = init_distributed(launcher)
    run = RunDir(opt)
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
    state_file = resume_from[0] if resume_from else None
    archived = None
    if rank == 0:
        if state_file is None:
            archived = run.archive()
        run.make()
    barrier(world)
    setup_cli_logging(run.root / "train.log", rank=rank)
    if rank == 0:
        for note in (resume_from[3] if resume_from else []):
            log.warning(note)
        if want_resume and state_file is None:
            log.info("no training state to resume from in %s: starting a new run", run.states)
        if archived:
            log.info("earlier run moved to %s", archived)
        partial = run.partial_files()
        for p in partial:  # our own temp files from a write that a kill interrupted: never a complete checkpoint
            p.unlink()
        if partial:
            log.info("removed %d partial file(s) left by an interrupted checkpoint write (e.g. %s)", len(partial),
                     partial[0].name)
    if rank == 0:
        dump_options(opt, run.root / "config.yml")
        if opt.get("opt_path"):
            shutil.copy(opt["opt_path"], run.root / "config_original.yml")
        with open(run.root / "cmd.txt", "a") as f:
            f.write(" ".join([sys.executable] + list(argv if argv is not None else sys.argv)) + "\n")

    set_threads(tr.get("threads"), "train.threads")
    if rank == 0:
        log.info("CPU: %s", threads.describe())
    seed = int(tr.get("manual_seed") or 0)
    seed_everything(seed + rank)
    model = model_class(opt.get("model"))(opt, device, rank, world)
    if tr.get("ema_decay"):
        model.enable_ema(float(tr["ema_decay"]))
    train_set, val_set = build_datasets(opt, getattr(model.eval_network(), "aux_input", None))
    if model.needs_pairs and not getattr(unwrap_subset(train_set), "paired", True):
        raise OptionError(f"datasets.train.dataset {opt['datasets']['train'].get('dataset')} has no reference "
                          f"images, but {type(model).__name__} trains on low/reference pairs")
    unpaired_why = None if getattr(unwrap_subset(train_set), "paired", True) else reads_test_data(train_set)
    if unpaired_why:
        raise OptionError(f"datasets.train is test data ({unpaired_why}): unpaired training images must not come "
                          f"from a test split")
    why = reads_test_data(val_set) if val_set is not None and rank == 0 else None
    if why:  # official configs validate on the test set: said, not refused (utils.retest refuses it)
        log.warning("datasets.val is test data (%s): best_psnr_G.pth is then chosen on the test set, which inflates "
                    "reported numbers; datasets.val.holdout: N validates on held-out training pairs instead", why)
    topt = opt["datasets"]["train"]
    _check_crop_sizes(topt, model.eval_network())
    batch = int(topt.get("batch_size") or 1)
    loader, sampler = create_train_loader(train_set, topt, seed, rank, world)
    val_data = val_set if rank == 0 else None

    step, epoch, done_in_epoch = 0, 0, 0
    if state_file is not None:
        _, state, weights, _ = resume_from
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
            _check_batch(data, model.eval_network())
            if need_init:
                model.setup(data)
                need_init = False
                if opt["val"].get("at_start") and rank == 0 and val_data is not None:
                    first_val = validate(model, val_data, opt, 0, run, writer)
                    if first_val is not None:
                        history["val"].append((0, first_val))
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
                    if last_val is not None:
                        history["val"].append((step, last_val))
                    if last_val is not None and (best.get("psnr") is None or last_val["psnr"] > best["psnr"]):
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
    drift = ranks_max_difference(model, world)
    if rank == 0 and world > 1:
        if drift == 0:
            log.info("ranks in sync: the weights are identical on all %d processes", world)
        else:
            log.warning("ranks out of sync: weights differ from rank 0's by up to %.3g over %d processes", drift,
                        world)
    if rank == 0:
        log.info("training done at step %d (%d steps skipped as non-finite)", step, model.skipped_steps)
    return history


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
