"""Moved: the command is ``python tools/export_onnx.py`` (the work is in engine/export_onnx.py)."""

if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("utils.export_onnx", "export_onnx")
