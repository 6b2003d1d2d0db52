"""Datasets on tiny on-the-fly folders in every layout, pairing errors, the real LOL-v1-mini, and the loaders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import data  # noqa: F401  (registers the datasets)
from data.image_io import read_rgb, write_rgb
from data.loader import create_dataset, create_train_loader
from data.preprocess import histeq
from utils.errors import ImageError, OptionError, PairingError
from utils.registry import DATASET_REGISTRY

H, W = 16, 24


def _img(tag: int, h=H, w=W) -> np.ndarray:
    """A smooth image whose pixel (0, 0) carries a tag so pairs can be recognised after loading."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(yy * 7 + xx * 3) % 251, (xx * 5) % 241, (yy * 11) % 239], axis=2).astype(np.uint8)
    img[0, 0] = (tag, tag, tag)
    return img


def _write(path, tag, **kw):
    write_rgb(path, _img(tag, **kw))


def _lol(root, n_train=3, n_val=2):
    for split, n in (("our485", n_train), ("eval15", n_val)):
        for i in range(1, n + 1):
            _write(root / split / "low" / f"{i}.png", i)
            _write(root / split / "high" / f"{i}.png", 100 + i)


def test_registry_names():
    for name in ["LoL", "LoL_v2", "SDSD", "SID", "SMID", "PairedFolder", "UnpairedFolder", "Demo"]:
        assert name in DATASET_REGISTRY


# ------------------------------------------------------------------ LOL-v1

def test_lol_layout_train_and_val(tmp_path):
    _lol(tmp_path)
    opt = {"dataset": "LoL", "root": str(tmp_path), "log_low": True, "concat_histeq": True}
    val = create_dataset(opt, "val")
    assert len(val) == 2
    item = val[1]
    assert item["name"] == "2" and item["LQ_path"].endswith("eval15/low/2.png")
    low = _img(2)
    assert item["LQ"].shape == (6, H, W)
    expected_log = torch.log(torch.from_numpy(low.transpose(2, 0, 1)).float() / 255 + 1e-3)
    assert torch.allclose(item["LQ"][:3], expected_log, atol=1e-6)
    assert torch.allclose(item["LQ"][3:], torch.from_numpy(histeq(low).transpose(2, 0, 1)).float() / 255)
    assert round(float(item["GT"][0, 0, 0]) * 255) == 102  # its own GT
    train = create_dataset({**opt, "use_crop": True, "GT_size": 8, "use_flip": True, "use_rot": True}, "train")
    assert len(train) == 3
    t = train[0]
    assert t["LQ"].shape == (6, 8, 8) and t["GT"].shape == (3, 8, 8)


def test_split_option_lists_training_files_without_augmenting(tmp_path):
    # what the trainer's holdout validation builds: the training split's files, read as in validation
    _lol(tmp_path)
    opt = {"dataset": "LoL", "root": str(tmp_path), "use_crop": True, "GT_size": 8, "use_flip": True}
    held = create_dataset({**opt, "split": "train"}, "val")
    assert len(held) == 3 and held[2]["LQ_path"].endswith("our485/low/3.png")
    assert held[2]["GT"].shape == (3, H, W)  # full image: no crop, no flip outside training
    with pytest.raises(ValueError, match="split"):
        create_dataset({**opt, "split": "validation"}, "val")


def test_explicit_dirs_override_layout_and_cache_matches_lazy(tmp_path):
    _lol(tmp_path)
    opt = {"dataroot_LQ": str(tmp_path / "our485" / "low"), "dataroot_GT": str(tmp_path / "our485" / "high"),
           "concat_histeq": True, "aux_input": "gltg_mask"}
    lazy = DATASET_REGISTRY.get("LoL")(opt, "val")
    cached = DATASET_REGISTRY.get("LoL")({**opt, "cache": True}, "val")
    assert len(lazy) == 3 and len(cached._img_cache) == 6
    for i in range(3):
        a, b = lazy[i], cached[i]
        assert a["name"] == b["name"] and torch.equal(a["LQ"], b["LQ"]) and torch.equal(a["AUX"], b["AUX"])


def test_missing_partner_names_the_file(tmp_path):
    _lol(tmp_path)
    (tmp_path / "eval15" / "high" / "2.png").unlink()
    with pytest.raises(PairingError, match=r"without a GT image.*: 2\.png"):
        create_dataset({"dataset": "LoL", "root": str(tmp_path)}, "val")


def test_size_mismatch_names_both_files(tmp_path):
    _lol(tmp_path)
    _write(tmp_path / "eval15" / "high" / "1.png", 101, h=H + 2)
    ds = create_dataset({"dataset": "LoL", "root": str(tmp_path)}, "val")  # lazy: found on reading
    with pytest.raises(ImageError, match=r"low/1\.png is 16x24.*high/1\.png is 18x24"):
        ds[0]
    with pytest.raises(ImageError, match=r"size mismatch"):  # cache: found at construction
        create_dataset({"dataset": "LoL", "root": str(tmp_path), "cache": True}, "val")


def test_corrupt_file_in_dataset_names_it(tmp_path):
    _lol(tmp_path)
    (tmp_path / "eval15" / "low" / "1.png").write_bytes(b"not a png")
    ds = create_dataset({"dataset": "LoL", "root": str(tmp_path)}, "val")
    with pytest.raises(ImageError, match=r"eval15/low/1\.png.*cannot decode"):
        ds[0]


def test_crop_larger_than_image_is_an_error(tmp_path):
    _lol(tmp_path)
    ds = create_dataset({"dataset": "LoL", "root": str(tmp_path), "use_crop": True, "GT_size": 32}, "train")
    with pytest.raises(ValueError, match=r"our485/low/1\.png.*16x24.*GT_size=32"):
        ds[0]


# ------------------------------------------------------------------ LOL-v2

def test_lol_v2_pairs_by_number_not_sorted_position(tmp_path):
    tr = tmp_path / "REAL_captured" / "train"  # case-insensitive folder names
    # Lexicographic sorting would put low10 before low9 but normal00009 before normal00010.
    for n, low_name, gt_name in [(9, "low9.png", "normal00009.png"), (10, "low10.png", "normal00010.png"),
                                 (11, "low00011.png", "normal11.png")]:
        _write(tr / "LOW" / low_name, n)
        _write(tr / "Normal" / gt_name, 100 + n)
    ds = create_dataset({"dataset": "LoL_v2", "root": str(tmp_path)}, "train")
    assert len(ds) == 3
    for i in range(3):
        it = ds[i]
        n = round(float(it["LQ"][0, 0, 0]) * 255)
        assert round(float(it["GT"][0, 0, 0]) * 255) == 100 + n
        assert it["GT_path"].endswith(f"{n}.png") and str(n) in it["name"]


def test_lol_v2_test_high_alias_subsets_and_missing_partner(tmp_path):
    for i in (1, 2):
        _write(tmp_path / "Real_captured" / "Test" / "low" / f"low{i:05d}.png", i)
        _write(tmp_path / "Real_captured" / "Test" / "high" / f"normal{i:05d}.png", 100 + i)
    _write(tmp_path / "Synthetic" / "Test" / "Low" / "r1abc.png", 5)
    _write(tmp_path / "Synthetic" / "Test" / "Normal" / "r1abc.png", 105)
    real = create_dataset({"dataset": "LoL_v2", "root": str(tmp_path)}, "val")
    both = create_dataset({"dataset": "LoL_v2", "root": str(tmp_path), "subset": "both"}, "test")
    synth = create_dataset({"dataset": "LoL_v2", "root": str(tmp_path), "subset": "synthetic"}, "test")
    assert (len(real), len(both), len(synth)) == (2, 3, 1)
    assert round(float(synth[0]["GT"][0, 0, 0]) * 255) == 105
    (tmp_path / "Real_captured" / "Test" / "low" / "low00002.png").unlink()
    with pytest.raises(PairingError, match=r"GT image\(s\).*without a low image.*normal00002\.png"):
        create_dataset({"dataset": "LoL_v2", "root": str(tmp_path)}, "val")
    with pytest.raises(ImageError, match="Train"):
        create_dataset({"dataset": "LoL_v2", "root": str(tmp_path)}, "train")


# ------------------------------------------------------------------ generic folders

def test_paired_folder_matches_stems_and_lists_strays(tmp_path):
    _write(tmp_path / "lq" / "a.png", 1)
    _write(tmp_path / "lq" / "b.bmp", 2)
    _write(tmp_path / "gt" / "b.png", 102)
    _write(tmp_path / "gt" / "a.png", 101)
    opt = {"dataset": "PairedFolder", "dataroot_LQ": str(tmp_path / "lq"), "dataroot_GT": str(tmp_path / "gt")}
    ds = create_dataset(opt, "test")
    assert [ds[i]["name"] for i in range(2)] == ["a", "b"]
    assert round(float(ds[1]["GT"][0, 0, 0]) * 255) == 102
    _write(tmp_path / "lq" / "c.png", 3)
    _write(tmp_path / "gt" / "z.png", 3)
    with pytest.raises(PairingError, match=r"without a GT image.*c\.png.*without a low image.*z\.png"):
        create_dataset(opt, "test")


def test_unpaired_folder_has_no_gt(tmp_path):
    _write(tmp_path / "in" / "x.png", 1)
    write_rgb(tmp_path / "in" / "y.png", np.zeros((8, 8, 3), np.uint8))
    ds = create_dataset({"dataset": "UnpairedFolder", "dataroot_LQ": str(tmp_path / "in"),
                         "aux_input": "upt_zero_map"}, "test")
    it = ds[1]
    assert "GT" not in it and "GT_path" not in it and it["name"] == "y"
    assert it["LQ"].shape == (3, 8, 8) and float(it["AUX"].sum()) == 0  # black: unbalanced everywhere


# ------------------------------------------------------------------ SDSD / SID / SMID (.npy frames)

def _npy(path, tag, h=H, w=W):
    """Store an RGB tag image as a BGR .npy frame (the SNR-Net convention)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = _img(tag, h, w)
    img[0, 1] = (10, 20, 30)  # RGB marker to check the channel order
    np.save(path, img[:, :, ::-1].copy())


def test_sdsd_frames_split_with_suffix_2_and_channel_order(tmp_path):
    for vid, tag in (("pair1", 1), ("pair1_2", 2), ("pair3", 3)):
        for f in ("0001", "0002"):
            _npy(tmp_path / "input" / vid / f"{f}.npy", tag)
            _npy(tmp_path / "GT" / vid / f"{f}.npy", 100 + tag)
    opt = {"dataset": "SDSD", "root": str(tmp_path), "test_split": ["pair1"]}
    test = create_dataset(opt, "test")
    assert [test[i]["name"] for i in range(len(test))] == ["pair1_0001", "pair1_0002", "pair1_2_0001",
                                                           "pair1_2_0002"]
    assert [round(float(x * 255)) for x in test[0]["LQ"][:, 0, 1]] == [10, 20, 30]
    assert len(create_dataset({**opt, "split_match": "exact"}, "test")) == 2
    train = create_dataset(opt, "train")
    assert len(train) == 2 and all(train[i]["name"].startswith("pair3_") for i in range(2))
    resized = create_dataset({**opt, "resize_to": [12, 8]}, "test")[0]
    assert resized["LQ"].shape == (3, 8, 12) and resized["GT"].shape == (3, 8, 12)
    with pytest.raises(ValueError, match="test videos not found.*pair9"):
        create_dataset({**opt, "test_split": "pair1,pair9"}, "test")
    with pytest.raises(ValueError, match="exactly one of test_split, split_file, test_prefix"):
        create_dataset({"dataset": "SDSD", "root": str(tmp_path)}, "test")


def test_sid_reference_gt_and_prefix_split(tmp_path):
    for vid, n in (("10003", 3), ("00001", 2), ("20002", 1)):
        for k in range(n):
            _npy(tmp_path / "short_sid2" / vid / f"short_{k}.npy", k + 1)
        _npy(tmp_path / "long_sid2" / vid / "long_0.npy", 100)
    opt = {"dataset": "SID", "root": str(tmp_path), "test_prefix": ["1"]}
    test = create_dataset(opt, "val")
    assert len(test) == 3 and {test[i]["GT_path"] for i in range(3)} == {
        str(tmp_path / "long_sid2" / "10003" / "long_0.npy")}
    assert len(create_dataset(opt, "train")) == 3
    (tmp_path / "long_sid2" / "20002" / "long_0.npy").rename(tmp_path / "long_sid2" / "20002" / "x.txt")
    with pytest.raises(ImageError, match="20002.*no images"):
        create_dataset(opt, "train")


def test_smid_split_file_and_half_excluded(tmp_path):
    for vid in ("0001", "0002"):
        _write(tmp_path / "SMID_LQ_np" / vid / "0001.png", 1)  # image frames work as well as .npy
        _npy(tmp_path / "SMID_Long_np" / vid / "a_half.npy", 50)  # sorts first but must be skipped
        _npy(tmp_path / "SMID_Long_np" / vid / "b_full.npy", 150)
    (tmp_path / "test_list.txt").write_text("0002\n")
    opt = {"dataset": "SMID", "root": str(tmp_path), "split_file": str(tmp_path / "test_list.txt")}
    test = create_dataset(opt, "test")
    assert len(test) == 1 and test[0]["GT_path"].endswith("0002/b_full.npy")
    assert round(float(test[0]["GT"][0, 0, 0]) * 255) == 150 and round(float(test[0]["LQ"][0, 0, 0]) * 255) == 1
    assert create_dataset(opt, "train")[0]["name"] == "0001_0001"


# ------------------------------------------------------------------ real data

def test_real_lol_v1_mini_through_lol(shared_dir):
    root = shared_dir / "data" / "LOL-v1-mini" / "our485"
    if not root.is_dir():
        pytest.skip("LOL-v1-mini not present")
    opt = {"dataroot_LQ": str(root / "low"), "dataroot_GT": str(root / "high"), "log_low": True,
           "concat_histeq": True}
    ds = create_dataset({**opt, "dataset": "LoL"}, "val")
    assert len(ds) == 41
    it = ds[0]
    assert it["LQ"].shape == (6, 400, 600) and it["GT"].shape == (3, 400, 600)
    assert it["LQ_path"].split("/")[-1] == it["GT_path"].split("/")[-1]
    gt = read_rgb(it["GT_path"])
    assert torch.allclose(it["GT"], torch.from_numpy(gt.transpose(2, 0, 1)).float() / 255)
    assert float(it["LQ"][:3].exp().mean()) < float(it["GT"].mean())  # low really is darker
    torch.manual_seed(3)
    tr = create_dataset({**opt, "dataset": "LoL", "use_crop": True, "GT_size": 160, "use_flip": True,
                         "aux_input": "zmar_mask"}, "train")[5]
    assert tr["LQ"].shape == (6, 160, 160) and tr["AUX"].shape == (1, 160, 160)


# ------------------------------------------------------------------ loaders

def test_train_loader_reproducible(tmp_path):
    _lol(tmp_path, n_train=6, n_val=3)
    opt = {"dataset": "LoL", "root": str(tmp_path), "use_crop": True, "GT_size": 8, "use_flip": True,
           "use_rot": True, "noise_prob": 1.0, "noise_level": 5, "batch_size": 2, "n_workers": 0}
    ds = create_dataset(opt, "train")

    def epoch(seed, e=0):
        loader, sampler = create_train_loader(ds, opt, seed)
        sampler.set_epoch(e)
        ds.set_epoch(seed * 1000 + e)
        return [(b["name"], b["LQ"]) for b in loader]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert len(a) == 3
    assert all(x[0] == y[0] and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(x[0] != y[0] or not torch.equal(x[1], y[1]) for x, y in zip(a, c))
    ds.set_epoch(5)
    first = [ds[i]["LQ"] for i in range(3)]
    ds.set_epoch(5)
    assert all(torch.equal(x, ds[i]["LQ"]) for i, x in enumerate(first))
    ds.set_epoch(6)
    assert not all(torch.equal(x, ds[i]["LQ"]) for i, x in enumerate(first))
    val = create_dataset(opt, "val")
    assert [val[i]["name"] for i in range(len(val))] == ["1", "2", "3"]
    with pytest.raises(OptionError, match="datasets.train.dataset is missing"):
        create_dataset({}, "train")
    with pytest.raises(OptionError, match="fewer than one batch"):
        create_train_loader(ds, {**opt, "batch_size": 7}, 0)
