"""CPU threads and the OpenMP wait policy of the command-line tools.

Importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy. GNU OpenMP
reads the policy once, when torch loads it, so every CLI imports this module before anything that imports torch.
Why PASSIVE: with the default (threads spin for a while after each parallel region) a 2-thread job beside other
busy processes burns its time slices spinning while a sibling thread waits for a core (DRBN 400x600 inference beside
two 1-thread trainings: 3.5-4.6 s, 2.1-2.3 s with PASSIVE, 1.39 s quiet). bench/bench_threads.py measures both
policies quiet and loaded; ``OMP_WAIT_POLICY=ACTIVE`` in the environment restores spinning.
"""
from __future__ import annotations

import os

from .errors import OptionError

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
DEFAULT_WAIT_POLICY = "PASSIVE"

os.environ.setdefault(WAIT_POLICY_ENV, DEFAULT_WAIT_POLICY)


def _count(text: str) -> int:
    import argparse
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread count (a whole number, at least 1)")
    return n


def add_threads_arg(parser, what: str = "torch's default: one per physical core"):
    """The --threads N flag every CLI shares; returns the parser."""
    parser.add_argument("--threads", type=_count, metavar="N",
                        help=f"CPU threads for torch (default: {what}); with other jobs running, give each job "
                             f"its share of the cores")
    return parser


def set_threads(n, key: str = "--threads") -> int:
    """Use `n` intra-op CPU threads (None: leave torch's default); returns the count in effect.

    A count that is not a positive whole number is an OptionError naming `key`.
    """
    import torch
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"{key}: {n!r} is not a thread count (a whole number, at least 1)")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def describe() -> str:
    """'N threads, OMP_WAIT_POLICY=...' for logs and benchmark records."""
    import torch
    return f"{torch.get_num_threads()} threads, {WAIT_POLICY_ENV}={os.environ.get(WAIT_POLICY_ENV, 'unset')}"
