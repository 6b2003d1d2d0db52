"""Name -> class registries filled by decorators (BasicSR style)."""
from __future__ import annotations

import difflib
import inspect

from .errors import UnknownNameError


class Registry:
    """A named mapping from string keys to classes/functions.

    Use ``@REG.register()`` (or ``@REG.register('Alias')``) on a class; look it up with ``REG.get(name)``.
    An unknown name raises a KeyError that lists every registered name and the closest match.
    """

    def __init__(self, name: str):
        self._name = name
        self._obj = {}

    def register(self, *names: str):
        def deco(obj):
            for n in (names or (obj.__name__,)):
                if n in self._obj and self._obj[n] is not obj:
                    raise KeyError(f"{self._name} registry: '{n}' is already registered to {self._obj[n]!r}")
                self._obj[n] = obj
            return obj
        return deco

    def get(self, name: str):
        if name not in self._obj:
            close = difflib.get_close_matches(str(name), list(self._obj), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(f"unknown {self._name} '{name}'.{hint} Registered: {', '.join(sorted(self._obj))}")
        return self._obj[name]

    def __contains__(self, name):
        return name in self._obj

    @property
    def name(self) -> str:
        return self._name

    def keys(self):
        return sorted(self._obj)

    def where(self) -> list[tuple[str, str]]:
        """(name, 'file:line QualifiedName') of every entry: the class behind a config value, one hop away."""
        out = []
        for n in self.keys():
            obj = self._obj[n]
            try:
                src = f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
            except (OSError, TypeError):
                src = "?"
            out.append((n, f"{src} {obj.__module__}.{obj.__qualname__}"))
        return out


ARCH_REGISTRY = Registry("architecture (network_G.which_model_G)")
ENCODER_REGISTRY = Registry("conditional encoder (cond_encoder)")
COUPLING_REGISTRY = Registry("flow coupling (network_G.flow.coupling)")
FLOW_STEP_REGISTRY = Registry("flow step")
MODEL_REGISTRY = Registry("model (model)")
DATASET_REGISTRY = Registry("dataset (datasets.<phase>.dataset)")

ALL_REGISTRIES = (MODEL_REGISTRY, ARCH_REGISTRY, ENCODER_REGISTRY, COUPLING_REGISTRY, FLOW_STEP_REGISTRY,
                  DATASET_REGISTRY)
