"""The project's error types: what a user did wrong (a config key, a file, a checkpoint) versus a bug.

Every expected user error derives from :class:`UserError` and is raised where the problem is detected, with a message
that names the offending key or file; the CLIs (utils/cli.py ``run_cli``) print it as one ``error:`` line and exit 2.
Any other exception is a bug and keeps its traceback. The subclasses also derive from the built-in type that code
used to raise (ValueError, KeyError, RuntimeError, OSError), so existing ``except ValueError`` blocks keep working.
"""
from __future__ import annotations

import re


class UserError(Exception):
    """A problem with the user's input; the message names the offending key or file."""


class OptionError(UserError, ValueError):
    """A configuration problem (YAML file, `--set`, command-line flag); the message names the key."""


class UnknownNameError(OptionError, KeyError):
    """An unknown key or registry name; also a KeyError (what dict-style look-ups used to raise)."""

    __str__ = Exception.__str__  # KeyError quotes its message


class ImageError(UserError, ValueError):
    """An image file that is missing, unreadable, too small or in a format the framework refuses to guess about."""


class PairingError(UserError, ValueError):
    """Two file listings that cannot be paired (missing partners, duplicate stems)."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint or training state that cannot be read or does not fit the model; the message says why."""


class NonFiniteError(UserError, RuntimeError):
    """NaN/inf where a number is needed: too many non-finite training steps, or a non-finite model output."""


class OutOfMemoryError(UserError, MemoryError):
    """An image too large for the device's memory; the message says how to tile it."""


class OutputError(UserError, OSError):
    """An output location that cannot be written (a file where a folder is needed, no permission, disk full)."""


# torch's DataLoader re-raises a worker's exception as `type(msg)` with the worker's whole traceback as `msg`.
_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.\nOriginal Traceback", re.S)


def user_message(exc: BaseException) -> str:
    """The one-line message of a user error; a DataLoader worker's wrapped traceback is reduced to its last line."""
    msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    m = _WORKER.match(msg)
    if m:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        last = re.sub(r"^[\w.]*" + re.escape(m.group(1)) + r": ", "", last.strip())
        msg = f"{last} (in DataLoader worker {m.group(2)})"
    return " ".join(msg.split("\n")).strip()
