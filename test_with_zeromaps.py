"""Enhance images with massive zero-element regions: composite a zero-map into every input, then restore.

python test_with_zeromaps.py --opt CONF [--input DIR] [--zeromaps DIR] [--gt DIR] [--out DIR]
                             [--size-mismatch resize|error] [--generate N] [--seed S]

Image i gets zero-map i mod N (maps sorted by name), so a run is deterministic. White zero-map pixels (255) zero
that channel of the low image. Writes <out>/inputs/<stem>.png (the composited input), <out>/<stem>.png (the
restored output) and, with --gt, metrics.csv/json. Without --zeromaps (or config `dataroot_zeromaps`), --generate N
writes N synthetic zero-maps (data/zeromap.py) into <out>/zeromaps first.
"""
import argparse
import logging

import utils.threads  # noqa: F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.image_io import list_images, read_rgb
from data.zeromap import fit_zero_map, inject_zero_map, write_zero_map_set
from options.options import add_common_args, check_path, load_options
from utils.cli import in_range, run_cli
from utils.paths import check_output_plan, prepare_dir
from utils.logging_setup import setup_cli_logging
from engine.evaluate import add_test_args, resolve_io, run
from utils.errors import OptionError

log = logging.getLogger("lowlight_flow")


def main(argv=None):
    parser = add_test_args(add_common_args(argparse.ArgumentParser(description=__doc__)))
    parser.add_argument("--zeromaps", help="zero-map folder (overrides dataroot_zeromaps)")
    parser.add_argument("--size-mismatch", default="error", choices=["resize", "error"],
                        help="a zero-map of another size is resized (nearest) or rejected")
    parser.add_argument("--generate", type=int, default=0, action=in_range(0), help="synthesise N zero-maps when none are given")
    parser.add_argument("--seed", type=int, default=0, action=in_range(0, 2**32 - 1), help="seed of --generate")
    args = parser.parse_args(argv)
    setup_cli_logging()
    opt = load_options(args.opt, args.overrides)
    zdir = args.zeromaps or opt.get("dataroot_zeromaps")
    if zdir:
        zdir = check_path(zdir, "--zeromaps / dataroot_zeromaps")
        check_output_plan([("--out", resolve_io(opt, args)[2])], [("--zeromaps", zdir)])
    elif args.generate > 0:
        inp, _, out, _ = resolve_io(opt, args)
        first = read_rgb(list_images(inp)[0])
        zdir = prepare_dir(out, "--out") / "zeromaps"
        if zdir.is_dir() and any(zdir.iterdir()):
            log.warning("%s already holds files: generated zero-maps of the same names replace them", zdir)
        write_zero_map_set(zdir, args.generate, first.shape[0], first.shape[1], args.seed)
        log.info("generated %d zero-maps in %s", args.generate, zdir)
    else:
        raise OptionError("give --zeromaps DIR (or dataroot_zeromaps), or --generate N")
    maps = list_images(zdir)

    def compose(i, low, path):
        zpath = maps[i % len(maps)]
        zmap = fit_zero_map(read_rgb(zpath), low.shape[:2], args.size_mismatch, zpath, path)
        injected, white = inject_zero_map(low, zmap)
        return injected, white, zpath

    print(f"test_with_zeromaps: {len(maps)} zero-maps from {zdir}; image i gets map i mod {len(maps)}")
    run(opt, args, gt_mean="none", quantisation="round", label="test_with_zeromaps", compose=compose)


if __name__ == "__main__":
    run_cli(main)
