"""data.demo: deterministic, idempotent built-in demo pairs and the Demo dataset over them."""
from __future__ import annotations

import numpy as np
import pytest

from data.demo import default_demo_root, ensure_demo_data, generate_demo_data
from data.image_io import read_rgb
from data.loader import create_dataset
from utils.errors import ImageError


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return ensure_demo_data(tmp_path_factory.mktemp("demo") / "data")


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_layout_split_by_photo_and_low_is_darker(demo_root):
    files = _files(demo_root)
    train = {f.split("/")[-1] for f in files if f.startswith("our485/low/")}
    val = {f.split("/")[-1] for f in files if f.startswith("eval15/low/")}
    assert len(train) == 12 and len(val) == 3 and not train & val
    assert {f.split("/")[-1] for f in files if f.startswith("our485/high/")} == train
    photo = lambda n: n.split("_")[0].split(".")[0]  # noqa: E731  (crops of one photo share the prefix)
    assert not {photo(n) for n in train} & {photo(n) for n in val}
    for name in sorted(val):
        low, high = read_rgb(demo_root / "eval15/low" / name), read_rgb(demo_root / "eval15/high" / name)
        assert low.shape == high.shape and low.shape[0] % 16 == 0 and low.shape[1] % 16 == 0
        assert low.mean() < 0.5 * high.mean()
        assert np.corrcoef(low.reshape(-1).astype(float), high.reshape(-1).astype(float))[0, 1] > 0.5


def test_same_bytes_twice_and_idempotent(demo_root, tmp_path):
    again = generate_demo_data(tmp_path / "again")
    assert _files(again) == _files(demo_root)
    for f in _files(demo_root):
        assert (again / f).read_bytes() == (demo_root / f).read_bytes(), f
    probe = demo_root / "eval15/low" / _files(demo_root / "eval15/low")[0]
    before = probe.stat().st_mtime_ns
    assert ensure_demo_data(demo_root) == demo_root
    assert probe.stat().st_mtime_ns == before  # not regenerated


def test_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    with pytest.raises(ImageError, match="not a demo data folder"):
        ensure_demo_data(tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"


def test_env_var_sets_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LLFLOW_DEMO_DIR", str(tmp_path / "elsewhere"))
    assert default_demo_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("LLFLOW_DEMO_DIR")
    assert default_demo_root().parts[-2:] == (".cache", "demo_data")


def test_demo_dataset_is_lol_over_demo_root(demo_root):
    val = create_dataset({"dataset": "Demo", "root": str(demo_root), "log_low": True, "concat_histeq": True,
                          "aux_input": "upt_zero_map"}, "val")
    assert len(val) == 3
    it = val[0]
    assert it["LQ"].shape == (6, 256, 384) and it["GT"].shape == (3, 256, 384) and it["AUX"].shape == (1, 256, 384)
    train = create_dataset({"dataset": "Demo", "root": str(demo_root), "use_crop": True, "GT_size": 96}, "train")
    assert len(train) == 12 and train[3]["GT"].shape == (3, 96, 96)
