"""Every registered name (architectures, models, datasets, ...), by config key, with the file and line of its class.

python tools/list_registries.py
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
import data  # noqa: E402,F401  (registers the datasets)
from models.build import model_class  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.registry import ALL_REGISTRIES  # noqa: E402


def main(argv=None):
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    model_class(None)  # imports every model module
    root = os.getcwd()
    for reg in ALL_REGISTRIES:
        print(f"{reg.name}:")
        for name, where in reg.where():
            print(f"  {name:28s} {os.path.relpath(where.split(':')[0], root)}:{where.split(':', 1)[1]}")


if __name__ == "__main__":
    run_cli(main)
