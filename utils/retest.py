"""Moved: the command is ``python tools/retest.py`` (the work is in engine/retest.py)."""

if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("utils.retest", "retest")
