"""Goldens of the authors' DRBN trainers, for tests/test_training_equivalence_drbn*.py.

Documented in docs/training-equivalence-drbn-n2ldiff.md.

python bench/golden_training_drbn.py --official /path/to/DRBN-checkout [--stage 1|2] [--out FOLDER]

Stage 1 (DRBL-stage1/src/trainer.py) is described below; stage 2 (DRBL-stage2-LOL/src/trainer.py, `--stage 2`,
main_stage2) works the same way with paired, unpaired and high-quality batches, replayed label draws and the VGG16
features weights from ../shared/weights.

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



def _replay_loader(item):
    """A stand-in for the official training loader: EPOCH_STEPS batches per epoch, `item(i)` for the i-th batch served
    (counting on across epochs), in the tuple layout the official trainer unpacks."""
    served = {"n": 0}

    class Loader:
        dataset = list(range(EPOCH_STEPS * BATCH))

        def __len__(self):
            return EPOCH_STEPS

        def __iter__(self):
            for _ in range(EPOCH_STEPS):
                served["n"] += 1
                yield item(served["n"] - 1)

    return Loader()

def sample_index(numel: int, i: int, every: int = 8):
    """The stored elements of the i-th tensor: all of a small one, else a fixed random 1/every (int64 indices)."""
    import numpy as np
    import torch
    if numel <= FULL_BELOW:
        return torch.arange(numel)
    rng = np.random.default_rng([2026, i])
    return torch.from_numpy(np.sort(rng.choice(numel, numel // every, replace=False)).astype(np.int64))


def initial_weights():
    """Our DRBN at the official sizes, seed 0: the starting point of both sides."""
    import torch
    from models.build import build_network
    from options.options import load_options
    opt = load_options(ROOT / CONF, [], is_train=True)
    torch.manual_seed(0)
    net, _ = build_network(opt)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _batches(kinds=("low", "high"), steps=STEPS, batch=BATCH, crop=CROP):
    """`steps` batches of `batch` random `crop`x`crop` uint8 crops (steps, batch, 3, crop, crop) of real LOL-v1 pairs,
    one (low, high) couple of tensors per pair of `kinds` (also used by bench/golden_training_n2ldiff.py)."""
    import numpy as np
    import torch
    from data.image_io import read_rgb
    shared = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared")) / "data/LOL-v1-mini/our485"
    if not (shared / "low").is_dir():
        from data.demo import ensure_demo_data
        shared = Path(ensure_demo_data(None)) / "our485"
    names = sorted(p.name for p in (shared / "low").glob("*.png"))
    rng = np.random.default_rng(0)
    out = []
    for pair in range(0, len(kinds), 2):   # each (low, high) couple from its own random images and crops
        lows, highs = [], []
        for _ in range(steps * batch):
            name = names[rng.integers(len(names))]
            lo, hi = read_rgb(shared / "low" / name), read_rgb(shared / "high" / name)
            y, x = rng.integers(lo.shape[0] - crop), rng.integers(lo.shape[1] - crop)
            lows.append(lo[y:y + crop, x:x + crop].transpose(2, 0, 1))
            highs.append(hi[y:y + crop, x:x + crop].transpose(2, 0, 1))
        shape = (steps, batch, 3, crop, crop)
        out += [torch.from_numpy(np.stack(lows)).reshape(shape).contiguous(),
                torch.from_numpy(np.stack(highs)).reshape(shape).contiguous()]
    return out


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
    # (lr, hr, filename, idx_scale) like the official loader
    loader = _replay_loader(lambda i: (lows[i].float(), highs[i].float(), [f"b{i}"], 0))
    t = Trainer(args, SimpleNamespace(loader_train=loader, loader_test=None), net, criterion, ckp)
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


STAGE2_CONF = "confs/DRBN/DRBN_stage2.yml"
D_EVERY = 64   # the discriminator has 4.7 M parameters: a 1/64 sample of its tensors keeps the golden small


def stage2_options(tmp: Path, vgg: str):
    """Our stage-2 options for the comparison: official sizes, the run's lr and milestones, placeholder folders."""
    from options.options import load_options
    return load_options(ROOT / STAGE2_CONF, [
        f"path.pretrain_stage1={tmp / 's1.pth'}", f"path.vgg16_features={vgg}", f"train.niter={STEPS}",
        f"datasets.train.dataroot_unpaired_LQ={tmp / 'unpaired'}", f"datasets.train.dataroot_HQ={tmp / 'hq'}",
        "train.lr_steps=[5,15]"], is_train=True)


def stage2_model(tmp: Path, vgg: str):
    """Our DRBNRecomposeModel from the seed-0 stage-1 DRBN (written to tmp/s1.pth), recompose and D built after
    torch.manual_seed(0): the starting point of both sides."""
    import torch
    from models.checkpoint import save_generator
    from models.methods.drbn_model import DRBNRecomposeModel
    init = initial_weights()
    torch.save(init, tmp / "s1.pth")
    torch.manual_seed(0)
    return DRBNRecomposeModel(stage2_options(tmp, vgg), torch.device("cpu"))


def _official_stage2_child(src: Path, in_file: Path, out_file: Path):
    """Runs in the subprocess: the official stage-2 trainer over the recorded batches and targets."""
    import types
    from types import SimpleNamespace
    import torch
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.modules.setdefault("IPython", types.ModuleType("IPython"))
    sys.path[:] = [str(src)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    os.chdir(out_file.parent)                      # its vgg_init reads ./vgg16-397923af.pth
    import loss as official_loss
    import model as official_model
    import pytorch_ssim
    import trainer as official_trainer
    data = torch.load(in_file, weights_only=True)
    args = SimpleNamespace(
        scale=[1], lr=1e-4, lr_decay=LR_DECAY, decay_type="step", gamma=0.5, optimizer="ADAM", beta1=0.9,
        beta2=0.999, epsilon=1e-8, weight_decay=0, load=".", skip_threshold=1e6, print_every=10 ** 9,
        batch_size=BATCH, cpu=True, precision="single", test_only=False, epochs=10 ** 9, model="DRBN",
        self_ensemble=False, chop=False, n_GPUs=1, save_models=False, pre_train=".", resume=0, n_colors=3,
        loss="1*MSE", rgb_range=255)
    ckp = SimpleNamespace(dir=str(out_file.parent), log_file=open(os.devnull, "w"), log=[],
                          write_log=lambda s, refresh=False: None)
    s1 = official_model.Model(args, ckp)
    s1.model.load_state_dict(data["s1"])
    args.model = "RECOMPOSE"
    rec = official_model.Model(args, ckp)
    rec.model.load_state_dict(data["recompose"])
    args.model = "DISCRIMINATOR"
    dis = official_model.Model(args, ckp)
    dis.model.load_state_dict(data["D"])
    args.n_colors = 3
    rec_log = {"mse": [], "ssim": [], "vgg": [], "rand": []}
    mse_forward = torch.nn.MSELoss.forward
    torch.nn.MSELoss.forward = lambda self, a, b: rec_log["mse"].append(mse_forward(self, a, b)) or rec_log["mse"][-1]
    ssim_forward = pytorch_ssim.SSIM.forward
    pytorch_ssim.SSIM.forward = (lambda self, a, b: rec_log["ssim"].append(ssim_forward(self, a, b))
                                 or rec_log["ssim"][-1])
    vgg_loss = official_trainer.vgg_loss
    official_trainer.vgg_loss = lambda *a: rec_log["vgg"].append(vgg_loss(*a)) or rec_log["vgg"][-1]
    draws = iter(data["rand"])   # the label draws of each step, replayed on our side too

    def recorded_rand(*shape, **k):
        out = next(draws).reshape(*shape)
        rec_log["rand"].append(out)
        return out
    official_trainer.torch.rand = recorded_rand   # the torch module itself: its only torch.rand calls are the labels
    loader = _replay_loader(lambda i: (data["low"][i].float(), data["high"][i].float(), data["low_u"][i].float(),
                                       data["hq"][i].float(), [f"b{i}"], 0))
    t = official_trainer.Trainer(args, SimpleNamespace(loader_train=loader, loader_test=None), s1, rec, dis,
                                 official_loss.Loss(args, ckp), ckp)
    rnames = {id(p): n for n, p in rec.model.named_parameters()}
    dnames = {id(p): n for n, p in dis.model.named_parameters()}
    lrs, lrs_d, grads_g, grads_d = [], [], {}, {}

    def wrap(opt, names, grads, lr_list):
        step = opt.step

        def recorded(*a, **k):
            lr_list.append(opt.param_groups[0]["lr"])
            if not grads:
                grads.update({names[id(p)]: p.grad.detach().clone() for g in opt.param_groups for p in g["params"]
                              if p.grad is not None})
            return step(*a, **k)
        opt.step = recorded
    wrap(t.optimizer, rnames, grads_g, lrs)
    wrap(t.optimizer_dis, dnames, grads_d, lrs_d)
    while len(lrs) < STEPS:
        t.train()
    mse = torch.stack([x.detach() for x in rec_log["mse"]]).reshape(STEPS, 7).double()
    torch.save({"d_loss": mse[:, 0] + mse[:, 1], "adv": mse[:, 6],
                "vgg": torch.stack([x.detach() for x in rec_log["vgg"]]).double(),
                "ssim_term": torch.stack([x.detach() for x in rec_log["ssim"]]).double(),
                "lr": torch.tensor(lrs, dtype=torch.float64), "lr_D": torch.tensor(lrs_d, dtype=torch.float64),
                "grads_G": grads_g, "grads_D": grads_d,
                "rand_used": len(rec_log["rand"]),
                "final_G": {k: v.clone() for k, v in rec.model.state_dict().items()},
                "final_D": {k: v.clone() for k, v in dis.model.state_dict().items()}}, out_file)


def official_d_keys(ours: dict) -> dict:
    """Our BandDiscriminator state (body.*, head.*) under the official Discriminator's names (conv1, conv2, bn2,
    ..., conv9): both register the same layers in the same order."""
    names = ["conv1.weight", "conv1.bias"]
    for i in range(2, 9):
        names += [f"conv{i}.weight", f"conv{i}.bias"] + [f"bn{i}.{k}" for k in
                                                         ("weight", "bias", "running_mean", "running_var",
                                                          "num_batches_tracked")]
    names += ["conv9.weight", "conv9.bias"]
    assert len(names) == len(ours)
    return dict(zip(names, ours.values()))


def main_stage2(official: Path, out: Path):
    import torch
    src = official.resolve() / "DRBL-stage2-LOL/src"
    if not (src / "trainer.py").is_file():
        raise SystemExit(f"error: --official {official}: no DRBL-stage2-LOL/src/trainer.py there")
    shared = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared"))
    vgg = shared / "weights/vgg16_features.pth"
    if not vgg.is_file():
        raise SystemExit(f"error: {vgg} not found (VGG16 features in torchvision naming)")
    low, high, low_u, hq = _batches(("low", "high", "low", "high"))
    g = torch.Generator().manual_seed(3)
    draws = []
    for _ in range(STEPS):   # the official trainer draws real (2B x 1), then fake (B x 1) labels each step
        draws += [torch.rand(2 * BATCH, 1, generator=g), torch.rand(BATCH, 1, generator=g)]
    with tempfile.TemporaryDirectory(prefix="drbn2_golden_") as tmp:
        tmp = Path(tmp)
        model = stage2_model(tmp, str(vgg))
        rec0 = {k: v.clone() for k, v in model.generator.recompose.state_dict().items()}
        d0 = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
        import torchvision
        full = torchvision.models.vgg16().state_dict()   # classifier unused by the loss: any values
        full.update(torch.load(vgg, weights_only=True))
        torch.save(full, tmp / "vgg16-397923af.pth")
        inp, res = tmp / "in.pt", tmp / "out.pt"
        torch.save({"s1": initial_weights(), "recompose": rec0, "D": official_d_keys(d0), "low": low,
                    "high": high, "low_u": low_u, "hq": hq, "rand": draws}, inp)
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--official", str(src), "--child2",
                            str(src), str(inp), str(res)], capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        if r.returncode != 0:
            raise SystemExit(f"error: the official stage-2 trainer failed:\n{r.stderr[-3000:]}")
        off = torch.load(res, weights_only=True)
    if off["rand_used"] != len(draws):
        raise SystemExit(f"error: the official trainer drew {off['rand_used']} label tensors, {len(draws)} expected")
    d_names = dict(zip(official_d_keys(d0), d0))   # official name -> ours
    grads_d = {d_names[k]: v for k, v in off["grads_D"].items()}
    final_d = {d_names[k]: v for k, v in off["final_D"].items()}
    idx_g = {k: sample_index(v.numel(), i) for i, (k, v) in enumerate(rec0.items())}
    idx_d = {k: sample_index(v.numel(), i, D_EVERY) for i, (k, v) in enumerate(d0.items())}

    def sampled(d, idx):
        return {k: d[k].reshape(-1)[idx[k]].clone() for k in idx if k in d}
    golden = {
        "meta": {"steps": STEPS, "epoch_steps": EPOCH_STEPS, "lr_decay_epochs": LR_DECAY, "batch": BATCH,
                 "crop": CROP, "config": STAGE2_CONF, "seed": 0, "full_below": FULL_BELOW, "d_every": D_EVERY},
        "low": low, "high": high, "low_u": low_u, "hq": hq, "rand": draws,
        "d_loss": off["d_loss"], "adv": off["adv"], "vgg": off["vgg"], "ssim_term": off["ssim_term"],
        "lr": off["lr"], "lr_D": off["lr_D"], "trained_G": sorted(off["grads_G"]), "trained_D": sorted(grads_d),
        "init_G": sampled(rec0, idx_g), "init_D": sampled(d0, idx_d),
        "grads_G": sampled(off["grads_G"], idx_g), "grads_D": sampled(grads_d, idx_d),
        "grads_G_norm": {k: v.double().norm() for k, v in off["grads_G"].items()},
        "grads_D_norm": {k: v.double().norm() for k, v in grads_d.items()},
        "final_G": sampled(off["final_G"], idx_g), "final_D": sampled(final_d, idx_d),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out / "golden.pt")
    print(f"official DRBN stage 2: {STEPS} steps, d_loss {off['d_loss'][0]:.4f} -> {off['d_loss'][-1]:.4f}, "
          f"vgg {off['vgg'][0]:.4f} -> {off['vgg'][-1]:.4f}, -ssim {off['ssim_term'][0]:.4f} -> "
          f"{off['ssim_term'][-1]:.4f}, adv {off['adv'][0]:.4f} -> {off['adv'][-1]:.4f}; lr G {off['lr'].tolist()}; "
          f"lr D {sorted(set(off['lr_D'].tolist()))}; {out / 'golden.pt'}: "
          f"{(out / 'golden.pt').stat().st_size / 1e6:.2f} MB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of the authors' DRBN repository (DRBL-stage1/src)")
    ap.add_argument("--stage", type=int, default=1, choices=(1, 2))
    ap.add_argument("--out", help="default tests/golden_training/drbn_stage<N>")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--child2", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _official_child(*(Path(p) for p in args.child))
    if args.child2:
        return _official_stage2_child(*(Path(p) for p in args.child2))
    sys.path.insert(0, str(ROOT))
    args.out = args.out or str(ROOT / f"tests/golden_training/drbn_stage{args.stage}")
    if args.stage == 2:
        return main_stage2(Path(args.official), Path(args.out))
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
          f"skipped {int((~off['stepped']).sum())}; {out / 'golden.pt'}: "
          f"{(out / 'golden.pt').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
