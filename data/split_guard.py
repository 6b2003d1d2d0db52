"""One rule for "this is test data": what selects checkpoints (validation, tools/retest.py) or trains on unpaired
photos (DRBN stage 2) must not read a test split.

A dataset is test data when it is *declared* one (``split: test``, or a val/test phase without ``split: train``),
or when any of its files lies in a well-known test folder of a supported dataset, whatever the config says:

- a folder, or its parent, whose name has a test-split token: LOL-v1 ``eval15``, LOL-v2 ``Test``, ``*_test``,
  ``testing``, and the unpaired benchmarks LIME, NPE, VV, DICM, MEF (only the last two levels are looked at, so where
  a project or a temporary folder lives does not matter);
- a video folder of the published SDSD, SID and SMID test splits (data/video_dataset.py) in those datasets' layouts:
  SDSD ``input|GT/<video>`` with the indoor/outdoor test videos (``pairN_2`` counts as ``pairN``), SID
  ``short_sid2|long_sid2/1*``, SMID ``SMID_LQ_np|SMID_Long_np/<video>`` listed in the ``test_list.txt`` next to them.
"""
from __future__ import annotations

import re
from pathlib import Path

from utils.errors import OptionError

TEST_SPLIT_TOKENS = frozenset({"test", "tests", "testing", "eval15", "eval", "lime", "npe", "vv", "dicm", "mef"})
SDSD_TEST_VIDEOS = frozenset({"pair11", "pair21", "pair1", "pair19", "pair4", "pair9",                  # indoor
                              "MVI_0898", "MVI_0928", "MVI_0906", "MVI_0975", "MVI_1001", "MVI_0997",  # outdoor
                              "MVI_1003", "MVI_1026", "MVI_1030", "MVI_1032"})
SDSD_DIRS, SID_DIRS, SMID_DIRS = ("input", "GT"), ("short_sid2", "long_sid2"), ("SMID_LQ_np", "SMID_Long_np")


def _smid_test_list(layout_root: Path) -> frozenset:
    f = layout_root / "test_list.txt"
    try:
        return frozenset(ln.strip() for ln in f.read_text().splitlines() if ln.strip())
    except (OSError, UnicodeDecodeError):
        return frozenset()


def known_test_folder(folder) -> str | None:
    """Why `folder` (resolved) is a well-known test folder ('folder 'eval15'', 'SDSD test video pair11', ...),
    or None. See the module docstring for the rule."""
    p = Path(folder).resolve()
    for part in p.parts[-2:]:
        for tok in re.split(r"[^a-z0-9]+", part.lower()):
            if tok in TEST_SPLIT_TOKENS:
                return f"folder '{part}'"
    for video in (p, p.parent):
        layout = video.parent.name
        if layout in SDSD_DIRS and re.sub(r"_2$", "", video.name) in SDSD_TEST_VIDEOS:
            return f"SDSD test video '{video.name}'"
        if layout in SID_DIRS and video.name.startswith("1"):
            return f"SID test video '{video.name}'"
        if layout in SMID_DIRS and video.name in _smid_test_list(video.parent.parent):
            return f"SMID test video '{video.name}' (test_list.txt)"
    return None


def _base(dataset):
    """The dataset under Subset / SemiSupervised wrappers."""
    while True:
        if hasattr(dataset, "dataset") and hasattr(dataset, "indices"):   # torch Subset
            dataset = dataset.dataset
        elif hasattr(dataset, "paired_set"):                              # data.semi_dataset.SemiSupervised
            dataset = dataset.paired_set
        else:
            return dataset


def reads_test_data(dataset) -> str | None:
    """Why a built dataset is test data (declared split, or a file in a well-known test folder), or None."""
    base = _base(dataset)
    if not getattr(base, "train_split", True):
        return "it is declared a test split (split: test, or a val/test phase without split: train)"
    folders = {}
    for s in getattr(base, "samples", ()):
        for f in (s.lq, s.gt):
            if f is not None:
                folders.setdefault(Path(f).parent, f)
    for folder, f in folders.items():
        why = known_test_folder(folder)
        if why:
            return f"it reads '{f}' from a test split ({why}), whatever its split: says"
    return None


def check_not_test_folder(path, key: str, purpose: str) -> None:
    """OptionError when folder `path` (option `key`) is a well-known test folder; `purpose` says what it feeds."""
    why = known_test_folder(path)
    if why:
        raise OptionError(f"option '{key}' ('{path}') looks like a test split ({why}): {purpose} must not come from "
                          f"a test split")
