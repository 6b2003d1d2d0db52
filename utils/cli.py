"""Entry-point wrapper: expected user errors become one line on stderr and exit code 2, not a traceback.

Only :class:`utils.errors.UserError` (raised where a bad key, file or checkpoint is detected) is a user error; any
other exception is a bug and keeps its traceback. Ctrl-C prints one line and exits 130.
"""
from __future__ import annotations

import os
import sys

from utils.errors import UserError, user_message
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
    """`call_cli`, then exit with its code when it is not 0 (what every script's `__main__` runs)."""
    code = call_cli(main, argv)
    if code:
        sys.exit(code)
    return code
