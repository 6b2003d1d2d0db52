"""The project's error types: what a user did wrong (a config key, a file, a checkpoint) versus a bug.

Every expected user error derives from :class:`UserError`; the CLIs (utils/cli.py) print it as one `error:` line and
exit 2. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message names the offending key or file."""


class PairingError(UserError, ValueError):
    """Two file listings that cannot be paired (missing partners, duplicate stems)."""
