"""Side-by-side image grid (input | output | reference) for a person to look at.

python -m utils.grid --low DIR --pred DIR [--gt DIR] --out grid.png
"""
from __future__ import annotations

import argparse

import numpy as np

from data.image_io import list_images, read_rgb, write_rgb


def make_grid(low_dir, pred_dir, gt_dir=None, max_rows: int = 8, gap: int = 4) -> np.ndarray:
    """One row per input image, matched by file stem; missing partners are an error naming the file."""
    preds = {p.stem: p for p in list_images(pred_dir)}
    gts = {p.stem: p for p in list_images(gt_dir)} if gt_dir else {}
    rows = []
    for lp in list_images(low_dir)[:max_rows]:
        if lp.stem not in preds:
            raise FileNotFoundError(f"no output for {lp.name} in {pred_dir}")
        tiles = [read_rgb(lp), read_rgb(preds[lp.stem])]
        if gt_dir:
            if lp.stem not in gts:
                raise FileNotFoundError(f"no reference for {lp.name} in {gt_dir}")
            tiles.append(read_rgb(gts[lp.stem]))
        h = max(t.shape[0] for t in tiles)
        padded = [np.pad(t, ((0, h - t.shape[0]), (0, gap), (0, 0)), constant_values=255) for t in tiles]
        rows.append(np.concatenate(padded, axis=1))
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--low", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--gt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    write_rgb(args.out, make_grid(args.low, args.pred, args.gt))
    print(f"grid written to {args.out} (columns: input | output" + (" | reference)" if args.gt else ")"))


if __name__ == "__main__":
    main()
