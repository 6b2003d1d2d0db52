"""Export a trained model's enhance path to ONNX (the body of ``python tools/export_onnx.py``).

The graph is the network's ``enhance(lq, aux, heat=0.0)`` (for the flows: encoder, then the reverse pass from the
prior mean), with dynamic height and width. Everything ``engine/inference.py`` does around that call stays outside:

inputs
  ``lq``   float32 (1, C, H, W): the preprocessed low image, H and W multiples of ``pad_multiple`` (reflect-pad the
           image at the bottom/right first, as ``Enhancer.prepare`` does). C and content follow the config:
           LLFlow 6 = ln(low + 1e-3) | per-channel histogram-equalised low; GLTG-AFlow and ZMAR-SNFlow 3 = ln(...);
           UPT-Flow 3 = linear low in [0, 1] (see ``data.preprocess.build_lq``).
  ``aux``  float32 (1, A, H, W), only for families with an auxiliary map (``data.preprocess.aux_input``): GLTG 3-ch
           zero-element mask, ZMAR 1-ch chromaticity mask (1 = unbalanced), UPT 1-ch map (1 = balanced).
output
  ``enhanced`` float32 (1, 3, H, W): the raw network output (not clamped); crop the padding, clamp to [0, 1].

These facts are also written into the ONNX file's metadata (``metadata_props``). The export uses torch's
TorchScript-based exporter (``dynamo=False``), which needs only the ``onnx`` package; the graph is traced once, so
it is checked with onnxruntime at a second size (``check=True``).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from engine.inference import Enhancer, input_is_log
from utils.errors import UserError
from utils.paths import prepare_file
from models.build import build_network

log = logging.getLogger("lowlight_flow")

DEFAULT_SIZE = (96, 128)  # H, W of the traced example (any multiple of the model's pad multiple)


class ExportError(UserError, RuntimeError):
    """The model cannot be exported (an operator ONNX lacks, a missing package); the message says which."""


class EnhanceGraph(nn.Module):
    """``net.enhance(lq, aux, heat)`` as a module with tensor-only inputs, for tracing."""

    def __init__(self, net: nn.Module, heat: float = 0.0):
        super().__init__()
        self.net, self.heat = net, float(heat)

    def forward(self, lq, aux=None):
        return self.net.enhance(lq, aux, heat=self.heat)


def sample_image(h: int, w: int) -> np.ndarray:
    """A deterministic dark test card (gradients, edges, a saturated and a black patch), uint8 HxWx3 RGB."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 40 + 30 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    g = 25 + 20 * (xx / max(w - 1, 1))
    b = 30 + 25 * ((xx // 16 + yy // 16) % 2)
    img = np.stack([r, g, b], axis=2)
    img[h // 4:h // 4 + 8, w // 4:w // 4 + 8] = 255
    img[-10:, -10:] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def _prepare(model, opt, img):
    o = copy.deepcopy(opt)
    o.setdefault("inference", {})["channels_last"] = False
    return Enhancer(model, o, device="cpu", dtype="fp32").prepare(img)   # fp32: never cast the exported weights


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def export_onnx(opt: dict, checkpoint: str | None, out, size=DEFAULT_SIZE, opset: int = 17,
                check: bool = True, check_size=None, model=None) -> dict:
    """Build the network (``models.build.build_network``), trace ``enhance`` at heat 0 on a ``size`` example and
    write ``out`` (``model``: an already built network instead). Returns {'inputs', 'pad_multiple', 'aux_input', 'size', 'check': {...} or None}.

    With ``check`` (and onnxruntime installed) the file is run at another size (``check_size``, default the
    export size plus one pad multiple each way) and compared with PyTorch; the max abs difference is reported.
    """
    try:
        import onnx
    except ImportError as e:
        raise ExportError("ONNX export needs the optional packages: pip install -r requirements-onnx.txt") from e
    if model is None:  # `model`: an already built network (tests), else built from opt + checkpoint
        model, notes = build_network(opt, checkpoint)
        for n in notes:
            log.info(n)
    model = model.cpu().eval()
    mult = int(model.pad_multiple)
    h, w = (_round_up(int(s), mult) for s in size)
    lq, aux = _prepare(model, opt, sample_image(h, w))
    graph = EnhanceGraph(model).eval()
    args = (lq,) if aux is None else (lq, aux)
    names = ["lq"] if aux is None else ["lq", "aux"]
    axes = {n: {2: "height", 3: "width"} for n in names + ["enhanced"]}
    out = prepare_file(out, "--out")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints; the size check below is the proof
        graph(*args)  # fills the inference caches (1x1-conv inverses) so the graph holds constants, not inverses
        try:
            torch.onnx.export(graph, args, str(out), dynamo=False, opset_version=opset, input_names=names,
                              output_names=["enhanced"], dynamic_axes=axes, do_constant_folding=True)
        except torch.onnx.errors.UnsupportedOperatorError as e:
            raise ExportError(f"{type(model.RRDB).__name__} / {model.variant.name}: {e}") from None
    info = {"family": model.variant.name, "inputs": {n: list(a.shape) for n, a in zip(names, args)},
            "pad_multiple": mult, "aux_input": model.aux_input, "heat": 0.0, "size": [h, w],
            "log_low": input_is_log(opt), "concat_histeq": bool(opt.get("concat_histeq")),
            "output": "enhanced: raw (1, 3, H, W), not clamped"}
    m = onnx.load(str(out))
    for k, v in info.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = f"lowlight_flow.{k}", json.dumps(v)
    onnx.save(m, str(out))
    info["check"] = check_against_torch(out, model, opt, check_size or (h + mult, w + 2 * mult)) if check else None
    return info


def onnx_session(path):
    """An onnxruntime CPU session for an exported file (creating one takes seconds for the Restormer families)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("running the ONNX file needs onnxruntime: pip install -r requirements-onnx.txt") from e
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, lq: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
    """Run an exported graph (a session from :func:`onnx_session`, or a file path) on prepared inputs; returns
    the 'enhanced' array."""
    sess = onnx_session(session) if isinstance(session, (str, Path)) else session
    feed = {"lq": np.ascontiguousarray(lq, np.float32)}
    if aux is not None:
        feed["aux"] = np.ascontiguousarray(aux, np.float32)
    return sess.run(["enhanced"], feed)[0]


def check_against_torch(path, model, opt, size) -> dict | None:
    """Max abs difference between onnxruntime and PyTorch on the test card at ``size`` (None without onnxruntime)."""
    try:
        import onnxruntime  # noqa: F401  (only to know it is there)
    except ImportError:
        log.warning("onnxruntime not installed: the exported graph was not checked")
        return None
    mult = int(model.pad_multiple)
    h, w = (_round_up(int(s), mult) for s in size)
    lq, aux = _prepare(model, opt, sample_image(h, w))
    with torch.no_grad():
        ref = model.enhance(lq, aux, heat=0.0).numpy()
    got = run_onnx(path, lq.numpy(), None if aux is None else aux.numpy())
    return {"size": [h, w], "max_abs_diff": float(np.abs(got - ref).max())}
