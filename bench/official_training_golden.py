"""Goldens of the OFFICIAL LLFlow trainer, step by step, for tests/test_training_equivalence.py.

OMP_NUM_THREADS=1 python bench/official_training_golden.py --official PATH [--site DIR] [--shared ../shared]
                                         [--out tests/golden_training/llflow] [--steps 40]

PATH is a checkout of wyf0912/LLFlow (its `code/` folder is used); nothing of it is copied here. The official code
runs in a subprocess of its own (bench/_official.py: its code folder first on sys.path, `.cuda()` a no-op), float32,
one thread, through its own classes: its option parser on the committed small config
(tests/golden_training/llflow/config.yml: LOL-pc.yml at small widths, 40 steps, warm-up 6, milestones 20/30/36/38,
train_RRDB_delay 0.5), `models.create_model` (LLFlowModel: its Adam param groups, MultiStepLR_Restart, GradScaler),
and the lines of its train.py loop that matter, in its order: for step 1, 2, ...: `feed_data`,
`update_learning_rate(step, warmup_iter)` (scheduler step, then the warm-up lr), and `optimize_parameters(step)`
except at step 1 (train.py skips the update there). The official LLFlow's `gc` (growth channels, a constructor
default the YAML cannot set) is set to the config's `network_G.gc` by replacing that default.

Identical inputs on both sides:
- weights: our generator built from the config (seed 0), every parameter + N(0, 0.01) (no zero-initialised layer is
  an identity), ActNorm bias/logs zeroed (so both sides data-initialise them on their first update, as a fresh run
  does), rounded to float16 so that the file is small; both sides load these values as float32.
- batches: the official LoL_Dataset (train split) on real LOL-v1 pairs (../shared/data/LOL-v1-mini), seed 0: the
  uint8 crops it converts (after its crop and flip) are recorded, and each batch is rebuilt from them exactly as the
  dataset does (ToTensor, log(clamp(x + 1e-3, 1e-3)), histogram-equalised concat); the script checks that the rebuilt
  tensors equal the dataset's bit for bit. 4 batches of 2, cycled over the 40 steps.
- python's `random` (LLFlow's 20% GT colour-map prior) seeded 0 before step 1 on both sides.

Written to --out: weights.pt (float16), batches.pt (uint8 crops), steps.json (per step: loss, lr of each param
group, which of `grad_sets` (names that received a gradient) it had; the param groups' names, weight decay and
betas), grads.pt (float32: the gradient of every tensor at the first update, official step 2). The official model
runs unwrapped, as it does with one GPU (gpu_ids [0]); see docs/training-equivalence.md for its DataParallel path.

Also written (--schedules-out, default tests/golden_training/schedules.json): for every flow config under confs/
with a train.niter (and LOL-pc.yml with restarts added, as no shipped config has any), the official
MultiStepLR_Restart and BaseModel.update_learning_rate stepped for the full niter, as its train.py does before each
step; stored: the sha256 of the lrs of both param groups at every step, and where they change after the warm-up.

And (--data-out, default tests/golden_training/lol_dataset.pt): 6 items of the official LoL_Dataset (LOL-v1-mini
train split, crop 24, flip, rotation, noise with p 0.5, log input, histeq concat) with the random draws it made,
recorded in call order where it calls np.random.randint / np.random.choice / random.random / torch.randn (module
attributes of its namespace replaced by recording stand-ins; its file is not changed).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._official import cuda_shim, enter_official  # noqa: E402
from tests.training_replay import GOLDEN, SEED, batch_at, lr_digest, rebuild_batch  # noqa: E402

N_BATCHES = 4


# -- weights (our side builds them; the official side loads them) --------------------------------------------------
def make_weights(config: Path):
    import torch
    from models.build import build_generator
    from options.options import load_options
    opt = load_options(config, [], is_train=True)
    torch.manual_seed(SEED)
    net, _ = build_generator(opt)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
        for m in net.modules():
            if hasattr(m, "inited"):     # ActNorm: data-initialised at the first update on both sides
                m.bias.zero_()
                m.logs.zero_()
    return {k: v.to(torch.float16) for k, v in net.state_dict().items()}


# -- the official side -----------------------------------------------------------------------------------------------
def _official_child(args):
    import numpy as np
    import torch
    torch.set_num_threads(1)
    code = Path(args.official).resolve() / "code"
    enter_official(code, args.site)
    cuda_shim(torch)
    os.chdir(args.workdir)   # its option parser and model write nothing we keep; keep them out of the repository
    import options.options as option
    from models import create_model
    from models.modules import LLFlow_arch
    from data.LoL_dataset import LoL_Dataset

    cfg = Path(args.config)
    opt = option.parse(str(cfg), is_train=True)
    import yaml
    gc = yaml.safe_load(cfg.read_text())["network_G"].get("gc", 32)
    d = list(LLFlow_arch.LLFlow.__init__.__defaults__)
    d[0] = gc                                             # (gc=32, scale=4, K=None, opt=None, step=None)
    LLFlow_arch.LLFlow.__init__.__defaults__ = tuple(d)
    opt["dist"], opt["gpu_ids"] = False, None    # one device (the CPU): netG is not wrapped, as with gpu_ids [0]
    opt["datasets"]["train"]["root"] = str(Path(args.shared) / "data" / "LOL-v1-mini")
    opt = option.dict_to_nonedict(opt)

    # batches: the official dataset's own crops, recorded where it converts them
    ds = LoL_Dataset(opt=opt["datasets"]["train"], train=True, all_opt=opt)
    seen, convert = [], ds.to_tensor
    ds.to_tensor = lambda a: (seen.append(np.array(a)), convert(a))[1]
    random.seed(SEED)
    np.random.seed(SEED)
    order = np.random.permutation(len(ds))[: 2 * N_BATCHES]
    crops, names = [], []
    for i in order:
        seen.clear()
        item = ds[int(i)]
        hr, lr, his = seen
        crops.append({"hr": hr, "lr": lr, "his": his, "item": item})
        names.append(item["LQ_path"])
    batches_u8 = []
    for b in range(N_BATCHES):
        part = crops[2 * b: 2 * b + 2]
        u8 = {k: torch.from_numpy(np.stack([c[k] for c in part])) for k in ("hr", "lr", "his")}
        rebuilt = rebuild_batch(u8)
        for key in ("LQ", "GT"):
            official = torch.stack([c["item"][key] for c in part])
            assert torch.equal(rebuilt[key], official), f"rebuilt batch {b} {key} differs from the dataset's"
        batches_u8.append(u8)
    batches = [rebuild_batch(u) for u in batches_u8]

    model = create_model(opt, 0)
    net = model.netG
    inner = model.get_module(net)
    sd = {k: v.float() for k, v in torch.load(args.weights, weights_only=True).items()}
    own = set(inner.state_dict())
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    inner.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    # tensors of modules the official forward never runs (our generator does not build them; models/never_run.py)
    # keep their official initialisation: checked below to receive no gradient
    for m in inner.modules():            # a fresh official model: ActNorm initialises on its first training forward
        if hasattr(m, "inited"):
            m.inited = False

    def pname(n):
        return n[len("module."):] if n.startswith("module.") else n
    ids = {id(p): pname(n) for n, p in net.named_parameters()}
    groups = [{"names": [ids[id(p)] for p in g["params"]], "weight_decay": g["weight_decay"],
               "betas": list(g["betas"]), "eps": g["eps"]} for g in model.optimizer_G.param_groups]
    warmup = opt["train"]["warmup_iter"]
    steps, grads = [], None
    random.seed(SEED)
    for step in range(1, args.steps + 1):
        model.feed_data(batch_at(batches, step))
        model.update_learning_rate(step, warmup_iter=warmup)
        rec = {"step": step, "lr": [g["lr"] for g in model.optimizer_G.param_groups]}
        if step < 2:                         # train.py: `if current_step < 2: nll = 0` (no update)
            rec.update(loss=None, grad=[])
        else:
            rec["loss"] = model.optimize_parameters(step)
            rec["grad"] = sorted(pname(n) for n, p in net.named_parameters() if p.grad is not None)
            assert not set(missing) & set(rec["grad"]), "a tensor that we do not build received a gradient"
            if grads is None:
                grads = {pname(n): p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
            # the groups as they are now (the official encoder delay would append to group 1)
            rec["group_sizes"] = [len(g["params"]) for g in model.optimizer_G.param_groups]
        steps.append(rec)
    distinct = []                            # the sets of names with a gradient, once each; steps point to them
    for rec in steps:
        if rec["grad"] not in distinct:
            distinct.append(rec["grad"])
        rec["grad"] = distinct.index(rec["grad"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(grads, out / "grads.pt")
    torch.save(batches_u8, out / "batches.pt")
    meta = {"official_commit": args.commit, "images": names, "groups": groups, "grad_sets": distinct, "steps": steps,
            "not_built_here": missing, "not_official": unexpected, "torch": torch.__version__, "threads": 1}
    (out / "steps.json").write_text(json.dumps(meta, indent=1) + "\n")


# -- full-length learning-rate schedules ------------------------------------------------------------------------------
FAMILY_DIRS = ("LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow")
SCHEDULE_KEYS = ("lr_G", "lr_RRDB", "niter", "warmup_iter", "lr_steps", "lr_gamma", "restarts", "restart_weights",
                 "clear_state", "lr_steps_inverse")
#: a schedule with restarts (no shipped config has one): LOL-pc's with restarts at 0.5 niter (weight 0.5) and 0.8
RESTART_CASE = ("confs/LLFlow/LOL-pc.yml", ["train.restarts_rel=[0.5,0.8]", "train.restart_weights=[0.5,1]"])


@functools.lru_cache(maxsize=1)
def schedule_cases():
    """{label: our resolved train options (SCHEDULE_KEYS)} of every flow config under confs/ with a train.niter,
    plus RESTART_CASE."""
    from options.options import load_options
    cases = {}
    for fam in FAMILY_DIRS:
        for path in sorted((ROOT / "confs" / fam).glob("*.yml")):
            opt = load_options(path, [], is_train=True)
            if opt["train"].get("niter"):
                cases[str(path.relative_to(ROOT))] = {k: opt["train"].get(k) for k in SCHEDULE_KEYS}
    path, over = RESTART_CASE
    opt = load_options(ROOT / path, over, is_train=True)
    cases[f"{path} {' '.join(over)}"] = {k: opt["train"].get(k) for k in SCHEDULE_KEYS}
    return cases


def _official_schedules(args):
    """The official scheduler and warm-up for each case's full niter: the sha256 of the lrs of both groups at every
    step (lr_digest), and the steps where they change, from the end of the warm-up on (for a readable failure)."""
    import torch
    enter_official(Path(args.official).resolve() / "code", args.site)
    import models.lr_scheduler as lr_scheduler
    from models.base_model import BaseModel
    cases = json.loads(Path(args.cases).read_text())
    out = []
    for label, t in cases.items():
        same = next((o for o in out if o["train"] == t), None)
        if same is not None:            # many configs share a schedule: stepped once
            same["configs"].append(label)
            continue
        p = torch.nn.Parameter(torch.zeros(1))
        q = torch.nn.Parameter(torch.zeros(1))
        # LLFlowModel.init_optimizer_and_scheduler's groups: lr_G, and lr_RRDB (default lr_G)
        opt = torch.optim.Adam([{"params": [p], "lr": t["lr_G"]},
                                {"params": [q], "lr": t["lr_RRDB"] if t["lr_RRDB"] is not None else t["lr_G"]}])
        sched = lr_scheduler.MultiStepLR_Restart(opt, t["lr_steps"] or [], restarts=t["restarts"],
                                                 weights=t["restart_weights"], gamma=t["lr_gamma"],
                                                 clear_state=t["clear_state"],
                                                 lr_steps_invese=t["lr_steps_inverse"] or [])
        model = BaseModel.__new__(BaseModel)
        model.optimizers, model.schedulers = [opt], [sched]
        lrs = []
        for step in range(1, t["niter"] + 1):
            model.update_learning_rate(step, warmup_iter=t["warmup_iter"])
            lrs.append([g["lr"] for g in opt.param_groups])
        out.append({"configs": [label], "train": t, "sha256": lr_digest(lrs),
                    "changes": [[i + 1, v] for i, v in enumerate(lrs) if i == 0 or v != lrs[i - 1]
                                if i + 1 >= (t["warmup_iter"] or 0) - 1]})
    Path(args.out).write_text(json.dumps({"official_commit": args.commit, "torch": torch.__version__,
                                          "schedules": out}, indent=1) + "\n")


# -- the training data pipeline ----------------------------------------------------------------------------------------
#: the official LoL_Dataset with every augmentation of its LOL-v1 loader switched on (the noise at p 0.5)
DATA_OPTIONS = {"use_crop": True, "GT_size": 24, "use_flip": True, "use_rot": True, "noise_prob": 0.5,
                "noise_level": 5, "log_low": True}
DATA_SAMPLES = 6
DATA_SEED = 1    # its 6 items have every rotation (k 0, 1, 3), both flip outcomes and 4 with noise


class _Recorder:
    """A stand-in for a module in the official dataset's namespace: every attribute is the module's, except the
    random draws listed in `draws`, which are recorded (name, value) into `log` in call order."""

    def __init__(self, module, draws: dict, log: list):
        self._module, self._draws, self._log = module, draws, log

    def __getattr__(self, name):
        if name in self._draws:
            fn = self._draws[name]

            def call(*a, **k):
                v = fn(*a, **k)
                self._log.append((name, v))
                return v
            return call
        return getattr(self._module, name)


def _official_data(args):
    """Items of the official LoL_Dataset (train split of LOL-v1-mini, DATA_OPTIONS) with its random draws."""
    import numpy as np
    import torch
    enter_official(Path(args.official).resolve() / "code", args.site)
    import data.LoL_dataset as lol
    log: list = []
    np_random = _Recorder(np.random, {"randint": lambda **k: int(np.random.randint(**k)),
                                      "choice": lambda a: np.random.choice(a).item()}, log)
    lol.np = _Recorder(np, {}, log)
    lol.np.__dict__["random"] = np_random
    lol.random = _Recorder(random, {"random": random.random}, log)
    lol.torch = _Recorder(torch, {"randn": lambda shape: torch.randn(shape)}, log)
    opt = dict(DATA_OPTIONS, root=str(Path(args.shared) / "data" / "LOL-v1-mini"))
    ds = lol.LoL_Dataset(opt=opt, train=True, all_opt={"concat_histeq": True, "histeq_as_input": False})
    random.seed(DATA_SEED)
    np.random.seed(DATA_SEED)
    torch.manual_seed(DATA_SEED)
    items = []
    for i in np.random.permutation(len(ds))[:DATA_SAMPLES]:
        log.clear()
        item = ds[int(i)]
        items.append({"name": item["LQ_path"], "draws": list(log), "LQ": item["LQ"], "GT": item["GT"]})
    torch.save({"options": DATA_OPTIONS, "items": items, "official_commit": args.commit}, args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="path to a checkout of wyf0912/LLFlow")
    ap.add_argument("--site", help="folder put on the official side's sys.path for its extra packages")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="folder holding data/LOL-v1-mini")
    ap.add_argument("--out", default=str(GOLDEN))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--schedules-out", default=str(GOLDEN.parent / "schedules.json"))
    for hidden in ("--weights", "--config", "--workdir", "--commit", "--cases"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-schedules", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-data", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data-out", default=str(GOLDEN.parent / "lol_dataset.pt"))
    args = ap.parse_args(argv)
    if args.child:
        return _official_child(args)
    if args.child_schedules:
        return _official_schedules(args)
    if args.child_data:
        return _official_data(args)
    import tempfile
    import torch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = GOLDEN / "config.yml"
    torch.save(make_weights(config), out / "weights.pt")
    commit = subprocess.run(["git", "-C", args.official, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="official_training_") as tmp:
        cmd = [sys.executable, __file__, "--child", "--official", args.official, "--shared", args.shared,
               "--out", str(out), "--steps", str(args.steps), "--weights", str(out / "weights.pt"),
               "--config", str(config), "--workdir", tmp, "--commit", commit]
        cmd += ["--site", args.site] if args.site else []
        r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp)
        if r.returncode:
            raise SystemExit(f"official run failed (exit {r.returncode})")
        cases = Path(tmp) / "cases.json"
        cases.write_text(json.dumps(schedule_cases()))
        cmd = [sys.executable, __file__, "--child-schedules", "--official", args.official, "--cases", str(cases),
               "--out", args.schedules_out, "--commit", commit] + (["--site", args.site] if args.site else [])
        r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp)
        if r.returncode:
            raise SystemExit(f"official schedule run failed (exit {r.returncode})")
        cmd = [sys.executable, __file__, "--child-data", "--official", args.official, "--shared", args.shared,
               "--out", args.data_out, "--commit", commit] + (["--site", args.site] if args.site else [])
        r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp)
        if r.returncode:
            raise SystemExit(f"official data run failed (exit {r.returncode})")
    print(f"wrote {out}, {args.schedules_out} and {args.data_out}")


if __name__ == "__main__":
    main()
