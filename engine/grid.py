"""Side-by-side image strips and grids (input | output | reference) for a person to look at
(``python tools/grid.py`` writes one from three folders; validation writes strips)."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid as tv_make_grid

from data.image_io import list_images, read_rgb, write_rgb
from utils.pairing import pair_by_key

GAP = 4


def tile_images(rows: list[list[np.ndarray]], gap: int = GAP) -> np.ndarray:
    """uint8 HxWx3 images laid out row by row on white, each cell the size of the largest image (top-left aligned)."""
    h = max(t.shape[0] for r in rows for t in r)
    w = max(t.shape[1] for r in rows for t in r)
    ncol = max(len(r) for r in rows)
    cells = []
    for r in rows:
        for j in range(ncol):
            cell = torch.full((3, h, w), 255, dtype=torch.uint8)
            if j < len(r):
                t = torch.from_numpy(np.ascontiguousarray(r[j])).permute(2, 0, 1)
                cell[:, :t.shape[1], :t.shape[2]] = t
            cells.append(cell)
    grid = tv_make_grid(torch.stack(cells), nrow=ncol, padding=gap, pad_value=255)
    return grid.permute(1, 2, 0).numpy()


def save_strip(path, images: list[np.ndarray]) -> None:
    """One row of images (e.g. low | output | GT) as a PNG: the validation previews."""
    write_rgb(path, tile_images([images]))


def make_grid(low_dir, pred_dir, gt_dir=None, max_rows: int = 8, gap: int = GAP) -> np.ndarray:
    """One row per input image, matched by file stem; missing partners are an error naming the file."""
    lows = list_images(low_dir)[:max_rows]
    pairs, _ = pair_by_key(lows, list_images(pred_dir), primary_dir=str(low_dir), secondary_dir=str(pred_dir),
                           extra="return", what=("input", "output"))
    gts = {}
    if gt_dir:
        gts = dict(pair_by_key(lows, list_images(gt_dir), primary_dir=str(low_dir), secondary_dir=str(gt_dir),
                               extra="return", what=("input", "reference"))[0])
    rows = [[read_rgb(lp), read_rgb(pp)] + ([read_rgb(gts[lp])] if gt_dir else []) for lp, pp in pairs]
    return tile_images(rows, gap)


if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("engine.grid", "grid")
