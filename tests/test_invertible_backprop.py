"""train.invertible_backprop: steps store only their outputs and reconstruct their inputs in the backward pass;
the gradients equal those of the ordinary (stored-activation) graph, for every registered coupling and step."""
import pytest
import torch

from models.networks.flow.invertible_backprop import enable_invertible_backprop
from models.networks.flow.upsampler import FlowUpsamplerNet
from tests.flow_checks import perturb_
from utils.registry import COUPLING_REGISTRY

import models.networks.flow  # noqa: F401  (fills the registries)

COUPLINGS = sorted(COUPLING_REGISTRY.keys())
CASES = [(c, "FlowStep") for c in COUPLINGS] + [("AFlowCoupling", "AFlowStep")]


def _grads(flow, x, cond, weights):
    for p in [x, *cond.values(), *flow.parameters()]:
        p.grad = None
    z, logdet = flow.encode(x, cond, x.new_zeros(x.shape[0]))
    # a loss that weighs every latent entry differently and the log-det, as the NLL does
    ((z * weights).sum() + 1e-3 * logdet.sum()).backward()
    named = {f"param:{n}": p.grad for n, p in flow.named_parameters()}
    named.update({"x": x.grad, **{f"cond:{k}": v.grad for k, v in cond.items()}})
    return {k: v.clone() for k, v in named.items() if v is not None}, z.detach()


@pytest.mark.parametrize("coupling,step", CASES)
def test_invertible_backprop_gives_the_stored_activation_gradients(coupling, step):
    assert set(COUPLINGS) >= {"CondAffineSeparatedAndCond", "AFlowCoupling", "SNFlowCoupling", "CrossCoupling"}
    torch.manual_seed(0)
    flow = FlowUpsamplerNet(3, 8, K=2, L=2, n_noaffine=1, coupling=coupling, step=step,
                            coupling_kwargs={"hidden_channels": 16}, seed=1)
    perturb_(flow, 0.05, seed=2)                          # no zero-initialised layer stays an identity
    for m in flow.modules():
        if hasattr(m, "inited"):
            m.inited = True
    flow.train()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 16, generator=g).requires_grad_()
    cond = {"fea_up2": torch.randn(2, 8, 8, 8, generator=g).requires_grad_(),
            "fea_up1": torch.randn(2, 8, 4, 4, generator=g).requires_grad_()}
    weights = torch.randn(2, 48, 4, 4, generator=g)

    plain, z_plain = _grads(flow, x, cond, weights)
    assert enable_invertible_backprop(flow) == 1
    inv, z_inv = _grads(flow, x, cond, weights)
    assert torch.equal(z_plain, z_inv)                   # the forward pass itself is unchanged
    assert plain.keys() == inv.keys()
    assert len([k for k in plain if k.startswith("param:")]) == sum(1 for p in flow.parameters())
    for k in plain:
        scale = plain[k].abs().max().item()
        err = (plain[k] - inv[k]).abs().max().item()
        assert err <= 1e-5 * max(scale, 1.0), (k, err, scale)


def test_invertible_backprop_is_off_without_grad_and_in_reverse():
    torch.manual_seed(0)
    flow = FlowUpsamplerNet(3, 8, K=1, L=1, n_noaffine=1, coupling_kwargs={"hidden_channels": 16}, seed=1)
    enable_invertible_backprop(flow)
    x = torch.rand(1, 3, 8, 8)
    cond = {"fea_up2": torch.randn(1, 8, 4, 4)}
    with torch.no_grad():
        z, _ = flow.encode(x, cond, x.new_zeros(1))
        back, _ = flow.decode(z, cond, x.new_zeros(1))
    assert (back - x).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow"])
def test_training_step_gradients_with_both_memory_savers(family):
    """A whole training step (FlowModel.optimize) with train.invertible_backprop and selective encoder
    checkpointing gives the gradients of the plain step."""
    from models.methods.flow_model import FlowModel
    from options.options import load_options
    from pathlib import Path
    conf = Path(__file__).resolve().parents[1] / "confs" / family / "demo_tiny.yml"
    extra = ["network_G.msformer.drop_path_rate=0"] if family == "UPT-Flow" else []
    g = torch.Generator().manual_seed(5)
    batch = None
    grads = []
    for sets in ([], ["train.invertible_backprop=true", "train.activation_checkpointing=selective"]):
        opt = load_options(conf, extra + sets + ["train.add_gt_noise=false", "train_gt_ratio=0",
                                                 "train.official_loop=false"], is_train=True)
        torch.manual_seed(0)
        model = FlowModel(opt, torch.device("cpu"))
        if batch is None:
            lq = torch.rand(2, 6 if opt["concat_histeq"] else 3, 32, 32, generator=g)
            aux = {"gltg_mask": 3, "zmar_mask": 1, "upt_zero_map": 1}.get(model.net.aux_input)
            batch = {"GT": torch.rand(2, 3, 32, 32, generator=g), "LQ": lq}
            if aux:
                batch["AUX"] = (torch.rand(2, aux, 32, 32, generator=g) > 0.5).float()
        model.setup(batch)
        logs = model.optimize(batch)
        assert not logs["skipped"]
        grads.append({n: p.grad.clone() for n, p in model.net.named_parameters()})
    plain, saved = grads
    assert plain.keys() == saved.keys()
    for k in plain:
        scale = plain[k].abs().max().item()
        assert (plain[k] - saved[k]).abs().max().item() <= 1e-5 * max(scale, 1.0), k
