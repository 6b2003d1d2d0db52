"""Low-light synthesis from normal-light images: the physics model (``physics``), its sRGB helpers (``srgb``) and the
script that fits the physics ranges to real pairs (``fit_physics``). The CLI is ``python tools/synthesize.py``."""
