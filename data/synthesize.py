"""Make low-light images from a folder of normal-light images.

python -m data.synthesize --input normal/ --out low/ [--method physics|n2ldiff] [--opt CONF] [--seed S] [--overwrite]
  physics (default without --model_path): --opt is a synthesis YAML (default confs/synthesis/physics_LOL.yml); each
    image's draw depends only on (--seed, file stem), so adding files to the folder never changes the others.
  n2ldiff (default with --model_path): --opt is the N2LDiff config; --model_path CKPT [--steps N]
    [--replay-noise NOISE.npy] [--device DEV] go unchanged to engine/n2ldiff_synthesis.py run(opt, args).
Writes <out>/<input stem>.png (8-bit RGB).

Inputs: every file directly inside --input with an image extension is read before anything is written, so a bad
one stops the run with a one-line error naming it (undecodable, 16-bit, transparent); grayscale images are
converted to RGB (3 equal channels) as everywhere in the framework; files with other extensions are skipped with
one warning listing them. --out: if it already holds files this run would write, the run stops and says how many,
unless --overwrite is given (then it says how many it replaced).
"""
from __future__ import annotations

import argparse
import logging
import zlib
from pathlib import Path

import numpy as np

from data.image_io import IMAGE_EXTENSIONS, list_images, read_rgb, write_rgb
from data.synthesis.physics import PhysicsConfig, load_physics_config, synthesize
from options.options import load_options
from utils.cli import in_range
from utils.errors import ImageError, OptionError
from utils.paths import check_output_plan, prepare_dir
from utils.threads import add_threads_arg, set_threads

log = logging.getLogger("lowlight_flow")
DEFAULT_PHYSICS = Path(__file__).resolve().parents[1] / "confs" / "synthesis" / "physics_LOL.yml"
N2LDIFF_FLAGS = ("model_path", "steps", "replay_noise", "device")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="folder of normal-light images")
    ap.add_argument("--out", required=True, help="output folder for the low-light images")
    ap.add_argument("--method", choices=("physics", "n2ldiff"),
                    help="default: n2ldiff when --model_path is given, physics otherwise")
    ap.add_argument("--opt", help="physics: synthesis YAML (default confs/synthesis/physics_LOL.yml); "
                                  "n2ldiff: the model config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="n2ldiff: override a config value (repeatable)")
    ap.add_argument("--seed", type=int, default=0, action=in_range(0, 2**32 - 1), help="random seed (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    ap.add_argument("--model_path", help="n2ldiff: trained N2LDiff checkpoint")
    ap.add_argument("--steps", type=int, action=in_range(1), help="n2ldiff: sampling steps")
    ap.add_argument("--replay-noise", dest="replay_noise", help="n2ldiff: .npy of noise to replay")
    ap.add_argument("--device", help="n2ldiff: cpu, cuda, cuda:1 ... (default: auto)")
    return add_threads_arg(ap)


def list_inputs(folder) -> list[Path]:
    """The images of folder (natural order), each decoded once to check it; other files are skipped with a warning."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"{d}: --input folder not found")
    others = sorted(f.name for f in d.iterdir()
                    if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_EXTENSIONS)
    if others:
        more = f" ... (+{len(others) - 5} more)" if len(others) > 5 else ""
        log.warning("skipping %d non-image file(s) in %s: %s%s", len(others), d, ", ".join(others[:5]), more)
    files = list_images(d)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ImageError(f"{d}: {stems[f.stem].name} and {f.name} share the stem '{f.stem}'; "
                             f"both would be written to {f.stem}.png")
        stems[f.stem] = f
        read_rgb(f)  # raises ImageError naming the file (16-bit, transparent, undecodable)
    return files


def check_out(files: list[Path], out: Path, overwrite: bool) -> int:
    """How many of the files this run writes already exist in out; refuses (OptionError) unless overwrite."""
    existing = [f.stem + ".png" for f in files if (out / f"{f.stem}.png").exists()]
    if existing and not overwrite:
        raise OptionError(f"--out {out} already holds {len(existing)} of the {len(files)} files this run writes "
                          f"(e.g. {existing[0]}); pass --overwrite to replace them or choose another folder")
    if existing:
        log.warning("--overwrite: %d existing file(s) in %s will be replaced", len(existing), out)
    return len(existing)


def image_rng(seed: int, stem: str) -> np.random.Generator:
    """The generator of one image: a function of (seed, file stem) only."""
    return np.random.default_rng([int(seed) % 2**63, zlib.crc32(stem.encode("utf-8"))])


def run_physics(cfg: PhysicsConfig, seed: int, files: list[Path], out: Path) -> None:
    """Synthesise every file into out/<stem>.png; warns with the count of existing files it replaced by others."""
    from tqdm import tqdm

    changed = 0
    for f in tqdm(files, desc="synthesize", unit="img"):
        rng = image_rng(seed, f.stem)
        low = synthesize(read_rgb(f), cfg.sample(rng), rng)
        target = out / f"{f.stem}.png"
        if target.exists():
            try:
                changed += not np.array_equal(read_rgb(target), low)
            except ImageError:
                changed += 1
        write_rgb(target, low)
    if changed:
        log.warning("replaced %d existing file(s) in %s with different images", changed, out)


def n2ldiff_run():
    """The N2LDiff backend's run(opt, args), imported only when asked for (it loads the diffusion model code)."""
    from engine.n2ldiff_synthesis import run
    return run


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    from utils.logging_setup import setup_cli_logging
    setup_cli_logging()
    method = args.method or ("n2ldiff" if args.model_path else "physics")
    if method == "physics":
        given = [("--replay-noise" if k == "replay_noise" else f"--{k}") for k in N2LDIFF_FLAGS
                 if getattr(args, k) is not None] + (["--set"] if args.overrides else [])
        if given:
            raise OptionError(f"{', '.join(given)}: n2ldiff option(s), not used by --method physics")
        cfg_path = Path(args.opt) if args.opt else DEFAULT_PHYSICS
        cfg = load_physics_config(cfg_path)
    else:
        run = n2ldiff_run()
        if not args.model_path:
            raise OptionError("--method n2ldiff needs --model_path (a trained N2LDiff checkpoint)")
        if not args.opt:
            raise OptionError("--method n2ldiff needs --opt (the N2LDiff config)")
        opt = load_options(args.opt, args.overrides)
    files = list_inputs(args.input)
    out = Path(args.out)
    check_output_plan([("--out", out)], [("--input", args.input), ("--model_path", args.model_path),
                                         ("--replay-noise", args.replay_noise), ("--opt", args.opt)])
    check_out(files, out, args.overwrite)
    prepare_dir(out, "--out")
    if method == "physics":
        log.info("physics synthesis of %d images from %s -> %s (config %s, seed %d)", len(files), args.input, out,
                 cfg_path, args.seed)
        run_physics(cfg, args.seed, files, out)
    else:
        run(opt, args)
    written = sum((out / f"{f.stem}.png").is_file() for f in files)
    print(f"{written} of {len(files)} low-light image(s) in {out}")


if __name__ == "__main__":
    from utils.cli import run_cli
    run_cli(main)
