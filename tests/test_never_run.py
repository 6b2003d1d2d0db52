"""Never-run official modules: not built, dropped (with one note) when an official checkpoint loads, an unknown key is
still an error, every built parameter gets a gradient, and engine/export_official.py writes the official layout back
(tools/export_official.py).
(The full-size official key lists are checked in the family tests: test_llflow, test_gltg, test_zmar, test_upt.)"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.export_official import export_official
from models.build import build_generator
from models.checkpoint import load_weights, read_state_dict
from models.conversion.flows import added_keys, never_run_shapes
from options.options import load_options
from tests.golden_models import demo_generator
from utils.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow"]


@pytest.mark.parametrize("family", FAMILIES)
def test_official_checkpoint_loads_dropping_only_never_run_tensors(golden, tmp_path, family):
    g = golden(family)
    opt = load_options(g / "config.yml")
    official = read_state_dict(g / "weights.pth")
    model, notes = build_generator(opt, str(g / "weights.pth"))
    never = never_run_shapes(model)
    # our own checkpoints lack the never-run tensors: the family is still read from the keys
    ours = tmp_path / "ours.pth"
    torch.save(model.state_dict(), ours)
    assert build_generator(opt, str(ours))[0].variant == model.variant
    assert set(official) - set(model.state_dict()) == set(never)
    dropped = [n for n in notes if "never runs" in n]
    if never:
        assert len(dropped) == 1 and f"dropped {len(never)} tensors" in dropped[0], notes
    else:
        assert not dropped                               # UPT-Flow has none
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in official.items() if k in own)   # every used tensor loaded
    # an unexpected key that is not a known never-run key is still an error
    bad = dict(official, **{"RRDB.not_an_official_layer.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unknown to the model"):
        load_weights(model, bad, strict=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_writes_the_official_layout_and_reloads(golden, tmp_path, family):
    g = golden(family)
    official = read_state_dict(g / "weights.pth")
    opt = load_options(g / "config.yml")
    out = tmp_path / "official.pth"
    export_official(opt, str(g / "weights.pth"), str(out))
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in official.items()}
    model, _ = build_generator(opt, str(out))
    own = model.state_dict()
    # used tensors go through unchanged; never-run ones are a seeded default initialisation, the same every time
    assert all(torch.equal(exported[k], official[k]) for k in own if k in official)
    export_official(opt, str(out), str(tmp_path / "again.pth"))
    again = torch.load(tmp_path / "again.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(v, again[k]) for k, v in exported.items())
    assert not added_keys(model) & set(exported)          # GLTG's SAN/CSN heads are not in the official layout


@pytest.mark.slow
def test_export_cli(golden, tmp_path):
    g = golden("LLFlow")
    out = tmp_path / "official.pth"
    r = subprocess.run([sys.executable, "tools/export_official.py", "--opt", str(g / "config.yml"),
                        "--model_path", str(g / "weights.pth"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "never-run tensors filled" in r.stderr + r.stdout
    assert set(torch.load(out, weights_only=True)) == set(read_state_dict(g / "weights.pth"))
    r = subprocess.run([sys.executable, "-m", "tools.export_official", "--opt", str(g / "config.yml"),
                        "--model_path", str(tmp_path / "missing.pth"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: checkpoint")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_built_parameter_gets_a_gradient(family):
    """Only what runs is built: the NLL reaches every parameter (so DDP needs no find_unused_parameters)."""
    opt, net = demo_generator(family)
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 6 if opt["concat_histeq"] else 3, 32, 32, generator=g)
    aux = {"gltg_mask": 3, "zmar_mask": 1, "upt_zero_map": 1}.get(net.aux_input)
    aux = (torch.rand(1, aux, 32, 32, generator=g) > 0.5).float() if aux else None
    net.nll(torch.rand(1, 3, 32, 32, generator=g), lq, aux)["nll"].sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
