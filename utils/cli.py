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


def run_cli(main, argv=None):
    """Call main(argv); print `error: <message>` for user errors (set LLFLOW_DEBUG=1 for the traceback).

    Applies the process-wide allocator setting of :mod:`utils.runtime` first. A non-zero int returned by `main`
    becomes the exit code.
    """
    keep_freed_memory()
    try:
        code = main(argv)
    except UserError as e:
        if os.environ.get("LLFLOW_DEBUG"):
            raise
        _close_progress_bars()
        print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if os.environ.get("LLFLOW_DEBUG"):
            raise
        _close_progress_bars()
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)
    return code
