"""The N2LDiff backend of ``python tools/synthesize.py --method n2ldiff``: normal-light images in, synthesised
low-light images out.

Each image is reflect-padded at the bottom/right to the network's multiple (32, as the official unpaired test),
sampled, cropped back and written as ``<out>/<stem>.png`` with the official quantisation (clamp, x 255, truncating
uint8 cast). Noise comes from a ``torch.Generator`` seeded from (``--seed``, image index in listing order), so a
run repeats exactly and does not depend on the other images or the device. ``--steps N`` samples on N of the T
timesteps, evenly spaced with both ends kept, the schedule re-derived from alpha-bar at those steps (standard
DDPM respacing; models/networks/n2ldiff/diffusion.py). ``--replay-noise F.npy`` takes every step's noise from an
array of shape (steps, N, 3, Hp, Wp): entry k is the noise of the k-th step (t = T-1-k), image n in listing order,
at the padded size; steps = ``--steps`` or T.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.image_io import list_images, read_rgb, write_rgb
from engine.inference import pad_image, pick_device
from options.options import check_path
from utils.errors import NonFiniteError, OptionError
from utils.metrics import quantise

from models.networks.n2ldiff.network import seed_for

log = logging.getLogger("lowlight_flow")


def _replay_noise(path, steps: int, sizes: list[tuple[int, int]], files: list[Path]):
    """The replay array (memory-mapped), checked against what the run needs; one-line errors otherwise."""
    p = check_path(str(path), "--replay-noise")
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":  # numpy would blame pickling for any other file
            raise OptionError(f"--replay-noise '{p}' is not a .npy file (no NumPy header): save the noise array "
                              f"with numpy.save")
    try:
        noise = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise OptionError(f"--replay-noise '{p}': not a readable .npy array ({type(e).__name__}: {e})") from e
    for f, s in zip(files, sizes):
        if s != sizes[0]:
            raise OptionError(f"--replay-noise needs every input to pad to one size: {files[0].name} pads to "
                              f"{sizes[0]}, {f.name} to {s}")
    want = (steps, len(files), 3, *sizes[0])
    if noise.shape != want:
        raise OptionError(f"--replay-noise '{p}' has shape {tuple(noise.shape)}, expected {want} "
                          f"(steps, images, 3, padded H, padded W)")
    return noise


def run(opt: dict, args) -> None:
    """Synthesise low light for every image in ``args.input`` into ``args.out`` (see the module docstring).

    args: input, out, model_path, seed, steps, replay_noise, device (missing attributes mean "not given").
    """
    from models.methods.n2ldiff_model import N2LDiffModel

    arg = lambda name: getattr(args, name, None)  # noqa: E731
    inp = check_path(arg("input") or opt.get("dataroot_LR"), "--input")
    files = list_images(inp)
    if not files:
        raise OptionError(f"--input '{inp}' holds no images")
    out = Path(arg("out")) if arg("out") else Path(opt["path"]["results_root"]) / opt["name"]
    ckpt = check_path(arg("model_path") or opt.get("model_path"), "--model_path / model_path")
    model = opt.get("model") or "LLFlow"
    if model != "N2LDiff":  # else the mismatch would be blamed on the checkpoint
        raise OptionError(f"config '{opt.get('opt_path') or '--opt'}' is a model: {model} config; the N2LDiff "
                          f"synthesiser needs an N2LDiff one (model: N2LDiff, e.g. confs/N2LDiff/demo_tiny.yml)")
    net, notes = N2LDiffModel.build_network(opt, str(ckpt))
    for n in notes:
        log.info(n)
    device = pick_device(arg("device") or (opt.get("inference") or {}).get("device"))
    net.to(device).eval()
    steps = arg("steps")
    if steps is not None and not 1 <= int(steps) <= net.num_timesteps:
        raise OptionError(f"--steps must be between 1 and T={net.num_timesteps}, got {steps}")
    steps = int(steps) if steps else None
    seed = int(arg("seed") or 0)
    images = [read_rgb(f) for f in files] if arg("replay_noise") else None
    noise = None
    if images is not None:
        m = net.pad_multiple
        sizes = [(i.shape[0] + (-i.shape[0]) % m, i.shape[1] + (-i.shape[1]) % m) for i in images]
        noise = _replay_noise(arg("replay_noise"), steps or net.num_timesteps, sizes, files)
    log.info("n2ldiff: %d images from %s -> %s (%s steps, %s)", len(files), inp, out, steps or net.num_timesteps,
             "replayed noise" if noise is not None else f"seed {seed}")
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(tqdm(files, desc="synthesize", unit="img")):
        img = images[i] if images is not None else read_rgb(f)
        h, w = img.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(pad_image(img, net.pad_multiple, "reflect")))
        x = x.permute(2, 0, 1)[None].float().div_(255.0).to(device)
        if noise is not None and not np.isfinite(noise[:, i:i + 1]).all():
            raise NonFiniteError(f"--replay-noise '{arg('replay_noise')}' holds NaN/inf in the noise of {f} "
                                 f"(image {i} in listing order)")
        with torch.inference_mode():
            if noise is not None:
                y = net.sample(x, noise=noise[:, i:i + 1], steps=steps, progress=True)
            else:
                g = torch.Generator().manual_seed(seed_for(seed, i))
                y = net.sample(x, generator=g, steps=steps, progress=True)
        y = y[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()
        if not np.isfinite(y).all():  # written, it would be a black image and exit 0
            raise NonFiniteError(f"the sampler produced non-finite values (NaN/inf) for {f}: check checkpoint "
                                 f"'{ckpt}' (NaN/inf weights?)"
                                 + (f" and --replay-noise '{arg('replay_noise')}'" if noise is not None else ""))
        write_rgb(out / f"{f.stem}.png", quantise(y, "truncate"))
