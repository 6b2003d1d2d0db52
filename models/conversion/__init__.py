"""The compatibility boundary: every official checkpoint layout is converted here, one module per method.

Each module (flows.py, drbn.py, n2ldiff.py) exposes ``to_ours(model, state, source) -> (state, notes)`` (leaving
a state dict of another method alone) and, where an export exists, ``to_official(model) -> state``. They are called
only where checkpoints are read and written (models/checkpoint.py ``load_weights``, tools/export_official.py), so
the networks and methods need not know the official layouts. The official N2LDiff YAML configs are converted in
options/n2ldiff_official.py (configs are read before any model exists, in a layer below models/).
"""
from __future__ import annotations

from . import drbn, flows, n2ldiff

METHODS = {"flows": flows, "drbn": drbn, "n2ldiff": n2ldiff}


def to_ours(model, state: dict, source: str) -> tuple[dict, list[str]]:
    """`state` (read from `source`) in the layout of `model`, and notes on what was left out."""
    notes = []
    for conv in (n2ldiff, flows, drbn):
        state, more = conv.to_ours(model, state, source)
        notes += more
    return state, notes
