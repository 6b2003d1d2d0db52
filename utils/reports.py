"""Metric reports on disk, one format for validation, the test scripts and Measure.py.

CSV: a `# protocol: ...` comment line, then `name,psnr,ssim,lpips` (followed by no-reference metrics such as `niqe`
when the protocol has them; only those without a reference), one row per image (by file name; empty when not
measured). JSON: means, count, protocol and whatever the caller adds; inf/nan are written as strings because JSON
has no such numbers. Both are written atomically.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .atomic import atomic_open

COLUMNS = ("psnr", "ssim", "lpips")


def finite_or_str(v):
    """JSON has no inf/nan: 'inf' / '-inf' / 'nan' strings instead, recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: finite_or_str(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_or_str(x) for x in v]
    return v


def write_json(path, summary: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        json.dump(finite_or_str(summary), f, indent=2, allow_nan=False)
        f.write("\n")


def write_csv(path, agg) -> None:
    """Per-image rows of a utils.metrics.MetricAggregator, with its protocol in the first (comment) line."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(f"# protocol: {agg.protocol.describe()}\n")
        keys = list(getattr(agg, "keys", COLUMNS))
        w = csv.writer(f)
        w.writerow(["name", *keys])
        undefined = {k: set(v) for k, v in (getattr(agg, "undefined", None) or {}).items()}
        for r in agg.rows:
            w.writerow([r["name"]] + ["undefined" if r["name"] in undefined.get(k, ()) else
                                      "" if r.get(k) is None else repr(float(r[k])) for k in keys])
