"""The compatibility boundary: official checkpoint layouts are known only to models/conversion/."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from models import conversion
from models.conversion import drbn, flows

ROOT = Path(__file__).resolve().parents[1]
CONVERSION = ROOT / "models" / "conversion"
# Key names (as string literals) and helpers that the conversion modules own: official family signatures, the
# N2LDiff Lightning training-only prefix, the DRBN recomposition file's top-level names, the export's seed.
MARKERS = ('"RRDB_trunk"', '"attn_intra"', '"loss_fn_alex.', '"SFENet1"', "EXPORT_SEED", "never_run_index")


def _sources(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8").replace("'", '"')


def test_official_key_names_live_only_in_models_conversion():
    outside = [f"{p.relative_to(ROOT)}: {m}" for p, text in _sources(ROOT / "models")
               if CONVERSION not in p.parents for m in MARKERS if m in text]
    assert not outside, "official layout knowledge outside models/conversion/: " + "; ".join(outside)


def test_the_markers_are_owned_by_the_conversion_modules():
    text = "".join(t for _, t in _sources(CONVERSION))
    assert [m for m in MARKERS if m not in text] == []


def test_to_ours_leaves_a_state_of_another_method_alone():
    state = {"lpips.net.weight": torch.zeros(1), "weight": torch.zeros(2, 2), "bias": torch.zeros(2)}
    out, notes = conversion.to_ours(nn.Linear(2, 2), state, "ckpt")
    assert set(out) == set(state) and all(out[k] is state[k] for k in state) and notes == []


@pytest.mark.parametrize("keys, family", [
    (["RRDB.RRDB_trunk.0.RDB1.conv1.weight", "flowUpsamplerNet.layers.0.actnorm.bias"], "llflow"),
    (["RRDB.encoder_level1.0.attn_intra.qkv.weight"], "gltg"),
    (["flowUpsamplerNet.layers.3.affine.fAffine2.0.weight", "RRDB.RRDB_trunk.x"], "zmar"),
    (["RRDB.encoderlayer_0.blocks.0.attn.relative_position_index"], "upt"),
    (["recur1.SFENet1.weight"], None),
])
def test_flow_family_from_key_names(keys, family):
    assert flows.detect_variant_from_keys(keys) == family


def test_drbn_files_are_told_apart():
    assert drbn.is_stage1(["recur1.a", "recur2.b"]) and not drbn.is_stage1(["recur1.a", "SFENet1.weight"])
    assert drbn.is_combined(["drbn.recur1.a", "recompose.GFF.0.weight"])
    assert "model_R_" in drbn.describe_state(["SFENet1.weight", "UPNet.0.bias"])
    assert "flow checkpoint" in drbn.describe_state(["RRDB.conv_first.weight"])
    assert drbn.describe_state(["something.else"]) == ""
