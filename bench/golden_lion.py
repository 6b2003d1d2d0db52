"""Golden of lion-pytorch's Lion (the optimiser the official N2LDiff trains with), for tests/test_lion_equivalence.py.

python bench/golden_lion.py --site /path/to/site-packages [--out tests/golden_training/n2ldiff_lion]

--site is a folder holding the `lion_pytorch` package (e.g. `pip install --no-deps --target DIR lion-pytorch`); it
is put first on sys.path of this process only, never in requirements.txt. Three parameter tensors (one with some
zero gradients, so sign(0) is exercised) take 10 steps of lion_pytorch.Lion from fixed values with fixed gradients,
in three settings: its defaults as the official N2LDiff builds it (`Lion(params, lr=train_lr)`: betas 0.9/0.99, no
weight decay), weight decay 0.1 with betas 0.95/0.98, and a learning rate changed between steps (as a scheduler
does). The parameters after every step are stored (about 0.1 MB).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
SETTINGS = {"official": dict(lr=1e-3), "decay": dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.1),
            "lr_change": dict(lr=1e-3)}


def problem():
    """(initial parameters, per-step gradients) from a fixed generator."""
    import torch
    g = torch.Generator().manual_seed(7)
    shapes = [(16, 8, 3, 3), (64,), (5, 7)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = []
    for _ in range(STEPS):
        step = [torch.randn(s, generator=g) * 10 ** float(torch.randint(-4, 2, (), generator=g)) for s in shapes]
        step[1][::3] = 0.0
        grads.append(step)
    return init, grads


def run(opt_class, setting: str):
    """Parameters after each of STEPS steps of `opt_class` in `setting` (stacked per tensor)."""
    import torch
    init, grads = problem()
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = opt_class(params, **SETTINGS[setting])
    trail = [[] for _ in params]
    for i, step in enumerate(grads):
        if setting == "lr_change" and i == 4:
            for group in opt.param_groups:
                group["lr"] = 2.5e-4
        for p, gr in zip(params, step):
            p.grad = gr.clone()
        opt.step()
        for t, p in zip(trail, params):
            t.append(p.detach().clone())
    return [torch.stack(t) for t in trail]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", required=True, help="folder holding the lion_pytorch package")
    ap.add_argument("--out", default=str(ROOT / "tests/golden_training/n2ldiff_lion"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(args.site).resolve()))
    import torch
    import lion_pytorch
    from lion_pytorch import Lion
    golden = {"version": getattr(lion_pytorch, "__version__", None) or _version(), "steps": STEPS,
              **{name: run(Lion, name) for name in SETTINGS}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(golden, out / "golden.pt")
    print(f"lion-pytorch {golden['version']}: {len(SETTINGS)} settings x {STEPS} steps -> {out / 'golden.pt'} "
          f"({(out / 'golden.pt').stat().st_size / 1e6:.2f} MB)")


def _version():
    from importlib.metadata import version
    return version("lion-pytorch")


if __name__ == "__main__":
    main()
