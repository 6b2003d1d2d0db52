"""Options: official-format configs parse, bad keys are rejected by name, overrides are typed, paths handled."""
from pathlib import Path

import pytest
import yaml

from models.build import model_class
from models.networks.variants import resolve_variant
from options.options import check_path, load_options, parse_override
from utils.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
# confs/synthesis holds low-light synthesiser ranges, not model configs (tests/test_synthesis.py loads those).
CONFS = sorted(p for p in (ROOT / "confs").rglob("*.yml") if p.relative_to(ROOT / "confs").parts[0] != "synthesis")


def test_there_are_shipped_configs():
    assert len(CONFS) >= 4


@pytest.mark.parametrize("conf", CONFS, ids=lambda p: str(p.relative_to(ROOT / "confs")))
def test_shipped_configs_load(conf):
    opt = load_options(conf)
    if opt["model"] not in ("LLFlow", "UPTFlow"):  # not a flow: the config builds its network
        opt["path"]["pretrain_stage1"] = None  # the file a demo run writes first; the structure is what counts here
        net, _ = model_class(opt["model"]).build_network(opt)
        assert net.pad_multiple >= 1
        return
    assert opt["network_G"]["flow"]["K"] >= 1
    if conf.name == "LOLv2-pc.yml" and conf.parent.name in ("GLTG-AFlow", "ZMAR-SNFlow"):
        # kept exactly as published: the family must come from the checkpoint or network_G.variant
        with pytest.raises(ValueError, match="network_G.variant"):
            resolve_variant(opt)
    else:
        resolve_variant(opt)  # every other shipped config names or implies its family


@pytest.mark.parametrize("model", ["LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow"])
def test_golden_official_format_configs_load(golden, model):
    opt = load_options(golden(model) / "config.yml")
    # defaults are filled in one place, official values kept
    assert opt["network_G"]["flow"]["L"] == 3
    if opt["train"]["lr_steps_rel"]:  # GLTG ships no train section
        assert opt["train"]["lr_steps"] == [int(r * opt["train"]["niter"]) for r in opt["train"]["lr_steps_rel"]]
    assert opt["datasets"]["train"]["phase"] == "train"


def _raw():
    return yaml.safe_load((ROOT / "confs/LLFlow/LOL-pc.yml").read_text())


@pytest.mark.parametrize("section,bad,good", [
    (("network_G", "flow"), "Kk", "K"),
    (("train",), "lr_g", "lr_G"),
    (("datasets", "train"), "GT_sise", "GT_size"),
    ((), "concat_histq", "concat_histeq"),
])
def test_unknown_key_is_named_with_suggestion(section, bad, good):
    raw = _raw()
    d = raw
    for s in section:
        d = d[s]
    d[bad] = 1
    with pytest.raises(OptionError) as e:
        load_options(raw=raw)
    dotted = ".".join(section + (bad,))
    assert f"'{dotted}'" in str(e.value) and f"'{good}'" in str(e.value)


def test_overrides_are_typed_and_nested():
    opt = load_options(ROOT / "confs/LLFlow/LOL-pc.yml",
                       ["train.lr_G=1e-4", "network_G.flow.stackRRDB.blocks=[1, 2]", "use_tb_logger=false",
                        "datasets.train.GT_size=96"])
    assert opt["train"]["lr_G"] == pytest.approx(1e-4) and isinstance(opt["train"]["lr_G"], float)
    assert opt["network_G"]["flow"]["stackRRDB"]["blocks"] == [1, 2]
    assert opt["use_tb_logger"] is False
    assert opt["datasets"]["train"]["GT_size"] == 96
    with pytest.raises(OptionError, match="unknown option 'train.nitre'"):
        load_options(ROOT / "confs/LLFlow/LOL-pc.yml", ["train.nitre=5"])
    with pytest.raises(OptionError, match="key=value"):
        parse_override("train.niter")


def test_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = _raw()
    raw["datasets"]["train"]["root"] = "data\\LOL"  # Windows separators become '/'
    opt = load_options(raw=raw)
    assert opt["datasets"]["train"]["root"] == str(tmp_path / "data" / "LOL")


def test_windows_drive_paths_are_reported_when_used():
    opt = load_options(raw=yaml.safe_load((ROOT / "confs/LLFlow/LOL-pc.yml").read_text().replace(
        "model_path: pretrained/LOL.pth", "model_path: D:\\m\\LOL.pth")))
    with pytest.raises(OptionError, match="Windows path"):
        check_path(opt["model_path"], "model_path")


def test_gltg_and_zmar_configs_need_the_family_named():
    raw = _raw()
    raw["concat_histeq"] = False
    with pytest.raises(ValueError, match="network_G.variant"):
        resolve_variant(load_options(raw=raw))
    raw["network_G"]["variant"] = "zmar"
    assert resolve_variant(load_options(raw=raw)).name == "zmar"
    # a checkpoint's keys decide it too
    assert resolve_variant(load_options(raw=_raw() | {"concat_histeq": False}),
                           ["RRDB.encoder_level1.layer_stack.0.attn_intra.qkv.weight"]).name == "gltg"


@pytest.mark.parametrize("conf", [c for c in CONFS if c.name.startswith("train_") or c.name == "demo_tiny.yml"],
                         ids=lambda p: str(p.relative_to(ROOT / "confs")))
def test_training_configs_never_select_models_on_the_test_split(conf):
    opt = load_options(conf, is_train=True)
    assert opt["datasets"]["val"]["holdout"], "validation must use held-out training data"


def test_encoder_and_coupling_names_resolve_through_registries():
    from models.networks.variants import resolve_components
    raw = _raw()
    raw["cond_encoder"] = "ConEncoder2"
    with pytest.raises(KeyError, match="ConEncoder1.*GLTGRestormer|Registered"):
        resolve_components(load_options(raw=raw))
    raw = _raw()
    raw["network_G"]["flow"]["coupling"] = "CrossCouplin"
    with pytest.raises(KeyError, match="Did you mean 'CrossCoupling'"):
        resolve_components(load_options(raw=raw))
    # components compose: the ZMAR family with UPT's cross coupling
    raw = _raw()
    raw["network_G"]["variant"] = "zmar"
    raw["network_G"]["flow"]["coupling"] = "CrossCoupling"
    v = resolve_components(load_options(raw=raw))
    assert (v.encoder, v.coupling, v.prior) == ("ZMARRestormer", "CrossCoupling", "standard")
