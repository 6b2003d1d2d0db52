"""Entry-point wrapper: expected user errors become one line on stderr and exit code 2, not a traceback.

Only :class:`utils.errors.UserError` (raised where a bad key, file or checkpoint is detected) is a user error; any
other exception is a bug and keeps its traceback. Ctrl-C prints one line and exits 130.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from utils.errors import OptionError, UserError, user_message
from utils.runtime import keep_freed_memory


def _close_progress_bars():
    """Close tqdm bars an exception left open, so the message starts on its own line instead of after a bar."""
    from tqdm import tqdm
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def call_cli(main, argv=None) -> int:
    """Call main(argv) and return the exit code: main's own int (0 for None), 2 after printing `error: <message>`
    for a user error, 130 after Ctrl-C. Set LLFLOW_DEBUG=1 to get the traceback instead.

    Applies the process-wide allocator setting of :mod:`utils.runtime` first.
    """
    keep_freed_memory()
    try:
        code = main(argv)
    except UserError as e:
        if os.environ.get("LLFLOW_DEBUG"):
            raise
        _close_progress_bars()
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("LLFLOW_DEBUG"):
            raise
        _close_progress_bars()
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def run_cli(main, argv=None):
    """`call_cli`, then exit with its code when it is not 0 (what every script's `__main__` runs). A reader that
    closes the pipe early (``| head``) ends the output quietly, as for any Unix tool."""
    try:
        code = call_cli(main, argv)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        code = 0
    if code:
        sys.exit(code)
    return code


def in_range(lo=None, hi=None):
    """argparse ``action=`` for a numeric flag (``type=int`` or ``float``, any ``nargs``) that must lie in
    [lo, hi] (either end None: open) and be finite: a value outside is a one-line OptionError naming the flag and
    the allowed range (``error: --max-images must be >= 1, got 0``), raised while the command line is parsed."""
    if lo is None and hi is None:
        allowed = "a finite number"
    elif hi is None:
        allowed = f">= {lo}"
    elif lo is None:
        allowed = f"<= {hi}"
    else:
        allowed = f"in [{lo}, {hi}]"

    class InRange(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            for v in values if isinstance(values, (list, tuple)) else [values]:
                if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
                    raise OptionError(f"{option_string or self.dest} must be {allowed}, got {v:g}")
            setattr(namespace, self.dest, values)

    return InRange


def moved_command(old: str, tool: str):
    """The `__main__` of a module whose command moved into tools/: one line naming the replacement, exit 2.

    Takes names, not modules, so that the library never imports tools/ (the top layer)."""
    print(f"error: 'python -m {old}' moved: run 'python tools/{tool}.py ...'", file=sys.stderr)
    sys.exit(2)
