"""Atomic file writes: write to a temp file in the target folder, fsync, then rename over the target.

Readers (and a process killed mid-write) never see a half-written image, checkpoint or report. A target that cannot
be written (a file where a folder should be, no permission, a full disk) is an OutputError naming it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _output_error(path: Path, e: OSError) -> OutputError:
    blocker = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        why = f"'{blocker}' is a file, not a folder"
    elif path.is_dir():
        why = "a folder of that name is in the way"
    else:
        why = e.strerror or type(e).__name__
    return OutputError(f"cannot write '{path}': {why}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Yield a file object for a temp file next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a user's outputs get the usual permissions
    except OSError as e:
        raise _output_error(path, e) from None
    try:
        with os.fdopen(fd, mode) as f:
            try:
                yield f
            except OSError as e:
                if e.errno in _DISK_FULL:
                    raise _output_error(path, e) from None
                raise
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _output_error(path, e) from None
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _output_error(path, e) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
