"""Goldens of the authors' DRBN stage-1 trainer (DRBL-stage1/src/trainer.py), for tests/test_training_equivalence_drbn.py.

python bench/golden_training_drbn.py --official /path/to/DRBN-checkout [--out tests/golden_training/drbn_stage1]

The official `Trainer.train()` runs, unchanged, in a subprocess with the checkout's DRBL-stage1/src first on sys.path
and these shims (no file of the checkout is edited): `.cuda()` returns the tensor/module unchanged, and an empty
`IPython` module (trainer.py imports it, never uses it). Its own `model.Model`, `loss.Loss`, `utility.make_optimizer`
/ `make_scheduler` and `pytorch_ssim` are used; the data loader is replaced by recorded batches, and the checkpoint
object by a stub that keeps the log lines.

Both sides start from the same weights: our DRBN built from confs/DRBN/train_LOL-v1.yml (the official sizes) with
torch.manual_seed(0). Batches: STEPS batches of BATCH random CROPxCROP crops (uint8, as the official loader gives
them) of real LOL-v1 pairs from ../shared/data/LOL-v1-mini (the demo data when it is absent), EPOCH_STEPS batches per
official epoch, so its StepLR(lr_decay=LR_DECAY epochs) decays inside the run. Recorded per step: the three
-SSIM terms (scales 1, 1/2, 1/4), the learning rate, whether the step was skipped; at step 1 the gradient of every
parameter; after the last step the weights. Gradients and weights of tensors above 64 elements are stored at a fixed
random eighth of their elements (plus the full norm) to stay under 2 MB.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, EPOCH_STEPS, LR_DECAY, BATCH, CROP, LR = 20, 5, 2, 2, 32, 1e-3
CONF = "confs/DRBN/train_LOL-v1.yml"
FULL_BELOW = 64


def sample_index(numel: int, i: int):
    """The stored elements of the i-th tensor: all of a small one, else a fixed random eighth (int64 indices)."""
    import numpy as np
    import torch
    if numel <= FULL_BELOW:
        return torch.arange(numel)
    rng = np.random.default_rng([2026, i])
    return torch.from_numpy(np.sort(rng.choice(numel, numel // 8, replace=False)).astype(np.int64))


def initial_weights():
    """Our DRBN at the official sizes, seed 0: the starting point of both sides."""
    import torch
    from models.build import build_network
    from options.options import load_options
    opt = load_options(ROOT / CONF, [], is_train=True)
    torch.manual_seed(0)
    net, _ = build_network(opt)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _batches():
    import numpy as np
    import torch
    from data.image_io import read_rgb
    shared = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared")) / "data/LOL-v1-mini/our485"
    if not (shared / "low").is_dir():
        from data.demo import ensure_demo_data
        shared = Path(ensure_demo_data(None)) / "our485"
    names = sorted(p.name for p in (shared / "low").glob("*.png"))
    rng = np.random.default_rng(0)
    lows, highs = [], []
    for _ in range(STEPS * BATCH):
        name = names[rng.integers(len(names))]
        lo, hi = read_rgb(shared / "low" / name), read_rgb(shared / "high" / name)
        y, x = rng.integers(lo.shape[0] - CROP), rng.integers(lo.shape[1] - CROP)
        lows.append(lo[y:y + CROP, x:x + CROP].transpose(2, 0, 1))
        highs.append(hi[y:y + CROP, x:x + CROP].transpose(2, 0, 1))
    shape = (STEPS, BATCH, 3, CROP, CROP)
    return (torch.from_numpy(np.stack(lows)).reshape(shape).contiguous(),
            torch.from_numpy(np.stack(highs)).reshape(shape).contiguous())


def _official_child(src: Path, init_file: Path, out_file: Path):
    """Runs in the subprocess: the official trainer over the recorded batches."""
    import types
    from types import SimpleNamespace
    import torch
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.modules.setdefault("IPython", types.ModuleType("IPython"))
    sys.path[:] = [str(src)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    os.chdir(src)
    import loss as official_loss
    import model as official_model
    import pytorch_ssim
    from trainer import Trainer
    data = torch.load(init_file, weights_only=True)
    lows, highs = data["low"], data["high"]
    args = SimpleNamespace(
        scale=[1], lr=LR, lr_decay=LR_DECAY, decay_type="step", gamma=0.5, optimizer="ADAM", beta1=0.9,
        beta2=0.999, epsilon=1e-8, weight_decay=0, load=".", skip_threshold=1e6, print_every=10 ** 9,
        batch_size=BATCH, cpu=True, precision="single", test_only=False, epochs=10 ** 9, model="DRBN",
        self_ensemble=False, chop=False, n_GPUs=1, save_models=False, pre_train=".", resume=0, n_colors=3,
        loss="1*MSE", rgb_range=255)
    logs = []
    ckp = SimpleNamespace(dir=str(out_file.parent), log_file=open(os.devnull, "w"), log=[],
                          write_log=lambda s, refresh=False: logs.append(s))
    net = official_model.Model(args, ckp)
    net.model.load_state_dict(data["init"])
    criterion = official_loss.Loss(args, ckp)
    terms = []                                   # every -SSIM the trainer computes, in order
    ssim_forward = pytorch_ssim.SSIM.forward
    pytorch_ssim.SSIM.forward = lambda self, a, b: terms.append(ssim_forward(self, a, b)) or terms[-1]
    served = {"n": 0}

    class Loader:
        """EPOCH_STEPS recorded batches per epoch, as (lr, hr, filename, idx_scale) like the official loader."""
        dataset = list(range(EPOCH_STEPS * BATCH))

        def __len__(self):
            return EPOCH_STEPS

        def __iter__(self):
            for _ in range(EPOCH_STEPS):
                i = served["n"]
                served["n"] += 1
                yield lows[i].float(), highs[i].float(), [f"b{i}"], 0

    t = Trainer(args, SimpleNamespace(loader_train=Loader(), loader_test=None), net, criterion, ckp)
    names = {id(p): n for n, p in net.model.named_parameters()}
    lrs, stepped, grads1 = [], [], {}
    opt_step = t.optimizer.step

    def recorded_step(*a, **k):
        stepped[-1] = True
        if not grads1:
            grads1.update({names[id(p)]: p.grad.detach().clone() for g in t.optimizer.param_groups
                           for p in g["params"] if p.grad is not None})
        return opt_step(*a, **k)
    t.optimizer.step = recorded_step
    zero_grad = t.optimizer.zero_grad

    def recorded_zero_grad(*a, **k):   # called once per batch, before its forward: the step starts here
        lrs.append(t.optimizer.param_groups[0]["lr"])
        stepped.append(False)
        return zero_grad(*a, **k)
    t.optimizer.zero_grad = recorded_zero_grad
    while len(stepped) < STEPS:
        t.train()
    torch.save({"terms": torch.stack([x.detach() for x in terms]).reshape(STEPS, 3).double(),
                "lr": torch.tensor(lrs, dtype=torch.float64), "stepped": torch.tensor(stepped),
                "grads1": grads1, "final": {k: v.clone() for k, v in net.model.state_dict().items()},
                "error_last": float(t.error_last)}, out_file)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of the authors' DRBN repository (DRBL-stage1/src)")
    ap.add_argument("--out", default=str(ROOT / "tests/golden_training/drbn_stage1"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _official_child(*(Path(p) for p in args.child))
    sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(1)
    src = Path(args.official).resolve() / "DRBL-stage1/src"
    if not (src / "trainer.py").is_file():
        raise SystemExit(f"error: --official {args.official}: no DRBL-stage1/src/trainer.py there")
    init = initial_weights()
    low, high = _batches()
    with tempfile.TemporaryDirectory(prefix="drbn_golden_") as tmp:
        inp, res = Path(tmp, "in.pt"), Path(tmp, "out.pt")
        torch.save({"init": init, "low": low, "high": high}, inp)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--official", str(src), "--child",
                            str(src), str(inp), str(res)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"error: the official trainer failed:\n{r.stderr[-3000:]}")
        off = torch.load(res, weights_only=True)
    keys = list(init)
    index = {k: sample_index(init[k].numel(), i) for i, k in enumerate(keys)}

    def sampled(d):
        return {k: d[k].reshape(-1)[index[k]].clone() for k in keys if k in d}
    golden = {
        "meta": {"steps": STEPS, "epoch_steps": EPOCH_STEPS, "lr_decay_epochs": LR_DECAY, "batch": BATCH,
                 "crop": CROP, "lr": LR, "config": CONF, "seed": 0, "full_below": FULL_BELOW},
        "low": low, "high": high, "terms": off["terms"], "lr": off["lr"], "stepped": off["stepped"],
        "trained": sorted(off["grads1"]), "keys": keys,
        "init": sampled(init), "grads1": sampled(off["grads1"]),
        "grads1_norm": {k: v.norm().double() for k, v in off["grads1"].items()},
        "final": sampled(off["final"]), "final_norm": {k: v.double().norm() for k, v in off["final"].items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out / "golden.pt")
    total = off["terms"].sum(1)
    print(f"official DRBN stage 1: {STEPS} steps, loss {total[0]:.4f} -> {total[-1]:.4f}, lr {off['lr'].tolist()}, "
          f"skipped {int((~off['stepped']).sum())}; {out / 'golden.pt'}: {(out / 'golden.pt').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
