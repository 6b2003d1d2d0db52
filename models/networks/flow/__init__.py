"""Normalizing-flow layers. Importing the package registers the generic step and every coupling."""
from . import step  # noqa: F401
from . import couplings  # noqa: F401
