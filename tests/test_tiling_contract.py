"""The tiling contract: every module of every registered network declares how layer-wise tiles treat it
(models/tiling/core.py), so a new block with a whole-image reduction cannot run under tiles unnoticed."""
from __future__ import annotations

import pytest
import torch.nn as nn

from models.tiling.core import CONTRACTS, IN_TILED, TILED, tiling_contract
from tests.test_network_kwargs import COUPLING_KW, TINY_ENCODERS, _tiny_arch
from utils.registry import ARCH_REGISTRY, COUPLING_REGISTRY, ENCODER_REGISTRY, FLOW_STEP_REGISTRY


def _networks():
    nets = [(f"arch {n}", lambda n=n: _tiny_arch(n)) for n in ARCH_REGISTRY.keys()]
    nets += [(f"encoder {n}", lambda n=n: ENCODER_REGISTRY.get(n)(**TINY_ENCODERS[n])) for n in ENCODER_REGISTRY.keys()]
    nets += [(f"step {s} + {c}", lambda s=s, c=c: FLOW_STEP_REGISTRY.get(s)(4, 6, c, COUPLING_KW))
             for s in FLOW_STEP_REGISTRY.keys() for c in COUPLING_REGISTRY.keys()]
    return nets


def contract_violations(net: nn.Module) -> list[str]:
    """What breaks the contract in ``net``: classes that declare none (or an unknown one), TILED classes without a
    tiled_forward, IN_TILED modules with no TILED block above them to run their reductions tile by tile."""
    problems = set()

    def walk(module: nn.Module, tiled_above: bool):
        cls = type(module)
        contract = tiling_contract(cls)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if contract not in CONTRACTS:
            problems.add(f"{name} declares no tiling contract (class attribute `tiling`, models/tiling/core.py)")
        elif contract == TILED and not callable(getattr(cls, "tiled_forward", None)):
            problems.add(f"{name} is TILED but has no tiled_forward")
        elif contract == IN_TILED and not tiled_above:
            problems.add(f"{name} reduces over the whole map (IN_TILED) outside any TILED block")
        for child in module.children():
            walk(child, tiled_above or contract == TILED)

    walk(net, False)
    return sorted(problems)


@pytest.mark.parametrize("name,make", _networks(), ids=[n for n, _ in _networks()])
def test_every_module_of_every_registered_network_has_a_tiling_contract(name, make):
    assert contract_violations(make()) == []


def test_an_undeclared_reduction_is_caught():
    class GlobalGate(nn.Module):          # a new block that averages over the whole map, and says nothing
        def forward(self, x):
            return x * x.mean((2, 3), keepdim=True)

    class Declared(nn.Module):
        tiling = IN_TILED                 # declares a whole-map reduction, but no TILED block runs it

    class Tiled(nn.Module):
        tiling = TILED                    # ... while inside a TILED block, it is covered

        def __init__(self):
            super().__init__()
            self.inner = Declared()

        def tiled_forward(self, plan, x):
            return x

    assert contract_violations(nn.Sequential(nn.Conv2d(3, 3, 3), GlobalGate()))[0].endswith(
        "GlobalGate declares no tiling contract (class attribute `tiling`, models/tiling/core.py)")
    assert "outside any TILED block" in contract_violations(nn.Sequential(Declared()))[0]
    assert contract_violations(nn.Sequential(Tiled())) == []
