"""Helpers of the network builders (`from_options`): a config section becomes constructor keyword arguments.

Networks take explicit keyword arguments whose defaults are the only defaults (docs/networks.md); a builder passes
only what the config sets, so an unset or null key means "the constructor's default".
"""
from __future__ import annotations

import inspect

from utils.errors import UnknownNameError


def given(section: dict | None, keys, rename: dict | None = None) -> dict:
    """The entries of `section` named in `keys` whose value is not None (renamed by `rename`: config -> kwarg)."""
    section = section or {}
    rename = rename or {}
    return {rename.get(k, k): section[k] for k in keys if section.get(k) is not None}


def kwarg_defaults(cls) -> dict:
    """Keyword arguments of ``cls.__init__`` that have a default, with their default.

    A constructor that forwards ``**kwargs`` to its base class's also takes the base's: they are included (base
    first), the subclass's own defaults winning.
    """
    out = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.startswith("torch"):
            continue
        for p in inspect.signature(init).parameters.values():
            if p.default is not inspect.Parameter.empty:
                out[p.name] = p.default
    return out


def section_kwargs(section: dict | None, cls, path: str, exclude=()) -> dict:
    """The non-None entries of a config section that map one-to-one onto ``cls``'s keyword arguments.

    A key that is not a keyword argument of ``cls`` (or is in `exclude`) is an error naming ``path.key``.
    """
    section = section or {}
    allowed = [k for k in kwarg_defaults(cls) if k not in exclude]
    for key, value in section.items():
        if key not in allowed and value is not None:
            raise UnknownNameError(f"{path}: unknown key '{key}' for {cls.__name__}; "
                                   f"allowed keys: {', '.join(allowed)}")
    return given(section, allowed)
