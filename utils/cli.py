"""Entry-point wrapper: expected user errors become one line on stderr and exit code 2, not a traceback."""
from __future__ import annotations

import sys

from utils.errors import UserError
from utils.runtime import keep_freed_memory

USER_ERRORS = (UserError, KeyError, FileNotFoundError, NotImplementedError, ValueError)


def run_cli(main, argv=None):
    """Call main(argv); print `error: <message>` for user errors (set LLFLOW_DEBUG=1 for the traceback).

    Applies the process-wide allocator setting of :mod:`utils.runtime` first.
    """
    import os
    keep_freed_memory()
    try:
        return main(argv)
    except USER_ERRORS as e:
        if os.environ.get("LLFLOW_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
