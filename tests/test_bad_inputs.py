"""Bad inputs and faults against every CLI: a one-line `error:` naming the key or file (exit 2), never a traceback,
never a silent wrong result. The CLIs run in-process through utils.cli.run_cli (what `python script.py` runs); subprocesses
only where a real process is needed (SIGKILL during a checkpoint write, DataLoader worker processes)."""
from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.image_io import read_rgb, write_rgb
from engine.inference import Enhancer
from engine.trainer import RunDir
from models.build import build_network
from models.checkpoint import read_state_dict, save_generator
from options.options import load_options
from utils.cli import run_cli
from utils.errors import OutOfMemoryError, OutputError, user_message
from utils.logging_setup import setup_cli_logging
from tests.cli_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/LLFlow/demo_tiny.yml"
N2L = ROOT / "confs/N2LDiff/demo_tiny.yml"
TINY_N2L = ["network_G.n2ldiff.dim_mults=[1,2]", "network_G.n2ldiff.timesteps=4"]
DRBN = ROOT / "confs/DRBN/demo_tiny.yml"
DRBN2 = ROOT / "confs/DRBN/demo_tiny_stage2.yml"
TINY_FLOW = ["network_G.nf=8", "network_G.nb=1", "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]",
             "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16"]
SCRIPTS = {name: load_script(name) for name in ("train.py", "test.py", "test_with_tricks.py",
                                                 "test_with_zeromaps.py", "Measure.py")}
for _tool in ("grid", "synthesize", "retest", "export_official"):
    SCRIPTS[_tool] = importlib.import_module(f"tools.{_tool}")
SCRIPTS["convert"] = importlib.import_module("tools.convert_checkpoint")


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _img(path, h, w, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, hi, (h, w, 3), dtype=dtype))


class _Evil:
    """Pickles to a call of os.getcwd: harmless, but a weights_only loader must refuse any such reduce."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Every file the cases use: image folders, checkpoints, configs, training pairs (paths by name)."""
    d = tmp_path_factory.mktemp("bad_inputs")
    for sub in ("low", "high"):
        for i, n in enumerate("ab"):
            _img(d / sub / f"{n}.png", 24, 32, seed=i + (sub == "high") * 7)
    _img(d / "same/x.png", 16, 16)
    _img(d / "same/x.jpg", 16, 16, seed=1)
    for sub in ("tiny", "tinygt"):
        _img(d / sub / "a.png", 1, 1)
    for sub in ("thin", "thingt"):
        _img(d / sub / "a.png", 3, 40)
    (d / "corrupt").mkdir()
    (d / "corrupt/a.png").write_bytes(b"not a png at all")
    _img(d / "fakeinput/a.png", 24, 32)
    (d / "fakeinput/b.png").write_text("a text file named .png")
    _img(d / "gray16/a.png", 16, 16, dtype=np.uint16)
    _img(d / "mismatch/a.png", 16, 16)
    _img(d / "mismatch/b.png", 24, 32)
    _img(d / "partial/a.png", 24, 32)
    _img(d / "zmaps_small/z.png", 10, 10)
    (d / "zmaps_bad").mkdir()
    (d / "zmaps_bad/z.png").write_bytes(b"\x89PNG broken")
    (d / "afile").write_text("a regular file where a folder is expected")
    (d / "lowlink").symlink_to(d / "low", target_is_directory=True)   # another name for the input folder
    (d / "report.html").symlink_to(d / "real.html")                    # dangling: what --html would write through
    # checkpoints: the tiny LLFlow, one with NaN weights, empty, text, and a pickle that runs code when unpickled
    net, _ = build_network(load_options(CONF, TINY_FLOW))
    save_generator(net, d / "tiny.pth")
    sd = read_state_dict(d / "tiny.pth")
    sd = {k: (v.fill_(float("nan")) if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(sd, d / "nan.pth")
    save_generator(build_network(load_options(DRBN))[0], d / "drbn.pth")
    (d / "empty.pth").write_bytes(b"")
    save_generator(net, d / "tiny_st.safetensors")
    (d / "tiny_st.safetensors").rename(d / "tiny_st.pth")
    torch.manual_seed(0)
    save_generator(build_network(load_options(N2L, TINY_N2L))[0], d / "n2l.pth")
    sd = read_state_dict(d / "n2l.pth")
    torch.save({k: (v.clone().fill_(float("nan")) if k.startswith(("encoder.", "model.unet.")) else v)
                for k, v in sd.items()}, d / "n2l_nan.pth")
    noise = np.random.default_rng(0).standard_normal((2, 2, 3, 32, 32)).astype(np.float32)  # 2 steps, 2 images
    noise[1, 1, 0, 5, 5] = np.nan
    np.save(d / "noise_nan.npy", noise)
    (d / "noise.txt").write_text("0.1 0.2 0.3\n")
    (d / "text.pth").write_text("weights: none\n")
    (d / "evil.pth").write_bytes(pickle.dumps(_Evil()))
    # configs
    (d / "bad.yml").write_text("name: x\nnetwork_G: [1, 2\ntrain:\n  niter: 3\n")
    (d / "list.yml").write_text("- 1\n- 2\n")
    (d / "empty.yml").write_text("")
    (d / "binary.yml").write_bytes(b"\xff\xfe\x00\x01name: x")
    # training pairs (PairedFolder), one folder with an undecodable low image
    for i in range(6):
        _img(d / f"pairs/lq/{i}.png", 40, 48, seed=i)
        _img(d / f"pairs/gt/{i}.png", 40, 48, seed=i + 50)
    for i, (h, w_) in enumerate([(40, 48), (48, 40)]):
        _img(d / f"mixed/lq/{i}.png", h, w_, seed=i)
        _img(d / f"mixed/gt/{i}.png", h, w_, seed=i + 9)
    (d / "unpaired/lq").mkdir(parents=True)
    (d / "unpaired/gt").mkdir(parents=True)
    for i in range(3):
        _img(d / f"unpaired/lq/{i}.png", 40, 48, seed=i)
        if i != 1:
            _img(d / f"unpaired/gt/{i}.png", 40, 48, seed=i)
    return d


def _test_args(extra=""):
    return ["--opt", str(CONF), *_sets(TINY_FLOW), "--model_path", "{d}/tiny.pth", *extra.split()]


def _drbn_test_args(extra=""):
    return ["--opt", str(DRBN), "--model_path", "{d}/drbn.pth", *extra.split()]


def _train_args(extra="", conf=CONF):
    data = ["datasets.train.dataset=PairedFolder", "datasets.train.dataroot_LQ={d}/pairs/lq",
            "datasets.train.dataroot_GT={d}/pairs/gt", "datasets.train.GT_size=32", "datasets.train.batch_size=2",
            "datasets.train.cache=false", "datasets.val=null", "train.val_freq=0", "use_tb_logger=false",
            "train.niter=2", "path.experiments_root={exp}"]
    return ["--opt", str(conf), *_sets((TINY_FLOW if conf == CONF else []) + data), *extra.split()]


def _synth_n2l(extra=""):
    args = ["--input", "{d}/low", "--out", "{tmp}/o", "--method", "n2ldiff", "--opt", str(N2L),
            *_sets(TINY_N2L), "--steps", "2", "--model_path", "{d}/n2l.pth", *extra.split()]
    if "--model_path" in extra.split():  # the last --model_path wins; keep one
        i = args.index("--model_path")
        del args[i:i + 2]
    return args


@dataclass
class Case:
    id: str
    script: str
    args: list
    names: tuple  # substrings the error line must contain (formatted like args)
    code: int = 2


T, TR = "test.py", "train.py"
CASES = [
    # -- silent wrong results become errors
    Case("nan-checkpoint", T, _test_args("--input {d}/low --gt {d}/high --out {tmp}/o --model_path {d}/nan.pth"),
         ("non-finite", "nan.pth")),
    Case("heat-nan", T, _test_args("--input {d}/low --out {tmp}/o --heat nan"), ("--heat", "nan")),
    Case("heat-inf", T, _test_args("--input {d}/low --out {tmp}/o --heat inf"), ("--heat", "inf")),
    Case("heat-negative", T, _test_args("--input {d}/low --out {tmp}/o --heat -1"), ("--heat",)),
    Case("heat-config-string", T, _test_args("--input {d}/low --out {tmp}/o --set heat=warm"), ("'heat'", "warm")),
    Case("same-stem-inputs", T, _test_args("--input {d}/same --out {tmp}/o"), ("x.png", "x.jpg")),
    Case("tricks-without-gt", "test_with_tricks.py", _test_args("--input {d}/low --out {tmp}/o"), ("--gt",)),
    Case("tricks-nan-checkpoint", "test_with_tricks.py", _test_args("--input {d}/low --gt {d}/high --out {tmp}/o "
                                                                    "--model_path {d}/nan.pth"), ("nan.pth",)),
    Case("tricks-tiny-reference", "test_with_tricks.py", _test_args("--input {d}/thin --gt {d}/thingt --out "
                                                                    "{tmp}/o"), ("thingt/a.png", "7x7")),
    Case("niter-negative", TR, _train_args("--set train.niter=-3"), ("train.niter", "-3")),
    Case("niter-zero", TR, _train_args("--set train.niter=0"), ("train.niter",)),
    Case("niter-unset", TR, _train_args("--set train.niter=null"), ("train.niter",)),
    # -- output locations
    Case("out-is-file", T, _test_args("--input {d}/low --out {d}/afile"), ("--out", "afile")),
    Case("out-under-file", T, _test_args("--input {d}/low --out {d}/afile/sub"), ("--out", "afile")),
    Case("measure-json-under-file", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--json",
                                                    "{d}/afile/m.json"], ("--json", "afile")),
    Case("measure-csv-is-folder", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--csv", "{d}/low"],
         ("--csv", "low")),
    Case("experiments-root-is-file", TR, _train_args("--set path.experiments_root={d}/afile"),
         ("path.experiments_root", "afile")),
    Case("experiments-root-under-file", TR, _train_args("--set path.experiments_root={d}/afile/runs"),
         ("path.experiments_root", "afile")),
    Case("grid-out-under-file", "grid", ["--low", "{d}/low", "--pred", "{d}/high", "--out", "{d}/afile/g.png"],
         ("afile/g.png", "is a file")),
    Case("grid-out-is-folder", "grid", ["--low", "{d}/low", "--pred", "{d}/high", "--out", "{d}/same"],
         ("same", "folder")),
    Case("grid-out-unknown-format", "grid", ["--low", "{d}/low", "--pred", "{d}/high", "--out", "{tmp}/g.xyz"],
         ("g.xyz", ".xyz")),
    # -- outputs that collide with each other or with the inputs (checked before anything is written)
    Case("measure-labels-same-file", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--label", "A B",
                                                     "--pred", "{d}/high", "--label", "A_B", "--csv", "{tmp}/m.csv"],
         ("'A B'", "'A_B'", "m_A_B.csv", "same path")),
    Case("measure-csv-is-html", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--csv", "{tmp}/r",
                                                "--html", "{tmp}/r"], ("--csv", "--html", "same path")),
    Case("measure-csv-is-html-via-symlink", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--csv",
                                                            "{d}/real.html", "--html", "{d}/report.html"],
         ("real.html", "report.html", "same path")),
    Case("test-out-is-input", T, _test_args("--input {d}/low --out {d}/low"), ("--out", "--input", "low")),
    Case("test-out-is-input-via-symlink", T, _test_args("--input {d}/low --out {d}/lowlink"),
         ("--out", "lowlink", "--input", "replace the inputs")),
    Case("tricks-out-is-gt", "test_with_tricks.py", _test_args("--input {d}/low --gt {d}/high --out {d}/high"),
         ("--out", "--gt", "high")),
    Case("zeromaps-out-is-zeromaps", "test_with_zeromaps.py", _test_args("--input {d}/low --zeromaps {d}/zmaps_small "
                                                                         "--out {d}/zmaps_small"),
         ("--out", "--zeromaps", "zmaps_small")),
    Case("synth-out-is-input-overwrite", "synthesize", ["--input", "{d}/low", "--out", "{d}/lowlink", "--overwrite"],
         ("--out", "lowlink", "--input", "replace the inputs")),
    Case("grid-out-is-input", "grid", ["--low", "{d}/low", "--pred", "{d}/high", "--out", "{d}/lowlink"],
         ("--out", "lowlink", "--low")),
    Case("convert-dst-is-src", "convert", ["{d}/tiny.pth", "{d}/tiny.pth"], ("dst", "src", "tiny.pth")),
    Case("export-official-out-is-checkpoint", "export_official", _test_args("--out {d}/tiny.pth"),
         ("--out", "--model_path", "tiny.pth")),
    # -- every image a report page shows is decoded first
    Case("html-input-not-an-image-inline", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--html",
                                                           "{tmp}/r.html", "--input", "{d}/fakeinput",
                                                           "--inline-images"],
         ("fakeinput/b.png", "not a decodable image")),
    Case("html-input-not-an-image-linked", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--html",
                                                           "{tmp}/r.html", "--input", "{d}/fakeinput"],
         ("fakeinput/b.png", "not a decodable image")),
    # -- numeric flags: range checked while parsing, one line naming the flag and the allowed range
    Case("retest-max-images-zero", "retest", ["--run", "{d}", "--max-images", "0"], ("--max-images", ">= 1", "0")),
    Case("retest-max-images-negative", "retest", ["--run", "{d}", "--max-images", "-3"],
         ("--max-images", ">= 1", "-3")),
    Case("measure-crop-border-negative", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--crop-border",
                                                         "-1"], ("--crop-border", ">= 0", "-1")),
    Case("synth-steps-zero", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--steps", "0"],
         ("--steps", ">= 1")),
    Case("synth-seed-negative", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--seed", "-1"],
         ("--seed", "in [0, 4294967295]")),
    Case("zeromaps-seed-negative", "test_with_zeromaps.py", _test_args("--input {d}/low --generate 2 --seed -5"),
         ("--seed", "-5")),
    # -- sizes
    Case("tiny-image-ssim", T, _test_args("--input {d}/tiny --gt {d}/tinygt --out {tmp}/o"),
         ("tinygt/a.png", "1x1", "7x7")),
    Case("measure-tiny", "Measure.py", ["--gt", "{d}/tinygt", "--pred", "{d}/tiny"], ("tinygt/a.png", "7x7")),
    Case("measure-thin-matlab", "Measure.py", ["--gt", "{d}/thingt", "--pred", "{d}/thin", "--ssim", "matlab_rgb"],
         ("thingt/a.png", "3x40", "11x11")),
    Case("train-crop-not-multiple", TR, _train_args("--set datasets.train.GT_size=20"),
         ("datasets.train.GT_size", "multiple of 8")),
    Case("train-crop-larger-than-image", TR, _train_args("--set datasets.train.GT_size=64"),
         ("pairs/lq/", "GT_size=64")),
    # -- config values
    Case("yaml-syntax", T, ["--opt", "{d}/bad.yml"], ("bad.yml", "line 3, column 6")),
    Case("yaml-list", T, ["--opt", "{d}/list.yml"], ("list.yml", "mapping")),
    Case("yaml-empty", T, ["--opt", "{d}/empty.yml"], ("empty.yml", "empty")),
    Case("yaml-binary", T, ["--opt", "{d}/binary.yml"], ("binary.yml", "UTF-8")),
    Case("config-missing", T, ["--opt", "{d}/nope.yml"], ("nope.yml", "not found")),
    Case("set-invalid-yaml", T, _test_args("--input {d}/low --set train.lr_G=[1"), ("--set train.lr_G=[1",)),
    Case("set-list-for-int", T, _test_args("--input {d}/low --set network_G.nf=[1,2]"), ("network_G.nf", "integer")),
    Case("set-string-for-int", T, _test_args("--input {d}/low --set network_G.flow.K=abc"), ("network_G.flow.K",)),
    Case("set-string-for-bool", T, _test_args("--input {d}/low --set inference.amp=maybe"), ("inference.amp",)),
    Case("set-bad-choice", T, _test_args("--input {d}/low --set inference.pad_mode=wrap"), ("inference.pad_mode",)),
    Case("set-unknown-key", T, _test_args("--input {d}/low --set train.lr_g=1"), ("train.lr_g", "lr_G")),
    Case("unknown-encoder", T, _test_args("--input {d}/low --set cond_encoder=Foo"), ("Foo", "Registered")),
    Case("train-lr-list", TR, _train_args("--set train.lr_G=[1]"), ("train.lr_G",)),
    Case("train-beta-range", TR, _train_args("--set train.beta1=5"), ("train.beta1", "< 1")),
    Case("train-batch-zero", TR, _train_args("--set datasets.train.batch_size=0"), ("datasets.train.batch_size",)),
    Case("train-lr-scheme", TR, _train_args("--set train.lr_scheme=Cosine"), ("train.lr_scheme", "Cosine")),
    Case("train-dataset-unknown", TR, _train_args("--set datasets.train.dataset=Foo"), ("Foo", "Registered")),
    # -- devices and tiles
    Case("device-missing-cuda", T, _test_args("--input {d}/low --out {tmp}/o --device cuda:63"),
         ("--device", "cuda:63")),
    Case("device-malformed", T, _test_args("--input {d}/low --out {tmp}/o --device gpu"), ("--device", "gpu")),
    Case("device-config", T, _test_args("--input {d}/low --out {tmp}/o --set inference.device=cuda:67"),
         ("inference.device", "cuda:67")),
    Case("measure-device", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/low", "--lpips", "--device", "cuda:65"],
         ("--device", "cuda:65")),
    Case("tile-negative", T, _test_args("--input {d}/low --out {tmp}/o --tile -8"), ("--tile", "-8")),
    Case("tile-config-negative", T, _test_args("--input {d}/low --out {tmp}/o --set inference.tile=-5"),
         ("inference.tile",)),
    # -- images, folders, pairing
    Case("input-corrupt", T, _test_args("--input {d}/corrupt --out {tmp}/o"), ("corrupt/a.png", "decode")),
    Case("input-16bit", T, _test_args("--input {d}/gray16 --out {tmp}/o"), ("gray16/a.png", "16-bit")),
    Case("input-missing", T, _test_args("--input {d}/nothing --out {tmp}/o"), ("--input", "nothing")),
    Case("input-is-file", T, _test_args("--input {d}/afile --out {tmp}/o"), ("afile",)),
    Case("gt-missing-pair", T, _test_args("--input {d}/low --gt {d}/partial --out {tmp}/o"), ("b.png", "partial")),
    Case("gt-size-mismatch", T, _test_args("--input {d}/low --gt {d}/mismatch --out {tmp}/o"),
         ("low/a.png", "mismatch/a.png")),
    Case("measure-missing-pred", "Measure.py", ["--gt", "{d}/high", "--pred", "{d}/partial"], ("b.png",)),
    Case("measure-same-stem", "Measure.py", ["--gt", "{d}/same", "--pred", "{d}/same"], ("x.png", "x.jpg")),
    Case("train-unpaired-file", TR, _train_args("--set datasets.train.dataroot_GT={d}/unpaired/gt --set "
                                                "datasets.train.dataroot_LQ={d}/unpaired/lq"), ("1.png",)),
    Case("train-mixed-sizes-no-crop", TR, _train_args("--set datasets.train.use_crop=false --set "
                                                      "datasets.train.dataroot_LQ={d}/mixed/lq --set "
                                                      "datasets.train.dataroot_GT={d}/mixed/gt"),
         ("mixed/lq/0.png", "mixed/lq/1.png", "use_crop")),
    Case("train-without-references", TR, _train_args("--set datasets.train.dataset=UnpairedFolder"),
         ("UnpairedFolder", "pairs")),
    Case("train-data-missing", TR, _train_args("--set datasets.train.dataroot_LQ={d}/nothing"), ("nothing",)),
    # -- checkpoints
    Case("ckpt-empty", T, _test_args("--input {d}/low --model_path {d}/empty.pth"), ("empty.pth",)),
    Case("ckpt-text", T, _test_args("--input {d}/low --model_path {d}/text.pth"), ("text.pth",)),
    Case("ckpt-pickle-code", T, _test_args("--input {d}/low --model_path {d}/evil.pth"), ("evil.pth", "never unpickled")),
    Case("ckpt-missing", T, _test_args("--input {d}/low --model_path {d}/none.pth"), ("none.pth",)),
    Case("ckpt-other-model", T, ["--opt", str(CONF), "--input", "{d}/low", "--model_path", "{d}/tiny.pth"],
         ("tiny.pth", "does not match")),
    Case("resume-state-missing", TR, _train_args("--set path.resume_state={d}/none.state"),
         ("path.resume_state", "none.state")),
    Case("resume-state-corrupt", TR, _train_args("--set path.resume_state={d}/text.pth"), ("text.pth",)),
    # -- DRBN (stage 1 and the stage-2 band recomposition)
    Case("drbn-heat", T, _drbn_test_args("--input {d}/low --out {tmp}/o --heat 0.5"), ("--heat", "DRBN")),
    Case("drbn-flow-checkpoint", T, _drbn_test_args("--input {d}/low --model_path {d}/tiny.pth"),
         ("tiny.pth", "not DRBN")),
    Case("drbn-size-string", T, _drbn_test_args("--input {d}/low --set network_G.drbn.width=wide"),
         ("network_G.drbn.width",)),
    Case("drbn-crop", TR, _train_args("--set datasets.train.GT_size=30", conf=DRBN), ("GT_size", "multiple of 4")),
    Case("drbn-stage2-stage1-as-checkpoint", T, ["--opt", str(DRBN2), "--model_path", "{d}/drbn.pth", "--input",
                                                  "{d}/low"], ("drbn.pth", "pretrain_stage1")),
    Case("drbn-stage2-vgg-unreadable", TR, _train_args("--set path.pretrain_stage1={d}/drbn.pth --set "
                                                       "path.vgg16_features={d}/text.pth", conf=DRBN2),
         ("text.pth",)),
    # -- python tools/synthesize.py
    Case("synth-out-is-file", "synthesize", ["--input", "{d}/low", "--out", "{d}/afile"], ("--out", "afile")),
    Case("synth-out-under-file", "synthesize", ["--input", "{d}/low", "--out", "{d}/afile/low"], ("--out", "afile")),
    Case("synth-yaml-syntax", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--opt", "{d}/bad.yml"],
         ("bad.yml", "line 3, column 6")),
    Case("synth-yaml-binary", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--opt", "{d}/binary.yml"],
         ("binary.yml", "UTF-8")),
    Case("synth-same-stem", "synthesize", ["--input", "{d}/same", "--out", "{tmp}/o"], ("x.png", "x.jpg")),
    Case("synth-corrupt-input", "synthesize", ["--input", "{d}/corrupt", "--out", "{tmp}/o"], ("corrupt/a.png",)),
    Case("synth-n2ldiff-bad-checkpoint", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--method",
                                                        "n2ldiff", "--model_path", "{d}/empty.pth", "--opt",
                                                        str(N2L)], ("empty.pth",)),
    Case("synth-n2ldiff-nan-noise", "synthesize", _synth_n2l("--replay-noise {d}/noise_nan.npy"),
         ("noise_nan.npy", "NaN/inf", "low/b.png")),
    Case("synth-n2ldiff-nan-weights", "synthesize", _synth_n2l("--model_path {d}/n2l_nan.pth"),
         ("non-finite", "low/a.png", "n2l_nan.pth")),
    Case("synth-n2ldiff-text-noise", "synthesize", _synth_n2l("--replay-noise {d}/noise.txt"),
         ("noise.txt", "not a .npy file")),
    # -- messages that name what is actually wrong, for the method at hand
    Case("synth-n2ldiff-flow-config", "synthesize", ["--input", "{d}/low", "--out", "{tmp}/o", "--method", "n2ldiff",
                                                     "--model_path", "{d}/n2l.pth", "--opt", str(CONF)],
         ("LLFlow/demo_tiny.yml", "model: LLFlow", "needs an N2LDiff")),
    Case("drbn-shape-advice", T, _drbn_test_args("--input {d}/low --out {tmp}/o --set network_G.drbn.width=16"),
         ("drbn.pth", "set network_G.drbn")),
    Case("n2ldiff-shape-advice", "synthesize", _synth_n2l("--set network_G.n2ldiff.dim=16"),
         ("n2l.pth", "network_G.n2ldiff (dim")),
    Case("ckpt-safetensors-named-pth", T, _test_args("--input {d}/low --model_path {d}/tiny_st.pth"),
         ("tiny_st.pth", "safetensors file", "rename")),
    # -- zero-maps
    Case("zeromaps-none", "test_with_zeromaps.py", _test_args("--input {d}/low --out {tmp}/o"), ("--zeromaps",)),
    Case("zeromaps-missing", "test_with_zeromaps.py", _test_args("--input {d}/low --out {tmp}/o --zeromaps "
                                                                 "{d}/nothing"), ("--zeromaps", "nothing")),
    Case("zeromaps-size", "test_with_zeromaps.py", _test_args("--input {d}/low --out {tmp}/o --zeromaps "
                                                              "{d}/zmaps_small"), ("zmaps_small/z.png", "low/a.png")),
    Case("zeromaps-corrupt", "test_with_zeromaps.py", _test_args("--input {d}/low --out {tmp}/o --zeromaps "
                                                                 "{d}/zmaps_bad"), ("zmaps_bad/z.png",)),
    Case("zeromaps-generate-negative", "test_with_zeromaps.py", _test_args("--input {d}/low --generate -2"),
         ("--generate",)),
]


def run_case(script, args, capsys):
    """(exit code, stderr) of `script` run in-process through run_cli."""
    capsys.readouterr()
    setup_cli_logging()  # log handlers write to this test's captured stderr
    try:
        run_cli(SCRIPTS[script].main, args)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_case_table_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_naming_it(case, w, tmp_path, capsys):
    fmt = {"d": w, "tmp": tmp_path, "exp": tmp_path / "exp"}
    code, err = run_case(case.script, [a.format(**fmt) for a in case.args], capsys)
    assert code == case.code, err[-3000:]
    line = error_line(err)
    for name in case.names:
        assert name.format(**fmt) in line, (name, line)


# -- what "any size" promises, and what is said instead of done silently ---------------------------------------------
@pytest.mark.parametrize("family", ["LLFlow", "ZMAR-SNFlow", "UPT-Flow", "DRBN"])
def test_any_input_size_is_enhanced_and_cropped_back(family):
    """Images down to 1x1 and 3x40 (ZMAR's mask attention used to fail below 16 px) come back at their size."""
    opt = load_options(ROOT / "confs" / family / "demo_tiny.yml")
    torch.manual_seed(0)
    enh = Enhancer(build_network(opt)[0], opt, device="cpu")
    for h, w_ in [(1, 1), (3, 40), (17, 5)]:
        out = enh(np.random.default_rng(0).integers(0, 256, (h, w_, 3), dtype=np.uint8))
        assert out.shape == (h, w_, 3) and np.isfinite(out).all()


def test_tiny_image_without_gt_is_written(w, tmp_path, capsys):
    code, err = run_case("test.py", [a.format(d=w) for a in _test_args()] + ["--input", str(w / "tiny"), "--out",
                                                                              str(tmp_path / "o")], capsys)
    assert code == 0, err[-3000:]
    assert read_rgb(tmp_path / "o/a.png").shape == (1, 1, 3)


def test_rerun_says_it_replaces_earlier_outputs(w, tmp_path, capsys):
    args = [a.format(d=w) for a in _test_args()] + ["--input", str(w / "low"), "--gt", str(w / "high"),
                                                    "--out", str(tmp_path / "o")]
    code, err = run_case("test.py", args, capsys)
    assert code == 0 and "replaced" not in err, err[-3000:]
    code, err = run_case("test.py", args, capsys)
    assert code == 0 and "already holds 4 of the files this run writes" in err, err[-3000:]


def test_keyboard_interrupt_is_one_line(capsys):
    def main(argv):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        run_cli(main, [])
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C)"


def test_bugs_keep_their_traceback():
    """Only UserError is a user error: a ValueError from a bug propagates (and prints its traceback)."""
    def main(argv):
        raise ValueError("a bug")
    with pytest.raises(ValueError, match="a bug"):
        run_cli(main, [])


def test_fresh_runs_in_the_same_second_are_archived_side_by_side(tmp_path):
    opt = load_options(CONF, [f"path.experiments_root={tmp_path}"])
    moved = []
    for i in range(3):
        run = RunDir(opt)
        (run.root / "models").mkdir(parents=True)
        (run.root / "models" / f"run{i}_G.pth").write_bytes(b"x")
        moved.append(run.archive())
    assert len(set(moved)) == 3 and all((m / "models" / f"run{i}_G.pth").is_file() for i, m in enumerate(moved))


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, where even root cannot mkdir")
@pytest.mark.parametrize("script,flag", [("test.py", "--out"), ("Measure.py", "--json")])
def test_unwritable_location_is_one_line(script, flag, w, capsys):
    """Tests run as root, where chmod does not stop writes; sysfs refuses new folders to everyone."""
    target = "/sys/lowlight_flow_out" + ("/m.json" if flag == "--json" else "")
    args = ([a.format(d=w) for a in _test_args("--input {d}/low")] if script == "test.py"
            else ["--gt", str(w / "high"), "--pred", str(w / "low")]) + [flag, target]
    code, err = run_case(script, args, capsys)
    assert code == 2 and not Path("/sys/lowlight_flow_out").exists()
    line = error_line(err)
    assert flag in line and "/sys/lowlight_flow_out" in line and "cannot create folder" in line


def test_atomic_write_into_a_file_path_names_it(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        write_rgb(tmp_path / "f" / "a.png", np.zeros((2, 2, 3), np.uint8))


# -- faults --------------------------------------------------------------------------------------------------------
def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _train_cmd(w, exp, extra=()):
    args = [a.format(d=w, exp=exp) for a in _train_args()]
    return [sys.executable, str(ROOT / "train.py"), *args, *extra]


def test_truncated_newest_state_falls_back_and_says_so(w, tmp_path, capsys):
    exp = tmp_path / "exp"
    base = [a.format(d=w, exp=exp) for a in _train_args()] + _sets(["logger.save_checkpoint_freq=1",
                                                                     "logger.keep_checkpoints=3"])
    code, err = run_case("train.py", base + _sets(["train.niter=3"]), capsys)
    assert code == 0, err[-3000:]
    run = exp / "demo_tiny_LLFlow"
    newest = run / "training_states/3.state"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    code, err = run_case("train.py", base + _sets(["train.niter=4"]) + ["--resume"], capsys)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert "3.state" in err and "trying the previous training state" in err and "2.state" in err, err[-3000:]
    assert "resumed from" in (run / "train.log").read_text()
    assert (run / "models/4_G.pth").is_file()
    # when nothing can be read, --resume is an error naming the states folder
    for f in (run / "training_states").glob("*.state"):
        f.write_bytes(b"")
    code, err = run_case("train.py", base + _sets(["train.niter=6"]) + ["--resume"], capsys)
    assert code == 2 and "training_states" in error_line(err)


@pytest.mark.slow
def test_corrupt_image_in_a_dataloader_worker_is_one_line(w, tmp_path):
    data = tmp_path / "data"
    for sub in ("lq", "gt"):
        for f in (w / "pairs" / sub).iterdir():
            (data / sub).mkdir(parents=True, exist_ok=True)
            (data / sub / f.name).write_bytes(f.read_bytes())
    (data / "lq/3.png").write_bytes(b"truncated")
    cmd = _train_cmd(w, tmp_path / "exp", _sets([f"datasets.train.dataroot_LQ={data}/lq",
                                                 f"datasets.train.dataroot_GT={data}/gt",
                                                 "datasets.train.n_workers=1", "train.niter=6"]))
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    line = error_line(r.stderr)
    assert str(data / "lq/3.png") in line and "DataLoader worker" in line


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume(w, tmp_path):
    """SIGKILL while a checkpoint temp file is being written: every complete file reads, and --resume continues from
    the newest complete state (removing the partial file and saying so)."""
    exp = tmp_path / "exp"
    run = exp / "demo_tiny_LLFlow"
    save = _sets(["logger.save_checkpoint_freq=1", "logger.keep_checkpoints=2"])
    proc = subprocess.Popen(_train_cmd(w, exp, save + _sets(["train.niter=200"])), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    mid_write, deadline = False, time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            dirs = [run / "models", run / "training_states"]
            names = [p.name for d in dirs if d.is_dir() for p in d.iterdir()]
            # after a few complete checkpoints, kill while the next one's temp file exists
            if sum(n.endswith(".state") for n in names) >= 2 and any(n.endswith(".tmp") for n in names):
                mid_write = True
                break
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert mid_write, "no checkpoint write was seen in progress"
    states = sorted(int(p.stem) for p in (run / "training_states").glob("*.state"))
    for s in states:  # complete files only: atomic rename
        torch.load(run / f"training_states/{s}.state", weights_only=True)
        read_state_dict(run / f"models/{s}_G.pth")
    target = states[-1] + 2
    r = subprocess.run(_train_cmd(w, exp, save + _sets([f"train.niter={target}"]) + ["--resume"]),
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'training_states'}/{states[-1]}.state" in log
    assert (run / f"models/{target}_G.pth").is_file()
    assert not [p for d in (run / "models", run / "training_states") for p in d.iterdir() if p.name.endswith(".tmp")]


def test_worker_message_is_reduced_to_the_original_line():
    wrapped = ("Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               "  File \"x.py\", line 1, in f\n    raise ImageError('boom')\n"
               "utils.errors.ImageError: /data/a.png: cannot decode image\n")
    from utils.errors import ImageError
    assert user_message(ImageError(wrapped)) == "/data/a.png: cannot decode image (in DataLoader worker 0)"


def test_out_of_memory_says_how_to_tile():
    """A real allocation failure of the CPU allocator inside the enhance call becomes advice to tile."""
    class Greedy(torch.nn.Module):
        pad_multiple, aux_input = 8, None

        def enhance(self, lq, aux=None, heat=0.0):
            return torch.empty(2 ** 50, device=lq.device)  # 4 PiB: no machine has it

    opt = load_options(CONF)
    with pytest.raises(OutOfMemoryError, match=r"out of memory enhancing a 64x96 .* --tile 32"):
        Enhancer(Greedy(), opt, device="cpu")(np.zeros((64, 90, 3), np.uint8))
