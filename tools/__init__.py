"""Command-line tools beyond the five top-level scripts: thin scripts (argument parsing, then calls into the
library), run as ``python tools/NAME.py`` from the repository root or as ``python -m tools.NAME``. The top layer:
a tool may import anything; nothing but the tests imports a tool."""
