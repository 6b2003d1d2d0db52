"""Make low-light images from a folder of normal-light images.

python tools/synthesize.py --input normal/ --out low/ [--method physics|n2ldiff] [--opt CONF] [--seed S] [--overwrite]
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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.synthesis.physics import load_physics_config  # noqa: E402
from data.synthesize import DEFAULT_PHYSICS, check_out, list_inputs, run_physics  # noqa: E402
from options.options import load_options  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402
from utils.errors import OptionError  # noqa: E402
from utils.paths import check_output_plan, prepare_dir  # noqa: E402
from utils.threads import add_threads_arg, set_threads  # noqa: E402

log = logging.getLogger("lowlight_flow")
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
    run_cli(main)
