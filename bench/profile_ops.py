"""Count the operators one inference call runs on frame-sized tensors, per family and dtype.

python bench/profile_ops.py [--families llflow,gltg,zmar,upt,drbn] [--dtypes fp32,bf16] [--size 96x128]
                            [--threads 1] [--top 15] [--times] [--where] [--json FILE]

Each family's full network (its published config, random weights) runs once through engine/inference.py's Enhancer
(--dtype as the CLIs run it, weights cast once, the config's layout) on a random --size input, through a dispatch
mode that sees every aten operator with its real arguments. An operator counts as frame-sized when one of its inputs
has at least as many elements as the padded frame has pixels (a full-resolution map, or a lower-resolution one with
as many values: the flows work at 1/2 to 1/8 scale with many channels). They are grouped: ``gemm`` (convolutions,
matrix products: the model's FLOPs), ``copy`` (dtype conversions, layout changes, copies; a ``to`` or ``reshape``
that returns its input moves nothing and is not counted) and ``elementwise`` (everything else: activations, gates,
residual adds, normalisations, concatenations ...). The counts and the bytes those operators read and write (their
inputs' and results' sizes x element sizes; "new": results that are new tensors, not written in place) are
deterministic, so a change that removes passes over frame-sized maps shows here on any machine, however loaded.
--times adds the profiler's CPU times (meaningful on a quiet machine only); --where lists the copies by the source
line in models/ that made them. Views and metadata queries (no pass over the data) are not counted. Copies made
inside an operator (e.g. a convolution making a strided input contiguous) are part of that operator.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import utils.threads  # noqa: E402,F401  (OMP_WAIT_POLICY default before torch loads OpenMP)

from bench.families import FULL as FAMILIES  # noqa: E402
GEMM = ("conv", "mkldnn", "addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "einsum")
COPY = ("copy_", "to", "clone", "_copy_from", "_copy_from_and_resize", "_to_copy", "contiguous", "permute",
        "transpose", "reshape", "view", "as_strided",
        "_reshape_alias", "expand", "t", "unfold", "_unsafe_view", "empty", "empty_like", "empty_strided", "flip")
VIEWS = ("permute", "transpose", "view", "as_strided", "_reshape_alias", "expand", "t", "unfold", "_unsafe_view",
         "empty", "empty_like", "empty_strided", "slice", "select", "split", "chunk", "unsqueeze", "squeeze", "detach",
         "alias", "narrow", "unbind", "lift_fresh", "resolve_conj", "resolve_neg", "split_with_sizes", "flatten",
         "chunk", "view_as", "reshape_as", "result_type", "is_same_size", "sym_size", "sym_stride", "size", "stride",
         "dim", "is_contiguous", "broadcast_tensors")


def group(name: str) -> str | None:
    """'gemm', 'copy', 'elementwise', or None for views and allocations (no pass over the data)."""
    op = name.split("::", 1)[-1]
    if op in VIEWS:
        return None
    if any(op == g or op.startswith(g + "_") or op.startswith(g) and g == "conv" or op.startswith("mkldnn")
           for g in GEMM):
        return "gemm"
    if op in COPY:
        return "copy"
    return "elementwise"


class OpCounter:
    """A TorchDispatchMode (made on first use: torch is imported late) counting frame-sized operators.

    Every aten operator the network runs passes through it with its real arguments and results, so sizes and dtypes
    (and torch.cat's tensor lists, which the profiler does not record) are exact.
    """

    def __new__(cls, frame: int, where: bool = False):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        import torch

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.counts, self.bytes = collections.Counter(), collections.Counter()
                self.new = collections.Counter()      # bytes of results that are new tensors (not written in place)
                self.where = collections.Counter()    # (name, first models/ source line) -> bytes, with `where`

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = func.overloadpacket.__name__
                kind = group("aten::" + name)
                if kind is not None:
                    ins = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)]
                    outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
                    owned = {t.untyped_storage().data_ptr() for t in ins}
                    moved = any(t.untyped_storage().data_ptr() not in owned for t in outs)
                    # `to`, `contiguous`, `reshape` that return their input (or a view of it) move no data
                    if ins and max(t.numel() for t in ins) >= frame and (kind != "copy" or moved):
                        self.counts[(kind, "aten::" + name)] += 1
                        self.bytes[(kind, "aten::" + name)] += sum(t.numel() * t.element_size() for t in ins + outs)
                        self.new[(kind, "aten::" + name)] += sum(t.numel() * t.element_size() for t in outs
                                                                 if t.untyped_storage().data_ptr() not in owned)
                        if where and kind == "copy":
                            import traceback
                            frames = [f for f in traceback.extract_stack() if "/models/" in f.filename]
                            at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
                            self.where[("aten::" + name, at)] += sum(t.numel() * t.element_size() for t in outs)
                return out
        return Mode()


def profile(family: str, dtype: str, h: int, w: int, times: bool, where: bool = False):
    """(counts, bytes read + written, profiler CPU times or None) of one inference call, keyed by (group, name)."""
    import torch
    from bench.bench_model import _inputs, _no_data_init
    from engine.inference import Enhancer
    from models.build import build_network
    from options.options import load_options
    conf, variant = FAMILIES[family]
    opt = load_options(ROOT / conf, [f"network_G.variant={variant}"] if variant else [])
    torch.manual_seed(0)
    net, _ = build_network(opt, None)
    _no_data_init(net)
    enh = Enhancer(net, opt, device="cpu", tile=0, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    lq, aux, (hp, wp) = _inputs(opt, enh.model, 1, h, w, g, enh.memory_format, pad=True)
    with torch.inference_mode():
        enh._run(lq, aux, 0.0)                     # warm-up: oneDNN primitives, allocator
        with OpCounter(hp * wp, where) as mode:
            enh._run(lq, aux, 0.0)
        cpu = None
        if times:
            from torch.profiler import ProfilerActivity, profile as torch_profile
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                enh._run(lq, aux, 0.0)
            cpu = collections.Counter()
            for ev in prof.events():
                parent = ev.cpu_parent
                while parent is not None and not parent.name.startswith("aten::"):
                    parent = parent.cpu_parent
                if ev.name.startswith("aten::") and parent is None and group(ev.name):
                    cpu[ev.name] += ev.cpu_time_total
    return mode.counts, mode.bytes, mode.new, cpu, (hp, wp), mode.where


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=15, help="operators listed per run (most frequent first)")
    ap.add_argument("--times", action="store_true", help="also print the profiler's CPU times (quiet machine only)")
    ap.add_argument("--where", action="store_true", help="attribute the copies to source lines (models/...)")
    ap.add_argument("--json", help="write the counts to this file")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    out = []
    for family in args.families.split(","):
        for dtype in args.dtypes.split(","):
            counts, nbytes, new, times, hw, where = profile(family, dtype, h, w, args.times, args.where)
            per_kind = collections.Counter()
            for (kind, _), n in counts.items():
                per_kind[kind] += n
            mb = {k: sum(v for (kk, _), v in nbytes.items() if kk == k) / 1e6 for k in per_kind}
            mb_new = {k: sum(v for (kk, _), v in new.items() if kk == k) / 1e6 for k in per_kind}
            print(f"== {family} {dtype} at {hw[0]}x{hw[1]}: frame-sized operators "
                  + ", ".join(f"{k} {per_kind[k]} ({mb.get(k, 0):.0f} MB read+written, {mb_new.get(k, 0):.0f} MB "
                              f"new)" for k in ("gemm", "elementwise", "copy")), flush=True)
            for (kind, name), n in counts.most_common(args.top):
                t = f"  {times[name] / 1e3:8.1f} ms" if times is not None else ""
                print(f"   {kind:11s} {name:36s} {n:5d}  {nbytes[(kind, name)] / 1e6:9.1f} MB  "
                      f"{new[(kind, name)] / 1e6:8.1f} MB new{t}")
            for (name, at), b in where.most_common(args.top):
                print(f"   copy at {at:40s} {name:20s} {b / 1e6:9.1f} MB written")
            out.append({"family": family, "dtype": dtype, "shape": list(hw), "per_kind": dict(per_kind),
                        "mb_read_written": mb, "mb_new": mb_new,
                        "ops": [{"kind": k, "name": nm, "count": n, "mb_read_written": nbytes[(k, nm)] / 1e6,
                                 "mb_new": new[(k, nm)] / 1e6} for (k, nm), n in counts.items()]})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
