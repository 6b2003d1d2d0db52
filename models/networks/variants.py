"""The published model families as presets: which encoder, flow step, coupling and prior each one uses.

The official GLTG-AFlow and ZMAR-SNFlow YAMLs both say `which_model_G: LLFlow`, `cond_encoder: ConEncoder1`,
`coupling: CondAffineSeparatedAndCond`; they only differ in the repo they ran in. `network_G.variant` names the family
explicitly; without it the family is inferred from the config and, when a checkpoint is given, from its keys.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from utils.errors import OptionError, UnknownNameError
from ..conversion.flows import detect_variant_from_keys


@dataclass(frozen=True)
class Variant:
    name: str
    encoder: str          # ENCODER_REGISTRY name
    coupling: str         # COUPLING_REGISTRY name
    step: str             # FLOW_STEP_REGISTRY name
    prior: str            # 'colormap' (LLFlow) or 'standard' (N(0, I))
    unused_f: bool        # official flowUpsamplerNet.f conv present in checkpoints
    add_gt_noise: bool    # dequantisation noise in training (as the official training code)


VARIANTS = {
    "llflow": Variant("llflow", "ConEncoder1", "CondAffineSeparatedAndCond", "FlowStep", "colormap", True, False),
    "gltg": Variant("gltg", "GLTGRestormer", "AFlowCoupling", "AFlowStep", "standard", True, True),
    "zmar": Variant("zmar", "ZMARRestormer", "SNFlowCoupling", "FlowStep", "standard", True, True),
    "upt": Variant("upt", "MSFormer", "CrossCoupling", "FlowStep", "standard", False, True),
}

# Every official YAML names these two, whatever the family; any other name selects that registered component.
OFFICIAL_ENCODER_NAME = "ConEncoder1"
OFFICIAL_COUPLING_NAME = "CondAffineSeparatedAndCond"


def resolve_components(opt: dict, checkpoint_keys=None) -> Variant:
    """The family's preset, with `cond_encoder` / `network_G.flow.coupling` overriding its encoder / coupling when
    they name another registered component (unknown names raise an error listing the registered ones)."""
    from utils.registry import COUPLING_REGISTRY, ENCODER_REGISTRY
    import models.networks.encoders  # noqa: F401  (fill the registries)
    import models.networks.flow  # noqa: F401
    variant = resolve_variant(opt, checkpoint_keys)
    enc = opt.get("cond_encoder") or OFFICIAL_ENCODER_NAME
    coupling = ((opt.get("network_G") or {}).get("flow") or {}).get("coupling") or OFFICIAL_COUPLING_NAME
    ENCODER_REGISTRY.get(enc)
    COUPLING_REGISTRY.get(coupling)
    if enc != OFFICIAL_ENCODER_NAME:
        variant = replace(variant, encoder=enc)
    if coupling != OFFICIAL_COUPLING_NAME:
        variant = replace(variant, coupling=coupling)
    return variant


def resolve_variant(opt: dict, checkpoint_keys=None) -> Variant:
    """Pick the family: explicit `network_G.variant`, else inferred; raises a clear error when ambiguous."""
    net = opt.get("network_G") or {}
    explicit = net.get("variant")
    if explicit:
        if explicit not in VARIANTS:
            raise UnknownNameError(f"network_G.variant '{explicit}' unknown; choose one of {', '.join(VARIANTS)}")
        return VARIANTS[explicit]
    if checkpoint_keys is not None:
        found = detect_variant_from_keys(checkpoint_keys)
        if found:
            return VARIANTS[found]
    if str(net.get("which_model_G", "LLFlow")).lower() == "uptflow":
        return VARIANTS["upt"]
    enc = opt.get("cond_encoder", "ConEncoder1")
    for v in VARIANTS.values():
        if enc == v.encoder and enc != "ConEncoder1":
            return v
    # LLFlow's RRDB encoder takes the histeq input; the official Restormer configs switch it off.
    restormer = any(v is not None for v in (net.get("restormer") or {}).values())
    if opt.get("concat_histeq", True) and not restormer:
        return VARIANTS["llflow"]
    raise OptionError(
         "cannot tell whether this config is GLTG-AFlow or ZMAR-SNFlow (their official YAMLs are identical in form): "
         "set `network_G.variant: gltg` or `zmar` (or pass a checkpoint so the family is read from its keys)")
