"""Checkpoint conversion of DRBN: which of the official and our files a state dict is.

The names are the official ones (stage 1 ``recur1..4``; the recomposition net ``SFENet1/2``, ``RDBs``, ``GFF``,
``UPNet``, ``UPNet2``), so nothing is renamed. The official release ships two files, a stage-1 DRBN (model_s1.pt)
and a recomposition-only net (model_R_*.pt); our stage-2 files combine both (``drbn.*`` + ``recompose.*``). The
methods (models/methods/drbn_model.py) ask these predicates where each file belongs.
"""
from __future__ import annotations

RECOMPOSE_TOPS = ("SFENet1", "SFENet2", "RDBs", "GFF", "UPNet", "UPNet2")


def is_combined(keys) -> bool:
    """Our stage-2 file: the DRBN and the recomposition net together."""
    return any(k.startswith("drbn.") for k in keys)


def is_stage1(keys) -> bool:
    """A stage-1 DRBN file (official model_s1.pt or ours)."""
    return all(k.startswith("recur") for k in keys)


def describe_state(keys) -> str:
    """What a state dict that is not a stage-1 DRBN holds, as a phrase for an error message ('' if unknown)."""
    keys = list(keys)
    if is_combined(keys):
        return "a stage-2 checkpoint (drbn.* + recompose.*): use model: DRBNRecompose"
    if keys and all(k.split(".")[0] in RECOMPOSE_TOPS for k in keys):
        return "a recomposition-net checkpoint (official model_R_*.pt): use model: DRBNRecompose"
    if any(k.startswith(("RRDB.", "flowUpsamplerNet.")) for k in keys):
        return "a flow checkpoint (LLFlow family), not DRBN"
    return ""


def to_ours(model, state: dict, source: str) -> tuple[dict, list[str]]:
    """DRBN files need no conversion (official names throughout)."""
    return state, []
