"""Write a checkpoint in the official code's layout, to go back to the official repositories (the command is
``python tools/export_official.py``).

Our models do not build the official modules that never run (models/conversion/flows.py), and test.py / train.py drop
those tensors when they load an official file. This writes them back: every tensor of `ours.pth`, plus each
never-run tensor from the official constructor's layer under a fixed seed (PyTorch's default initialisation,
seed ``models.conversion.flows.EXPORT_SEED + i`` for the i-th declared module; they never affect an output), minus the
tensors that only this implementation has (GLTG-AFlow's SAN/CSN heads, which the official code cannot load: it
draws new random ones on every call). The result is a plain state dict, loadable with ``strict=True`` by the official
code of the family (and by ours).
"""
from __future__ import annotations

import logging

from models.build import build_network
from models.checkpoint import atomic_save
from models.conversion.flows import added_keys, never_run_shapes, official_state_dict

log = logging.getLogger("lowlight_flow")


def export_official(opt: dict, model_path: str, out: str) -> dict:
    """Load `model_path` into the network of `opt` and write the official-layout state dict to `out`.

    Returns a summary: {'tensors': n, 'never_run_filled': n, 'added_dropped': n}.
    """
    net, notes = build_network(opt, model_path)
    for n in notes:
        log.info(n)
    state = official_state_dict(net)
    atomic_save(state, out)
    summary = {"tensors": len(state), "never_run_filled": len(never_run_shapes(net)),
               "added_dropped": len(added_keys(net))}
    log.info("wrote %s: %d tensors (%d never-run tensors filled with a seeded default init, %d tensors that the "
             "official code lacks left out)", out, summary["tensors"], summary["never_run_filled"],
             summary["added_dropped"])
    return summary


if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("engine.export_official", "export_official")
