"""Logging for the CLIs and for training runs (console + optional file)."""
from __future__ import annotations

import logging
import sys


def setup_cli_logging(log_file=None, level=logging.INFO, rank: int = 0):
    """Configure the 'lowlight_flow' logger once: console on rank 0, plus a file when given."""
    logger = logging.getLogger("lowlight_flow")
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(fmt)
    logger.addHandler(h)
    if log_file is not None and rank == 0:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False
    return logger
