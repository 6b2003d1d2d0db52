"""Build a generator from options, optionally loading a checkpoint (the family can be read from its keys)."""
from __future__ import annotations

import logging

from utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from .networks import generator  # noqa: F401  (registers the architectures)
from .checkpoint import load_weights, read_state_dict
from .networks.variants import resolve_components

log = logging.getLogger("lowlight_flow")


def build_generator(opt: dict, checkpoint: str | None = None, strict: bool = True):
    """Return (generator, notes). `checkpoint` is a path; notes are messages worth showing to the user."""
    state = read_state_dict(checkpoint) if checkpoint else None
    variant = resolve_components(opt, state.keys() if state is not None else None)
    arch = ARCH_REGISTRY.get(opt["network_G"].get("which_model_G") or "LLFlow")
    model = arch.from_options(opt, variant)
    notes = [f"model family: {variant.name} (encoder {variant.encoder}, coupling {variant.coupling})"]
    if state is not None:
        notes += load_weights(model, state, strict=strict, source=f"checkpoint '{checkpoint}'")
    return model, notes


# Every module that registers a method with @MODEL_REGISTRY.register (the class behind each `model:` key).
MODEL_MODULES = ("models.methods.flow_model", "models.methods.drbn_model", "models.methods.n2ldiff_model")


def model_class(name: str):
    """The registered model class for the config key `model: name`."""
    import importlib
    for m in MODEL_MODULES:
        importlib.import_module(m)
    return MODEL_REGISTRY.get(name or "LLFlow")


def build_network(opt: dict, checkpoint: str | None = None):
    """(enhancing network, notes) for the config's `model:`, through the model registry (test scripts, export)."""
    return model_class(opt.get("model")).build_network(opt, checkpoint)


if __name__ == "__main__":  # the registry listing is tools/list_registries.py
    from utils.cli import moved_command
    moved_command("models.build", "list_registries")
