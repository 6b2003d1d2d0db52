"""Golden of the official N2LDiff training (its Lightning module stepped by a Lightning Trainer), for
tests/test_training_equivalence_n2ldiff.py. Documented in docs/training-equivalence-drbn-n2ldiff.md.

python bench/golden_training_n2ldiff.py --site /path/to/site --official /path/to/N2LDiff [--vgg16 FILE] [--out DIR]

--site: a side folder with the packages the official code imports and this project does not pin, of the official
environment's era (environment.yaml): `pip install --no-deps --target DIR pytorch-lightning==1.9.0
torchmetrics==0.11.0 lightning-utilities==0.6.0.post0 einops==0.4.1 lion-pytorch==0.0.7 setuptools==65.6.3`
(setuptools for the pkg_resources that lightning-utilities imports). lpips 0.1.4 comes from requirements.txt.
--vgg16: VGG16 `features.*` weights in torchvision naming (default $LOWLIGHT_VGG16, else
../shared/weights/vgg16_features.pth).

The child process (the checkout and --site first on sys.path, this repository removed) builds the official modules
as main.py does (`pl.seed_everything(seed)`, Unet_cond2, Unet, EnlightDiffusion, LitDiffusion) from the checkout's
cfg/train/from_scratch.yaml with SMALL applied, and trains them with `pl.Trainer.from_argparse_args(config, ...)`
(so the official gradient clipping 1.0 'norm', precision 32, detect_anomaly) for STEPS steps, on CPU, over a fixed
DataLoader of recorded batches; validation, logger, checkpoints and progress bar are off. No file of the checkout is
edited. Shims: torchmetrics' LPIPS-VGG builds lpips 0.1.4's network, whose trunk `torchvision.vgg16(pretrained=True)`
would download ImageNet weights: `lpips.pretrained_networks.tv` is replaced by a namespace whose `vgg16()` returns
torchvision's VGG16 `features` loaded from --vgg16 (lpips uses nothing else of it). Recorders (values unchanged):
EnlightDiffusion.forward draws its noise with the same `torch.randn_like(x_start)` call its `default(noise, ...)`
makes and keeps a copy with the timesteps; `random.choice(['pred', 'ref'])` (the centre) is recorded; the loss
terms are read off `F.smooth_l1_loss` and the LPIPS metric's output; the pre-clip gradient norm of every step and
the gradients of step 1 in a Callback's on_before_optimizer_step.

Batches: STEPS batches of BATCH random CROPxCROP crops of real LOL-v1 pairs (the normal image is the input img_lr,
the low one the target img_hr: switch_normal_low), as uint8. Stored (1.8 MB): the official config as run (YAML),
the batches, the recorded draws, per step the loss, LPIPS, SmoothL1 and gradient norm, the step-1 gradients, the
initial weights converted to our layout by our conversion code (models/checkpoint.load_weights), the final denoiser
weights.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, CROP = 10, 2, 32
# cfg/train/from_scratch.yaml with a small width (structure unchanged: 5 levels as ../shared/golden/N2LDiff), CPU
# plumbing, the batch and crop of the recorded data, and gradient clipping at 0.5 instead of 1.0 so that it acts
# (the gradient norms of these steps are 0.28 to 0.92; clipping matters to Lion: it weighs g against its momentum).
SMALL = {"unet_dim": 4, "dim_mults": [1, 2, 2, 4, 4], "train_batch_size": BATCH, "image_size": CROP,
         "gradient_clip_val": 0.5,
         "accelerator": "cpu", "devices": 1, "strategy": None, "use_wandb": False, "num_workers": 0,
         "persistent_workers": False, "use_dataset": "LOL", "train_folders_v1": "data/LOL/our485",
         "test_folder": "data/LOL/eval15", "diffusion_path": "", "fast_dev_run": False}


def _vgg16_default() -> str:
    return os.environ.get("LOWLIGHT_VGG16") or str(
        Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared")) / "weights/vgg16_features.pth")


def _official_child(official: Path, site: Path, vgg16: Path, inp: Path, out_file: Path):
    """Runs in the subprocess: the official LitDiffusion trained by a Lightning Trainer on the recorded batches."""
    import argparse as ap_
    import random
    from types import SimpleNamespace
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _official import enter_official
    enter_official(official, str(site))
    os.chdir(official)
    import torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    import yaml
    import pytorch_lightning as pl
    import lpips.pretrained_networks as pn
    from torchvision.models.vgg import cfgs, make_layers

    def local_vgg16(pretrained=True, **_):
        features = make_layers(cfgs["D"], batch_norm=False)
        sd = torch.load(vgg16, map_location="cpu", weights_only=True)
        features.load_state_dict({k.removeprefix("features."): v for k, v in sd.items()
                                  if not k.startswith("classifier.")})
        return SimpleNamespace(features=features)
    pn.tv = SimpleNamespace(vgg16=local_vgg16)

    with open("cfg/train/from_scratch.yaml") as f:
        raw = yaml.full_load(f)           # as main.py reads it
    raw.update(SMALL)
    raw["dim_mults"] = tuple(raw["dim_mults"])
    config = ap_.Namespace(**raw)
    data = torch.load(inp, weights_only=True)
    lows, normals = data["low"], data["high"]

    pl.seed_everything(seed=config.seed, workers=True)
    from cond2 import Unet_cond2
    from diffusion import EnlightDiffusion, LitDiffusion
    from model import Unet
    unet_cond = Unet_cond2(config, config.cond_in_dim, True)
    unet = Unet(config, in_dim=config.in_dim)
    lit = LitDiffusion(EnlightDiffusion(unet, config), encoder=unet_cond, config=config)
    init = {k: v.detach().clone() for k, v in lit.state_dict().items()}

    rec = {k: [] for k in ("t", "noise", "choice", "loss", "lpips", "smooth_l1", "grad_norm", "grads1")}
    forward = EnlightDiffusion.forward

    def recorded_forward(self, x_start, t, cond, center, feats_cond, noise=None):
        noise = torch.randn_like(x_start) if noise is None else noise     # = default(noise, lambda: randn_like)
        rec["t"].append(t.clone())
        rec["noise"].append(noise.clone())                                # q_sample then changes it in place
        return forward(self, x_start, t, cond, center, feats_cond, noise=noise)
    EnlightDiffusion.forward = recorded_forward
    choice = random.choice

    def recorded_choice(seq):
        c = choice(seq)
        if list(seq) == ["pred", "ref"]:
            rec["choice"].append(c == "ref")
        return c
    random.choice = recorded_choice
    smooth_l1 = F.smooth_l1_loss
    F.smooth_l1_loss = lambda *a, **k: rec["smooth_l1"].append(smooth_l1(*a, **k)) or rec["smooth_l1"][-1]

    class Recorder(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if not getattr(module.lpips, "_recorded", False):    # made in LitDiffusion.on_train_start
                module.lpips.register_forward_hook(lambda m, a, out: rec["lpips"].append(out))
                module.lpips._recorded = True

        def on_before_optimizer_step(self, trainer, module, optimizer, optimizer_idx=0):   # before clipping
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if not rec["grads1"]:
                names = {id(p): n for n, p in module.named_parameters()}
                rec["grads1"].append({names[id(p)]: p.grad.detach().clone() for g in optimizer.param_groups
                                      for p in g["params"] if p.grad is not None})
            rec["grad_norm"].append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                                          for g in grads])))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            rec["loss"].append(outputs["loss"])

    class Recorded(torch.utils.data.Dataset):     # what LitLOLDataModule yields: (img_lr, img_hr, name), ToTensor
        def __len__(self):
            return STEPS * BATCH

        def __getitem__(self, i):
            s, j = divmod(i, BATCH)
            return normals[s, j].float().div(255), lows[s, j].float().div(255), f"{s}_{j}.png"
    loader = torch.utils.data.DataLoader(Recorded(), batch_size=BATCH, shuffle=False, num_workers=0)
    trainer = pl.Trainer.from_argparse_args(
        config, callbacks=[Recorder()], logger=False, max_steps=STEPS, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model=lit, train_dataloaders=loader)
    assert trainer.global_step == STEPS and len(rec["loss"]) == STEPS, (trainer.global_step, len(rec["loss"]))
    final = {k: v.detach().clone() for k, v in lit.state_dict().items()}
    as_tensor = {k: torch.stack([x.detach().reshape(()) if k != "t" and k != "noise" else x for x in v])
                 for k, v in rec.items() if k not in ("choice", "grads1")}
    raw["dim_mults"] = list(raw["dim_mults"])
    torch.save({"config": yaml.safe_dump(raw, sort_keys=False), "init": init, "final": final,
                "ref": torch.tensor(rec["choice"]), "grads1": rec["grads1"][0], **as_tensor,
                "versions": {"pytorch_lightning": pl.__version__, "torchmetrics": _version("torchmetrics"),
                             "lion_pytorch": _version("lion-pytorch"), "lpips": _version("lpips")}}, out_file)


def _version(name):
    from importlib.metadata import version
    return version(name)


def ours_initial_weights(config_text: str, official_state: dict, vgg16: str) -> dict:
    """The official initial state dict loaded into our N2LDiffNet (the official config read by our options layer)
    through our checkpoint conversion: our key layout."""
    import torch
    from models.checkpoint import load_weights
    from models.methods.n2ldiff_model import N2LDiffModel
    from options.options import load_options
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "config.yaml")
        cfg.write_text(config_text)
        opt = load_options(cfg, [f"path.vgg16_features={vgg16}"], is_train=True)
    net, _ = N2LDiffModel.build_network(opt)
    for note in load_weights(net, official_state, source="official initial weights"):
        print(note)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", help="folder with pytorch_lightning 1.9, torchmetrics 0.11, einops, lion_pytorch")
    ap.add_argument("--official", help="checkout of the official N2LDiff repository")
    ap.add_argument("--vgg16", default=_vgg16_default(), help="VGG16 features.* weights (torchvision naming)")
    ap.add_argument("--out", default=str(ROOT / "tests/golden_training/n2ldiff_steps"))
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _official_child(*(Path(p) for p in args.child))
    if not args.site or not args.official:
        raise SystemExit("error: --site and --official are required")
    official, site = Path(args.official).resolve(), Path(args.site).resolve()
    if not (official / "diffusion.py").is_file():
        raise SystemExit(f"error: --official {args.official}: no diffusion.py there")
    if not (site / "pytorch_lightning").is_dir():
        raise SystemExit(f"error: --site {args.site}: no pytorch_lightning there")
    if not Path(args.vgg16).is_file():
        raise SystemExit(f"error: --vgg16 {args.vgg16}: no such file")
    sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(1)
    from golden_training_drbn import _batches
    low, normal = _batches(steps=STEPS, batch=BATCH, crop=CROP)
    with tempfile.TemporaryDirectory(prefix="n2ldiff_golden_") as tmp:
        inp, res = Path(tmp, "in.pt"), Path(tmp, "out.pt")
        torch.save({"low": low, "high": normal}, inp)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(official), str(site),
                            str(Path(args.vgg16).resolve()), str(inp), str(res)], capture_output=True, text=True,
                           env=env)
        if r.returncode != 0:
            raise SystemExit(f"error: the official training failed:\n{r.stderr[-4000:]}")
        off = torch.load(res, weights_only=True)
    init = ours_initial_weights(off["config"], off["init"], args.vgg16)
    unet = [k for k in init if k.startswith("model.unet.")]
    moved = [k for k in off["final"] if not torch.equal(off["final"][k], off["init"][k])]
    assert moved and all(k.startswith("model.unet.") for k in moved), "only the denoiser is optimised"
    golden = {
        "meta": {"steps": STEPS, "batch": BATCH, "crop": CROP, "versions": off["versions"]},
        "config": off["config"], "low": low, "normal": normal,
        "t": off["t"], "noise": off["noise"], "ref": off["ref"],
        "loss": off["loss"].double(), "lpips": off["lpips"].double(), "smooth_l1": off["smooth_l1"].double(),
        "grad_norm": off["grad_norm"].double(), "grads1": off["grads1"],
        "init": init, "final": {k: off["final"][k] for k in unet},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out / "golden.pt")
    print(f"official N2LDiff ({off['versions']}): {STEPS} steps, loss {off['loss'][0]:.5f} -> "
          f"{off['loss'][-1]:.5f}, centre ref {off['ref'].int().tolist()}, t {off['t'].tolist()}; "
          f"{len(moved)} tensors moved; {out / 'golden.pt'}: {(out / 'golden.pt').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
