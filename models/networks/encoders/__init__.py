"""Conditional encoders; importing this package registers every module in it.

Contract (every encoder): constructed as ``Encoder(opt)`` from the full options dict; class attributes
``aux_input`` (None, 'gltg_mask', 'zmar_mask' or 'upt_zero_map': the auxiliary map the model needs, computed by
``data.preprocess.aux_input``) and ``pad_multiple`` (input H and W must be multiples of it);
``forward(lq, aux=None) -> dict`` holding the conditioning tensors ``fea_up2`` (H/2), ``fea_up1`` (H/4),
``fea_up0`` (H/8), already concatenated as the flow consumes them, plus ``color_map`` where the model has one.
The generator stores the encoder under the official attribute name ``RRDB``.
"""
import pkgutil
from importlib import import_module

for _info in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_info.name}")
