"""Affine couplings and flow steps of the published variants; importing this package registers every module in it."""
import pkgutil
from importlib import import_module

for _info in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_info.name}")
